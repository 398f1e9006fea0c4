"""DeepCluster: the model pair, uniform sampling over clusters on a stream, and the epoch loop end to end."""

import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.data import BatchStream, load_stream, uniform_cluster_weights, with_stable_ids
from hf_ssl.models import DeepClusterConfig, DeepClusterForPreTraining, DeepClusterModel
from hf_ssl.training import parse_args, train
from hf_ssl.training.loop import BUFFERS_FILE

from .conftest import SAMPLE, TINY_BACKBONE
from .test_data import RawRows, consume
from .test_instance_recognition import assert_loads_without_hf_ssl

BACKBONES = {
    "resnet": TINY_BACKBONE,
    "alexnet": {"model_type": "alexnet", "width_multiplier": 0.0625, "fc_dim": 256, "pool_size": 1},
    "vgg": {"model_type": "vgg", "width_multiplier": 0.0625, "fc_dim": 256, "pool_size": 1},
}


def build(backbone: str = "resnet", num_clusters: int = 5, num_examples: int = 20) -> DeepClusterForPreTraining:
    torch.manual_seed(0)
    config = DeepClusterConfig(
        backbone_config=BACKBONES[backbone], num_clusters=num_clusters, num_examples=num_examples
    )
    return DeepClusterForPreTraining(config)


def images(seed: int, batch: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_loss_is_cross_entropy_on_the_pseudo_labels(backbone: str) -> None:
    model = build(backbone).eval()  # no dropout: the two forwards below must agree
    model.set_pseudo_labels(torch.arange(20) % 5)
    ids = torch.tensor([3, 7, 11, 19])
    out = model(images(0), ids)
    features = model.deep_cluster(images(0)).embeddings
    expected = nn.functional.cross_entropy(features @ model.classifier.weight.t() + model.classifier.bias, ids % 5)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.deep_cluster.parameters() if p.requires_grad)


def test_sobel_input_is_on_for_the_alexnet_pair() -> None:
    model = build("alexnet")
    assert model.deep_cluster.backbone.sobel is not None  # DeepCluster's AlexNet reads grayscale + Sobel gradients


def test_examples_without_pseudo_labels_are_a_clear_error() -> None:
    model = build()
    with pytest.raises(ValueError, match="example id 3 has no pseudo-label"):
        model(images(0), torch.tensor([3, 4, 5, 6]))
    model.set_pseudo_labels(torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="num_examples=20"):
        model(images(0), torch.tensor([3, 4, 5, 20]))
    with pytest.raises(ValueError, match=r"\[-1, 5\)"):
        model.set_pseudo_labels(torch.full((20,), 5))


def test_classifier_reset_is_seeded_and_has_the_configured_scale() -> None:
    a, b = build(num_clusters=50, num_examples=100), build(num_clusters=50, num_examples=100)
    a.reset_classifier(seed=3)
    b.reset_classifier(seed=3)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    before = a.classifier.weight.clone()
    a.reset_classifier(seed=4)
    assert not torch.equal(a.classifier.weight, before)
    assert a.classifier.weight.std().item() == pytest.approx(0.01, rel=0.15)
    assert torch.equal(a.classifier.bias, torch.zeros(50))


def test_checkpoint_holds_weights_only_and_loads_with_both_auto_classes(tmp_path: pathlib.Path) -> None:
    model = build()
    model.set_pseudo_labels(torch.arange(20) % 5)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "pseudo_labels" not in saved and "classifier.weight" in saved
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded) is DeepClusterForPreTraining
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items() if k != "pseudo_labels")
    assert torch.equal(loaded.pseudo_labels, torch.full((20,), -1))  # training state is not published
    features = AutoModel.from_pretrained(tmp_path)
    assert type(features) is DeepClusterModel
    model.eval(), features.eval()
    assert torch.equal(features(images(1)).embeddings, model.deep_cluster(images(1)).embeddings)


def test_trust_remote_code_loads_without_hf_ssl(tmp_path: pathlib.Path) -> None:
    assert_loads_without_hf_ssl(build("alexnet"), tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_clusters": 0}, "num_clusters"), ({"pca_dim": 0}, "pca_dim"), ({"num_clusters": 30}, "num_clusters")],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DeepClusterConfig(backbone_config=TINY_BACKBONE, num_examples=20, **kwargs)


# -- uniform sampling over clusters on a stream --


def skewed_labels(num_examples: int) -> np.ndarray:
    """10 clusters with sizes falling geometrically, as early k-means clusters often are (1538 ... 87 here)."""
    rng = np.random.default_rng(0)
    return np.minimum(rng.geometric(0.3, num_examples) - 1, 9)


def test_uniform_cluster_weights_give_every_cluster_the_same_mass() -> None:
    labels = np.array([0, 0, 0, 1, -1, 2, 2])
    weights = uniform_cluster_weights(labels)
    assert weights[4] == 0  # no label: never sampled
    assert weights.sum() == pytest.approx(6)  # one epoch keeps its length
    assert [weights[labels == c].sum() for c in range(3)] == pytest.approx([2, 2, 2])
    with pytest.raises(ValueError, match="no example has a cluster label"):
        uniform_cluster_weights(np.full(3, -1))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_consumed_batches_are_near_uniform_over_clusters(num_workers: int) -> None:
    dataset, num_examples = with_stable_ids(load_stream(str(SAMPLE), "train"))
    labels = skewed_labels(num_examples)
    batches_per_epoch = num_examples // 100 // max(num_workers, 1)
    stream = BatchStream(
        dataset, 100, RawRows(), num_workers=num_workers, seed=0, shuffle_buffer=1000,
        batches_per_epoch=batches_per_epoch,
    )
    stream.sample_weights = uniform_cluster_weights(labels)
    ids = torch.cat([b["ids"] for b in consume(stream, num_workers, batches_per_epoch * max(num_workers, 1))]).numpy()

    assert len(ids) == num_examples  # one epoch keeps its length
    natural = np.bincount(labels, minlength=10) / num_examples
    consumed = np.bincount(labels[ids], minlength=10) / len(ids)
    assert natural.max() / natural.min() > 15  # the clusters really are skewed ...
    assert np.abs(consumed - 0.1).max() < 0.02  # ... and the batches are not
    # small clusters are covered by repeating their examples, large ones subsampled
    assert len(np.unique(ids)) < 0.8 * num_examples


def test_resampled_stream_resumes_bit_identically(small_sample: pathlib.Path) -> None:
    dataset, num_examples = with_stable_ids(load_stream(str(small_sample), "train"))

    def make() -> BatchStream:
        stream = BatchStream(dataset, 16, RawRows(), num_workers=2, seed=1, shuffle_buffer=64, batches_per_epoch=6)
        stream.sample_weights = uniform_cluster_weights(skewed_labels(num_examples))
        return stream

    expected = [b["ids"] for b in consume(make(), 2, 16)]
    first = make()
    got = [b["ids"] for b in consume(first, 2, 5)]
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [b["ids"] for b in consume(resumed, 2, 11)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


# -- the epoch loop end to end --


def dc_recipe(tiny_recipe, small_sample: pathlib.Path) -> pathlib.Path:
    """The tiny recipe as DeepCluster: 400 examples / (2 workers x 32) = 12 steps per epoch, two epochs."""
    return tiny_recipe(
        method="deep_cluster",
        method_config={"num_clusters": 10, "pca_dim": 8},
        dataset_name=str(small_sample),
        color_jitter=0.0,
        grayscale_p=0.0,
        shuffle_buffer=200,
        per_device_eval_batch_size=200,
        max_steps=24,
        dataloader_num_workers=2,
        save_steps=6,
        save_total_limit=None,
    )


def _history(output_dir: pathlib.Path) -> list[dict]:
    return json.loads((output_dir / "training_history.json").read_text())


def test_training_reclusters_every_epoch_logs_the_curves_and_resumes_exactly(tmp_path, tiny_recipe, small_sample) -> None:
    recipe = dc_recipe(tiny_recipe, small_sample)
    full = tmp_path / "full"
    train(*parse_args([str(recipe), "--output_dir", str(full)]))
    history = _history(full)
    clustering = [r for r in history if "clustering_seconds" in r]
    assert [r["epoch"] for r in clustering] == [0, 1] and [r["step"] for r in clustering] == [0, 12]
    for record in clustering:
        assert record["empty_clusters"] == 0
        assert 0 <= record["nmi_true_labels"] <= 1
    assert "nmi_previous_epoch" not in clustering[0] and 0 < clustering[1]["nmi_previous_epoch"] <= 1
    labels = load_file(full / "checkpoint-24" / BUFFERS_FILE)["pseudo_labels"]
    assert labels.shape == (400,) and labels.min() >= 0 and labels.max() < 10

    # resume at an epoch boundary (the clustering is redone) and in the middle of an epoch (it is restored)
    losses = {r["step"]: r["loss"] for r in history if "loss" in r}
    weights = load_file(full / "model.safetensors")
    for step in (12, 18):
        resumed = tmp_path / f"resumed-{step}"
        train(*parse_args([str(recipe), "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / f"checkpoint-{step}")]))
        again = {r["step"]: r["loss"] for r in _history(resumed) if "loss" in r}
        assert [again[s] for s in range(step + 1, 25)] == [losses[s] for s in range(step + 1, 25)]
        resumed_weights = load_file(resumed / "model.safetensors")
        assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)


@pytest.mark.slow
def test_two_processes_cluster_once_and_agree_with_one_process(tmp_path, tiny_recipe, small_sample) -> None:
    """Two real processes (gloo) extract features of their halves, gather them, cluster once and broadcast: the
    pseudo-labels equal those of a one-process run from the same initialisation."""
    import os
    import shutil
    import subprocess
    import sys

    from .conftest import REPO

    recipe = dc_recipe(tiny_recipe, small_sample)
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29518",
               str(REPO / "train.py"), str(recipe), "--output_dir", str(two), "--max_steps", "2", "--save_steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one = tmp_path / "one"
    train(*parse_args([str(recipe), "--output_dir", str(one), "--max_steps", "2", "--save_steps", "2"]))

    labels = [load_file(out / "checkpoint-2" / BUFFERS_FILE)["pseudo_labels"] for out in (one, two)]
    assert labels[0].min() >= 0 and torch.equal(labels[0], labels[1])
    history = [json.loads((out / "training_history.json").read_text())[0] for out in (one, two)]
    assert history[0]["nmi_true_labels"] == pytest.approx(history[1]["nmi_true_labels"])
