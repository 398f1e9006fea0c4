"""Linear probes on frozen features, under one of two protocols (`probe_protocol`), deterministic for a given seed.

`standardised` (the default; features extracted once):
    the eval preprocessing only (resize, centre crop: no augmentation), features standardised with the training
    split's per-feature mean and standard deviation (a BatchNorm without affine parameters), one linear layer
    initialised N(0, 0.01) with zero bias, AdamW (lr 1e-3, decoupled weight decay 5e-4), batch 256, 100 epochs,
    cosine decay of the lr to 0 over every step, cross-entropy. Layers whose scales differ by orders of magnitude
    all train with one learning rate.

`deepcluster` (DeepCluster's `eval_linear.py`, Caron et al. 2018; the backbone runs every epoch):
    training views re-drawn every epoch over the frozen backbone (in eval mode): resize the short side to the image
    processor's resize size R, centre crop R x R, random crop of the processor's crop size, random horizontal flip
    (Resize(256), CenterCrop(256), RandomCrop(224), RandomHorizontalFlip in the paper); test images centre-cropped
    by the image processor. No feature standardisation. One linear layer with PyTorch's default initialisation
    (no BatchNorm), SGD (lr 0.01, momentum 0.9, weight decay 1e-4, coupled), batch 256, 90 epochs, lr decayed per
    step t as lr / sqrt(1 + lr * weight_decay * t) (`util.learning_rate_decay`), cross-entropy. Conv layers are
    average-pooled as in `eval_linear.py` (see `suite.deepcluster_pool`).
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .transforms import EvalTransform


@dataclass(frozen=True)
class ProbeDefaults:
    """A protocol's defaults for what `hf-ssl evaluate` lets one override."""

    epochs: int
    learning_rate: float
    weight_decay: float


PROBE_PROTOCOLS = {
    "standardised": ProbeDefaults(epochs=100, learning_rate=1e-3, weight_decay=5e-4),
    "deepcluster": ProbeDefaults(epochs=90, learning_rate=0.01, weight_decay=1e-4),
}


class LinearProbe:
    """One linear classifier on frozen features, fed one epoch at a time (`fit_epoch`), so the features may be new
    augmented views every epoch. Initialisation and batch order come from a generator seeded with `seed`."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        protocol: str = "standardised",
        epochs: int | None = None,
        batch_size: int = 256,
        learning_rate: float | None = None,
        weight_decay: float | None = None,
        momentum: float = 0.9,
        seed: int = 0,
        device: str | torch.device = "cpu",
        description: str = "linear probe",
    ):
        if protocol not in PROBE_PROTOCOLS:
            raise ValueError(f"probe_protocol={protocol!r} is not one of {sorted(PROBE_PROTOCOLS)}")
        defaults = PROBE_PROTOCOLS[protocol]
        self.protocol, self.batch_size, self.device, self.description = protocol, batch_size, device, description
        self.epochs = epochs or defaults.epochs
        self.learning_rate = learning_rate or defaults.learning_rate
        weight_decay = defaults.weight_decay if weight_decay is None else weight_decay
        self.generator = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.Linear(num_features, num_classes)
        with torch.no_grad():
            if protocol == "standardised":
                self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=self.generator) * 0.01)
                self.linear.bias.zero_()
            else:  # nn.Linear's own initialisation (DeepCluster's RegLog), drawn from the probe's generator
                torch.nn.init.kaiming_uniform_(self.linear.weight, a=math.sqrt(5), generator=self.generator)
                bound = 1 / math.sqrt(num_features)
                self.linear.bias.copy_(torch.rand(num_classes, generator=self.generator) * 2 * bound - bound)
        self.linear.to(device)
        if protocol == "standardised":
            self.optimizer = torch.optim.AdamW(
                self.linear.parameters(), lr=self.learning_rate, weight_decay=weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                self.linear.parameters(), lr=self.learning_rate, momentum=momentum, weight_decay=weight_decay
            )
        self.weight_decay = weight_decay
        self.mean: torch.Tensor | None = None  # standardisation, from the (fixed) training features
        self.std: torch.Tensor | None = None
        self.step = 0

    def _lr(self, steps_per_epoch: int) -> float:
        if self.protocol == "standardised":  # cosine to 0 over every step of the run
            return 0.5 * self.learning_rate * (1 + math.cos(math.pi * self.step / (self.epochs * steps_per_epoch)))
        return self.learning_rate / math.sqrt(1 + self.learning_rate * self.weight_decay * self.step)

    def _inputs(self, features: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(features).float()
        if self.protocol == "standardised":
            if self.mean is None:
                self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
            x = (x - self.mean) / self.std
        return x.to(self.device)

    def fit_epoch(self, features: np.ndarray, labels: np.ndarray) -> None:
        """One pass over (features, labels) in an order drawn from the probe's generator."""
        if len(features) != len(labels):
            raise ValueError(f"{self.description}: {len(features)} training features but {len(labels)} labels")
        if labels.min() < 0:
            raise ValueError(f"{self.description}: the training split has examples without a label (label -1)")
        x, y = self._inputs(features), torch.from_numpy(labels).long().to(self.device)
        steps_per_epoch = -(-len(x) // self.batch_size)
        order = torch.randperm(len(x), generator=self.generator).to(self.device)
        for start in range(0, len(x), self.batch_size):
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr(steps_per_epoch)
            batch = order[start : start + self.batch_size]
            loss = torch.nn.functional.cross_entropy(self.linear(x[batch]), y[batch])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class scores (num_examples, num_classes)."""
        return self.linear(self._inputs(features)).float().cpu().numpy()


def train_linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    progress: bool = True,
    **settings: Any,
) -> np.ndarray:
    """Class scores (num_test, num_classes) of a `LinearProbe` (`settings`: its keyword arguments, protocol, epochs,
    ...) trained for every epoch on the same pre-extracted features: the whole `standardised` protocol;
    `deepcluster` without its per-epoch augmentation."""
    probe = LinearProbe(train_features.shape[1], num_classes, **settings)
    for _ in tqdm(range(probe.epochs), desc=probe.description, disable=not progress, leave=False):
        probe.fit_epoch(train_features, train_labels)
    return probe.predict(test_features)


def _size_field(size, name: str) -> int | None:
    """A field of an image processor's size (a dict, or transformers' SizeDict), None when absent."""
    return size.get(name) if isinstance(size, dict) else getattr(size, name, None)


class RandomCropFlipTransform(EvalTransform):
    """The `deepcluster` protocol's training views: resize the short side to R and centre crop R x R (the image
    processor with its crop size set to R), random crop of the processor's crop size, random horizontal flip, the
    processor's normalisation. An example's crop and flip are drawn from (seed, epoch, example id): new every
    epoch, the same under any number of processes and workers."""

    def __init__(
        self, image_processor, epoch: int, seed: int = 0, image_column: str = "image", label_column: str | None = None
    ):
        resize = _size_field(image_processor.size, "shortest_edge")
        crop = (_size_field(image_processor.crop_size, "height"), _size_field(image_processor.crop_size, "width"))
        if not (resize and all(crop) and getattr(image_processor, "do_center_crop", False)):
            raise ValueError(
                "probe_protocol='deepcluster' needs an image processor that resizes the short side and centre-crops "
                f"(size.shortest_edge and crop_size), got size={image_processor.size}, "
                f"crop_size={image_processor.crop_size}"
            )
        square = max(resize, *crop)
        super().__init__(
            partial(image_processor, crop_size={"height": square, "width": square}), image_column, label_column
        )
        self.square, self.crop, self.epoch, self.seed = square, crop, epoch, seed

    def __call__(self, examples: list[dict], seed: int = 0) -> dict:
        batch = super().__call__(examples)
        views = []
        for pixels, example_id in zip(batch["pixel_values"], batch["ids"].tolist()):
            rng = np.random.default_rng([self.seed, self.epoch, example_id])
            top, left = (int(rng.integers(0, self.square - c + 1)) for c in self.crop)
            view = pixels[:, top : top + self.crop[0], left : left + self.crop[1]]
            views.append(view.flip(-1) if rng.random() < 0.5 else view)
        batch["pixel_values"] = torch.stack(views)
        return batch
