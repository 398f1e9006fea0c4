"""`hf-ssl convert`: a checkpoint saved in each official layout from a reference module written from the official
architecture (tests/convert_references.py) converts into an hf_ssl checkpoint whose features (and head outputs)
equal the reference's to 1e-5, loaded back with the Auto classes; pickled objects are refused."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

import hf_ssl  # noqa: F401  (registers the Auto classes)
from hf_ssl.cli import main
from hf_ssl.convert import convert_checkpoint

from .convert_references import (
    C3D,
    BasicBlock,
    DeepClusterAlexNet,
    MoCo,
    ResNet,
    SwAVResNet,
    data_parallel,
    randomize,
)

ATOL = 1e-5
RTOL = 1e-6  # C3D reads raw 0-255 pixels: its fc7 is ~100, where float32 rounding alone is ~1e-5


def _convert(tmp_path, source: str, checkpoint: dict):
    path = tmp_path / f"{source}.pth"
    torch.save(checkpoint, path)
    convert_checkpoint(source, path, tmp_path / "hf")
    return tmp_path / "hf"


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def test_npid(tmp_path, images):
    reference = ResNet(block=BasicBlock, width=8)
    reference.fc = nn.Linear(reference.num_features, 8)
    randomize(reference)
    out = _convert(
        tmp_path, "npid", {"epoch": 200, "arch": "resnet18", "state_dict": data_parallel(reference.state_dict())}
    )
    model = AutoModel.from_pretrained(out).eval()
    features = model(images)
    _close(features.pooler_output, reference.features(images))
    _close(features.embeddings, nn.functional.normalize(reference.fc(reference.features(images)), dim=1))
    card = (out / "README.md").read_text()
    assert "lemniscate.pytorch" in card and "memory bank" in card


@pytest.mark.parametrize("version", [1, 2])
@torch.no_grad()
def test_moco(tmp_path, images, version):
    reference = randomize(MoCo(width=8, mlp=version == 2))
    state = {"epoch": 200, "arch": "resnet50", "state_dict": data_parallel(reference.state_dict()), "optimizer": {}}
    out = _convert(tmp_path, "moco", state)
    model = AutoModelForPreTraining.from_pretrained(out).eval()
    assert model.config.queue_size == 32 and model.config.projection_layers == version
    pooled = model.base_model(images).pooler_output
    _close(pooled, reference.encoder_q.features(images))
    _close(model.projector(pooled), reference.encoder_q.fc(reference.encoder_q.features(images)))
    keys = model.key_encoder(images[None])[0]
    _close(keys, reference.encoder_k.fc(reference.encoder_k.features(images)))
    assert "cc-by-nc-4.0" in (out / "README.md").read_text()


@torch.no_grad()
def test_swav(tmp_path, images):
    reference = randomize(SwAVResNet(width=8))
    out = _convert(tmp_path, "swav", data_parallel(reference.state_dict()))  # a bare state dict, as released
    model = AutoModelForPreTraining.from_pretrained(out).eval()
    pooled = model.base_model(images).pooler_output
    _close(pooled, reference.features(images))
    embeddings, scores = reference(images)
    ours = nn.functional.normalize(model.projector(pooled), dim=1)
    _close(ours, embeddings)
    _close(model.prototypes(ours), scores)


@pytest.mark.parametrize("source", ["simclr", "byol"])
@torch.no_grad()
def test_torchvision_resnet_ports(tmp_path, images, source):
    reference = ResNet(width=8)
    reference.fc = nn.Linear(reference.num_features, 10)  # the converted release's classification head: left out
    randomize(reference)
    out = _convert(tmp_path, source, {"state_dict": reference.state_dict()})
    _close(AutoModel.from_pretrained(out).eval()(images).pooler_output, reference.features(images))
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["do_normalize"] is (source == "byol")  # SimCLR's TF models read [0, 1] pixels


@torch.no_grad()
def test_deepcluster(tmp_path):
    reference = randomize(DeepClusterAlexNet())
    state = {"epoch": 500, "arch": "alexnet", "state_dict": reference.state_dict()}
    state["state_dict"] = {k.replace("features.", "features.module."): v for k, v in state["state_dict"].items()}
    out = _convert(tmp_path, "deepcluster", state)
    model = AutoModelForPreTraining.from_pretrained(out).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    fc7, clusters = reference(images)
    pooled = model.base_model(images).pooler_output
    _close(pooled, fc7)
    _close(model.classifier(pooled), clusters)
    assert "CC BY-NC" in (out / "README.md").read_text()


@torch.no_grad()
def test_c3d(tmp_path):
    reference = randomize(C3D())
    out = _convert(tmp_path, "c3d", reference.state_dict())  # c3d.pickle: a bare state dict
    model = AutoModel.from_pretrained(out).eval()
    clips = torch.rand(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(3)) * 255
    fc7, _ = reference(clips)
    _close(model(clips.permute(0, 2, 1, 3, 4)).pooler_output, fc7)  # hf_ssl takes (batch, frames, C, H, W)
    assert (out / "video_preprocessor_config.json").is_file()


class Pickled(nn.Module):
    """Stands for lemniscate's NCEAverage object, pickled whole into NPID's checkpoints."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "npid.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "lemniscate": Pickled()}, path)
    with pytest.raises(ValueError, match="pickled Python objects.*Pickled.*weights_only"):
        convert_checkpoint("npid", path, tmp_path / "out")
    assert main(["convert", "--from", "npid", str(path), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_cli_converts_and_refuses_a_foreign_layout(tmp_path, capsys):
    path = tmp_path / "c3d.pickle"
    torch.save(randomize(C3D(c=1, fc=4)).state_dict(), path)
    assert main(["convert", "--from", "c3d", str(path), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["convert", "--from", "moco", str(path), str(tmp_path / "moco")]) == 2
    assert "hf-ssl convert: error" in capsys.readouterr().err
