"""An hf_ssl backbone inside transformers' DETR / UperNet / Mask2Former, and the detection / segmentation protocols."""

import numpy as np
import pytest
import torch
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from hf_ssl.evaluation.dense import (
    FeatureMapBackbone,
    as_backbone,
    build_detector,
    build_segmenter,
    coco_map,
    mean_iou,
    roi_align,
)
from hf_ssl.evaluation.dense_protocols import dense_scores, load_detection_set
from hf_ssl.evaluation.suite import EvaluationArguments, check_evaluation_inputs
from hf_ssl.models.configuration_simclr import SimCLRConfig
from hf_ssl.models.modeling_simclr import SimCLRModel

from .conftest import SHARED_DATA, TINY_BACKBONE

COCO128 = SHARED_DATA / "coco128"
# three stages: Mask2Former reads three feature maps besides the first
BACKBONE = {**TINY_BACKBONE, "depths": [1, 1, 1], "hidden_sizes": [8, 16, 16]}
TINY_DETR = dict(
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=16,
    decoder_ffn_dim=16,
    num_queries=5,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny SimCLR checkpoint whose backbone weights are not their initial values (so a re-init shows)."""
    torch.manual_seed(0)
    model = SimCLRModel(SimCLRConfig(backbone_config=BACKBONE))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    path = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(path)
    return path, {k: v.clone() for k, v in model.backbone.state_dict().items()}


def assert_pretrained(backbone: torch.nn.Module, expected: dict) -> None:
    state = backbone.state_dict()
    assert state, "the downstream model holds no backbone"
    for key, value in state.items():  # DETR's frozen batch norms keep weight / bias / running stats
        torch.testing.assert_close(value, expected[key], msg=key)


def test_plain_transformers_resnet_freezes_everything_in_detr():
    """The trap build_detector works around: DETR keeps only names with 'stage.1' trainable; ResNet's are 'stages.'"""
    config = DetrConfig(
        backbone_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_indices=[2]),
        num_labels=3,
        **TINY_DETR,
    )
    assert not any(p.requires_grad for p in DetrForObjectDetection(config).model.backbone.model.parameters())


def test_detector_has_pretrained_trainable_backbone(checkpoint):
    path, expected = checkpoint
    detector = build_detector(path, num_labels=3, **TINY_DETR)
    backbone = detector.model.backbone.model.backbone
    assert_pretrained(backbone, expected)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("encoder.stages.1.", "encoder.stages.2.")) for n in trainable)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}] * 2
    detector(pixel_values=torch.randn(2, 3, 32, 32), labels=labels).loss.backward()
    assert all(backbone.get_parameter(n).grad is not None for n in trainable)
    random = build_detector(path, num_labels=3, random_init=True, **TINY_DETR).model.backbone.model.backbone
    conv = "embedder.embedder.convolution.weight"
    assert not torch.equal(random.state_dict()[conv], expected[conv])


def test_saved_detector_reloads_its_backbone(checkpoint, tmp_path):
    """The detector's config names the hf_ssl backbone (not a stand-in), so a saved detector reloads as it was."""
    detector = build_detector(checkpoint[0], num_labels=3, **TINY_DETR).eval()
    assert detector.config.backbone_config.model_type == "simclr"
    detector.save_pretrained(tmp_path)
    reloaded = DetrForObjectDetection.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.backbone.model) is type(detector.model.backbone.model)
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixel_values).logits, detector(pixel_values=pixel_values).logits
        )


@pytest.mark.parametrize(
    "architecture, head",
    [
        ("upernet", dict(hidden_size=8, auxiliary_channels=8, pool_scales=[1, 2])),
        (
            "mask2former",
            dict(
                feature_size=32,
                mask_feature_size=32,
                hidden_dim=32,
                encoder_feedforward_dim=16,
                encoder_layers=1,
                decoder_layers=2,
                num_attention_heads=2,
                dim_feedforward=16,
                num_queries=4,
                train_num_points=64,
            ),
        ),
    ],
)
def test_segmenter_has_pretrained_trainable_backbone(checkpoint, architecture, head):
    path, expected = checkpoint
    model = build_segmenter(path, num_labels=3, architecture=architecture, **head)
    backbone = model.backbone.backbone if architecture == "upernet" else model.model.pixel_level_module.encoder.backbone
    assert_pretrained(backbone, expected)
    pixel_values = torch.randn(2, 3, 32, 32)
    if architecture == "upernet":
        loss = model(pixel_values=pixel_values, labels=torch.randint(0, 3, (2, 32, 32))).loss
    else:
        masks = [torch.randint(0, 2, (2, 32, 32)).float()] * 2
        loss = model(pixel_values=pixel_values, mask_labels=masks, class_labels=[torch.tensor([0, 2])] * 2).loss
    loss.backward()
    assert all(p.requires_grad and p.grad is not None for p in backbone.parameters())


def test_roi_align_matches_crops():
    torch.manual_seed(0)
    feature_map = torch.randn(2, 3, 8, 8)
    # a box on map cell edges (input px 2..10 x 4..12 at scale 0.5 = cells 1..5 x 2..6), one sample per cell
    boxes = torch.tensor([[1, 2.0, 4.0, 10.0, 12.0]])
    torch.testing.assert_close(roi_align(feature_map, boxes, 4, 0.5, sampling_ratio=1)[0], feature_map[1, :, 2:6, 1:5])
    # on a map linear in x and y, bilinear sampling is exact: each bin is the map's value at the bin's centre
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    linear = (2 * xs + 3 * ys)[None, None]
    x1, y1, x2, y2 = 3.0, 2.5, 11.0, 9.5  # input px, scale 0.5: map coordinates minus the half-cell offset
    out = roi_align(linear, torch.tensor([[0, x1, y1, x2, y2]]), 2, 0.5)[0, 0]
    centres_x = (x1 + (x2 - x1) * torch.tensor([0.25, 0.75])) * 0.5 - 0.5
    centres_y = (y1 + (y2 - y1) * torch.tensor([0.25, 0.75])) * 0.5 - 0.5
    torch.testing.assert_close(out, 2 * centres_x[None, :] + 3 * centres_y[:, None])


def boxes(*rows):
    return np.array(rows, dtype=float).reshape(-1, 4)


def test_coco_map_hand_computed():
    target = [{"boxes": boxes([0, 0, 10, 10], [20, 20, 10, 10]), "labels": np.array([0, 1])}]
    perfect = [{"boxes": target[0]["boxes"], "labels": np.array([0, 1]), "scores": np.array([0.9, 0.8])}]
    assert coco_map(perfect, target) == pytest.approx(100)
    # class 1 missed: its AP is 0, the mean over the two classes 50
    half = [{"boxes": boxes([0, 0, 10, 10]), "labels": np.array([0]), "scores": np.array([0.9])}]
    assert coco_map(half, target) == pytest.approx(50)
    # a higher-scored false positive before the true one: precision 1/2 at recall 1 -> AP 50 at every threshold
    fp_first = [{"boxes": boxes([50, 50, 5, 5], [0, 0, 10, 10]), "labels": np.array([0, 0]), "scores": [0.9, 0.5]}]
    assert coco_map(fp_first, [{"boxes": boxes([0, 0, 10, 10]), "labels": np.array([0])}]) == pytest.approx(50)
    # IoU 0.72 (a 10 x 10 box vs 10 x 7.2): a hit at thresholds 0.50 ... 0.70, 5 of 10 -> 50
    shifted = [{"boxes": boxes([0, 0, 10, 7.2]), "labels": np.array([0]), "scores": [0.9]}]
    assert coco_map(shifted, [{"boxes": boxes([0, 0, 10, 10]), "labels": np.array([0])}]) == pytest.approx(50)
    # two detections of one box: the second is a false positive after the hit, AP stays 100
    twice = [{"boxes": boxes([0, 0, 10, 10], [0, 0, 10, 10]), "labels": np.array([0, 0]), "scores": [0.9, 0.8]}]
    assert coco_map(twice, [{"boxes": boxes([0, 0, 10, 10]), "labels": np.array([0])}]) == pytest.approx(100)
    with pytest.raises(ValueError, match="no ground-truth"):
        coco_map(perfect, [{"boxes": boxes(), "labels": np.array([])}])


def test_coco_map_equals_pycocotools():
    """Random detections over 4 classes and 20 images: the same mAP as COCO's own evaluation (when installed)."""
    pytest.importorskip("pycocotools", reason="pycocotools is not installed (an optional cross-check)")
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    images, annotations, detections, predictions, targets = [], [], [], [], []
    for i in range(20):
        images.append({"id": i, "width": 200, "height": 200})
        n, m = rng.integers(0, 6), rng.integers(0, 12)
        gt = np.c_[rng.uniform(0, 150, (n, 2)), rng.uniform(5, 50, (n, 2))]
        gt_labels = rng.integers(0, 4, n)
        det = np.r_[gt + rng.normal(0, 4, gt.shape), np.c_[rng.uniform(0, 150, (m, 2)), rng.uniform(5, 50, (m, 2))]]
        det[:, 2:] = np.abs(det[:, 2:]) + 1
        det_labels, det_scores = np.r_[gt_labels, rng.integers(0, 4, m)], rng.uniform(0, 1, n + m)
        annotations += [
            {"id": len(annotations) + j + 1, "image_id": i, "category_id": int(c), "bbox": list(b), "iscrowd": 0}
            | {"area": float(b[2] * b[3])}
            for j, (b, c) in enumerate(zip(gt, gt_labels))
        ]
        detections += [
            {"image_id": i, "category_id": int(c), "bbox": list(b), "score": float(s)}
            for b, c, s in zip(det, det_labels, det_scores)
        ]
        predictions.append({"boxes": det, "labels": det_labels, "scores": det_scores})
        targets.append({"boxes": gt, "labels": gt_labels})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in range(4)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert coco_map(predictions, targets) == pytest.approx(evaluation.stats[0] * 100)


def test_mean_iou_hand_computed():
    predictions, targets = np.array([[0, 0], [1, 1]]), np.array([[0, 1], [1, 1]])
    assert mean_iou(predictions, targets, 2) == pytest.approx((1 / 2 + 2 / 3) / 2 * 100)
    targets = np.array([[0, 255], [1, 1]])  # the ignored pixel leaves both classes perfect
    assert mean_iou(predictions, targets, 2) == pytest.approx(100)


@pytest.mark.skipif(not COCO128.is_dir(), reason=f"{COCO128} is absent (the shared coco128 set)")
def test_dense_protocols_need_objects_not_labels(checkpoint):
    """`hf-ssl evaluate --protocols detection` checks coco128 without a label column; its boxes' column is read."""
    args = EvaluationArguments(
        model=str(checkpoint[0]), dataset_name=str(COCO128), eval_split="validation", protocols="detection"
    )
    assert check_evaluation_inputs(args) == {("dataset_name", str(COCO128)): False}
    with pytest.raises(ValueError, match="objects_column='boxes'"):
        load_detection_set([{"image": np.zeros((4, 4, 3), np.uint8)}], 8, [0] * 3, [1] * 3, objects_column="boxes")


@pytest.mark.skipif(not COCO128.is_dir(), reason=f"{COCO128} is absent (the shared coco128 set)")
def test_dense_protocols_end_to_end_on_coco128(checkpoint):
    from datasets import load_dataset

    data = load_dataset(str(COCO128))
    splits = [
        load_detection_set(data[split].select(range(6)), 32, [0.5] * 3, [0.25] * 3) for split in ("train", "validation")
    ]
    assert splits[0].pixel_values.shape == (6, 3, 32, 32) and len(splits[0].boxes) == 6
    model = SimCLRModel.from_pretrained(checkpoint[0])
    scores = dense_scores(
        model,
        ["detection", "segmentation"],
        *splits,
        80,
        "coco128",
        "validation",
        segmentation_steps=2,
        detection_finetune_steps=1,
    )
    assert {(s.protocol, s.metric) for s in scores} == {
        ("detection", "top1_accuracy"),
        ("detection", "top5_accuracy"),
        ("detection", "box_map"),
        ("segmentation", "miou"),
    }
    assert all(0 <= s.value <= 100 for s in scores)


@pytest.mark.parametrize(
    "model",
    [
        lambda: ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
        lambda: ViTModel(
            ViTConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                image_size=32,
                patch_size=8,
            )
        ),
    ],
    ids=["resnet", "vit"],
)
def test_plain_transformers_model_in_detr(model):
    """A transformers model that is not an hf_ssl checkpoint enters as a FeatureMapBackbone (ViT tokens as a map)."""
    model = model()
    backbone = as_backbone(model)
    assert isinstance(backbone, FeatureMapBackbone) and backbone.backbone is model
    detector = build_detector(backbone, num_labels=3, **TINY_DETR)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}]
    detector(pixel_values=torch.randn(1, 3, 32, 32), labels=labels).loss.backward()
    assert any(p.grad is not None for p in model.parameters())
