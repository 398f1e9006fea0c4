"""`.ci/check_copies.py`: the code copied between modeling files (for trust_remote_code) stays identical."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("check_copies", ROOT / ".ci" / "check_copies.py")
check_copies = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_copies)

SOURCE = '''
class AlexNetPreTrainedModel:
    """Glue of the AlexNet models."""

    base_model_prefix = "alexnet"
'''


def _tree(tmp_path: pathlib.Path, copy: str) -> pathlib.Path:
    models = tmp_path / "hf_ssl" / "models"
    models.mkdir(parents=True)
    (models / "modeling_alexnet.py").write_text(SOURCE)
    (models / "modeling_vgg.py").write_text(
        "# Copied from hf_ssl.models.modeling_alexnet.AlexNetPreTrainedModel with AlexNet->VGG, alexnet->vgg\n" + copy
    )
    return tmp_path


def test_the_repository_copies_agree() -> None:
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "check_copies.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_drifted_copy_is_named_and_fixed(tmp_path: pathlib.Path) -> None:
    faithful = SOURCE.lstrip("\n").replace("AlexNet", "VGG").replace("alexnet", "vgg")
    root = _tree(tmp_path, faithful.replace('"vgg"', '"vgg16"'))
    problems = check_copies.check(root)
    assert problems == [
        "hf_ssl/models/modeling_vgg.py:1: VGGPreTrainedModel differs from its source "
        "hf_ssl.models.modeling_alexnet.AlexNetPreTrainedModel"
    ]
    check_copies.check(root, fix=True)
    assert (root / "hf_ssl/models/modeling_vgg.py").read_text().endswith(faithful)
    assert check_copies.check(root) == []


def test_a_marker_naming_nothing_is_one_line(tmp_path: pathlib.Path) -> None:
    root = _tree(tmp_path, "class VGGPreTrainedModel:\n    pass\n")
    text = (root / "hf_ssl/models/modeling_vgg.py").read_text().replace("AlexNetPreTrainedModel with", "Missing with")
    (root / "hf_ssl/models/modeling_vgg.py").write_text(text)
    with pytest.raises(ValueError, match="defines no Missing"):
        check_copies.check(root)


def test_a_copied_method_is_checked(tmp_path: pathlib.Path) -> None:
    models = tmp_path / "hf_ssl" / "models"
    models.mkdir(parents=True)
    (models / "modeling_alexnet.py").write_text(
        "class AlexNetModel:\n    def forward(self, x):\n        return x + 1\n"
    )
    copy = "    # Copied from hf_ssl.models.modeling_alexnet.AlexNetModel.forward\n    def forward(self, x):\n"
    (models / "modeling_vgg.py").write_text("class VGGModel:\n" + copy + "        return x + 2\n")
    assert check_copies.check(tmp_path) == [
        "hf_ssl/models/modeling_vgg.py:2: forward differs from its source hf_ssl.models.modeling_alexnet.AlexNetModel.forward"
    ]
    (models / "modeling_vgg.py").write_text("class VGGModel:\n" + copy + "        return x + 1\n")
    assert check_copies.check(tmp_path) == []
