"""Pretext-task methods: jigsaw, counting, rotation + relative position (multi-task). Patches and permutations
checked against their definitions, the losses' limits, learning on real CIFAR-10 images, checkpoints, the loop."""

import io
import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.models.modeling_counting import quadrants
from hf_ssl.models.modeling_jigsaw import maximal_hamming_permutations, normalize_tiles
from hf_ssl.models.modeling_pretext import grid_patches
from hf_ssl.training import parse_args, train

from .conftest import SAMPLE, TINY_BACKBONE, tiny_training_args

SMALL = {
    "jigsaw": {
        "num_permutations": 10,
        "tile_size": 0,
        "tile_feature_dim": 16,
        "classifier_hidden_dim": 64,
        "dropout_prob": 0.0,
    },
    "counting": {"counting_dim": 32},
    "multi_task": {"head_hidden_dim": 64},
}


def build(method: str, **overrides) -> torch.nn.Module:
    cls = PRETRAINING_CLASSES[method]
    torch.manual_seed(0)
    return cls(cls.config_class(**{"backbone_config": TINY_BACKBONE, **SMALL[method], **overrides}))


@pytest.fixture(scope="module")
def cifar() -> torch.Tensor:
    """128 real CIFAR-10 training images from the shipped sample, normalised."""
    column = pq.read_table(SAMPLE / "data" / "train-00000-of-00004.parquet").slice(0, 128).column("image")
    images = [np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")) for cell in column.to_pylist()]
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255 - 0.45) / 0.25


def test_grid_patches_sit_inside_their_cells_with_gaps() -> None:
    size = 30  # cells of 10, patches of 8 (gap ratio 0.2): 2 px of slack
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).float()
    images = coords[None].repeat(5, 1, 1, 1)  # channel 0 = row, channel 1 = column of each pixel
    centred = grid_patches(images, 3, 0.2, jitter=False)
    assert centred.shape == (5, 9, 2, 8, 8)
    torch.testing.assert_close(centred[0, 5], images[0, :, 11:19, 21:29])  # cell (1, 2), offset 1
    torch.manual_seed(0)
    patches = grid_patches(images, 3, 0.2)
    for cell in range(9):
        row, col = divmod(cell, 3)
        rows, cols = patches[:, cell, 0], patches[:, cell, 1]
        assert (
            rows.min() >= 10 * row
            and rows.max() <= 10 * row + 9
            and cols.min() >= 10 * col
            and cols.max() <= 10 * col + 9
        )
        assert (rows[:, 1:, :] - rows[:, :-1, :] == 1).all()  # contiguous squares
    assert len({tuple(corner.tolist()) for corner in patches[:, 4, :, 0, 0]}) > 1  # the jitter moves patches
    with pytest.raises(ValueError, match="too small for a 3x3 grid"):
        grid_patches(torch.zeros(1, 3, 5, 5), 3, 0.2)


def test_permutation_set_is_the_papers_greedy_selection() -> None:
    """Algorithm 1 of Noroozi & Favaro: each new permutation maximises the summed Hamming distance to those chosen
    (checked against every one of the 9! permutations); the paper's 1000 have mean distance 8.00 and minimum 2."""
    every = np.array(list(itertools.permutations(range(9))))
    chosen = maximal_hamming_permutations(30, seed=3)
    assert chosen.shape == (30, 9) and len({tuple(p) for p in chosen}) == 30
    np.testing.assert_array_equal(chosen, maximal_hamming_permutations(30, seed=3))
    for i in (1, 2, 3, 10, 29):
        summed = sum((every != earlier).sum(1) for earlier in chosen[:i])
        taken = np.isin(every @ 10 ** np.arange(9), chosen[:i] @ 10 ** np.arange(9))
        assert (chosen[i] != chosen[:i]).sum() == summed[~taken].max(), i
    paper = maximal_hamming_permutations(1000)
    distances = (paper[:, None] != paper[None]).sum(2)[np.triu_indices(1000, 1)]
    assert len({tuple(p) for p in paper}) == 1000 and distances.min() == 2
    assert distances.mean() == pytest.approx(8.00, abs=0.01)


def test_tiles_are_normalised_one_by_one() -> None:
    tiles = normalize_tiles(torch.rand(2, 9, 3, 8, 8) * 5 + torch.arange(9.0)[None, :, None, None, None])
    torch.testing.assert_close(tiles.mean(dim=(-3, -2, -1)), torch.zeros(2, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiles.std(dim=(-3, -2, -1)), torch.ones(2, 9), atol=1e-4, rtol=0)


def test_quadrants_rebuild_the_image() -> None:
    image = torch.randn(2, 3, 8, 8)
    q = quadrants(image)
    torch.testing.assert_close(
        torch.cat([torch.cat([q[:, 0], q[:, 1]], 3), torch.cat([q[:, 2], q[:, 3]], 3)], 2), image
    )


def test_counting_penalises_the_all_zero_solution_by_the_margin(cifar) -> None:
    model = build("counting", margin=7.0)
    with torch.no_grad():
        model.count_head[0].bias.fill_(-1e3)  # every count is 0: equivariance holds, the contrastive term does not
        assert model(pixel_values=cifar[:4]).loss.item() == pytest.approx(7.0)


def test_multi_task_weights_select_the_tasks(cifar) -> None:
    rotation = build("multi_task", task_weights={"rotation": 1.0})
    out = rotation(pixel_values=cifar[:6])
    assert out.logits.shape == (24, 4)
    out.loss.backward()
    assert rotation.parameters_without_update() == list(rotation.relative_position_head.parameters())
    assert not rotation.relative_position_head[0].weight.grad.any()  # weight 0: in the graph, with a zero gradient
    both = build("multi_task", task_weights={"rotation": 0.5, "relative_position": 2.0})
    single = [build("multi_task", task_weights={task: 1.0}) for task in ("rotation", "relative_position")]
    losses = []
    for model in (both, *single):  # same weights; the same patches from the same RNG state
        torch.manual_seed(1)
        losses.append(model(pixel_values=cifar[:6]).loss.item())
    assert losses[0] == pytest.approx(0.5 * losses[1] + 2.0 * losses[2], rel=1e-5)
    with pytest.raises(ValueError, match="unknown tasks \\['colour'\\]"):
        build("multi_task", task_weights={"colour": 1.0})


TINY_ALEXNET = {"model_type": "alexnet", "sobel": False, "conv1_stride": 2, "width_multiplier": 0.0625, "fc_dim": 32}


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("jigsaw", {}),
        ("jigsaw", {"backbone_config": TINY_ALEXNET, "tile_size": 75}),
        ("counting", {}),
        ("multi_task", {}),
        ("multi_task", {"task_weights": {"rotation": 1.0}}),
        ("multi_task", {"task_weights": {"rotation": 0.0, "relative_position": 1.0}}),
    ],
)
def test_every_parameter_gets_a_gradient(cifar, method, overrides) -> None:
    """What several processes' DDP needs: every trainable parameter is in the graph of every step (the unused ones
    with a zero gradient, listed by parameters_without_update so the loop drops it)."""
    model = build(method, **overrides).train()
    images = cifar[:4] if "tile_size" not in overrides else nn.functional.interpolate(cifar[:2], size=225)
    model(pixel_values=images).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    frozen = {id(p) for p in model.parameters_without_update()}
    assert all(not p.grad.any() for p in model.parameters() if id(p) in frozen)


def test_the_pretext_tasks_draw_from_the_global_rng(cifar) -> None:
    """Permutations, patch offsets, neighbours and downsampling methods come from the global torch RNG (which the
    loop seeds per process), never from a generator of the model's own: the same seed replays a step, another seed
    draws another task."""
    for method in sorted(SMALL):
        model = build(method).eval()
        losses = []
        for seed in (5, 5, 6, 7, 8, 9):
            torch.manual_seed(seed)
            losses.append(model(pixel_values=cifar[:8]).loss.item())
        assert losses[0] == losses[1] and len(set(losses)) > 1, (method, losses)


def capture(module: nn.Module, outputs: bool = False) -> list:
    """Record every call's input (or output) of `module`."""
    seen = []
    if outputs:
        module.register_forward_hook(lambda m, args, out: seen.append(out))
    else:
        module.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(kwargs.get("pixel_values", *args[:1])), with_kwargs=True
        )
    return seen


def cross_entropy64(logits: torch.Tensor, labels: list[int]) -> float:
    """-log softmax(logits)[label], averaged, in float64 from its definition."""
    logits = logits.detach().double()
    return float(np.mean([float(torch.logsumexp(row, 0) - row[label]) for row, label in zip(logits, labels)]))


def cells64(images: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """(batch, grid*grid, C, s, s) row-major cells of square images, in float64."""
    side = images.shape[-1] // grid
    return torch.stack(
        [
            torch.stack(
                [
                    images[b, :, r * side : (r + 1) * side, c * side : (c + 1) * side]
                    for r in range(grid)
                    for c in range(grid)
                ]
            )
            for b in range(len(images))
        ]
    ).double()


def which(tile: torch.Tensor, candidates: torch.Tensor) -> int:
    """Index of the one candidate equal to `tile`."""
    hits = [j for j, candidate in enumerate(candidates) if torch.allclose(tile.double(), candidate, atol=1e-4)]
    assert len(hits) == 1, hits
    return hits[0]


def test_jigsaw_loss_is_the_cross_entropy_of_the_permutation_index(cifar) -> None:
    """Noroozi & Favaro: the tiles, each normalised on its own, are shown in the order of permutation p (position i
    shows tile p[i]); the loss is -log softmax(classifier)[index of p]."""
    model = build("jigsaw", tile_gap_ratio=0.0).eval()  # no gap: the tiles are the cells, no random offset
    images = cifar[:6, :, :30, :30]
    trunk_inputs, logits = capture(model.jigsaw), capture(model.classifier, outputs=True)
    loss = model(pixel_values=images).loss
    cells = cells64(images)
    cells = (cells - cells.mean((2, 3, 4), keepdim=True)) / cells.std((2, 3, 4), keepdim=True)
    shown = trunk_inputs[0].view(6, 9, 3, 10, 10)
    labels = []
    for b in range(6):
        order = [which(shown[b, i], cells[b]) for i in range(9)]
        labels.append(which(torch.tensor(order), model.permutations.double()))
    assert len(set(labels)) > 1
    assert loss.item() == pytest.approx(cross_entropy64(logits[0], labels), rel=1e-5)


def test_counting_loss_is_the_papers_equation(cifar) -> None:
    """Noroozi et al. 2017, eq. 4: |phi(D(x)) - sum_j phi(T_j(x))|^2 + max(0, M - |phi(D(y)) - sum_j phi(T_j(x))|^2)
    over the batch, y the previous image; D a 2x downsampling by one of the methods, T_j the 4 quadrants."""
    model = build("counting").eval()
    images = cifar[:6]
    inputs, counts = capture(model.counting), capture(model.count_head, outputs=True)
    torch.manual_seed(0)
    model(pixel_values=images)
    phi = counts[0].detach().double()
    whole, tiles = phi[:6], phi[6:].view(6, 4, -1).sum(1)
    distances = [float(((whole[i - 1] - tiles[i]) ** 2).sum()) for i in range(6)]
    model.config.margin = float(np.median(distances))  # half the contrastive terms active, half not
    torch.manual_seed(0)
    loss = model(pixel_values=images).loss
    quadrants = torch.stack(
        [images[:, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16] for r in (0, 1) for c in (0, 1)], 1
    )
    torch.testing.assert_close(inputs[1][6:], quadrants.flatten(0, 1))
    downsampled = [
        nn.functional.interpolate(images, size=16, mode=mode, **({"antialias": True} if "bi" in mode else {}))
        for mode in ("bilinear", "bicubic", "area", "nearest")
    ]
    assert sum(torch.allclose(inputs[1][:6], d) for d in downsampled) == 1
    phi = counts[1].detach().double()
    whole, tiles = phi[:6], phi[6:].view(6, 4, -1).sum(1)
    reference = 0.0
    for i in range(6):
        equivariance = sum((whole[i, k] - tiles[i, k]) ** 2 for k in range(phi.shape[1]))
        contrast = sum((whole[i - 1, k] - tiles[i, k]) ** 2 for k in range(phi.shape[1]))
        reference += float(equivariance + max(0.0, model.config.margin - float(contrast))) / 6
    assert loss.item() == pytest.approx(reference, rel=1e-5)


def test_multi_task_loss_is_the_weighted_sum_of_the_tasks_cross_entropies(cifar) -> None:
    """Rotation (class k for a rotation by k x 90 degrees) and relative position (class of the neighbour cell of
    the centre patch), 0.5 and 2 times their cross-entropies."""
    model = build("multi_task", task_weights={"rotation": 0.5, "relative_position": 2.0}, patch_gap_ratio=0.0).eval()
    images = cifar[:6, :, :30, :30]
    inputs = capture(model.multi_task)
    rotation, relative = capture(model.rotation_head, outputs=True), capture(model.relative_position_head, outputs=True)
    loss = model(pixel_values=images).loss
    turned = images
    for k in range(4):  # a quarter turn: column j of the image becomes row (W - 1 - j)
        torch.testing.assert_close(inputs[0][6 * k : 6 * (k + 1)], turned)
        turned = turned.transpose(2, 3).flip(2)
    rotation_labels = [k for k in range(4) for _ in range(6)]
    cells = cells64(images)
    torch.testing.assert_close(inputs[1][:6].double(), cells[:, 4])
    neighbours = [which(inputs[1][6 + b], cells[b]) for b in range(6)]
    relative_labels = [(0, 1, 2, 3, 5, 6, 7, 8).index(cell) for cell in neighbours]
    assert len(set(relative_labels)) > 1
    reference = 0.5 * cross_entropy64(rotation[0], rotation_labels) + 2.0 * cross_entropy64(
        relative[0], relative_labels
    )
    assert loss.item() == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize(
    ("method", "overrides", "ratio"),
    [
        ("jigsaw", {}, 0.8),
        ("counting", {}, 0.8),
        ("multi_task", {"task_weights": {"rotation": 1.0}}, 0.9),
        # 8 px patches of 32 px images: the hardest task here; it still ends below chance (ln 8 = 2.08)
        ("multi_task", {"task_weights": {"relative_position": 1.0}}, 0.96),
    ],
)
def test_the_pretext_task_is_learnable_on_real_images(cifar, method, overrides, ratio) -> None:
    """60 Adam steps on 128 CIFAR-10 images: each task's loss falls clearly below where it starts."""
    model = build(method, **overrides).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(pixel_values=cifar).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < ratio * np.mean(losses[:5]), losses[::10]


@pytest.mark.parametrize("method", sorted(SMALL))
def test_checkpoints_round_trip(method, tmp_path) -> None:
    model = build(method).eval()
    model.save_pretrained(tmp_path)
    again = AutoModelForPreTraining.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name  # the jigsaw permutation set included
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(AutoModel.from_pretrained(tmp_path).eval()(x).embeddings, model.base_model(x).embeddings)


def test_multi_task_trains_through_the_loop(tmp_path) -> None:
    args = parse_args(
        tiny_training_args(
            "multi_task",
            SMALL["multi_task"],
            tmp_path,
            image_size=32,
            max_steps=6,
            per_device_train_batch_size=32,
            shuffle_buffer=200,
            max_eval_bank_samples=300,
            save_steps=3,
            logging_steps=1,
        )
    )
    results = train(*args)
    losses = [r["loss"] for r in json.loads((tmp_path / "training_history.json").read_text()) if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert (tmp_path / "checkpoint-3").is_dir() and results.get(
        protocol="knn", k=20, metric="top1_accuracy"
    ).value > 12.0
