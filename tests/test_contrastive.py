"""MoCo, SimCLR, BYOL and SwAV: losses against direct reference computations, rho > 2 views, the global batch
across 2 gloo processes (gradients included), momentum schedules, checkpoints, and real training steps."""

import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.models.modeling_byol import byol_loss
from hf_ssl.models.modeling_contrastive import MomentumEncoder, batch_shuffle, batch_unshuffle, view_pairs
from hf_ssl.models.modeling_moco import infonce_with_queue
from hf_ssl.models.modeling_simclr import nt_xent_loss
from hf_ssl.models.modeling_swav import sinkhorn_knopp
from hf_ssl.training import parse_args, train

from .conftest import TINY_BACKBONE, short_training_args
from .test_instance_recognition import assert_loads_without_hf_ssl

METHODS = ("moco", "simclr", "byol", "swav")
SMALL = {"projection_hidden_dim": 32, "projection_dim": 16}
EXTRA = {
    "moco": {"queue_size": 64},
    "simclr": {},
    "byol": {"prediction_hidden_dim": 32},
    "swav": {"num_prototypes": 12},
}


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


def fixed(*shape: int, seed: int = 0, unit: bool = True) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=-1) if unit else x


def reference_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float, queries, keys_of) -> float:
    """MoCo eq. (1) in float64, example by example: L = -log exp(q.k+/t) / (exp(q.k+/t) + sum_queue exp(q.k-/t)),
    averaged over examples, then summed over query views of the mean over their key views."""
    q, k, queue = q.double(), k.double(), queue.double()
    total = 0.0
    for v in queries:
        per_key = []
        for u in keys_of(v):
            terms = []
            for i in range(q.shape[1]):
                positive = math.exp(float(q[v, i] @ k[u, i]) / t)
                negatives = sum(math.exp(float(q[v, i] @ n) / t) for n in queue)
                terms.append(-math.log(positive / (positive + negatives)))
            per_key.append(sum(terms) / len(terms))
        total += sum(per_key) / len(per_key)
    return total


@pytest.mark.parametrize(
    ("views", "symmetric", "pair_mode"),
    [(2, False, "all"), (2, True, "all"), (3, False, "all"), (3, True, "all"), (4, True, "consecutive")],
)
def test_moco_infonce_matches_the_paper_equation(views, symmetric, pair_mode) -> None:
    """Asymmetric MoCo v2: view 0's queries against the other views' keys; symmetric: every view a query in turn,
    the query views' losses summed (SlowFast; MoCo v3 for 2 views)."""
    q, k, queue = fixed(views, 5, 8, seed=0), fixed(views, 5, 8, seed=1), fixed(11, 8, seed=2)
    queries = range(views) if symmetric else [0]
    if pair_mode == "all":
        keys_of = lambda v: [u for u in range(views) if u != v]  # noqa: E731
    else:
        keys_of = lambda v: [u for u in (v - 1, v + 1) if 0 <= u < views]  # noqa: E731
    pairs = [(v, u) for v, u in view_pairs(views, pair_mode) if v in queries]
    loss = infonce_with_queue(q[: len(queries)], dict(enumerate(k)), queue, 0.2, pairs)
    assert loss.item() == pytest.approx(reference_infonce(q, k, queue, 0.2, queries, keys_of), rel=1e-6)


def test_moco_forward_is_the_asymmetric_infonce_of_the_query_and_key_encoders() -> None:
    """MoCo v2: the online encoder sees the query view alone (its BatchNorm batch), the key encoder the key view,
    the negatives are the queue before this batch, and the key view's keys enter the queue."""
    model = build("moco", temperature=0.2).train()
    x, queue = images(2, 6), model.queue.clone()
    out = model(pixel_values=x)  # train mode: BatchNorm uses the batch statistics, so recomputing below matches
    with torch.no_grad():
        pooled = model.moco(x[0]).embeddings  # the query view's batch alone
        q = torch.nn.functional.normalize(model.projector(pooled), dim=1)
        k = torch.nn.functional.normalize(model.key_encoder(x[1:]), dim=2)[0]
    torch.testing.assert_close(out.embeddings, pooled)
    torch.testing.assert_close(model.queue[:6], k)
    expected = reference_infonce(q[None], torch.stack([k, k]), queue, 0.2, [0], lambda v: [1])
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_moco_projector_is_linear_relu_linear_without_batchnorm() -> None:
    assert [type(m).__name__ for m in build("moco").projector] == ["Linear", "ReLU", "Linear"]
    three = build("moco", projection_layers=3, projection_batchnorm=True).projector
    assert [type(m).__name__ for m in three] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]


def test_simclr_projector_is_the_official_codes_with_batchnorm_on_its_output() -> None:
    # google-research/simclr model_util.projection_head: every layer use_bn=True, no bias before a BatchNorm
    projector = build("simclr").projector
    assert [type(m).__name__ for m in projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert [m.bias is None for m in projector if isinstance(m, torch.nn.Linear)] == [True, True]
    without = build("simclr", projection_output_batchnorm=False).projector  # SlowFast's MLPHead (video recipes)
    assert [type(m).__name__ for m in without] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert without[-1].bias is not None


def test_moco_key_encoder_moves_after_the_optimizer_step_and_the_queue_takes_the_keys() -> None:
    model = build("moco", momentum=0.9, queue_size=12).train()
    online = [p.detach().clone() for p in model.moco.parameters()]
    keys_before = [p.detach().clone() for p in model.key_encoder.encoder.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(online, keys_before))  # starts as a copy
    with torch.no_grad():
        for p in model.moco.parameters():
            p.add_(1.0)
    model(pixel_values=images(2, 5))
    assert all(torch.equal(a, b) for a, b in zip(model.key_encoder.encoder.parameters(), keys_before))
    model.after_optimizer_step()
    for key, before, now in zip(model.key_encoder.encoder.parameters(), keys_before, model.moco.parameters()):
        torch.testing.assert_close(key, 0.9 * before + 0.1 * now)
    assert int(model.queue_pointer) == 5
    model(pixel_values=images(2, 5))
    model(pixel_values=images(2, 5))
    assert int(model.queue_pointer) == 15 % 12  # wraps around
    every_view = build("moco", num_views=3, symmetric_loss=True, queue_all_views=True, queue_size=64).train()
    every_view(pixel_values=images(3, 5))
    assert int(every_view.queue_pointer) == 15  # SlowFast's multi-view queue: the keys of all 3 clips


def test_moco_cosine_momentum_schedule() -> None:
    model = build("moco", momentum=0.99, momentum_schedule="cosine")
    model.set_training_progress(50, 100)
    assert model.momentum == pytest.approx(0.995)
    model.set_training_progress(100, 100)
    assert model.momentum == pytest.approx(1.0)
    constant = build("moco", momentum=0.99)
    constant.set_training_progress(50, 100)
    assert constant.momentum == 0.99


def test_view_pairs() -> None:
    assert view_pairs(2, "consecutive") == view_pairs(2) == [(0, 1), (1, 0)]
    assert view_pairs(4, "consecutive") == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    assert len(view_pairs(4)) == 12


def reference_byol(p: torch.Tensor, z: torch.Tensor, partners) -> float:
    """BYOL eq. (2) in float64: ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), averaged over examples; the directions
    summed (BYOL's symmetrised loss), for rho > 2 summed over query clips of the mean over the other clips."""
    p, z = p.double(), z.double()
    total = 0.0
    for v in range(p.shape[0]):
        per = []
        for u in partners(v):
            per.append(
                sum(
                    float(((p[v, i] / p[v, i].norm() - z[u, i] / z[u, i].norm()) ** 2).sum()) for i in range(p.shape[1])
                )
                / p.shape[1]
            )
        total += sum(per) / len(per)
    return total


@pytest.mark.parametrize("views", [2, 3])
def test_byol_loss_matches_the_paper_equation(views) -> None:
    p, z = fixed(views, 6, 8, seed=3, unit=False), fixed(views, 6, 8, seed=4, unit=False)
    expected = reference_byol(p, z, lambda v: [u for u in range(views) if u != v])
    assert byol_loss(p, z, view_pairs(views)).item() == pytest.approx(expected, rel=1e-6)


def test_byol_momentum_follows_the_cosine_schedule_and_the_forward_sums_the_directions() -> None:
    model = build("byol", base_momentum=0.99)
    model.set_training_progress(0, 100)
    assert model.momentum == pytest.approx(0.99)
    model.set_training_progress(50, 100)
    assert model.momentum == pytest.approx(0.995)
    model.set_training_progress(100, 100)
    assert model.momentum == pytest.approx(1.0)
    model.eval()
    x = images(2, 4)
    loss = model(pixel_values=x).loss
    with torch.no_grad():
        p = model.predictor(model.projector(model.byol(x.flatten(0, 1)).embeddings)).view(2, 4, -1)
        t = model.target(x)
    assert loss.item() == pytest.approx(reference_byol(p, t, lambda v: [1 - v]), rel=1e-5)


def test_byol_trains_each_view_in_a_batch_of_its_own_as_official_byol() -> None:
    """Official BYOL applies the online and the target network to each view alone (byol_experiment.py's
    apply_once_fn per view), so in training BatchNorm normalises each view's batch by its own statistics."""
    model = build("byol").train()
    x = images(2, 4)
    loss = model(pixel_values=x).loss
    with torch.no_grad():
        p = torch.stack([model.predictor(model.projector(model.byol(view).embeddings)) for view in x])
        t = torch.stack([model.target.head(model.target.encoder(view).embeddings) for view in x])
    assert loss.item() == pytest.approx(reference_byol(p, t, lambda v: [1 - v]), rel=1e-5)
    # both views in one batch (statistics over both) is another loss: the check tells the two apart
    joint = build("byol", per_view_batchnorm=False).train()
    assert joint(pixel_values=x).loss.item() != pytest.approx(loss.item(), rel=1e-3)


@pytest.mark.parametrize("pair_mode", ["all", "consecutive"])
def test_simclr_sums_the_two_view_nt_xent_over_pairs_of_views(pair_mode) -> None:
    model = build("simclr", num_views=4, view_pairs=pair_mode, temperature=0.1).train()
    x = images(4, 5)
    loss = model(pixel_values=x).loss
    with torch.no_grad():  # in training, as official SimCLR: every view in one batch (tf.concat), one BatchNorm
        z = torch.nn.functional.normalize(model.projector(model.simclr(x.flatten(0, 1)).embeddings), dim=1)
    z = z.view(4, 5, -1)
    pairs = [(0, 1), (1, 2), (2, 3)] + ([(0, 2), (0, 3), (1, 3)] if pair_mode == "all" else [])
    expected = sum(reference_nt_xent(z[[v, u]], 0.1).item() for v, u in pairs)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_momentum_encoder_moves_once_per_optimizer_step_under_gradient_accumulation(
    method, tiny_recipe, monkeypatch
) -> None:
    """Through the real loop with 2 micro-batches per optimizer step: one EMA update per step, at the step's
    momentum (BYOL's cosine schedule at step k of K)."""
    momenta = []
    update = MomentumEncoder.update

    def record(self, encoder, head, momentum):
        momenta.append(momentum)
        update(self, encoder, head, momentum)

    monkeypatch.setattr(MomentumEncoder, "update", record)
    config = {**SMALL, **EXTRA[method], **({"base_momentum": 0.9} if method == "byol" else {"momentum": 0.9})}
    recipe = tiny_recipe(
        method=method,
        method_config=config,
        gradient_accumulation_steps=2,
        max_steps=3,
        per_device_train_batch_size=16,
        save_steps=0,
    )
    train(*parse_args([str(recipe)]))
    expected = [0.9] * 3 if method == "moco" else [1 - 0.1 * (math.cos(math.pi * k / 3) + 1) / 2 for k in range(3)]
    assert momenta == pytest.approx(expected)


def test_sinkhorn_codes_are_distributions_with_equal_mass_per_prototype() -> None:
    torch.manual_seed(0)  # independent of the tests run before
    scores = (
        torch.nn.functional.normalize(torch.randn(64, 8), dim=1)
        @ torch.nn.functional.normalize(torch.randn(8, 8), dim=1).T
    )
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
    [
        ("moco", "temperature", 0.0, "`temperature` must be a finite number > 0"),
        ("moco", "momentum", 1.5, "momentum must be in"),
        ("simclr", "num_views", 1, "num_views must be >= 2"),
        ("byol", "base_momentum", -0.1, "base_momentum"),
        ("swav", "sinkhorn_iterations", 0, "sinkhorn_iterations must be >= 1"),
        ("swav", "queue_size", -1, "queue_size"),
        ("moco", "momentum_schedule", "linear", "momentum_schedule must be one of"),
        ("simclr", "view_pairs", "neighbours", "view_pairs must be one of"),
    ],
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


def _shuffle_bn_worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # per-rank RNG: the permutation must still be rank 0's on both
        ids = torch.arange(8.0) + 8 * rank
        x = torch.stack([ids, ids + 100]).view(2, 8, 1)  # (views, batch, 1): view 1 = view 0 + 100
        shuffled, restore = batch_shuffle(x)
        result = {"shuffled": shuffled, "restored": batch_unshuffle(shuffled, restore), "x": x}
        model = build("moco", queue_size=64).train()  # the tiny ResNet's BatchNorm is per-process
        model(pixel_values=images(2, 4))
        result["queue_pointer"] = int(model.queue_pointer)
        try:
            build("moco", shuffle_bn=False).train()(pixel_values=images(2, 4))
        except ValueError as error:
            result["error"] = str(error)
        out[rank] = result
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_mixes_the_processes_examples_and_restores_them() -> None:
    """MoCo's Shuffle BN on 2 gloo processes: each process's key batch draws examples of both processes (all
    views of an example together), the keys come back to their owners; without it, plain BatchNorm refuses."""
    out = mp.Manager().dict()
    mp.spawn(_shuffle_bn_worker, args=(_free_port(), out), nprocs=2, join=True)
    drawn = []
    for rank in range(2):
        result = out[rank]
        torch.testing.assert_close(result["restored"], result["x"])
        shuffled = result["shuffled"]
        torch.testing.assert_close(shuffled[1], shuffled[0] + 100)  # the views of an example stay together
        ids = shuffled[0].flatten().long().tolist()
        assert {i // 8 for i in ids} == {0, 1}, ids  # this key batch mixes both processes' examples
        drawn += ids
        assert result["queue_pointer"] == 8  # keys of both processes (4 each) entered the shared queue
        assert "shuffle_bn" in result["error"] and "sync_batchnorm" in result["error"]
    assert sorted(drawn) == list(range(16))  # one permutation of the global batch


# -- real training on the shipped CIFAR-10 sample --


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_lower_the_loss_on_real_images(method, tmp_path) -> None:
    config = {**SMALL, **EXTRA[method], "queue_size": 256} if method == "moco" else {**SMALL, **EXTRA[method]}
    args = parse_args(short_training_args(method, config, tmp_path / "out"))
    results = train(*args)
    losses = [r["loss"] for r in json.loads((tmp_path / "out" / "training_history.json").read_text()) if "loss" in r]
    if method == "moco":  # the queue starts with random keys (easy negatives): the loss first rises, then falls
        assert losses[-1] < max(losses) and losses[-1] < math.log(257)
    else:
        assert losses[-1] < losses[0], losses
    assert results.get(protocol="knn", k=20, metric="top1_accuracy").value > 15.0  # chance is 10 %
    assert (tmp_path / "out" / "checkpoint-12").is_dir()


def test_a_transformers_video_model_trains_as_the_backbone() -> None:
    """VideoMAE through backbone_config: clips (views, batch, T, C, H, W), mean-pooled tokens, a few SGD steps."""
    backbone = {
        "model_type": "videomae",
        "image_size": 32,
        "patch_size": 16,
        "num_frames": 4,
        "tubelet_size": 2,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
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
