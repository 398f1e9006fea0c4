"""Local Aggregation: the loss against a direct reference computation, the warm start, the model pair, and the
epoch loop (clustering the memory bank) end to end."""

import json
import math
import pathlib

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import LocalAggregationConfig, LocalAggregationForPreTraining, LocalAggregationModel
from hf_ssl.run_layout import BUFFERS_FILE
from hf_ssl.training import parse_args, train

from .conftest import TINY_BACKBONE
from .test_instance_recognition import assert_loads_without_hf_ssl

NUM_EXAMPLES, BATCH, DIM = 40, 6, 16


def build(
    background_neighbors: int = 12, num_clusterings: int = 3, num_clusters: int = 5
) -> LocalAggregationForPreTraining:
    torch.manual_seed(0)
    config = LocalAggregationConfig(
        backbone_config=TINY_BACKBONE,
        embedding_dim=DIM,
        num_examples=NUM_EXAMPLES,
        num_negatives=0,
        temperature=0.07,
        background_neighbors=background_neighbors,
        num_clusterings=num_clusterings,
        num_clusters=num_clusters,
    )
    return LocalAggregationForPreTraining(config)


def images(seed: int) -> torch.Tensor:
    return torch.randn(BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def reference_loss(embeddings, bank, ids, labels, k: int, tau: float) -> float:
    """LA eq. 3 written out example by example, in float64."""
    total = 0.0
    for f, i in zip(embeddings.double(), ids.tolist()):
        similarities = bank.double() @ f
        order = sorted(range(len(bank)), key=lambda j: (j != i, -similarities[j].item()))  # i itself always counts
        background = order[:k]
        close = [j for j in background if any(labels[h, j] == labels[h, i] for h in range(labels.shape[0]))]
        p_close = sum(math.exp(similarities[j].item() / tau) for j in close)
        p_background = sum(math.exp(similarities[j].item() / tau) for j in background)
        total += -math.log(p_close / p_background)
    return total / len(ids)


@pytest.mark.parametrize("k", [12, 40, 100], ids=["K<N", "K=N", "K>N"])
def test_loss_equals_the_reference_computation(k: int) -> None:
    model = build(background_neighbors=k)
    labels = torch.randint(0, 5, (3, NUM_EXAMPLES), generator=torch.Generator().manual_seed(1))
    model.set_cluster_labels(labels)
    ids = torch.tensor([0, 5, 9, 17, 22, 39])
    bank = model.memory_bank.vectors.clone()
    out = model(images(0), ids)
    expected = reference_loss(out.embeddings.detach(), bank, ids, labels, k, 0.07)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert model.local_aggregation.projection.weight.grad.abs().sum() > 0


def test_one_cluster_for_everything_gives_zero_loss_and_singletons_give_instance_discrimination() -> None:
    model = build(background_neighbors=NUM_EXAMPLES, num_clusters=NUM_EXAMPLES)
    ids = torch.arange(BATCH)
    model.set_cluster_labels(torch.zeros(3, NUM_EXAMPLES, dtype=torch.long))
    assert model(images(0), ids).loss.item() == pytest.approx(0.0, abs=1e-6)
    # every example alone in its cluster, B_i = the whole bank: the non-parametric softmax of Instance Recognition
    model.set_cluster_labels(torch.arange(NUM_EXAMPLES).repeat(3, 1))
    bank = model.memory_bank.vectors.clone()
    out = model(images(0), ids)
    expected = nn.functional.cross_entropy(out.embeddings.detach() @ bank.t() / 0.07, ids)
    torch.testing.assert_close(out.loss.detach(), expected)


def test_before_the_first_clustering_the_loss_is_instance_recognition() -> None:
    model = build()
    assert not model.is_clustered
    bank = model.memory_bank.vectors.clone()
    out = model(images(0), torch.arange(BATCH))
    expected = nn.functional.cross_entropy(out.embeddings.detach() @ bank.t() / 0.07, torch.arange(BATCH))
    torch.testing.assert_close(out.loss.detach(), expected)
    # the bank takes the proximal update either way
    assert not torch.equal(model.memory_bank.vectors[:BATCH], bank[:BATCH])


def test_sgd_steps_on_a_fixed_batch_reduce_the_loss() -> None:
    model = build()
    model.set_cluster_labels(torch.randint(0, 5, (3, NUM_EXAMPLES), generator=torch.Generator().manual_seed(2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = model(images(0), torch.arange(BATCH)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_bad_cluster_labels_are_a_clear_error() -> None:
    model = build()
    with pytest.raises(ValueError, match=r"shape \(2, 40\)"):
        model.set_cluster_labels(torch.zeros(2, NUM_EXAMPLES, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model.set_cluster_labels(torch.full((3, NUM_EXAMPLES), 5))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"background_neighbors": 0}, "background_neighbors"),
        ({"num_clusterings": 0}, "num_clusterings"),
        ({"num_clusters": 41}, "num_clusters"),
        ({"instance_recognition_epochs": -1}, "instance_recognition_epochs"),
        ({"temperature": 0}, "temperature"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LocalAggregationConfig(backbone_config=TINY_BACKBONE, num_examples=NUM_EXAMPLES, **kwargs)


def test_checkpoint_holds_weights_only_and_loads_with_both_auto_classes(tmp_path: pathlib.Path) -> None:
    model = build()
    model.set_cluster_labels(torch.zeros(3, NUM_EXAMPLES, dtype=torch.long))
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not {"cluster_labels", "memory_bank.vectors", "normalizer"} & set(saved)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded) is LocalAggregationForPreTraining and not loaded.is_clustered
    features = AutoModel.from_pretrained(tmp_path)
    assert type(features) is LocalAggregationModel
    model.eval(), features.eval()
    assert torch.equal(features(images(1)).embeddings, model.local_aggregation(images(1)).embeddings)


def test_trust_remote_code_loads_without_hf_ssl(tmp_path: pathlib.Path) -> None:
    """modeling_local_aggregation imports modeling_instance_recognition: both travel with the weights."""
    assert_loads_without_hf_ssl(build(), tmp_path)


def test_training_warm_starts_then_clusters_the_bank_each_epoch_and_resumes_exactly(
    tmp_path, tiny_recipe, small_sample
) -> None:
    path = tiny_recipe(
        method="local_aggregation",
        method_config={
            "embedding_dim": DIM,
            "num_negatives": 0,
            "temperature": 0.1,
            "background_neighbors": 100,
            "num_clusterings": 2,
            "num_clusters": 20,
            "instance_recognition_epochs": 1,
        },
        dataset_name=str(small_sample),
        shuffle_buffer=200,
        per_device_eval_batch_size=200,
        max_steps=36,  # 12 steps per epoch: one warm-start epoch, two LA epochs
        dataloader_num_workers=2,
        save_steps=30,
    )
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(*parse_args([str(path), "--output_dir", str(full)]))
    history = json.loads((full / "training_history.json").read_text())
    assert [(r["epoch"], r["empty_clusters"]) for r in history if "clustering_seconds" in r] == [(1, 0), (2, 0)]
    buffers = load_file(full / "checkpoint-30" / BUFFERS_FILE)
    assert buffers["cluster_labels"].shape == (2, 400)
    assert buffers["cluster_labels"].min() >= 0 and buffers["cluster_labels"].max() < 20
    assert not torch.equal(buffers["cluster_labels"][0], buffers["cluster_labels"][1])  # independent clusterings

    train(
        *parse_args([str(path), "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-30")])
    )
    losses = [
        {r["step"]: r["loss"] for r in json.loads((d / "training_history.json").read_text()) if "loss" in r}
        for d in (full, resumed)
    ]
    assert [losses[1][s] for s in range(31, 37)] == [losses[0][s] for s in range(31, 37)]
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
