"""MoCo, SimCLR, BYOL and SwAV: losses against direct reference computations, rho > 2 views, the global batch
across 2 gloo processes (gradients included), momentum schedules, checkpoints, and real training steps."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.models.modeling_simclr import nt_xent_loss
from hf_ssl.models.modeling_swav import sinkhorn_knopp
from hf_ssl.training import parse_args, train

from .conftest import SAMPLE, TINY_BACKBONE
from .test_instance_recognition import assert_loads_without_hf_ssl

METHODS = ("moco", "simclr", "byol", "swav")
SMALL = {"projection_hidden_dim": 32, "projection_dim": 16}
EXTRA = {"moco": {"queue_size": 64}, "simclr": {}, "byol": {"prediction_hidden_dim": 32}, "swav": {"num_prototypes": 12}}


def build(method: str, **overrides) -> torch.nn.Module:
    cls = PRETRAINING_CLASSES[method]
    torch.manual_seed(0)
    return cls(cls.config_class(**{"backbone_config": TINY_BACKBONE, **SMALL, **EXTRA[method], **overrides}))


def images(views: int, batch: int) -> torch.Tensor:
    return torch.randn(views, batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def reference_nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Example by example in float64: anchor (v, i), positives (u != v, i), candidates all (w, j) but itself."""
    views, batch, _ = z.shape
    flat = z.double().reshape(views * batch, -1)
    terms = []
    for a in range(views * batch):
        v, i = divmod(a, batch)
        logits = flat @ flat[a] / temperature
        logits[a] = -math.inf
        log_prob = logits - torch.logsumexp(logits, 0)
        terms += [-log_prob[u * batch + i] for u in range(views) if u != v]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("views", [2, 4])
def test_nt_xent_matches_the_example_by_example_reference(views) -> None:
    z = torch.nn.functional.normalize(torch.randn(views, 6, 8), dim=2)
    assert nt_xent_loss(z, 0.1).item() == pytest.approx(reference_nt_xent(z, 0.1).item(), rel=1e-5)


def test_moco_loss_matches_a_direct_infonce_over_the_queue() -> None:
    model = build("moco", num_views=3, temperature=0.2).eval()  # eval: no momentum update, no enqueue
    x = images(3, 5)
    loss = model(pixel_values=x).loss
    with torch.no_grad():
        pooled = model.moco(x.flatten(0, 1)).embeddings
        q = torch.nn.functional.normalize(model.projector(pooled), dim=1).view(3, 5, -1).double()
        k = torch.nn.functional.normalize(model.key_encoder(x), dim=2).double()
        queue = model.queue.double()
    terms = []
    for v in range(3):
        for u in range(3):
            if u != v:
                for i in range(5):
                    logits = torch.cat([(q[v, i] @ k[u, i])[None], queue @ q[v, i]]) / 0.2
                    terms.append(torch.logsumexp(logits, 0) - logits[0])
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_moco_key_encoder_follows_the_momentum_and_the_queue_takes_the_keys() -> None:
    model = build("moco", momentum=0.9, queue_size=12).train()
    online = [p.detach().clone() for p in model.moco.parameters()]
    keys_before = [p.detach().clone() for p in model.key_encoder.encoder.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(online, keys_before))  # starts as a copy
    with torch.no_grad():
        for p in model.moco.parameters():
            p.add_(1.0)
    model(pixel_values=images(2, 5))
    for key, before, now in zip(model.key_encoder.encoder.parameters(), keys_before, model.moco.parameters()):
        torch.testing.assert_close(key, 0.9 * before + 0.1 * now)
    assert int(model.queue_pointer) == 5
    model(pixel_values=images(2, 5))
    model(pixel_values=images(2, 5))
    assert int(model.queue_pointer) == 15 % 12  # wraps around


def test_byol_momentum_follows_the_cosine_schedule_and_the_loss_is_the_pairwise_cosine() -> None:
    model = build("byol", num_views=3, base_momentum=0.99)
    model.set_training_progress(0, 100)
    assert model.momentum == pytest.approx(0.99)
    model.set_training_progress(50, 100)
    assert model.momentum == pytest.approx(0.995)
    model.set_training_progress(100, 100)
    assert model.momentum == pytest.approx(1.0)
    model.eval()
    x = images(3, 4)
    loss = model(pixel_values=x).loss
    with torch.no_grad():
        p = model.predictor(model.projector(model.byol(x.flatten(0, 1)).embeddings)).view(3, 4, -1)
        t = model.target(x)
    pairs = [(v, u) for v in range(3) for u in range(3) if v != u]
    expected = np.mean([(2 - 2 * torch.cosine_similarity(p[v], t[u], dim=1)).mean().item() for v, u in pairs])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sinkhorn_codes_are_distributions_with_equal_mass_per_prototype() -> None:
    scores = torch.nn.functional.normalize(torch.randn(64, 8), dim=1) @ torch.nn.functional.normalize(
        torch.randn(8, 8), dim=1
    ).T
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=50)
    torch.testing.assert_close(codes.sum(1), torch.ones(64))
    torch.testing.assert_close(codes.sum(0), torch.full((8,), 64 / 8), rtol=1e-3, atol=1e-3)


def test_swav_queue_fills_newest_first() -> None:
    model = build("swav", queue_size=10).train()
    model(pixel_values=images(2, 4))
    first = model.queue[:, :4].clone()
    model(pixel_values=images(2, 4))
    torch.testing.assert_close(model.queue[:, 4:8], first)
    assert int(model.queue_filled) == 8


@pytest.mark.parametrize("method", METHODS)
def test_wrong_number_of_views_is_named(method) -> None:
    with pytest.raises(ValueError, match=r"num_views=3, batch"):
        build(method, num_views=3)(pixel_values=images(2, 4))


@pytest.mark.parametrize(
    ("method", "field", "value", "message"),
    [("moco", "temperature", 0.0, "temperature must be > 0"), ("moco", "momentum", 1.5, "momentum must be in"),
     ("simclr", "num_views", 1, "num_views must be >= 2"), ("byol", "base_momentum", -0.1, "base_momentum"),
     ("swav", "sinkhorn_iterations", 0, "sinkhorn_iterations must be >= 1"), ("swav", "queue_size", -1, "queue_size")],
)
def test_bad_hyper_parameters_are_named(method, field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(method, **{field: value})


@pytest.mark.parametrize("method", METHODS)
def test_checkpoints_round_trip_and_load_without_hf_ssl(method, tmp_path) -> None:
    model = build(method).eval()
    model.save_pretrained(tmp_path / "ckpt")
    again = AutoModelForPreTraining.from_pretrained(tmp_path / "ckpt").eval()
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # momentum encoders and prototypes included
    features = AutoModel.from_pretrained(tmp_path / "ckpt").eval()
    x = images(2, 3)[0]
    assert torch.equal(features(x).embeddings, model.base_model(x).embeddings)
    if method == "byol":  # one isolated-interpreter check of the shared contrastive code travelling as remote code
        assert_loads_without_hf_ssl(model, tmp_path / "remote")


# -- the global batch over 2 gloo processes --

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch_worker(rank: int, port: int, z: torch.Tensor, scores: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = z[:, rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
        nt_xent_loss(local, 0.1).backward()
        out[rank] = {"grad": local.grad, "codes": sinkhorn_knopp(scores[rank * 8 : (rank + 1) * 8], 0.05, 3)}
    finally:
        dist.destroy_process_group()


def test_two_processes_see_the_global_batch_with_correct_gradients() -> None:
    """SimCLR's negatives and SwAV's Sinkhorn sums span both processes: per-process gradients (averaged as DDP
    does) and codes equal one process's on the whole batch."""
    z = torch.nn.functional.normalize(torch.randn(3, 8, 6, generator=torch.Generator().manual_seed(0)), dim=2)
    scores = torch.randn(16, 5, generator=torch.Generator().manual_seed(1)).tanh()
    out = mp.Manager().dict()
    mp.spawn(_global_batch_worker, args=(_free_port(), z, scores, out), nprocs=2, join=True)

    whole = z.clone().requires_grad_(True)
    nt_xent_loss(whole, 0.1).backward()
    per_process = torch.cat([out[0]["grad"], out[1]["grad"]], dim=1) / 2  # DDP averages over processes
    torch.testing.assert_close(per_process, whole.grad)
    codes = sinkhorn_knopp(scores, 0.05, 3)
    torch.testing.assert_close(torch.cat([out[0]["codes"], out[1]["codes"]]), codes)


# -- real training on the shipped CIFAR-10 sample --

@pytest.mark.parametrize("method", METHODS)
def test_training_steps_lower_the_loss_on_real_images(method, tmp_path) -> None:
    config = {**SMALL, **EXTRA[method], "queue_size": 256} if method == "moco" else {**SMALL, **EXTRA[method]}
    args = parse_args([
        "--method", method, "--backbone_config", json.dumps(TINY_BACKBONE), "--method_config", json.dumps(config),
        "--dataset_name", str(SAMPLE), "--image_size", "16", "--max_steps", "24", "--per_device_train_batch_size", "64",
        "--shuffle_buffer", "500", "--max_eval_bank_samples", "500", "--dataloader_num_workers", "0",
        "--save_steps", "12", "--knn_k", "20", "--report_to", "none", "--disable_tqdm", "True", "--logging_steps", "4",
        "--learning_rate", "0.05", "--warmup_epochs", "0", "--output_dir", str(tmp_path / "out"),
    ])
    results = train(*args)
    losses = [r["loss"] for r in json.loads((tmp_path / "out" / "training_history.json").read_text()) if "loss" in r]
    if method == "moco":  # the queue starts with random keys (easy negatives): the loss first rises, then falls
        assert losses[-1] < max(losses) and losses[-1] < math.log(257)
    else:
        assert losses[-1] < losses[0], losses
    assert results["trained"]["knn_top1@20"] > 15.0  # chance is 10 %
    assert (tmp_path / "out" / "checkpoint-12").is_dir()


def test_a_transformers_video_model_trains_as_the_backbone() -> None:
    """VideoMAE through backbone_config: clips (views, batch, T, C, H, W), mean-pooled tokens, a few SGD steps."""
    backbone = {
        "model_type": "videomae", "image_size": 32, "patch_size": 16, "num_frames": 4, "tubelet_size": 2,
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
    }
    model = build("simclr", backbone_config=backbone).train()
    assert type(model.simclr.backbone).__name__ == "VideoMAEModel"
    clips = torch.randn(2, 6, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = model(pixel_values=clips).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    tokens = model.simclr.backbone(clips[0]).last_hidden_state
    torch.testing.assert_close(model.simclr(clips[0]).embeddings, tokens.mean(1))
