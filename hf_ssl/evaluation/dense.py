"""An hf_ssl checkpoint's backbone inside transformers' dense models (DETR, UperNet, Mask2Former), and the pieces the
`detection` / `segmentation` protocols share: RoI-Align without torchvision, COCO mAP, mean IoU.

    detector = build_detector("outputs/quickstart", num_labels=80)  # DetrForObjectDetection, pre-trained backbone
    segmenter = build_segmenter("outputs/quickstart", num_labels=81, architecture="mask2former")

An hf_ssl checkpoint enters as its method's `AutoBackbone` class (`SimCLRBackbone`, ...): the dense model's
`backbone_config` is the method's config, so a saved detector or segmenter names the real backbone and reloads it
(with hf_ssl installed, or its `auto_map`). Any other transformers model enters through `FeatureMapBackbone`, an
adapter over its hidden states; its dense models are built from a stand-in ResNet config of the same channels.

Two traps of transformers v5 are handled here. Its dense models build their backbone from `backbone_config`
(`load_backbone`: random weights), so the pre-trained backbone is put in place after the build. And DETR's
`DetrConvEncoder` freezes every parameter of a backbone whose model_type contains "resnet" unless its name contains
"stage.1", "stage.2" or "stage.3", which transformers' ResNet never does (`encoder.stages.1...`): nothing would be
trained. The trainable parameters are set here instead, as DETR means them (torchvision's ResNet-50 with its stem
and first stage frozen).
"""

import copy
import os

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    DetrConfig,
    DetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PreTrainedConfig,
    PreTrainedModel,
    ResNetConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers.modeling_outputs import BackboneOutput
from transformers.models.detr.modeling_detr import replace_batch_norm

from ..models.modeling_backbone import SSLBackbone, as_feature_map, stage_outputs
from ..models.modeling_ssl import TRANSFER_CLASSES


class FeatureMapBackbone(nn.Module):
    """The feature maps of a transformers model that is not an hf_ssl checkpoint (its hidden states, laid out as maps
    as `SSLBackbone` lays them out) behind the interface transformers' dense models read from a `BackboneMixin`:
    `stage_names`, `out_features`, `channels`, `forward(pixel_values) -> BackboneOutput(feature_maps=...)`,
    `forward_with_filtered_kwargs`."""

    has_attentions = False

    def __init__(self, backbone: PreTrainedModel, out_indices: tuple[int, ...] | None = (-1,)):
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():  # the maps' channels, read from one small forward pass at the model's own input size
            size = getattr(backbone.config, "image_size", 64)
            height, width = (size, size) if isinstance(size, int) else size[:2]
            probe = torch.zeros(1, backbone.config.num_channels, height, width)
            hidden = self._maps(probe.to(backbone.device), eval_mode=True)
        if hidden[-1].dim() != 4:
            raise ValueError(f"the {backbone.config.model_type!r} backbone gives no 2D feature maps")
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(hidden))]
        indices = range(1, len(hidden)) if out_indices is None else out_indices
        self.out_indices = [i % len(hidden) for i in indices]
        self.out_features = [self.stage_names[i] for i in self.out_indices]
        self.num_features = [h.shape[1] for h in hidden]
        self.channels = [self.num_features[i] for i in self.out_indices]

    def _maps(self, pixel_values: torch.Tensor, eval_mode: bool = False) -> tuple[torch.Tensor, ...]:
        was_training = self.backbone.training
        self.backbone.train(was_training and not eval_mode)
        hidden = stage_outputs(self.backbone, pixel_values)
        self.backbone.train(was_training)
        return tuple(as_feature_map(h, pixel_values, self.backbone.config) for h in hidden)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, output_attentions=None, return_dict=None):
        hidden = self._maps(pixel_values)
        maps = tuple(hidden[i] for i in self.out_indices)
        return BackboneOutput(feature_maps=maps, hidden_states=hidden if output_hidden_states else None)

    def forward_with_filtered_kwargs(self, *args, **kwargs):
        return self(*args, **kwargs)


def as_backbone(
    model: PreTrainedModel, out_indices: tuple[int, ...] | None = (-1,)
) -> SSLBackbone | FeatureMapBackbone:
    """`model`'s backbone with its weights, as a backbone transformers' dense models take, over the hidden states
    `out_indices` (the stem is 0; None: every one but the stem's): an hf_ssl model as its method's `AutoBackbone` class, any other transformers model
    as a `FeatureMapBackbone`."""
    backbone_class = TRANSFER_CLASSES.get(model.config.model_type, {}).get("AutoBackbone")
    if backbone_class is None:
        return FeatureMapBackbone(getattr(model, "backbone", model), out_indices)
    config = copy.deepcopy(model.config)
    stages = len(config.stage_names)
    indices = range(1, stages) if out_indices is None else [i % stages for i in out_indices]
    config.set_output_features_output_indices(None, list(indices))
    backbone = backbone_class(config)
    backbone.backbone.load_state_dict(model.backbone.state_dict())
    return backbone.to(model.device)


def load_feature_backbone(
    checkpoint: str, out_indices: tuple[int, ...] | None = (-1,), random_init: bool = False, seed: int = 0, **kwargs
) -> SSLBackbone | FeatureMapBackbone:
    """The backbone of a checkpoint (its pre-trained weights, or its own random initialisation seeded by `seed`) as
    `as_backbone` gives it."""
    model = AutoModel.from_pretrained(checkpoint, **kwargs)
    if random_init:
        torch.manual_seed(seed)
        model = type(model)(model.config)
    return as_backbone(model, out_indices)


def _backbone_config(backbone: SSLBackbone | FeatureMapBackbone) -> PreTrainedConfig:
    """The `backbone_config` a dense model is built from (it sizes its input projections by it) before the real
    backbone replaces the one it builds: an hf_ssl backbone's own config; for other models, a transformers ResNet
    config whose maps have the same channels."""
    if isinstance(backbone, SSLBackbone):
        return backbone.config
    return ResNetConfig(
        embedding_size=backbone.num_features[0],
        hidden_sizes=backbone.num_features[1:],
        depths=[1] * (len(backbone.num_features) - 1),
        layer_type="basic",
        out_indices=backbone.out_indices,
    )


def set_trainable(backbone: SSLBackbone | FeatureMapBackbone, frozen_stages: int) -> None:
    """Freeze a ResNet backbone's stem and its first `frozen_stages` stages (DETR's rule for torchvision's
    ResNet-50: stem and layer1 frozen), the rest trainable; other backbones train whole."""
    frozen = ("embedder.",) + tuple(f"encoder.stages.{i}." for i in range(frozen_stages))
    resnet = backbone.backbone.config.model_type == "resnet"
    for name, parameter in backbone.backbone.named_parameters():
        parameter.requires_grad_(not (resnet and name.startswith(frozen)))


def build_detector(
    checkpoint: str | os.PathLike | SSLBackbone | FeatureMapBackbone,
    num_labels: int,
    frozen_stages: int = 1,
    random_init: bool = False,
    seed: int = 0,
    **detr_config,
) -> DetrForObjectDetection:
    """transformers' DETR with the hf_ssl checkpoint's backbone (pre-trained weights, or random init) on its last
    feature map, batch norms frozen as DETR freezes them, stem and first `frozen_stages` stages frozen.
    `detr_config`: DetrConfig fields (d_model, encoder_layers, num_queries, ...)."""
    backbone = checkpoint
    if not isinstance(backbone, nn.Module):
        backbone = load_feature_backbone(checkpoint, random_init=random_init, seed=seed)
    config = DetrConfig(
        backbone_config=_backbone_config(backbone),
        num_labels=num_labels,
        use_pretrained_backbone=False,
        **detr_config,
    )
    torch.manual_seed(seed)
    detector = DetrForObjectDetection(config)
    with torch.no_grad():
        replace_batch_norm(backbone)
    detector.model.backbone.model = backbone  # DetrConvEncoder calls it and reads `.feature_maps`
    set_trainable(backbone, frozen_stages)
    return detector


def build_segmenter(
    checkpoint: str | os.PathLike | SSLBackbone | FeatureMapBackbone,
    num_labels: int,
    architecture: str = "upernet",
    random_init: bool = False,
    seed: int = 0,
    **head_config,
) -> UperNetForSemanticSegmentation | Mask2FormerForUniversalSegmentation:
    """transformers' UperNet or Mask2Former with the hf_ssl checkpoint's backbone (every feature map but the stem's,
    pre-trained weights or random init), every parameter trainable. `head_config`: the architecture's config fields."""
    backbone = checkpoint
    if not isinstance(backbone, nn.Module):
        backbone = load_feature_backbone(checkpoint, None, random_init=random_init, seed=seed)
    placeholder = _backbone_config(backbone)
    torch.manual_seed(seed)
    if architecture == "upernet":
        model = UperNetForSemanticSegmentation(
            UperNetConfig(backbone_config=placeholder, num_labels=num_labels, **head_config)
        )
        model.backbone = backbone
    elif architecture == "mask2former":
        config = Mask2FormerConfig(backbone_config=placeholder, num_labels=num_labels, **head_config)
        model = Mask2FormerForUniversalSegmentation(config)
        model.model.pixel_level_module.encoder = backbone
    else:
        raise ValueError(f"architecture={architecture!r}: use 'upernet' or 'mask2former'")
    backbone.backbone.requires_grad_(True)
    return model


def roi_align(
    feature_map: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> torch.Tensor:
    """RoI-Align (He et al. 2017, `aligned=True`) with `grid_sample`: for each box (K, 5) = (batch index, x1, y1, x2,
    y2) in input pixels, `output_size` x `output_size` bins, each the mean of `sampling_ratio`^2 bilinear samples of
    `feature_map` (B, C, H, W), at `spatial_scale` map cells per input pixel. Returns (K, C, output_size, output_size)."""
    if boxes.numel() == 0:
        return feature_map.new_zeros(0, feature_map.shape[1], output_size, output_size)
    height, width = feature_map.shape[-2:]
    x1, y1, x2, y2 = (boxes[:, i : i + 1] * spatial_scale - 0.5 for i in range(1, 5))
    steps = (torch.arange(output_size * sampling_ratio, device=boxes.device, dtype=boxes.dtype) + 0.5) / (
        output_size * sampling_ratio
    )
    xs, ys = x1 + (x2 - x1) * steps, y1 + (y2 - y1) * steps  # (K, S): sample centres in map cells
    # grid_sample's coordinates (align_corners=False): cell centre j at (2j + 1) / size - 1
    grid_x = ((2 * xs + 1) / width - 1)[:, None, :].expand(-1, xs.shape[1], -1)
    grid_y = ((2 * ys + 1) / height - 1)[:, :, None].expand(-1, -1, ys.shape[1])
    images = feature_map[boxes[:, 0].long()]
    samples = nn.functional.grid_sample(
        images, torch.stack([grid_x, grid_y], -1), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return nn.functional.avg_pool2d(samples, sampling_ratio)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), COCO [x, y, w, h]."""
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def coco_map(predictions: list[dict], targets: list[dict], max_detections: int = 100) -> float:
    """COCO's box mAP@[.5:.95] in % (all areas, `maxDets`=100): per class and IoU threshold 0.50:0.05:0.95, the
    detections of every image sorted by score are matched greedily to the unmatched ground truth box of highest IoU
    at or above the threshold; precision made monotone, read at 101 recall points; averaged over thresholds and
    over the classes with ground truth. `predictions` / `targets`: one dict per image with "boxes" (N, 4) COCO
    [x, y, w, h], "labels" (N,) and, for predictions, "scores" (N,). No crowd boxes (coco128 has none)."""
    thresholds = np.linspace(0.5, 0.95, 10)
    recall_points = np.linspace(0, 1, 101)
    classes = sorted({int(c) for t in targets for c in t["labels"]})
    if not classes:
        raise ValueError("targets hold no ground-truth boxes: mAP is undefined")
    aps = []
    for c in classes:
        scores, matched, num_gt = [], [[] for _ in thresholds], 0
        for pred, target in zip(predictions, targets):
            gt = np.asarray(target["boxes"], dtype=float).reshape(-1, 4)[np.asarray(target["labels"]) == c]
            keep = np.asarray(pred["labels"]) == c
            order = np.argsort(-np.asarray(pred["scores"])[keep], kind="mergesort")[:max_detections]
            det = np.asarray(pred["boxes"], dtype=float).reshape(-1, 4)[keep][order]
            scores.append(np.asarray(pred["scores"])[keep][order])
            num_gt += len(gt)
            iou = box_iou(det, gt)
            for t, threshold in enumerate(thresholds):
                taken = np.zeros(len(gt), bool)
                hits = np.zeros(len(det), bool)
                for d in range(len(det)):
                    candidates = np.where(~taken & (iou[d] >= threshold), iou[d], -1)
                    if len(gt) and candidates.max() >= 0:
                        taken[candidates.argmax()] = hits[d] = True
                matched[t].append(hits)
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        for hits in matched:
            tp = np.cumsum(np.concatenate(hits)[order])
            fp = np.cumsum(~np.concatenate(hits)[order])
            recall = tp / num_gt
            precision = np.maximum.accumulate((tp / np.maximum(tp + fp, 1e-12))[::-1])[::-1]
            index = np.searchsorted(recall, recall_points, side="left")
            padded = np.append(precision, 0.0)  # recall points never reached read precision 0
            aps.append(padded[np.minimum(index, len(precision))].mean())
    return float(np.mean(aps) * 100)


def mean_iou(predictions: np.ndarray, targets: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """Mean IoU in % over the classes present in `targets` or `predictions` (integer maps of the same shape),
    pixels labelled `ignore_index` left out."""
    keep = targets != ignore_index
    p, t = predictions[keep].astype(np.int64), targets[keep].astype(np.int64)
    confusion = np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean() * 100)
