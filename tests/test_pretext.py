"""Pretext-task methods: jigsaw, counting, rotation + relative position (multi-task). Patches and permutations
checked against their definitions, the losses' limits, learning on real CIFAR-10 images, checkpoints, the loop."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.models.modeling_counting import quadrants
from hf_ssl.models.modeling_jigsaw import maximal_hamming_permutations, normalize_tiles
from hf_ssl.models.modeling_pretext import grid_patches
from hf_ssl.training import parse_args, train

from .conftest import SAMPLE, TINY_BACKBONE

SMALL = {
    "jigsaw": {"num_permutations": 10, "tile_feature_dim": 16, "classifier_hidden_dim": 64},
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
        assert rows.min() >= 10 * row and rows.max() <= 10 * row + 9 and cols.min() >= 10 * col and cols.max() <= 10 * col + 9
        assert (rows[:, 1:, :] - rows[:, :-1, :] == 1).all()  # contiguous squares
    assert len({tuple(corner.tolist()) for corner in patches[:, 4, :, 0, 0]}) > 1  # the jitter moves patches
    with pytest.raises(ValueError, match="too small for a 3x3 grid"):
        grid_patches(torch.zeros(1, 3, 5, 5), 3, 0.2)


def test_permutation_set_is_distinct_deterministic_and_far_apart() -> None:
    chosen = maximal_hamming_permutations(30, seed=3)
    assert chosen.shape == (30, 9) and len({tuple(p) for p in chosen}) == 30
    assert all(sorted(p) == list(range(9)) for p in chosen)
    np.testing.assert_array_equal(chosen, maximal_hamming_permutations(30, seed=3))
    distances = (chosen[:, None] != chosen[None]).sum(2)[np.triu_indices(30, 1)]
    random = np.stack([np.random.default_rng(i).permutation(9) for i in range(30)])
    random_distances = (random[:, None] != random[None]).sum(2)[np.triu_indices(30, 1)]
    assert distances.min() >= 7 > random_distances.min() and distances.mean() > random_distances.mean()
    # greedy max-min: each added permutation is at least as far from its predecessors as any later one
    gains = [(chosen[i] != chosen[:i]).sum(1).min() for i in range(1, 30)]
    assert gains == sorted(gains, reverse=True)


def test_tiles_are_normalised_one_by_one() -> None:
    tiles = normalize_tiles(torch.rand(2, 9, 3, 8, 8) * 5 + torch.arange(9.0)[None, :, None, None, None])
    torch.testing.assert_close(tiles.mean(dim=(-3, -2, -1)), torch.zeros(2, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(tiles.std(dim=(-3, -2, -1)), torch.ones(2, 9), atol=1e-4, rtol=0)


def test_quadrants_rebuild_the_image() -> None:
    image = torch.randn(2, 3, 8, 8)
    q = quadrants(image)
    torch.testing.assert_close(torch.cat([torch.cat([q[:, 0], q[:, 1]], 3), torch.cat([q[:, 2], q[:, 3]], 3)], 2), image)


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
    assert rotation.relative_position_head[0].weight.grad is None  # weight 0: the head is not used
    both = build("multi_task", task_weights={"rotation": 0.5, "relative_position": 2.0})
    single = [build("multi_task", task_weights={task: 1.0}) for task in ("rotation", "relative_position")]
    losses = []
    for model in (both, *single):  # same weights; the same patches from the same RNG state
        torch.manual_seed(1)
        losses.append(model(pixel_values=cifar[:6]).loss.item())
    assert losses[0] == pytest.approx(0.5 * losses[1] + 2.0 * losses[2], rel=1e-5)
    with pytest.raises(ValueError, match="unknown tasks \\['colour'\\]"):
        build("multi_task", task_weights={"colour": 1.0})


@pytest.mark.parametrize(
    ("method", "overrides", "ratio"),
    [("jigsaw", {}, 0.8), ("counting", {}, 0.8), ("multi_task", {"task_weights": {"rotation": 1.0}}, 0.9),
     # 8 px patches of 32 px images: the hardest task here; it still ends below chance (ln 8 = 2.08)
     ("multi_task", {"task_weights": {"relative_position": 1.0}}, 0.96)],
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
    args = parse_args([
        "--method", "multi_task", "--backbone_config", json.dumps(TINY_BACKBONE),
        "--method_config", json.dumps(SMALL["multi_task"]), "--dataset_name", str(SAMPLE), "--image_size", "32",
        "--max_steps", "6", "--per_device_train_batch_size", "32", "--shuffle_buffer", "200",
        "--max_eval_bank_samples", "300", "--dataloader_num_workers", "0", "--save_steps", "3", "--knn_k", "20",
        "--report_to", "none", "--disable_tqdm", "True", "--logging_steps", "1", "--output_dir", str(tmp_path),
    ])
    results = train(*args)
    losses = [r["loss"] for r in json.loads((tmp_path / "training_history.json").read_text()) if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert (tmp_path / "checkpoint-3").is_dir() and results["trained"]["knn_top1@20"] > 12.0
