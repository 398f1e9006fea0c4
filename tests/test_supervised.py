"""The supervised method (how C3D was trained, Tran et al. 2015): its loss is cross-entropy on the label column, the
training loop hands the batch's labels to it, a tiny C3D trains on real clips and loads back with the Auto
classes, and a bad label column or label is one line naming what to set."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModel, AutoModelForVideoClassification

from hf_ssl.data import load_stream, with_stable_ids
from hf_ssl.data.stream import stream_shards
from hf_ssl.hub.card import render_model_card
from hf_ssl.models import SupervisedConfig, SupervisedForPreTraining, SupervisedModel
from hf_ssl.training import parse_args, train

from .conftest import TINY_BACKBONE, VIDEO_SAMPLE, tiny_training_args

# C3D at 1/32 of the paper's widths (2-16 channels, fc6/fc7 of 16) on 4-frame clips of 32 px
TINY_C3D = {
    "model_type": "c3d",
    "width_multiplier": 0.03125,
    "fc_dim": 512,
    "pool_size": [1, 1, 1],
    "batch_norm": True,
    "temporal_kernel_depths": [3, 3, 5, 5, 7],
}


def test_the_loss_is_cross_entropy_written_by_hand() -> None:
    """loss = mean_i [log sum_c exp(z_ic) - z_i,y_i] over the classifier's logits z, in float64 numpy."""
    torch.manual_seed(0)
    model = SupervisedForPreTraining(SupervisedConfig(backbone_config=TINY_BACKBONE, num_labels=5))
    pixel_values, labels = torch.randn(6, 3, 16, 16), torch.tensor([0, 4, 2, 2, 1, 3])
    out = model(pixel_values=pixel_values, labels=labels)
    features = model.base_model(pixel_values).pooler_output  # dropout 0: the logits are a function of these
    logits = (features @ model.classification_head.weight.T + model.classification_head.bias).double().detach().numpy()
    assert np.allclose(out.logits.detach().numpy(), logits, atol=1e-6)
    log_softmax = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    expected = -log_softmax[np.arange(6), labels.numpy()].mean()
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-6) and expected > 0
    out.loss.backward()
    assert model.classification_head.weight.grad.abs().sum() > 0


def test_bad_labels_are_named() -> None:
    model = SupervisedForPreTraining(SupervisedConfig(backbone_config=TINY_BACKBONE, num_labels=3))
    pixel_values = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"^label 5 is outside \[0, num_labels=3\): set method_config.num_labels"):
        model(pixel_values=pixel_values, labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="needs `labels`: set label_column"):
        model(pixel_values=pixel_values)
    with pytest.raises(ValueError, match=r"num_labels must be >= 2"):
        SupervisedConfig(backbone_config=TINY_BACKBONE, num_labels=1)


def _recipe(tmp_path: Path, **overrides) -> list[str]:
    recipe = {
        "method": "supervised",
        "method_config": {"num_labels": 10, "classifier_dropout": 0.5},
        "backbone_config": TINY_C3D,
        "dataset_name": str(VIDEO_SAMPLE),
        "eval_split": "validation",
        "image_size": 32,
        "num_frames": 4,
        "frame_stride": 2,
        "eval_num_clips": 1,
        "shuffle_buffer": 16,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "max_steps": 3,
        "learning_rate": 0.05,
        "optim": "sgd",
        "momentum": 0.9,
        "lr_scheduler_type": "step",
        "lr_decay_epochs": [1],
        "warmup_epochs": 0,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_steps": 0,
        "knn_k": [5],
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(tmp_path / "out"),
        **overrides,
    }
    path = tmp_path / "supervised.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return [str(path)]


def test_a_tiny_c3d_trains_on_the_clips_labels_through_the_loop_and_loads_back(tmp_path, monkeypatch) -> None:
    """The real loop on real clips: every batch's labels reach the model and are the videos' classes; the
    checkpoint loads as the backbone (`AutoModel`) and with its trained fc8 (`AutoModelForVideoClassification`),
    and its card names C3D's fc6 + SVM protocol and kernel depths."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = SupervisedForPreTraining.forward

    def spy(self, pixel_values, labels=None, **kwargs):
        seen.append((kwargs["ids"].clone(), labels.clone()))
        return forward(self, pixel_values, labels=labels, **kwargs)

    monkeypatch.setattr(SupervisedForPreTraining, "forward", spy)
    results = train(*parse_args(_recipe(tmp_path)))
    monkeypatch.undo()
    output_dir = tmp_path / "out"
    assert 0 <= results.get(protocol="knn", k=5, metric="top1_accuracy").value <= 100

    table = stream_shards(with_stable_ids(load_stream(str(VIDEO_SAMPLE), "train"))[0])  # the rows, undecoded
    true = {row["id"]: row["label"] for shard in range(len(table.rows)) for row in table.read(shard)}
    assert len(seen) == 3 and all(len(ids) == 8 for ids, _ in seen)
    assert all(labels.tolist() == [true[int(i)] for i in ids] for ids, labels in seen)
    assert len({label for _, labels in seen for label in labels.tolist()}) > 1

    trained = SupervisedForPreTraining.from_pretrained(output_dir).eval()
    clips = torch.randn(2, 4, 3, 32, 32)
    features = AutoModel.from_pretrained(output_dir)
    assert isinstance(features, SupervisedModel)
    assert torch.allclose(features(clips).pooler_output, trained.base_model(clips).pooler_output)
    classifier = AutoModelForVideoClassification.from_pretrained(output_dir)
    assert torch.equal(classifier.classification_head.weight, trained.classification_head.weight)
    assert torch.allclose(classifier(clips).logits, trained(clips, labels=torch.tensor([0, 1])).logits, atol=1e-6)

    card = render_model_card(output_dir).text
    assert "trained with labels by **supervised classification**" in card
    assert "`[3, 3, 5, 5, 7]`" in card and "`video_svm`" in card and "not 16 at 112 px" in card


def test_images_train_through_the_loop_too(tmp_path) -> None:
    """The shipped CIFAR-10 sample, tiny ResNet: the label column reaches the model and the loss falls from ln 10."""
    argv = tiny_training_args(
        "supervised",
        {"num_labels": 10},
        tmp_path / "out",
        image_size=16,
        max_steps=6,
        per_device_train_batch_size=64,
        shuffle_buffer=500,
        max_eval_bank_samples=200,
        logging_steps=1,
        learning_rate=0.1,
        warmup_epochs=0,
        save_steps=0,
    )
    train(*parse_args(argv))
    history = json.loads((tmp_path / "out" / "training_history.json").read_text())
    losses = [record["loss"] for record in history if "loss" in record]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)
    assert abs(losses[0] - math.log(10)) < 0.5 and min(losses[3:]) < losses[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"label_column": "classes"}, r"^label_column='classes': dataset .* split 'train' has no such column"),
        ({"label_column": None}, r"^method='supervised' trains on labels: set label_column"),
    ],
)
def test_a_bad_label_column_is_one_line(tmp_path, override, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        train(*parse_args(_recipe(tmp_path, **override)))
    assert "\n" not in str(error.value)
