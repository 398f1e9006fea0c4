"""The lightly side of `bench/peer_quality.py`: one method trained with lightly, then the frozen pooled backbone
features of the train images (the kNN bank) and of the test images exported for hf_ssl's weighted kNN.

Runs in the peer environment (torch + torchvision + lightly; see ../shared/peer/README.md), never imports hf_ssl:

    $PEER/bin/python bench/peer_lightly_train.py --config '{"method": "simclr", ...}' --output features.npz

`--config` is the JSON dict `peer_quality.py` builds (every setting of the run, the same values its hf_ssl run gets;
the driver's docstring documents each). The output .npz holds bank, bank_labels, queries, query_labels (features in
file order), init_bank and init_queries (the same features of the backbone at its random initialisation: the
random-init baseline) and train_seconds, train_images. With `--step-check K` it is `bench/peer_step.py`'s side instead
(`step_check`).
"""

import argparse
import copy
import glob
import io
import json
import os
import time

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import torch
import torchvision
from lightly.loss import NegativeCosineSimilarity, NTXentLoss, SwaVLoss
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, MoCoV2Transform, SimCLRTransform
from lightly.transforms.swav_transform import SwaVTransform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from torch import nn


def read_split(folder: str, split: str) -> tuple[list[bytes], np.ndarray]:
    """Encoded images and labels of `<folder>/data/<split>-*.parquet`, in file order (the order hf_ssl's ids follow)."""
    files = sorted(glob.glob(os.path.join(folder, "data", f"{split}-*.parquet")))
    if not files:
        raise FileNotFoundError(f"no {split}-*.parquet under {folder}/data")
    images, labels = [], []
    for file in files:
        table = pq.read_table(file, columns=["image", "label"]).to_pydict()
        images += [cell["bytes"] for cell in table["image"]]
        labels += table["label"]
    return images, np.asarray(labels, dtype=np.int64)


class EncodedImages(torch.utils.data.Dataset):
    """Images decoded on access (as the hf_ssl stream decodes each example every epoch), then `transform`."""

    def __init__(self, images: list[bytes], transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(PIL.Image.open(io.BytesIO(self.images[index])).convert("RGB"))


def augmentation(cfg: dict):
    """lightly's own transform of the method, every default overridden by the shared recipe values."""
    jitter = dict(
        cj_prob=cfg["jitter_p"],
        cj_strength=1.0,
        cj_bright=cfg["jitter"][0],
        cj_contrast=cfg["jitter"][1],
        cj_sat=cfg["jitter"][2],
        cj_hue=cfg["jitter"][3],
    )
    common = dict(
        **jitter,
        random_gray_scale=cfg["grayscale_p"],
        gaussian_blur=cfg["blur_p"],
        sigmas=(0.1, 2.0),
        hf_prob=cfg["hflip_p"],
        vf_prob=0.0,
        rr_prob=0.0,
        normalize=IMAGENET_NORMALIZE,
    )
    size, scale = cfg["image_size"], cfg["crop_min_scale"]
    if cfg["method"] == "simclr":
        return SimCLRTransform(input_size=size, min_scale=scale, **common)
    if cfg["method"] == "moco":
        return MoCoV2Transform(input_size=size, min_scale=scale, **common)
    if cfg["method"] == "byol":  # both views alike (no solarisation), as in hf_ssl's symmetric augmentation
        view = dict(input_size=size, min_scale=scale, solarization_prob=0.0, **common)
        return BYOLTransform(BYOLView1Transform(**view), BYOLView2Transform(**view))
    return SwaVTransform(
        crop_sizes=(size,), crop_counts=(cfg["num_views"],), crop_min_scales=(scale,), crop_max_scales=(1.0,), **common
    )


def resnet18(stem: str, zero_init_residual: bool) -> nn.Module:
    """torchvision's ResNet-18 without its classifier: (B, 3, H, W) -> pooled (B, 512)."""
    model = torchvision.models.resnet18(zero_init_residual=zero_init_residual)
    if stem == "cifar":  # 3x3 stride-1 conv, no max-pool (He et al. 2016, sec. 4.2), as hf_ssl's cifar_stem
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


class Method(nn.Module):
    """lightly's building blocks of one method, assembled as in lightly's examples; `loss(views, step)`."""

    def __init__(self, cfg: dict, total_steps: int):
        super().__init__()
        m, self.cfg, self.total_steps = cfg["method_config"], cfg, total_steps
        self.method = cfg["method"]
        self.backbone = resnet18(cfg["stem"], cfg["zero_init_residual"])
        hidden, out = m["projection_hidden_dim"], m["projection_dim"]
        if self.method == "simclr":
            self.head = SimCLRProjectionHead(512, hidden, out, num_layers=2, batch_norm=True)
            self.criterion = NTXentLoss(temperature=m["temperature"])
        elif self.method == "moco":  # MoCo v2: no BatchNorm in the projector; keys into the memory bank
            self.head = MoCoProjectionHead(512, hidden, out, num_layers=2, batch_norm=False)
            self.criterion = NTXentLoss(temperature=m["temperature"], memory_bank_size=(m["queue_size"], out))
        elif self.method == "byol":
            self.head = BYOLProjectionHead(512, hidden, out)
            self.predictor = BYOLPredictionHead(out, m["prediction_hidden_dim"], out)
            self.criterion = NegativeCosineSimilarity()
        else:
            self.head = SwaVProjectionHead(512, hidden, out)
            self.prototypes = SwaVPrototypes(out, m["num_prototypes"], m.get("freeze_prototypes_steps", 0))
            self.criterion = SwaVLoss(m["temperature"], m["sinkhorn_iterations"], m["sinkhorn_epsilon"])
            self.queues = (
                nn.ModuleList(MemoryBankModule(size=(m["queue_size"], out)) for _ in range(cfg["num_views"]))
                if m.get("queue_size", 0) > 0
                else None
            )
        if self.method in ("moco", "byol"):
            self.backbone_momentum, self.head_momentum = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
            deactivate_requires_grad(self.backbone_momentum)
            deactivate_requires_grad(self.head_momentum)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.no_grad()
    def project_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_momentum(self.backbone_momentum(x))

    def loss(self, views: list[torch.Tensor], step: int) -> torch.Tensor:
        m = self.cfg["method_config"]
        if self.method == "simclr":
            return self.criterion(self.project(views[0]), self.project(views[1]))
        if self.method == "moco":  # lightly's MoCo example: constant momentum, one direction (query 0, key 1)
            update_momentum(self.backbone, self.backbone_momentum, m["momentum"])
            update_momentum(self.head, self.head_momentum, m["momentum"])
            return self.criterion(self.project(views[0]), self.project_momentum(views[1]))
        if self.method == "byol":  # lightly's BYOL example: momentum cosine from base to 1, both directions
            momentum = cosine_schedule(step, self.total_steps, m["base_momentum"], 1.0)
            update_momentum(self.backbone, self.backbone_momentum, momentum)
            update_momentum(self.head, self.head_momentum, momentum)
            p0, p1 = (self.predictor(self.project(v)) for v in views)
            z0, z1 = (self.project_momentum(v) for v in views)
            # official BYOL's sum of 2 - 2cos over both directions (cfg["loss"]), less its constant 4; the
            # example's 0.5 x (...) has 1/4 of its gradient
            return 2 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        # SwAV (lightly's swav_queue example): normalised prototypes, queue of past projections per view
        self.prototypes.normalize()
        features = [nn.functional.normalize(self.project(v), dim=1) for v in views]
        scores = [self.prototypes(f, step) for f in features]
        queue_scores = None
        if self.queues is not None:
            with torch.no_grad():
                past = [queue(f.detach(), update=True)[1] for queue, f in zip(self.queues, features)]
                if step >= m.get("queue_start_step", 0):
                    queue_scores = [self.prototypes(p.T, step) for p in past]  # the bank is (dim, size)
        return self.criterion(scores, [], queue_scores)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay (and, for LARS, the trust ratio) on weights only, not on biases / norm parameters (1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg["weight_decay"])
    if cfg["optim"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["learning_rate"], momentum=cfg["momentum"])
    if cfg["optim"] == "lars":
        return LARS(groups, lr=cfg["learning_rate"], momentum=cfg["momentum"], trust_coefficient=0.001)
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"])


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: dict) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine to 0 over cfg's total_steps, per step."""
    total_steps, warmup = cfg["total_steps"], round(cfg["warmup_epochs"] * cfg["steps_per_epoch"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_warmup_schedule(min(step, total_steps), total_steps, 1.0, 0.0, warmup, 0.0)
    )


def train_loader(images: list[bytes], cfg: dict, device: torch.device) -> torch.utils.data.DataLoader:
    """The training DataLoader of lightly's examples: decode + the method's transform per image in the workers."""
    return torch.utils.data.DataLoader(
        EncodedImages(images, augmentation(cfg)),
        batch_size=cfg["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=cfg["workers"],
        pin_memory=device.type == "cuda",
        persistent_workers=cfg["workers"] > 0,
    )


def train_step(model: Method, optimizer, scheduler, views: list, step: int, cfg: dict, device) -> torch.Tensor:
    """One training step on a loader batch (the views of each image); returns the loss."""
    views = [v.to(device, non_blocking=True) for v in views[: cfg["num_views"]]]
    loss = model.loss(views, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss


@torch.no_grad()
def features(backbone: nn.Module, images: list[bytes], cfg: dict, device: torch.device) -> np.ndarray:
    """Pooled backbone features with the evaluation preprocessing (to tensor, ImageNet normalisation)."""
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]),
        ]
    )
    loader = torch.utils.data.DataLoader(
        EncodedImages(images, transform), batch_size=cfg["eval_batch_size"], num_workers=cfg["workers"]
    )
    backbone.eval()
    return torch.cat([backbone(x.to(device)).float().cpu() for x in loader]).numpy()


def step_check(cfg: dict, steps: int, output: str) -> None:
    """`bench/peer_step.py`'s lightly side: `steps` training steps on the first steps x batch train images, one view
    set each (lightly's transform, drawn once), from the model's random init. Saves the views, the init weights
    (and MoCo's memory bank, which is not in the state dict), each step's loss, the first step's gradients and the
    weights after it."""
    model = Method(cfg, cfg["total_steps"])
    images, _ = read_split(cfg["data"], "train")
    dataset, batch = EncodedImages(images, augmentation(cfg)), cfg["batch_size"]
    views = torch.stack(
        [
            torch.stack([torch.stack(v) for v in zip(*(dataset[i] for i in range(k * batch, (k + 1) * batch)))])
            for k in range(steps)
        ]
    )[:, : cfg["num_views"]]  # (steps, views, batch, 3, H, W)
    if cfg["method"] == "swav":  # official SwAV's prototypes have no bias (lightly's do): the rest is the check
        model.prototypes.heads[0].bias = None
    saved = {f"init/{k}": v.numpy().copy() for k, v in model.state_dict().items()}
    if cfg["method"] == "moco":
        saved["queue"] = model.criterion.memory_bank.bank.numpy().copy()
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    model.train()
    losses = []
    for step in range(steps):
        losses.append(train_step(model, optimizer, scheduler, list(views[step]), step, cfg, torch.device("cpu")).item())
        if step == 0:
            saved |= {f"grad/{n}": p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
            saved |= {f"step1/{k}": v.numpy().copy() for k, v in model.state_dict().items()}
    np.savez(output, views=views.numpy(), losses=np.asarray(losses), **saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="JSON dict of settings (built by peer_quality.py)")
    parser.add_argument("--output", required=True, help=".npz file for the exported features")
    parser.add_argument("--step-check", type=int, default=0, help="bench/peer_step.py's side: this many steps")
    args = parser.parse_args()
    cfg = json.loads(args.config)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    device = torch.device(cfg["device"])
    if args.step_check:
        step_check(cfg, args.step_check, args.output)
        return

    images, labels = read_split(cfg["data"], "train")
    loader = train_loader(images, cfg, device)
    # hf_ssl's step count (full batches per data worker), which lightly's drop_last loader matches or exceeds
    steps_per_epoch, total_steps = cfg["steps_per_epoch"], cfg["total_steps"]
    model = Method(cfg, total_steps).to(device)
    initial_backbone = copy.deepcopy(model.backbone)  # the random-init baseline, scored after training
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    print(
        f"lightly {cfg['method']}: {len(images)} images, {steps_per_epoch} steps/epoch, {total_steps} steps", flush=True
    )
    model.train()
    step, started = 0, time.time()
    while step < total_steps:
        for views in loader:
            loss = train_step(model, optimizer, scheduler, views, step, cfg, device)
            step += 1
            if step % 50 == 0 or step == total_steps:
                print(
                    f"step {step}/{total_steps} loss {loss.item():.4f} "
                    f"{step * cfg['batch_size'] / (time.time() - started):.0f} images/s",
                    flush=True,
                )
            if step == total_steps:
                break
    train_seconds = time.time() - started

    test_images, test_labels = read_split(cfg["data"], "test")
    np.savez(
        args.output,
        bank=features(model.backbone, images, cfg, device),
        bank_labels=labels,
        queries=features(model.backbone, test_images, cfg, device),
        query_labels=test_labels,
        init_bank=features(initial_backbone, images, cfg, device),
        init_queries=features(initial_backbone, test_images, cfg, device),
        train_seconds=train_seconds,
        train_images=step * cfg["batch_size"],
    )


if __name__ == "__main__":
    main()
