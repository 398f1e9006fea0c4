"""Transitive Invariance: the ranking loss against Wang & Gupta's equation written out with loops, the hard
negatives, a pair dataset (views from two image columns, patch ids, the `kind` selection) through the real
training loop, and checkpoints (Auto classes, remote code without hf_ssl)."""

import json
import pathlib

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoModel

from hf_ssl.data.pairs import select_pair_kinds
from hf_ssl.models import TransitiveInvarianceConfig, TransitiveInvarianceForPreTraining, TransitiveInvarianceModel
from hf_ssl.models.modeling_transitive_invariance import ranking_loss, select_negatives
from hf_ssl.training import parse_args, train

from .conftest import TINY_BACKBONE, tiny_training_args
from .test_instance_recognition import assert_loads_without_hf_ssl

SMALL = {"embedding_dim": 16}


def build(**overrides) -> TransitiveInvarianceForPreTraining:
    torch.manual_seed(0)
    config = TransitiveInvarianceConfig(**{"backbone_config": TINY_BACKBONE, **SMALL, **overrides})
    return TransitiveInvarianceForPreTraining(config)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def reference_loss(a, p, margin: float, k: int, ids=None) -> float:
    """Wang & Gupta 2015, pair by pair: D(x, y) = 1 - cos(x, y); the negatives of pair i are the patches of the other
    pairs (none with the id of a_i or p_i) with max(0, D(a_i, p_i) - D(a_i, n) + M) > 0, the k largest of those; the
    loss sums that term and max(0, D(a_i, p_i) - D(p_i, n) + M) over the chosen n, over 2 k pairs (the released
    RankHardLossLayer)."""

    def d(x, y) -> float:
        return 1.0 - float(x.double() @ y.double()) / float(x.double().norm() * y.double().norm())

    total = 0.0
    for i in range(len(a)):
        terms = []
        for j in range(len(a)):
            for n, n_id in ((a[j], None if ids is None else ids[0][j]), (p[j], None if ids is None else ids[1][j])):
                if j == i or (ids is not None and n_id in (ids[0][i], ids[1][i])):
                    continue
                to_anchor = max(0.0, d(a[i], p[i]) - d(a[i], n) + margin)
                if to_anchor > 0:
                    terms.append((to_anchor, to_anchor + max(0.0, d(a[i], p[i]) - d(p[i], n) + margin)))
        total += sum(both for _, both in sorted(terms, reverse=True)[:k])
    return total / (2 * k * len(a))


@pytest.mark.parametrize("margin, k", [(0.5, 4), (1.0, 2), (0.1, 30)])
def test_loss_is_the_papers_equation_with_the_hardest_negatives(margin: float, k: int) -> None:
    a, p = unit(2, 10, 8)
    loss = ranking_loss(torch.stack([a, p]), margin, k, hard_ratio=1.0)
    assert loss.item() == pytest.approx(reference_loss(a, p, margin, k), rel=1e-5)


def test_patches_of_the_pair_are_never_its_negatives() -> None:
    a, p = unit(2, 10, 8, seed=1)
    ids = torch.arange(20).view(2, 10)
    ids[0, 5], ids[1, 7] = ids[1, 0], ids[0, 2]  # pairs of the graph share patches
    a[5], p[7] = p[0], a[2]
    loss = ranking_loss(torch.stack([a, p]), 0.5, 4, view_ids=ids)
    assert loss.item() == pytest.approx(reference_loss(a, p, 0.5, 4, ids.tolist()), rel=1e-5)
    assert loss.item() != pytest.approx(reference_loss(a, p, 0.5, 4), rel=1e-3)


def test_hard_negatives_are_the_highest_losses_and_the_rest_random() -> None:
    losses = torch.tensor([[0.9, 0.0, 0.5, 0.7, 0.2, 0.3, 0.8]])
    allowed = torch.tensor([[True, True, True, True, True, True, False]])  # the 0.8 is the pair's own patch
    hardest = select_negatives(losses, allowed, 3, 1.0)
    assert hardest[0].nonzero().flatten().tolist() == [0, 2, 3]
    # fewer violating candidates than negatives: all of them, never a zero loss or a disallowed one
    assert select_negatives(losses, allowed, 10, 1.0)[0].nonzero().flatten().tolist() == [0, 2, 3, 4, 5]
    torch.manual_seed(0)
    for _ in range(20):
        mixed = select_negatives(losses, allowed, 4, 0.5)[0].nonzero().flatten().tolist()
        assert len(mixed) == 4 and {0, 3} <= set(mixed) and not {1, 6} & set(mixed)
    drawn = {tuple(select_negatives(losses, allowed, 2, 0.0)[0].nonzero().flatten().tolist()) for _ in range(40)}
    assert len(drawn) > 3 and all(not {1, 6} & set(pair) for pair in drawn)  # random among the violating ones


def test_the_models_loss_is_the_equation_on_its_embeddings_and_trains_the_backbone() -> None:
    model = build().train()
    x = torch.randn(2, 6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    out = model(pixel_values=x)
    with torch.no_grad():
        features = model.encode(model.transitive_invariance, x).flatten(0, 1)
        embeddings = torch.nn.functional.normalize(model.embedding(features), dim=1).view(2, 6, -1)
    assert out.loss.item() == pytest.approx(reference_loss(embeddings[0], embeddings[1], 0.5, 4), rel=1e-4)
    out.loss.backward()
    assert model.transitive_invariance.backbone.embedder.embedder.convolution.weight.grad.abs().sum() > 0


def test_random_negatives_until_the_switch_step_then_the_hardest() -> None:
    model = build(hard_negative_start_step=3).eval()
    x = torch.randn(2, 12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = model.encode(model.transitive_invariance, x).flatten(0, 1)
        embeddings = torch.nn.functional.normalize(model.embedding(features), dim=1).view(2, 12, -1)
    hardest = reference_loss(embeddings[0], embeddings[1], 0.5, 4)
    model.set_training_progress(2, 10)
    torch.manual_seed(5)
    before = model(pixel_values=x).loss.item()
    torch.manual_seed(5)
    assert before == pytest.approx(ranking_loss(embeddings, 0.5, 4, hard_ratio=0.0).item(), rel=1e-5)
    assert before != pytest.approx(hardest, rel=1e-3)
    model.set_training_progress(3, 10)
    assert model(pixel_values=x).loss.item() == pytest.approx(hardest, rel=1e-4)
    # a recipe gives the switch in epochs, converted with the run's steps per epoch
    args, _, _ = parse_args(
        ["--dataset_name", "d", "--output_dir", "x", "--method_config", '{"hard_negative_start_epochs": 2}']
    )
    assert args.method_config_in_steps(TransitiveInvarianceConfig().to_dict(), 7) == {"hard_negative_start_step": 14}


def test_defaults_are_the_papers_and_bad_values_are_named() -> None:
    config = TransitiveInvarianceConfig()
    assert config.backbone_config.model_type == "vgg" and not config.backbone_config.sobel
    assert (
        config.backbone_config.conv_channels[-1] == [512, 512, 512] and len(config.backbone_config.conv_channels) == 5
    )
    assert (config.embedding_dim, config.margin, config.num_negatives) == (1024, 0.5, 4)
    with pytest.raises(ValueError, match="margin"):
        build(margin=0)
    with pytest.raises(ValueError, match="hard_negative_ratio must be in"):
        build(hard_negative_ratio=1.5)
    with pytest.raises(ValueError, match="hard_negative_start_step must be >= 0"):
        build(hard_negative_start_step=-1)
    with pytest.raises(ValueError, match=r"view_ids must be \(num_views=2, batch\)"):
        build()(pixel_values=torch.zeros(2, 4, 3, 16, 16), view_ids=torch.zeros(2, 3))


def _image(colour: tuple[int, int, int], seed: int) -> PIL.Image.Image:
    noise = np.random.default_rng(seed).integers(-30, 30, (20, 20, 3))
    return PIL.Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> pathlib.Path:
    """A pair dataset in the format of `hf_ssl.transitive` (48 pairs: 16 of each kind, both patches of one colour)
    and a labelled image dataset (train / test) for the kNN."""
    root = tmp_path_factory.mktemp("pairs")
    kinds = ["intra", "inter", "transitive"] * 16
    pairs = datasets.Dataset.from_dict(
        {
            "image_a": [_image(COLOURS[i % 4], 2 * i) for i in range(48)],
            "image_b": [_image(COLOURS[i % 4], 2 * i + 1) for i in range(48)],
            "patch_a": list(range(0, 96, 2)),
            "patch_b": list(range(1, 96, 2)),
            "kind": kinds,
            "label_a": [i % 4 for i in range(48)],
            "label_b": [i % 4 for i in range(48)],
        },
        features=datasets.Features(
            image_a=datasets.Image(),
            image_b=datasets.Image(),
            patch_a=datasets.Value("int64"),
            patch_b=datasets.Value("int64"),
            kind=datasets.Value("string"),
            label_a=datasets.Value("int64"),
            label_b=datasets.Value("int64"),
        ),
    )
    (root / "pairs" / "train").mkdir(parents=True)
    pairs.to_parquet(root / "pairs" / "train" / "train-00000-of-00001.parquet")
    for split, count in (("train", 40), ("test", 20)):
        images = datasets.Dataset.from_dict(
            {"image": [_image(COLOURS[i % 4], 1000 + i) for i in range(count)], "label": [i % 4 for i in range(count)]},
            features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
        )
        (root / "labelled" / split).mkdir(parents=True)
        images.to_parquet(root / "labelled" / split / f"{split}-00000-of-00001.parquet")
    return root


def pair_training_args(pair_data: pathlib.Path, output_dir: pathlib.Path, lists: dict | None = None, **settings):
    """A tiny run on the pair dataset; `lists` are list fields ({field: [values]}) over the pair dataset's
    columns."""
    lists = {"view_columns": ["image_a", "image_b"], "view_id_columns": ["patch_a", "patch_b"], **(lists or {})}
    return tiny_training_args(
        "transitive_invariance",
        {**SMALL, "num_negatives": 2},
        output_dir,
        dataset_name=pair_data / "pairs",
        eval_dataset_name=pair_data / "labelled",
        image_size=16,
        per_device_train_batch_size=8,
        shuffle_buffer=48,
        learning_rate=0.05,
        warmup_epochs=0,
        logging_steps=1,
        save_steps=100,
        **settings,
    ) + [item for field, values in lists.items() for item in (f"--{field}", *values)]


def test_pair_kinds_select_rows_by_their_kind(pair_data: pathlib.Path) -> None:
    stream = datasets.load_dataset(str(pair_data / "pairs"), split="train", streaming=True)
    kinds = [row["kind"] for row in select_pair_kinds(stream, ["intra", "transitive"])]
    assert len(kinds) == 32 and set(kinds) == {"intra", "transitive"}


def test_pair_dataset_trains_through_the_loop(pair_data: pathlib.Path, tmp_path: pathlib.Path, capsys) -> None:
    args = parse_args(
        pair_training_args(pair_data, tmp_path / "out", max_steps=4, lists={"pair_kinds": ["intra", "inter"]})
    )
    results = train(*args)
    history = json.loads((tmp_path / "out" / "training_history.json").read_text())
    losses = [record["loss"] for record in history if "loss" in record]
    assert len(losses) == 4 and all(np.isfinite(losses)) and max(losses) > 0
    # the 32 pairs of the two kinds asked for, at 8 a step
    assert "transitive_invariance: 32 examples, 1 process(es), 4 steps/epoch" in capsys.readouterr().out
    assert results.get(protocol="knn", k=20, metric="top1_accuracy").value >= 0
    assert type(AutoModel.from_pretrained(tmp_path / "out")) is TransitiveInvarianceModel


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"view_columns": ["image_x", "image_b"]}, "view_columns: dataset .* has no column 'image_x'"),
        ({"view_id_columns": ["patch_a", "patch"]}, "view_id_columns: dataset .* has no column 'patch'"),
        ({"view_columns": ["image_a"]}, r"view_columns must name one column per view \(2\)"),
        ({"pair_kinds": ["intra", "cliques"]}, "pair_kinds must be a non-empty list of"),
    ],
)
def test_bad_pair_settings_stop_the_run_at_start(pair_data, tmp_path, setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(*parse_args(pair_training_args(pair_data, tmp_path / "out", lists=setting, max_steps=1)))
    assert not (tmp_path / "out" / "training_history.json").exists()


def test_checkpoints_load_without_hf_ssl(tmp_path: pathlib.Path) -> None:
    assert_loads_without_hf_ssl(build(), tmp_path)


def _global_batch_worker(rank: int, port: int, z: torch.Tensor, out: dict) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = z[:, rank * 5 : (rank + 1) * 5].clone().requires_grad_(True)
        ranking_loss(local, 0.5, 4, hard_ratio=1.0).backward()
        out[rank] = local.grad
    finally:
        dist.destroy_process_group()


def test_two_processes_rank_against_the_global_batch_with_correct_gradients() -> None:
    """The negatives of a pair come from both processes: per-process gradients, averaged as DDP does, equal one
    process's on the whole batch, whose loss is the paper's equation (the reference above)."""
    import torch.multiprocessing as mp

    from .test_contrastive import _free_port

    z = unit(2, 10, 8, seed=3)
    out = mp.Manager().dict()
    mp.spawn(_global_batch_worker, args=(_free_port(), z, out), nprocs=2, join=True)
    whole = z.clone().requires_grad_(True)
    loss = ranking_loss(whole, 0.5, 4, hard_ratio=1.0)
    assert loss.item() == pytest.approx(reference_loss(z[0], z[1], 0.5, 4), rel=1e-5)
    loss.backward()
    torch.testing.assert_close(torch.cat([out[0], out[1]], dim=1) / 2, whole.grad)
