"""Tests of Instance Recognition (NPID): the NCE loss against the paper's equations, the normalising constant, the
memory bank, a few optimisation steps, checkpoints (Auto classes, trust_remote_code without hf_ssl, image processor
and pipeline), config validation and the memory bank across two processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining, pipeline

import hf_ssl  # noqa: F401  (registers the models with the Auto classes)
from hf_ssl.data.transforms import make_image_processor
from hf_ssl.models import InstanceRecognitionConfig, InstanceRecognitionForPreTraining, InstanceRecognitionModel

NUM_EXAMPLES = 20
NUM_NEGATIVES = 8
BATCH = 4
IMAGE_SIZE = 32

BACKBONES = {
    # ResNet-18 layout (basic blocks) at 1/8 width and two stages: ~5k parameters with the projection.
    "resnet": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16],
        "depths": [1, 1],
        "layer_type": "basic",
        "cifar_stem": True,
    },
    "alexnet": {"model_type": "alexnet", "width_multiplier": 1 / 32, "fc_dim": 256},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning threads of
    competing processes make each step many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(backbone: str = "resnet", **overrides) -> InstanceRecognitionConfig:
    """A tiny NPID config: the paper's 128-d embedding, tau and momentum, a 20-row bank and 8 noise samples."""
    kwargs = {"num_examples": NUM_EXAMPLES, "num_negatives": NUM_NEGATIVES} | overrides
    return InstanceRecognitionConfig(backbone_config=dict(BACKBONES[backbone]), **kwargs)


def build(backbone: str = "resnet", **overrides) -> InstanceRecognitionForPreTraining:
    """Seeded tiny training model in training mode."""
    torch.manual_seed(0)
    return InstanceRecognitionForPreTraining(tiny_config(backbone, **overrides)).train()


def images(seed: int, batch: int = BATCH) -> torch.Tensor:
    """Seeded batch of random images."""
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def recover_noise_ids(logits: torch.Tensor, bank: torch.Tensor, embeddings: torch.Tensor, tau: float) -> torch.Tensor:
    """The bank rows behind each noise score: the row whose exp(v.f / tau) matches it.

    Scores of distinct random rows differ by orders of magnitude more than float error, so the match is unique;
    a score that matches no row means the model's logits are not what it claims.
    """
    all_scores = torch.exp(embeddings.double() @ bank.double().T / tau)  # (batch, num_examples)
    relative_error = (logits[:, 1:, None].double() - all_scores[:, None, :]).abs() / all_scores[:, None, :]
    best_error, noise_ids = relative_error.min(dim=2)
    assert best_error.max() < 1e-4, best_error.max()
    return noise_ids


def reference_nce_loss(
    bank: torch.Tensor, embeddings: torch.Tensor, ids: torch.Tensor, noise_ids: torch.Tensor, tau: float, z: float
) -> torch.Tensor:
    """NPID eq. (2), (5), (6) in float64: P(i|v) = exp(v_i.f / tau) / Z, h(i, v) = P / (P + m P_n) with uniform
    P_n = 1 / n, loss = -mean over the batch of [log h(positive) + sum over the m noise samples of log(1 - h)]."""
    n, m = bank.shape[0], noise_ids.shape[1]
    bank, f = bank.double(), embeddings.double()

    def h(rows: torch.Tensor) -> torch.Tensor:
        p = torch.exp((bank[rows] * f.unsqueeze(1)).sum(-1) / tau) / z
        return p / (p + m / n)

    log_positive = torch.log(h(ids[:, None]))[:, 0]
    log_noise = torch.log(1 - h(noise_ids)).sum(dim=1)
    return -(log_positive + log_noise).mean()


def test_nce_loss_and_normalizer_follow_the_paper() -> None:
    model = build(num_examples=16, num_negatives=12)  # m P_n = 0.75: the noise term weighs as much as the positive
    tau = model.config.temperature
    ids = torch.tensor([3, 7, 0, 12])
    assert model.normalizer < 0

    z = None
    for step, seed in enumerate([1, 2]):
        bank = model.memory_bank.vectors.clone()  # the forward updates the bank after computing the loss
        out = model(images(seed), ids)
        logits, embeddings = out.logits.detach(), out.embeddings.detach()
        noise_ids = recover_noise_ids(logits, bank, embeddings, tau)
        # Column 0 is the positive: each example's own bank row.
        positive = torch.exp((bank[ids] * embeddings).sum(-1) / tau)
        torch.testing.assert_close(logits[:, 0], positive, rtol=1e-5, atol=0)
        if step == 0:
            # Z = n * E[exp(v.f / tau)], Monte Carlo over the first batch's positive and noise scores.
            candidates = torch.cat([ids[:, None], noise_ids], dim=1)
            z = 16 * torch.exp((bank.double()[candidates] * embeddings.double()[:, None]).sum(-1) / tau).mean()
        torch.testing.assert_close(model.normalizer.double(), z, rtol=1e-5, atol=0)
        expected = reference_nce_loss(bank, embeddings, ids, noise_ids, tau, float(z))
        torch.testing.assert_close(out.loss.double(), expected, rtol=1e-4, atol=0)
    # A second batch whose own estimate differs still uses the first one.
    assert not torch.isclose(logits.mean() * 16, model.normalizer, rtol=1e-3)


def test_zero_negatives_is_the_exact_softmax_over_the_bank() -> None:
    model = build(num_negatives=0)
    ids = torch.tensor([3, 7, 0, 12])
    bank = model.memory_bank.vectors.clone()
    out = model(images(1), ids)
    # NPID eq. (2): P(i | v) = exp(v_i.f / tau) / sum_j exp(v_j.f / tau) over all n rows; loss = -mean log P(id).
    scores = out.embeddings.detach().double() @ bank.double().T / model.config.temperature
    expected = -(scores.gather(1, ids[:, None]) - scores.logsumexp(dim=1, keepdim=True)).mean()
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=0)
    out.loss.backward()
    assert model.instance_recognition.projection.weight.grad.abs().sum() > 0


def test_loss_is_finite_and_differentiable_for_both_backbones() -> None:
    for backbone in BACKBONES:
        model = build(backbone)
        out = model(images(1), torch.arange(BATCH))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert out.embeddings.shape == (BATCH, 128)
        assert out.logits.shape == (BATCH, 1 + NUM_NEGATIVES)
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), backbone
        assert model.instance_recognition.projection.weight.grad.abs().sum() > 0


def test_normalizer_is_estimated_once_on_the_first_training_forward() -> None:
    model = build()
    first = model(images(1), torch.arange(BATCH))
    estimate = model.normalizer.clone()
    torch.testing.assert_close(estimate, NUM_EXAMPLES * first.logits.mean(), rtol=1e-5, atol=0)

    second = model(images(2) * 3, torch.arange(BATCH, 2 * BATCH))
    assert torch.equal(model.normalizer, estimate)
    assert not torch.isclose(NUM_EXAMPLES * second.logits.mean(), estimate, rtol=1e-3)


def test_memory_bank_update_is_the_proximal_step() -> None:
    model = build()
    ids = torch.tensor([5, 2, 17, 9])
    before = model.memory_bank.vectors.clone()
    torch.testing.assert_close(before.norm(dim=1), torch.ones(NUM_EXAMPLES))

    out = model(images(1), ids)
    after = model.memory_bank.vectors
    expected = nn.functional.normalize(0.5 * before[ids] + 0.5 * out.embeddings.detach(), dim=1)
    torch.testing.assert_close(after[ids], expected)
    others = torch.ones(NUM_EXAMPLES, dtype=torch.bool)
    others[ids] = False
    assert torch.equal(after[others], before[others])
    assert not torch.allclose(after[ids], before[ids])
    torch.testing.assert_close(after.norm(dim=1), torch.ones(NUM_EXAMPLES))


def test_eval_forward_leaves_the_bank_alone() -> None:
    model = build()
    model(images(1), torch.arange(BATCH))  # estimate Z in training, as the training loop does
    model.eval()
    before = model.memory_bank.vectors.clone()
    out = model(images(2), torch.arange(BATCH))
    assert torch.isfinite(out.loss)
    assert torch.equal(model.memory_bank.vectors, before)


@pytest.mark.parametrize("bad_id", [NUM_EXAMPLES, -1])
def test_out_of_range_id_names_the_id_and_the_bank_size(bad_id: int) -> None:
    model = build()
    before = model.memory_bank.vectors.clone()
    with pytest.raises(ValueError, match=rf"id {bad_id}\b.*num_examples={NUM_EXAMPLES}"):
        model(images(1), torch.tensor([0, 1, bad_id, 2]))
    assert torch.equal(model.memory_bank.vectors, before)


def test_pretraining_without_a_bank_is_a_clear_error() -> None:
    model = build(num_examples=0)
    # Feature extraction still works without a bank.
    assert model.instance_recognition(images(1)).embeddings.shape == (BATCH, 128)
    with pytest.raises(ValueError, match="num_examples is 0"):
        model(images(1), torch.arange(BATCH))


def sgd_losses(model: InstanceRecognitionForPreTraining, pixel_values: torch.Tensor, ids: torch.Tensor) -> list[float]:
    """Losses of 10 SGD steps on one fixed batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss = model(pixel_values, ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_sgd_steps_on_a_fixed_batch_reduce_the_loss() -> None:
    # A bank much larger than batch x noise samples, as in real training: a batch rarely draws its own rows as noise.
    model = build(num_examples=4096, num_negatives=32)
    losses = sgd_losses(model, images(1, batch=8), torch.arange(8))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_the_gradient_alone_reduces_the_loss() -> None:
    # In training mode most of the fall comes from writing the batch into the bank; with the bank frozen (eval
    # mode) only the gradient can pull each embedding to its row.
    model = build(num_examples=256, num_negatives=32)
    with torch.no_grad():
        model(images(99, batch=8), torch.arange(100, 108))  # estimates Z without touching rows 0-7
    model.eval()
    bank = model.memory_bank.vectors.clone()
    losses = sgd_losses(model, images(1, batch=8), torch.arange(8))
    assert torch.equal(model.memory_bank.vectors, bank)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def trained_model(backbone: str) -> InstanceRecognitionForPreTraining:
    """A model after one step, so batch-norm statistics and bank differ from their initial values."""
    model = build(backbone)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(images(1) * 2 + 1, torch.arange(BATCH)).loss.backward()
    optimizer.step()
    return model.eval()


def test_checkpoint_holds_weights_only_and_loads_with_both_auto_classes(tmp_path: Path) -> None:
    model = trained_model("resnet")
    model.save_pretrained(tmp_path)

    assert (tmp_path / "model.safetensors").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    saved = load_file(tmp_path / "model.safetensors")
    assert not [key for key in saved if "memory_bank" in key or "normalizer" in key]
    assert saved.keys() == model.state_dict().keys()
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForPreTraining"} <= auto_map.keys()

    features = AutoModel.from_pretrained(tmp_path)
    assert type(features) is InstanceRecognitionModel and not features.training
    pixel_values = images(2)
    expected = model.instance_recognition(pixel_values)
    actual = features(pixel_values)
    assert torch.equal(actual.embeddings, expected.embeddings)
    assert torch.equal(actual.pooler_output, expected.pooler_output)

    pretraining = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(pretraining) is InstanceRecognitionForPreTraining
    assert pretraining.config.num_examples == NUM_EXAMPLES
    original, loaded = model.state_dict(), pretraining.state_dict()
    assert original.keys() == loaded.keys()
    for key, value in original.items():
        assert torch.equal(value, loaded[key]), key
    # The bank is training state: a loaded model starts from a fresh unit-norm bank and re-estimates Z.
    torch.testing.assert_close(pretraining.memory_bank.vectors.norm(dim=1), torch.ones(NUM_EXAMPLES))
    assert pretraining.normalizer < 0
    loss = pretraining.train()(pixel_values, torch.arange(BATCH)).loss
    assert torch.isfinite(loss) and pretraining.normalizer > 0


# The start of a child script: hf_ssl cannot be imported in it, whatever kind of install the test runs in.
HIDE_HF_SSL = textwrap.dedent(
    """
    import importlib.util
    import os
    import sys

    # Drop what an editable install adds so hf_ssl cannot be imported: setuptools' finder, or the checkout that
    # hatchling's .pth puts on sys.path (its copy of the package data may stay as an empty namespace folder).
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p, "hf_ssl", "__init__.py"))]
    spec = importlib.util.find_spec("hf_ssl")  # at most that namespace folder: no code of hf_ssl
    assert spec is None or spec.origin is None, f"hf_ssl is still importable from {spec.origin}"

    """
)

REMOTE_CODE_CHILD = HIDE_HF_SSL + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    checkpoint, expected_file, num_threads, class_name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(num_threads)  # bit-identical results need the parent's reduction order
    expected = load_file(expected_file)
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    assert type(model).__name__ == class_name, type(model)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert "hf_ssl" not in sys.modules
    out = model(expected["pixel_values"])
    assert torch.equal(out.embeddings, expected["embeddings"]), (out.embeddings - expected["embeddings"]).abs().max()
    assert torch.equal(out.pooler_output, expected["pooler_output"])
    print("REMOTE-OK", type(model).__module__)
    """
)


def run_without_hf_ssl(
    script: str, arguments: list[str], tmp_path: Path, env: dict[str, str], timeout: int = 180
) -> str:
    """Run `script` (which starts with `HIDE_HF_SSL`) in a fresh interpreter with `arguments`, its own Hugging Face
    home and modules cache under `tmp_path` and `env` on top; assert that it succeeds and return its stdout."""
    (tmp_path / "child.py").write_text(script)
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "child-hf-home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    # -I: no PYTHONPATH, no user site, and the script's folder (not the repo) as sys.path[0].
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "child.py"), *arguments],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_loads_without_hf_ssl(model: torch.nn.Module, tmp_path: Path) -> None:
    """Save a ForPreTraining model; a fresh interpreter that cannot import hf_ssl loads its feature model with
    `trust_remote_code=True` and reproduces the features bit for bit."""
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    pixel_values = images(2)
    model.eval()
    out = model.base_model(pixel_values)
    save_file(
        {"pixel_values": pixel_values, "embeddings": out.embeddings.clone(), "pooler_output": out.pooler_output},
        tmp_path / "expected.safetensors",
    )
    expected = str(tmp_path / "expected.safetensors")
    arguments = [str(checkpoint), expected, str(torch.get_num_threads()), type(model.base_model).__name__]
    stdout = run_without_hf_ssl(REMOTE_CODE_CHILD, arguments, tmp_path, {"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert "REMOTE-OK transformers_modules." in stdout


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_trust_remote_code_loads_without_hf_ssl(backbone: str, tmp_path: Path) -> None:
    assert_loads_without_hf_ssl(trained_model(backbone), tmp_path)


def test_image_processor_and_feature_extraction_pipeline(tmp_path: Path) -> None:
    model = trained_model("resnet")
    model.save_pretrained(tmp_path)
    make_image_processor(IMAGE_SIZE).save_pretrained(tmp_path)

    processor = AutoImageProcessor.from_pretrained(tmp_path)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    expected = model.instance_recognition(pixel_values)

    extractor = pipeline("image-feature-extraction", model=str(tmp_path))
    assert type(extractor.model) is InstanceRecognitionModel
    features = extractor(image, return_tensors=True)
    pooled = extractor(image, pool=True, return_tensors=True)
    assert features.shape == expected.last_hidden_state.shape == (1, 16, 16, 16)
    assert pooled.shape == expected.pooler_output.shape == (1, 16)
    torch.testing.assert_close(features, expected.last_hidden_state)
    torch.testing.assert_close(pooled, expected.pooler_output)
    # Without return_tensors the pipeline returns nested lists of the same values.
    assert np.asarray(extractor(image, pool=True)).shape == (1, 16)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.07}, "temperature"),
        ({"temperature": 0}, "temperature"),
        ({"bank_momentum": 1.0}, "bank_momentum"),
        ({"bank_momentum": -0.1}, "bank_momentum"),
        ({"num_negatives": -1}, "num_negatives"),
        ({"num_examples": -1}, "num_examples"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"backbone_config": {"model_type": "no_such_backbone"}}, "model_type"),
        ({"backbone_config": {"width_multiplier": 0.5}}, "model_type"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        InstanceRecognitionConfig(**kwargs)


@pytest.mark.parametrize(
    "backbone_config",
    [
        {"model_type": "alexnet", "width_multiplier": 1 / 32, "fc_dim": 64, "cifar_stem": True},
        {"model_type": "convnext", "num_stages": 2, "hidden_sizes": [8, 16], "depths": [1, 1], "cifar_stem": True},
    ],
)
def test_cifar_stem_on_a_non_resnet_backbone_is_rejected(backbone_config: dict) -> None:
    config = InstanceRecognitionConfig(backbone_config=backbone_config, num_examples=4)
    with pytest.raises(ValueError, match=rf"cifar_stem.*{backbone_config['model_type']}"):
        InstanceRecognitionModel(config)


def test_cifar_stem_keeps_the_resolution_at_32_px() -> None:
    # The ImageNet stem divides by 4 (stride-2 conv, max-pool) before the stages; the CIFAR stem by 1.
    with_stem = build().instance_recognition
    without = InstanceRecognitionModel(
        InstanceRecognitionConfig(backbone_config=BACKBONES["resnet"] | {"cifar_stem": False})
    )
    assert with_stem(images(1)).last_hidden_state.shape == (BATCH, 16, 16, 16)
    assert without(images(1)).last_hidden_state.shape == (BATCH, 16, 4, 4)


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_zero_init_residual_starts_every_block_as_its_shortcut(layer_type: str) -> None:
    # Official SimCLR's init_zero: each residual branch ends in a BatchNorm of scale 0, so at initialisation a
    # block computes relu(shortcut(x)), and the identity blocks pass a (post-ReLU) input through unchanged.
    backbone = BACKBONES["resnet"] | {"layer_type": layer_type, "depths": [2, 1], "zero_init_residual": True}
    model = InstanceRecognitionModel(InstanceRecognitionConfig(backbone_config=backbone)).eval()
    blocks = [block for stage in model.backbone.encoder.stages for block in stage.layers]
    assert len(blocks) == 3
    for block in blocks:
        x = torch.relu(torch.randn(2, block.layer[0].convolution.in_channels, 8, 8))
        torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)), rtol=0, atol=0)
        if isinstance(block.shortcut, nn.Identity):
            torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    assert sum(isinstance(block.shortcut, nn.Identity) for block in blocks) == 2
    # the default (transformers' and torchvision's): the residual branch is live
    live = InstanceRecognitionModel(InstanceRecognitionConfig(backbone_config=backbone | {"zero_init_residual": False}))
    live_blocks = [block for stage in live.backbone.encoder.stages for block in stage.layers]
    assert all(block.layer[-1].normalization.weight.eq(1).all() for block in live_blocks)


def test_zero_init_residual_on_a_non_resnet_backbone_is_rejected() -> None:
    config = InstanceRecognitionConfig(backbone_config=BACKBONES["alexnet"] | {"zero_init_residual": True})
    with pytest.raises(ValueError, match=r"zero_init_residual.*alexnet"):
        InstanceRecognitionModel(config)


WORLD_SIZE = 2


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: same seed and model, a different batch of ids; saves what it ends with."""
    torch.set_num_threads(1)  # two processes on a small CPU: avoid oversubscription
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = build()
        initial_bank = model.memory_bank.vectors.clone()
        ids = torch.arange(BATCH) + rank * BATCH + 3  # rank 0: 3-6, rank 1: 7-10
        out = model(images(10 + rank), ids)
        out.loss.backward()
        save_file(
            {
                "initial_bank": initial_bank,
                "bank": model.memory_bank.vectors.contiguous(),
                "normalizer": model.normalizer.reshape(1),
                "embeddings": out.embeddings.detach().contiguous(),
                "logits": out.logits.detach().contiguous(),
                "ids": ids,
            },
            os.path.join(out_dir, f"rank{rank}.safetensors"),
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_share_one_memory_bank_and_normalizer(tmp_path: Path) -> None:
    mp.spawn(distributed_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(WORLD_SIZE)]
    first, second = results

    assert torch.equal(first["initial_bank"], second["initial_bank"])
    assert not torch.allclose(first["embeddings"], second["embeddings"])
    assert torch.equal(first["bank"], second["bank"])
    assert torch.equal(first["normalizer"], second["normalizer"])

    # Each process's rows received its own embeddings; rows of neither process are untouched.
    initial, bank = first["initial_bank"], first["bank"]
    for result in results:
        expected = nn.functional.normalize(0.5 * initial[result["ids"]] + 0.5 * result["embeddings"], dim=1)
        torch.testing.assert_close(bank[result["ids"]], expected)
    touched = torch.cat([result["ids"] for result in results])
    untouched = torch.ones(NUM_EXAMPLES, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(bank[untouched], initial[untouched])

    # Z is the estimate over both processes' first batches, not either process's own.
    mean_over_processes = torch.stack([result["logits"].mean() for result in results]).mean()
    torch.testing.assert_close(first["normalizer"][0], NUM_EXAMPLES * mean_over_processes, rtol=1e-5, atol=0)
    assert not torch.isclose(first["normalizer"][0], NUM_EXAMPLES * first["logits"].mean(), rtol=1e-3)
