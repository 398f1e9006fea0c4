"""DeepCluster: the model pair, uniform sampling over clusters on a stream, and the epoch loop end to end."""

import json
import pathlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.clustering import KMeansResult
from hf_ssl.data import BatchStream, load_stream, uniform_cluster_weights, with_stable_ids
from hf_ssl.data.stream import resample_counts, resample_passes
from hf_ssl.evaluation.transforms import ClipAveragedFeatures
from hf_ssl.models import DeepClusterConfig, DeepClusterForPreTraining, DeepClusterModel
from hf_ssl.run_layout import BUFFERS_FILE
from hf_ssl.training import epoch_hooks, parse_args, train
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.optim import create_optimizer, create_scheduler

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


def reference_fc7(model: DeepClusterForPreTraining, pixel_values: torch.Tensor) -> torch.Tensor:
    """The official feature pass, written out (eval mode, float64): the conv trunk's output, average-pooled and
    flattened, then fc6 -> ReLU -> fc7 with the classifier's last ReLU removed (main.py:
    `model.classifier = nn.Sequential(*list(model.classifier.children())[:-1])`)."""
    backbone = model.deep_cluster.backbone
    conv = model.deep_cluster(pixel_values).last_hidden_state.double()
    fc6, fc7 = [m for m in backbone.classifier if isinstance(m, nn.Linear)]
    x = conv.mean(dim=(2, 3))  # the test backbones pool to 1x1
    x = torch.clamp(x @ fc6.weight.double().t() + fc6.bias.double(), min=0)
    return x @ fc7.weight.double().t() + fc7.bias.double()


def reference_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log softmax(logits)[target], one example at a time."""
    losses = []
    for row, target in zip(logits.double(), targets.tolist()):
        losses.append(-(row[target] - torch.log(torch.exp(row - row.max()).sum()) - row.max()))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("backbone", ["alexnet", "vgg"])
def test_kmeans_sees_fc7_before_its_relu_and_the_classifier_after_it(backbone: str) -> None:
    model = build(backbone).eval()  # the feature pass runs in eval mode; no dropout in the comparisons below
    model.set_pseudo_labels(torch.arange(20) % 5)
    x, ids = images(0), torch.tensor([3, 7, 11, 19])
    fc7 = reference_fc7(model, x)
    assert (fc7 < 0).any() and (fc7 > 0).any()

    out = model.deep_cluster(x)
    torch.testing.assert_close(out.embeddings.double(), fc7)  # what k-means clusters (and kNN reads)
    torch.testing.assert_close(out.pooler_output.double(), fc7.clamp(min=0))
    # the feature pass of the epoch hook reads `embeddings` through this wrapper
    torch.testing.assert_close(ClipAveragedFeatures(model.base_model)(x).embeddings.double(), fc7)

    train_out = model(x, ids)  # training: fc7 after the ReLU -> classifier -> CE on the pseudo-labels
    logits = fc7.clamp(min=0) @ model.classifier.weight.double().t() + model.classifier.bias.double()
    torch.testing.assert_close(train_out.logits.double(), logits)
    torch.testing.assert_close(train_out.loss.double(), reference_cross_entropy(logits, ids % 5))
    before_relu = fc7 @ model.classifier.weight.double().t() + model.classifier.bias.double()
    assert not torch.allclose(train_out.logits.double(), before_relu)


def test_loss_is_cross_entropy_on_the_pseudo_labels() -> None:
    model = build("resnet")  # a backbone without fc7: its pooled features are clustered and classified
    model.set_pseudo_labels(torch.arange(20) % 5)
    ids = torch.tensor([3, 7, 11, 19])
    model.eval()
    out = model(images(0), ids)
    features = model.deep_cluster(images(0)).embeddings.double()
    logits = features @ model.classifier.weight.double().t() + model.classifier.bias.double()
    torch.testing.assert_close(out.loss.double(), reference_cross_entropy(logits, ids % 5))
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.deep_cluster.parameters() if p.requires_grad)


def test_the_epoch_hook_clusters_fc7_before_its_relu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook's k-means input is the base model's `embeddings` on the training set (here 20 fixed images)."""
    model = build("alexnet").eval()
    x = images(5, batch=20)
    seen = {}

    def kmeans(features, ks, **kwargs):
        seen["features"] = features
        return [KMeansResult(np.arange(20) % ks[0], np.zeros((ks[0], 1), np.float32), 0, 0.0, 0.0)]

    def features(feature_model):
        return ClipAveragedFeatures(feature_model)(x).embeddings.detach().numpy(), np.full(20, -1), np.arange(20)

    monkeypatch.setattr(epoch_hooks, "kmeans_many", kmeans)
    context = epoch_hooks.EpochContext(model=model, train_features=features, seed=0, epoch=0)
    plan = epoch_hooks.DeepClusterHook().on_epoch_start(context)
    assert plan.reset_parameters == list(model.classifier.parameters())
    torch.testing.assert_close(torch.from_numpy(seen["features"]).double(), reference_fc7(model, x))


def test_classifier_steps_without_momentum_and_the_trunk_with_it(tmp_path: pathlib.Path) -> None:
    """The official code: the trunk's SGD has momentum 0.9, the top layer its own SGD without momentum (same lr
    and weight decay). Reference: torch.optim.SGD's update, written out in float64."""
    model = build("alexnet")
    lr, momentum, wd = 0.1, 0.9, 0.01
    args = SSLTrainingArguments(
        output_dir=str(tmp_path),
        optim="sgd",
        learning_rate=lr,
        momentum=momentum,
        weight_decay=wd,
        lr_scheduler_type="constant",
        warmup_epochs=0,
    )
    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, total_steps=10, steps_per_epoch=5)
    params = {
        "classifier.weight": model.classifier.weight,
        "classifier.bias": model.classifier.bias,
        "trunk fc7": model.deep_cluster.backbone.classifier[4].weight,
    }
    values = {name: p.detach().double().clone() for name, p in params.items()}
    buffer = None
    for step in range(3):
        generator = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        grads = {name: p.grad.double().clone() for name, p in params.items()}
        optimizer.step()
        scheduler.step()
        # classifier: w <- w - lr (g + wd w); no weight decay on biases (hf_ssl's rule for 1-D parameters)
        values["classifier.weight"] -= lr * (grads["classifier.weight"] + wd * values["classifier.weight"])
        values["classifier.bias"] -= lr * grads["classifier.bias"]
        # trunk: b <- m b + (g + wd w) (b = g + wd w at the first step); w <- w - lr b
        d = grads["trunk fc7"] + wd * values["trunk fc7"]
        buffer = d if buffer is None else momentum * buffer + d
        values["trunk fc7"] -= lr * buffer
        for name, p in params.items():
            torch.testing.assert_close(p.detach().double(), values[name], rtol=1e-5, atol=1e-6, msg=name)
    assert {group["lr"] for group in optimizer.param_groups} == {lr}  # one schedule for all groups


def test_classifier_momentum_option_and_adamw() -> None:
    args = dict(output_dir="unused", learning_rate=0.1, momentum=0.9)
    model = build()
    with pytest.raises(ValueError, match="classifier_momentum"):
        create_optimizer(model, SSLTrainingArguments(optim="adamw", **args))
    model.config.classifier_momentum = None  # the classifier shares the trunk's groups
    groups = create_optimizer(model, SSLTrainingArguments(optim="sgd", **args)).param_groups
    assert len(groups) == 2 and {g["momentum"] for g in groups} == {0.9}
    create_optimizer(model, SSLTrainingArguments(optim="adamw", **args))


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
    [
        ({"num_clusters": 0}, "num_clusters"),
        ({"pca_dim": 0}, "pca_dim"),
        ({"num_clusters": 30}, "num_clusters"),
        ({"classifier_momentum": 1.0, "num_clusters": 5}, "classifier_momentum"),
    ],
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
        dataset,
        100,
        RawRows(),
        num_workers=num_workers,
        seed=0,
        shuffle_buffer=1000,
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


def test_copies_of_a_small_cluster_are_spread_over_the_epoch() -> None:
    """The official sampler shuffles the whole index list: a singleton cluster's ~40 copies land all over the
    epoch. Emitted back to back before a 500-row shuffle buffer they would fill a few batches (6-8 per batch
    here, all in one quarter of the epoch)."""
    dataset, num_examples = with_stable_ids(load_stream(str(SAMPLE), "train"))
    labels = np.arange(num_examples) % 124 + 1
    labels[1234] = 0  # a singleton among 125 clusters: weight 5000 / 125 = 40
    batches_per_epoch = num_examples // 32
    stream = BatchStream(dataset, 32, RawRows(), seed=0, shuffle_buffer=500, batches_per_epoch=batches_per_epoch)
    stream.sample_weights = uniform_cluster_weights(labels)
    assert stream.sample_weights[1234] == 40 and resample_passes(stream.sample_weights, 32, 500) == 6
    batches = consume(stream, 0, batches_per_epoch)

    per_batch = np.array([int((b["ids"] == 1234).sum()) for b in batches])
    assert per_batch.sum() == 40  # the cluster gets its share of the epoch ...
    assert per_batch.max() <= 3 and (per_batch > 0).sum() >= 24  # ... a copy or two per batch at most ...
    assert all(part.sum() >= 4 for part in np.array_split(per_batch, 4))  # ... in every quarter of the epoch
    ids = torch.cat([b["ids"] for b in batches]).numpy()
    per_cluster = np.bincount(labels[ids], minlength=125)
    assert per_cluster.min() >= 30 and per_cluster.max() <= 50  # 40 each in expectation


def test_resample_counts_deal_each_example_s_copies_over_the_passes() -> None:
    weights = np.array([0.0, 0.4, 1.0, 2.5, 7.0, 40.0])
    passes = 6
    for salt in range(20):
        counts = np.stack([resample_counts(weights, (salt,), passes, index) for index in range(passes)])
        total = counts.sum(axis=0)
        assert total[0] == 0 and total[2] == 1 and total[4] == 7 and total[5] == 40 and total[3] in (2, 3)
        assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()  # each pass holds its even share
    mean = np.mean([sum(resample_counts(weights, (salt,), 2, i)[1] for i in range(2)) for salt in range(2000)])
    assert mean == pytest.approx(0.4, abs=0.03)


def test_resampled_stream_resumes_bit_identically(small_sample: pathlib.Path) -> None:
    dataset, num_examples = with_stable_ids(load_stream(str(small_sample), "train"))
    assert resample_passes(uniform_cluster_weights(skewed_labels(num_examples)), 16, 64) > 1  # resumes mid-pass

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


def test_training_reclusters_every_epoch_logs_the_curves_and_resumes_exactly(
    tmp_path, tiny_recipe, small_sample
) -> None:
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
        train(
            *parse_args(
                [
                    str(recipe),
                    "--output_dir",
                    str(resumed),
                    "--resume_from_checkpoint",
                    str(full / f"checkpoint-{step}"),
                ]
            )
        )
        again = {r["step"]: r["loss"] for r in _history(resumed) if "loss" in r}
        assert [again[s] for s in range(step + 1, 25)] == [losses[s] for s in range(step + 1, 25)]
        resumed_weights = load_file(resumed / "model.safetensors")
        assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)


@pytest.mark.slow
def test_two_processes_cluster_once_and_agree_with_one_process(tmp_path, tiny_recipe, small_sample) -> None:
    """Two real processes (gloo) extract features of their halves, gather them, cluster once and broadcast: the
    pseudo-labels equal those of a one-process run from the same initialisation."""
    from .conftest import REPO, launch_two_processes

    recipe = dc_recipe(tiny_recipe, small_sample)
    two = tmp_path / "two"
    launch_two_processes(
        str(REPO / "train.py"),
        str(recipe),
        "--output_dir",
        str(two),
        "--max_steps",
        "2",
        "--save_steps",
        "2",
        port=29518,
    )
    one = tmp_path / "one"
    train(*parse_args([str(recipe), "--output_dir", str(one), "--max_steps", "2", "--save_steps", "2"]))

    labels = [load_file(out / "checkpoint-2" / BUFFERS_FILE)["pseudo_labels"] for out in (one, two)]
    assert labels[0].min() >= 0 and torch.equal(labels[0], labels[1])
    history = [json.loads((out / "training_history.json").read_text())[0] for out in (one, two)]
    assert history[0]["nmi_true_labels"] == pytest.approx(history[1]["nmi_true_labels"])
