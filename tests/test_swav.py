"""SwAV: Sinkhorn-Knopp and the swapped-prediction loss (with multi-crop and the queue) against a float64 reference
written from the paper's equations, frozen prototypes, and multi-crop's small crops through the data pipeline and the
training loop. Frozen prototypes with small crops on two real processes: tests/test_multiprocess.py."""

import pytest
import torch
from torch import nn

from hf_ssl.data import MultiViewTransform, ViewAugmentation
from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.models.modeling_swav import sinkhorn_knopp
from hf_ssl.training import parse_args
from hf_ssl.training.loop import Trainer

from .conftest import TINY_BACKBONE, VIDEO_SAMPLE

SWAV_CONFIG = {"projection_hidden_dim": 32, "projection_dim": 16, "num_prototypes": 12}


# -- the reference, from Caron et al. (2020) eq. (2)-(3), Algorithm 1 and sec. 3.2, and main_swav.py --


def reference_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Codes (B, K): Q = exp(scores / eps)^T (K x B), divided by its total, then `iterations` times every row
    scaled to mass 1/K and every column to mass 1/B; columns are returned scaled to sum to 1."""
    q = torch.exp(scores.double() / epsilon).T.clone()
    num_prototypes, batch = q.shape
    q /= q.sum()
    for _ in range(iterations):
        for k in range(num_prototypes):
            q[k] = q[k] / q[k].sum() / num_prototypes
        for b in range(batch):
            q[:, b] = q[:, b] / q[:, b].sum() / batch
    return (q * batch).T


def reference_swav_loss(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    num_global: int,
    temperature: float,
    epsilon: float,
    iterations: int,
    queue: torch.Tensor | None = None,
) -> torch.Tensor:
    """z: (crops, B, D) unit embeddings, the `num_global` global views first. For each global view s, codes q_s
    (Sinkhorn over its batch, plus the queue's rows if given); every other crop t pays
    l(z_t, q_s) = -sum_k q_s^k log softmax_k(z_t . c_k / tau); mean over examples, over the crops - 1 predictors
    of s, then over the global views s."""
    z, c = z.double(), nn.functional.normalize(prototypes.double(), dim=1)
    crops, batch, _ = z.shape
    total = torch.zeros((), dtype=torch.float64)
    for s in range(num_global):
        scores = z[s] @ c.T
        if queue is not None:
            scores = torch.cat([scores, queue[s].double() @ c.T])
        codes = reference_sinkhorn(scores, epsilon, iterations)[:batch]
        per_predictor = torch.zeros((), dtype=torch.float64)
        for t in range(crops):
            if t == s:
                continue
            for i in range(batch):
                logits = z[t, i] @ c.T / temperature
                per_predictor -= (codes[i] * (logits - torch.logsumexp(logits, 0))).sum() / batch
        total += per_predictor / (crops - 1)
    return total / num_global


def test_sinkhorn_matches_the_reference_algorithm() -> None:
    scores = torch.nn.functional.normalize(torch.randn(24, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    scores = (
        scores @ torch.nn.functional.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(1)), dim=1).T
    )
    for iterations in (1, 3):
        torch.testing.assert_close(
            sinkhorn_knopp(scores, 0.05, iterations).double(),
            reference_sinkhorn(scores, 0.05, iterations),
            rtol=1e-4,
            atol=1e-6,
        )


def _features_model(num_views: int, **overrides) -> nn.Module:
    """A SwAV model whose encoder and projector are identities: pixel_values are the features, so its loss is a
    function of fixed tensors and the prototypes only."""
    cls = PRETRAINING_CLASSES["swav"]
    config = cls.config_class(
        backbone_config=TINY_BACKBONE,
        num_views=num_views,
        projection_hidden_dim=8,
        projection_dim=8,
        num_prototypes=10,
        temperature=0.1,
        sinkhorn_epsilon=0.05,
        sinkhorn_iterations=3,
        **overrides,
    )
    model = cls(config).eval()  # eval: nothing is enqueued
    model.projector = nn.Identity()
    model.encode = lambda encoder, pixel_values, separately=False: pixel_values
    with torch.no_grad():
        model.prototypes.weight.copy_(torch.randn(10, 8, generator=torch.Generator().manual_seed(3)))
    return model


@pytest.mark.parametrize(("num_global", "num_small"), [(2, 0), (2, 4), (3, 2)])
def test_loss_matches_the_paper_with_multi_crop(num_global, num_small) -> None:
    model = _features_model(num_global)
    prototypes = model.prototypes.weight.detach().clone()
    generator = torch.Generator().manual_seed(4)
    z = torch.nn.functional.normalize(torch.randn(num_global + num_small, 6, 8, generator=generator), dim=2)
    small = {"small_pixel_values": z[num_global:]} if num_small else {}
    loss = model(pixel_values=z[:num_global], **small).loss
    expected = reference_swav_loss(z, prototypes, num_global, 0.1, 0.05, 3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_matches_the_paper_with_the_queue() -> None:
    model = _features_model(2, queue_size=5)
    prototypes = model.prototypes.weight.detach().clone()
    generator = torch.Generator().manual_seed(5)
    queue = torch.nn.functional.normalize(torch.randn(2, 5, 8, generator=generator), dim=2)
    model.queue.copy_(queue)
    model.queue_filled.fill_(5)
    z = torch.nn.functional.normalize(torch.randn(5, 6, 8, generator=generator), dim=2)
    loss = model(pixel_values=z[:2], small_pixel_values=z[2:]).loss
    expected = reference_swav_loss(z, prototypes, 2, 0.1, 0.05, 3, queue=queue)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_only_the_global_views_enter_the_queue() -> None:
    model = _features_model(2, queue_size=12).train()
    z = torch.nn.functional.normalize(torch.randn(5, 4, 8, generator=torch.Generator().manual_seed(6)), dim=2)
    model(pixel_values=z[:2], small_pixel_values=z[2:])
    torch.testing.assert_close(model.queue[:, :4], z[:2])
    assert int(model.queue_filled) == 4


def test_small_crops_of_another_batch_size_are_named() -> None:
    model = _features_model(2)
    with pytest.raises(ValueError, match="small_pixel_values must be"):
        model(pixel_values=torch.randn(2, 4, 8), small_pixel_values=torch.randn(3, 5, 8))


def test_frozen_prototypes_stay_in_the_graph_and_are_listed_without_update() -> None:
    cls = PRETRAINING_CLASSES["swav"]
    torch.manual_seed(0)
    model = cls(cls.config_class(backbone_config=TINY_BACKBONE, freeze_prototypes_steps=3, **SWAV_CONFIG)).train()
    images = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model.set_training_progress(2, 10)
    model(pixel_values=images).loss.backward()
    assert model.prototypes.weight.grad is not None  # DDP needs every parameter in the graph
    assert model.parameters_without_update() == [model.prototypes.weight]
    model.set_training_progress(3, 10)
    assert model.parameters_without_update() == []


# -- through the training loop --


def _swav_recipe(tiny_recipe, **overrides):
    recipe = {
        "method": "swav",
        "method_config": {**SWAV_CONFIG, "freeze_prototypes_steps": 2},
        "label_column": None,
        "per_device_train_batch_size": 16,
        "max_steps": 4,
        "save_steps": 0,
        "warmup_epochs": 0,
    }
    return tiny_recipe(**{**recipe, **overrides})


def test_prototypes_do_not_move_while_frozen_and_move_after(tiny_recipe) -> None:
    trainer = Trainer(*parse_args([str(_swav_recipe(tiny_recipe))]))
    method = trainer.run.unwrapped_model
    start = nn.functional.normalize(method.prototypes.weight.detach(), dim=1)  # the forward normalises them
    after_step = []
    method.after_optimizer_step = lambda: after_step.append(method.prototypes.weight.detach().clone())
    trainer.train()
    assert len(after_step) == 4
    for frozen in after_step[:2]:
        torch.testing.assert_close(frozen, start, rtol=0, atol=1e-6)
    for learning in after_step[2:]:
        assert (learning - start).abs().max() > 1e-3


def test_small_crops_reach_the_model_from_workers_and_the_device_augmentation(tiny_recipe) -> None:
    recipe = _swav_recipe(
        tiny_recipe,
        num_small_crops=3,
        small_crop_size=8,
        augment_on_device=True,
        dataloader_num_workers=1,
        max_steps=2,
    )
    trainer = Trainer(*parse_args([str(recipe)]))
    method = trainer.run.unwrapped_model
    seen, forward = [], method.forward

    def recording_forward(pixel_values, small_pixel_values=None, **kwargs):
        seen.append((tuple(pixel_values.shape), tuple(small_pixel_values.shape), float(small_pixel_values.std())))
        return forward(pixel_values, small_pixel_values=small_pixel_values, **kwargs)

    method.forward = recording_forward
    trainer.train()
    assert [shape[:2] for shape in seen] == [((2, 16, 3, 16, 16), (3, 16, 3, 8, 8))] * 2
    assert all(std > 0.5 for *_, std in seen)  # normalised by the device augmentation, not crops in [0, 1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "simclr", "method_config": {"projection_hidden_dim": 32}}, "num_small_crops=2: multi-crop"),
        (
            {
                "dataset_name": str(VIDEO_SAMPLE),
                "eval_split": "validation",
                "backbone_config": {
                    "model_type": "r3d",
                    "hidden_sizes": [8, 16],
                    "depths": [1, 1],
                    "embedding_size": 8,
                },
            },
            "not supported for video",
        ),
    ],
    ids=["other-method", "video"],
)
def test_small_crops_where_they_do_not_apply_are_named(tiny_recipe, overrides, message) -> None:
    recipe = tiny_recipe(**{"method": "swav", "method_config": SWAV_CONFIG, "num_small_crops": 2, **overrides})
    with pytest.raises(ValueError, match=message):
        Trainer(*parse_args([str(recipe)]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_small_crops", "-1", "num_small_crops must be >= 0"),
        ("small_crop_size", "4", "small_crop_size"),
        ("small_crop_scale", "0.2 0.1", "small_crop_scale"),
    ],
)
def test_bad_multi_crop_arguments_are_named(tiny_recipe, field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_args([str(tiny_recipe()), f"--{field}", *value.split()])


def test_the_transform_adds_small_crops_without_changing_the_global_views() -> None:
    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(4)]
    examples = [{"image_tensor": image, "id": i} for i, image in enumerate(images)]
    small = ViewAugmentation(size=12, scale=(0.05, 0.14))
    plain = MultiViewTransform(ViewAugmentation(size=24), num_views=2)(examples, seed=3)
    multi_crop = MultiViewTransform(ViewAugmentation(size=24), num_views=2, num_small_crops=3, small_augmentation=small)
    batch = multi_crop(examples, seed=3)
    assert torch.equal(batch["pixel_values"], plain["pixel_values"])
    assert batch["small_pixel_values"].shape == (3, 4, 3, 12, 12)
    assert torch.equal(batch["small_pixel_values"], multi_crop(examples, seed=3)["small_pixel_values"])
    assert "small_pixel_values" not in plain
    on_device = MultiViewTransform(
        ViewAugmentation(size=24), num_views=2, num_small_crops=3, small_augmentation=small, augment_on_device=True
    )
    crops = on_device(examples, seed=3)["small_pixel_values"]
    assert crops.shape == (3, 4, 3, 12, 12) and 0 <= crops.min() and crops.max() <= 1
    views = on_device.augment(crops, 3, small=True)
    assert torch.equal(views, on_device.augment(crops, 3, small=True))
    assert not torch.equal(views, on_device.augment(crops, 4, small=True))
