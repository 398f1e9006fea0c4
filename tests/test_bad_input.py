"""Bad input ends in one line naming the field, file, split or sample (exit code 2), found before any work: no
output folder written, no feature pass run, no DataLoader worker started. And corrupt samples are counted once
each over the training stream and every feature pass."""

import io
import json
import pathlib

import PIL.Image
import pytest

from hf_ssl.cli import main as cli_main
from hf_ssl.data import make_image_processor
from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.training import RecipeError, parse_args, train

from .conftest import SAMPLE, TINY_BACKBONE, TINY_R3D, VIDEO_SAMPLE, tiny_training_args


def _error_line(capsys, code: int, command: str = "train") -> str:
    """The error line of a failed command: its last line of stderr, no traceback (transformers' progress bars for
    loading weights may come before)."""
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert code == 2 and last.startswith(f"hf-ssl {command}: error:") and "Traceback" not in err, err[-3000:]
    return last


def _train_cli(tmp_path: pathlib.Path, method: str = "instance_recognition", **settings) -> int:
    """`hf-ssl train` of 2 tiny steps, in this process; `settings` override the fields."""
    settings = {"image_size": 16, "max_steps": 2, "per_device_train_batch_size": 16, **settings}
    return cli_main(["train", *tiny_training_args(method, {}, tmp_path / "out", **settings)])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Instance Recognition at initialisation, saved with its image processor: on the tiny 2-D ResNet (images)
    and on a tiny 3-D ResNet (videos)."""
    cls = PRETRAINING_CLASSES["instance_recognition"]
    folders = {}
    for kind, backbone in (("image", TINY_BACKBONE), ("video", TINY_R3D)):
        folder = folders[kind] = tmp_path_factory.mktemp(f"{kind}-ckpt")
        cls(cls.config_class(backbone_config=backbone, num_examples=8, embedding_dim=8)).save_pretrained(folder)
        make_image_processor(16).save_pretrained(folder)
    return folders


@pytest.fixture
def no_feature_pass(monkeypatch):
    """Fail the test if `hf-ssl evaluate` starts featurising (the checks must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("featurised before the inputs were checked")

    monkeypatch.setattr("hf_ssl.evaluation.suite.frozen_features", refuse)


def _evaluate_cli(model: pathlib.Path | str, dataset: pathlib.Path | str, tmp_path, *argv: str) -> int:
    return cli_main(
        ["evaluate", "--model", str(model), "--dataset_name", str(dataset), "--protocols", "knn", "--num_workers", "0"]
        + ["--output_file", str(tmp_path / "results.json"), "--disable_tqdm", "true", *argv]
    )


# -- training: found before the output folder is touched or a worker starts --
def test_missing_image_column_with_two_workers_names_the_columns(tmp_path, capsys):
    # the Hub's uoft-cs/cifar10 calls it `img`: a recipe for it, run on a dataset that calls it `image`
    line = _error_line(capsys, _train_cli(tmp_path, image_column="img", dataloader_num_workers=2))
    assert "image_column='img'" in line and "['image', 'label']" in line and "set image_column to 'image'" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eval_split": "validation"}, "no split 'validation' (eval_split); its splits are ['train', 'test']"),
        ({"label_column": "fine_label"}, "label_column='fine_label'"),
        ({"per_device_train_batch_size": 4000, "dataloader_num_workers": 2}, "per_device_train_batch_size=4000"),
        ({"push_to_hub": True, "hub_model_id": "me/model"}, "HF_TOKEN or run `hf auth login`"),
    ],
    ids=["missing eval split", "missing label column", "batch larger than the data", "push without a token"],
)
def test_bad_training_inputs_fail_before_any_work(tmp_path, capsys, monkeypatch, settings, message):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    assert message in _error_line(capsys, _train_cli(tmp_path, **settings))
    assert not (tmp_path / "out").exists()


def test_image_backbone_on_a_video_dataset_is_refused(tmp_path, capsys):
    line = _error_line(capsys, _train_cli(tmp_path, dataset_name=VIDEO_SAMPLE, eval_split="validation"))
    assert "holds videos" in line and "'resnet' backbone takes image input" in line
    assert not (tmp_path / "out").exists()


def test_continuing_a_checkpoint_as_another_method_is_refused(checkpoints, tmp_path, capsys):
    code = _train_cli(tmp_path, method="moco", model_name_or_path=checkpoints["image"])
    line = _error_line(capsys, code)
    assert "'instance_recognition' checkpoint but method='moco'" in line


@pytest.mark.parametrize(
    ("name", "offline", "message"),
    [
        ("tester/cifar10-smaple", True, "no local folder tester/cifar10-smaple and the Hub is offline"),
        ("tester/cifar10-smaple", False, "no local folder tester/cifar10-smaple and the Hub (http://127.0.0.1:9)"),
        ("../shared/data/cifar1O", False, "no such local folder or file, and not a Hub id"),
    ],
    ids=["offline", "unreachable", "not a Hub id"],
)
def test_dataset_path_typo_is_named_without_waiting_for_the_hub(tmp_path, capsys, monkeypatch, name, offline, message):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", offline)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused
    line = _error_line(capsys, _train_cli(tmp_path, dataset_name=name))
    assert f"dataset_name={name!r}: {message}" in line


def test_backbone_config_typo_is_refused_with_the_close_field(tmp_path):
    backbone = json.dumps({**TINY_BACKBONE, "depthz": [2, 2]})
    with pytest.raises(RecipeError, match=r"backbone_config\.depthz .*ResNetConfig.*did you mean 'depths'\?"):
        parse_args(tiny_training_args("instance_recognition", {}, tmp_path, backbone_config=backbone))


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: simclr\nbackbone_config: {model_type: resnet, depths: [1, 1]\nimage_size: 16\n")
    with pytest.raises(RecipeError) as error:
        parse_args([str(recipe)])
    assert str(error.value) == (
        f"recipe {recipe} is not valid YAML: line 3, column 1: expected ',' or '}}', but got '<scalar>' "
        "(while parsing a flow mapping at line 2, column 18)"
    )


# -- hf-ssl evaluate: found before the model is loaded or a split featurised --
def test_evaluate_a_missing_folder_is_not_a_hub_id(tmp_path, capsys):
    line = _error_line(capsys, _evaluate_cli("/nonexistent", SAMPLE, tmp_path), "evaluate")
    assert "model='/nonexistent': no such local folder or file, and not a Hub id" in line


def test_evaluate_a_missing_split_before_featurising(checkpoints, tmp_path, capsys, no_feature_pass):
    code = _evaluate_cli(checkpoints["image"], SAMPLE, tmp_path, "--eval_split", "validation")
    assert "no split 'validation' (eval_split)" in _error_line(capsys, code, "evaluate")


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ("image", VIDEO_SAMPLE, "holds videos but the model's 'resnet' backbone takes image input"),
        ("video", SAMPLE, "holds images but the model's 'r3d' backbone takes video input"),
    ],
)
def test_evaluate_on_the_other_modality_is_refused(
    checkpoints, tmp_path, capsys, no_feature_pass, model, dataset, message
):
    code = _evaluate_cli(
        checkpoints[model], dataset, tmp_path, "--eval_split", "validation" if model == "image" else "test"
    )
    assert message in _error_line(capsys, code, "evaluate")


def test_push_without_a_token_says_where_tokens_come_from(tmp_path, monkeypatch):
    from hf_ssl.hub.push import push_to_hub

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match=r"set HF_TOKEN or run `hf auth login`"):
        push_to_hub(tmp_path, "me/model")
    assert not (tmp_path / "README.md").exists()  # nothing rendered before the check


# -- corrupt samples: one count over training and every feature pass --
def _image_folder(root: pathlib.Path) -> list[pathlib.Path]:
    """train/{a,b} and test/{a,b} of tiny PNGs, one corrupt file in each split."""
    corrupt = []
    for split, count in (("train", 12), ("test", 6)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                buffer = io.BytesIO()
                PIL.Image.new("RGB", (16, 16), (i * 20, 100 if label == "a" else 200, 50)).save(buffer, "PNG")
                (root / split / label / f"{i:02d}.png").write_bytes(buffer.getvalue())
        corrupt.append(root / split / "a" / "05-corrupt.png")
        corrupt[-1].write_bytes(b"\x89PNG not really")
    return corrupt


def test_corrupt_samples_are_counted_once_over_training_and_every_feature_pass(checkpoints, tmp_path, capsys):
    train_file, test_file = _image_folder(tmp_path / "data")
    args = tiny_training_args(
        "instance_recognition",
        {"embedding_dim": 8},
        tmp_path / "out",
        dataset_name=tmp_path / "data",
        image_size=16,
        max_steps=4,  # 3 epochs of 8-image batches over 24 good images: the corrupt one is met 3 times, and once
        per_device_train_batch_size=8,  # in the kNN bank's pass
        shuffle_buffer=0,
        save_steps=0,
        knn_k=5,
        eval_pixel_baseline=False,
    )
    results = train(*parse_args(args))
    assert results.corrupt_samples_skipped == 2  # two files, however many passes skipped them
    names = results.corrupt_samples_examples
    assert any(str(train_file) in name for name in names) and any(str(test_file) in name for name in names)
    printed = capsys.readouterr().out
    assert "skipped 2 corrupt sample(s)" in printed and str(train_file) in printed

    evaluation = _evaluate_cli(
        tmp_path / "out", tmp_path / "data", tmp_path, "--knn_k", "5", "--pixel_baseline", "false"
    )
    assert evaluation == 0
    evaluated = json.loads((tmp_path / "results.json").read_text())
    assert evaluated["corrupt_samples_skipped"] == 2
