"""The `detection` and `segmentation` protocols of `hf-ssl evaluate`, on a `datasets` detection set in the standard
`objects` schema (`bbox` COCO [x, y, w, h] in pixels, `category` class ids), e.g. ../shared/data/coco128.

- detection (frozen, the CPU protocol): RoI-Align of each ground-truth box on the frozen backbone's last feature
  map (2 x 2 bins) -> multinomial logistic regression over the classes, its L2 strength chosen by 3-fold
  cross-validation on the training boxes (a few hundred boxes: a fixed-schedule probe overfits), top-1 / top-5 of
  the val boxes. With `detection_finetune_steps`
  also DETR fine-tuned for that many steps (`build_detector`), COCO mAP@[.5:.95] on the val images.
- segmentation (frozen): boxes painted as masks (larger boxes first, background 0, class c as c + 1: the set has
  no masks), a linear head (1x1 conv) on the frozen last feature map, upsampled, trained with cross-entropy;
  mIoU on the val images at the input size.
Images are resized to `image_size` x `image_size` (boxes with them) and normalised as the checkpoint's processor.
"""

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data.transforms import decode_image
from ..models.modeling_backbone import SSLBackbone
from .dense import FeatureMapBackbone, as_backbone, build_detector, coco_map, mean_iou, roi_align
from .knn import top_k_accuracy
from .results import Score, accuracy_metrics


@dataclass
class DetectionSet:
    """One split, resized: images (N, 3, S, S) normalised, per image boxes (K, 4) COCO [x, y, w, h] and labels."""

    pixel_values: torch.Tensor
    boxes: list[np.ndarray]
    labels: list[np.ndarray]


def load_detection_set(
    dataset, image_size: int, mean, std, image_column: str = "image", objects_column: str = "objects"
) -> DetectionSet:
    """A `datasets` split (or any iterable of examples) in the `objects` schema, resized to `image_size` square."""
    mean, std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    pixels, boxes, labels = [], [], []
    for example in dataset:
        if objects_column not in example:
            raise ValueError(f"objects_column={objects_column!r} is not a column of the detection dataset")
        image = decode_image(example[image_column]).float()[None] / 255  # a decoded or raw `datasets` Image cell
        height, width = image.shape[-2:]
        scale = np.array([image_size / width, image_size / height] * 2, dtype=np.float32)
        image = nn.functional.interpolate(image, size=(image_size, image_size), mode="bilinear", antialias=True)
        pixels.append((image[0] - mean) / std)
        objects = example[objects_column]
        boxes.append(np.asarray(objects["bbox"], dtype=np.float32).reshape(-1, 4) * scale)
        labels.append(np.asarray(objects["category"], dtype=np.int64))
    return DetectionSet(torch.stack(pixels), boxes, labels)


@torch.no_grad()
def last_feature_maps(
    backbone: SSLBackbone | FeatureMapBackbone, pixel_values: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """The frozen backbone's last feature map of every image, in eval mode."""
    backbone.eval()
    return torch.cat([backbone(batch).feature_maps[-1] for batch in pixel_values.split(batch_size)])


def box_features(maps: torch.Tensor, data: DetectionSet, image_size: int, output_size: int = 2) -> np.ndarray:
    """RoI-aligned features (one row per box, `output_size`^2 bins x channels) of every box of `data`."""
    rois = [
        np.concatenate([np.full((len(b), 1), i, np.float32), b[:, :2], b[:, :2] + b[:, 2:]], 1)
        for i, b in enumerate(data.boxes)
    ]
    rois = torch.from_numpy(np.concatenate(rois))
    return roi_align(maps, rois, output_size, maps.shape[-1] / image_size).flatten(1).numpy()


def box_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Class probabilities (num_test, num_classes) of a logistic regression on standardised box features, C chosen
    by cross-validation on the training boxes; classes absent from training get 0."""
    probe = make_pipeline(
        StandardScaler(), LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=3, max_iter=1000, random_state=seed)
    ).fit(train_x, train_y)
    scores = np.zeros((len(test_x), num_classes))
    scores[:, probe.classes_] = probe.predict_proba(test_x)
    return scores


def box_masks(data: DetectionSet, image_size: int) -> torch.Tensor:
    """Boxes as semantic masks (N, S, S): 0 background, class c as c + 1, larger boxes painted first."""
    masks = torch.zeros(len(data.boxes), image_size, image_size, dtype=torch.long)
    for mask, boxes, labels in zip(masks, data.boxes, data.labels):
        for i in np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable"):
            x, y, w, h = boxes[i]
            mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = labels[i] + 1
    return masks


def train_segmentation_head(
    train_maps: torch.Tensor, train_masks: torch.Tensor, num_classes: int, steps: int, batch_size: int, seed: int
) -> nn.Conv2d:
    """A 1x1 conv on frozen maps, logits upsampled (bilinear) to the masks' size, AdamW on cross-entropy."""
    torch.manual_seed(seed)
    head = nn.Conv2d(train_maps.shape[1], num_classes, 1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    mean, std = train_maps.mean((0, 2, 3), keepdim=True), train_maps.std((0, 2, 3), keepdim=True) + 1e-6
    head.register_forward_pre_hook(lambda _, inputs: ((inputs[0] - mean) / std,))  # standardised features
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(train_maps), (batch_size,), generator=generator)
        logits = nn.functional.interpolate(head(train_maps[index]), size=train_masks.shape[-2:], mode="bilinear")
        loss = nn.functional.cross_entropy(logits, train_masks[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head


def detr_map(
    backbone: SSLBackbone | FeatureMapBackbone,
    train: DetectionSet,
    val: DetectionSet,
    num_classes: int,
    steps: int,
    batch_size: int,
    seed: int,
) -> float:
    """DETR (a small transformer: 256-d, 3 + 3 layers, 50 queries) with `backbone` fine-tuned `steps` steps on
    `train`, COCO mAP on `val`. AdamW 1e-4 (backbone 1e-5), DETR's recipe."""
    size = train.pixel_values.shape[-1]
    detector = build_detector(
        copy.deepcopy(backbone), num_classes, seed=seed, encoder_layers=3, decoder_layers=3, num_queries=50
    )
    backbone_params = [p for n, p in detector.named_parameters() if ".backbone.model." in n and p.requires_grad]
    other = [p for n, p in detector.named_parameters() if ".backbone.model." not in n and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": other}, {"params": backbone_params, "lr": 1e-5}], 1e-4, weight_decay=1e-4)

    def targets(i: int) -> dict:
        boxes = torch.from_numpy(train.boxes[i]) / size
        return {
            "class_labels": torch.from_numpy(train.labels[i]),
            "boxes": torch.cat([boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]], 1),
        }

    generator = torch.Generator().manual_seed(seed)
    detector.train()
    for _ in range(steps):
        index = torch.randint(len(train.pixel_values), (batch_size,), generator=generator).tolist()
        loss = detector(pixel_values=train.pixel_values[index], labels=[targets(i) for i in index]).loss
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(detector.parameters(), 0.1)
        optimizer.step()
    detector.eval()
    predictions = []
    with torch.no_grad():
        for batch in val.pixel_values.split(batch_size):
            out = detector(pixel_values=batch)
            probabilities = out.logits.softmax(-1)[..., :-1]  # the last class is DETR's "no object"
            scores, labels = probabilities.max(-1)
            cx, cy, w, h = (out.pred_boxes * size).unbind(-1)
            boxes = torch.stack([cx - w / 2, cy - h / 2, w, h], -1)
            predictions += [
                {"boxes": b.numpy(), "scores": s.numpy(), "labels": c.numpy()} for b, s, c in zip(boxes, scores, labels)
            ]
    return coco_map(predictions, [{"boxes": b, "labels": c} for b, c in zip(val.boxes, val.labels)])


def dense_scores(
    model: torch.nn.Module,
    protocols: list[str],
    train: DetectionSet,
    val: DetectionSet,
    num_classes: int,
    dataset: str,
    split: str,
    baseline: str | None = None,
    batch_size: int = 32,
    segmentation_steps: int = 300,
    detection_finetune_steps: int = 0,
    seed: int = 0,
) -> list[Score]:
    """The `detection` / `segmentation` scores of `model` (an hf_ssl model or a plain transformers backbone)."""
    backbone = as_backbone(model)
    size = train.pixel_values.shape[-1]
    train_maps = last_feature_maps(backbone, train.pixel_values, batch_size)
    val_maps = last_feature_maps(backbone, val.pixel_values, batch_size)
    scores = []
    if "detection" in protocols:
        train_y, val_y = np.concatenate(train.labels), np.concatenate(val.labels)
        class_scores = box_probe(
            box_features(train_maps, train, size), train_y, box_features(val_maps, val, size), num_classes, seed
        )
        accuracy = top_k_accuracy(class_scores, val_y)
        for metric in accuracy_metrics(num_classes):
            scores.append(
                Score("detection", dataset, split, metric, accuracy[metric], layer="RoI boxes", baseline=baseline)
            )
        if detection_finetune_steps:
            value = detr_map(backbone, train, val, num_classes, detection_finetune_steps, 4, seed)
            scores.append(Score("detection", dataset, split, "box_map", value, layer="DETR", baseline=baseline))
    if "segmentation" in protocols:
        head = train_segmentation_head(
            train_maps, box_masks(train, size), num_classes + 1, segmentation_steps, min(16, len(train_maps)), seed
        )
        with torch.no_grad():
            logits = nn.functional.interpolate(head(val_maps), size=(size, size), mode="bilinear")
        value = mean_iou(logits.argmax(1).numpy(), box_masks(val, size).numpy(), num_classes + 1)
        scores.append(Score("segmentation", dataset, split, "miou", value, baseline=baseline))
    return scores
