"""Transfer protocols: the Oxford/Paris AP against hand-computed cases, R-MAC regions against the paper's definition,
`retrieval` end to end on a few Paris6k images, and C3D's `video_svm` end to end on real clips."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from hf_ssl.data import make_image_processor
from hf_ssl.evaluation.results import Score
from hf_ssl.evaluation.retrieval import (
    RetrievalBenchmark,
    RetrievalQuery,
    VideoSVMFeatures,
    average_precision,
    compute_ap,
    linear_svm_scores,
    mean_average_precision,
    region_vectors,
    rmac_regions,
)
from hf_ssl.evaluation.suite import EvaluationArguments, evaluate_checkpoint
from hf_ssl.hub.card import score_to_eval_result
from hf_ssl.models import PRETRAINING_CLASSES, C3DConfig, C3DModel

from .conftest import SHARED_DATA, TINY_BACKBONE

PARIS = SHARED_DATA / "paris6k-subset"
CLIPS = SHARED_DATA / "clips-2cls"


@pytest.mark.parametrize(
    "ranks, num_positives, expected",
    [
        ([0, 1], 2, 1.0),  # perfect ranking
        ([1], 1, 0.25),  # one positive second: trapezoid between precision 0 (before it) and 1/2 (at it)
        ([0, 2], 2, 0.5 + (1 / 2 + 2 / 3) / 4),  # second positive third: precisions 1/2 before, 2/3 at it
        ([0], 2, 0.5),  # a positive never retrieved adds nothing
    ],
)
def test_compute_ap_matches_hand_computed_trapezoids(ranks, num_positives, expected) -> None:
    assert compute_ap(np.array(ranks), num_positives) == pytest.approx(expected)


def test_junk_is_removed_before_ranking_and_the_map_averages_queries() -> None:
    # ranking 5, 3, 7, 1 with 3 junk: 5, 7, 1 -> positives 7 and 1 at ranks 1 and 2
    ap = average_precision(np.array([5, 3, 7, 1]), positives=[7, 1], junk=[3])
    assert ap == pytest.approx((0 + 1 / 2) / 4 + (1 / 2 + 2 / 3) / 4)
    assert ap == pytest.approx(5 / 12)
    similarity = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])  # query 0 ranks 1, 2, 0; query 1 ranks 0, 2, 1
    queries = [RetrievalQuery("q0", (0, 0, 1, 1), [1], []), RetrievalQuery("q1", (0, 0, 1, 1), [1], [2])]
    assert mean_average_precision(similarity, queries) == pytest.approx((1.0 + 0.25) / 2)


def _paper_regions(height: int, width: int, levels: int) -> set[tuple[int, int, int]]:
    """Tolias et al. 2016, sec. 3: at scale l square regions of side 2 min(H, W) / (l + 1) (floored), l along the
    short side and l + m - 1 along the long one, evenly spaced from one border to the other; m (2..7 when H != W,
    else 1) makes consecutive largest regions overlap by the fraction closest to 40%."""
    short, long = min(height, width), max(height, width)
    m = 1
    if height != width:
        m = min(range(2, 8), key=lambda m: abs((short - (long - short) / (m - 1)) / short - 0.4))
    regions = set()
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        n_h, n_w = (level, level + m - 1) if height <= width else (level + m - 1, level)
        for top in np.floor(np.linspace(0, height - side, n_h)).astype(int):
            for left in np.floor(np.linspace(0, width - side, n_w)).astype(int):
                regions.add((int(top), int(left), side))
    return regions


@pytest.mark.parametrize("height, width", [(7, 7), (16, 21), (21, 16), (5, 9), (24, 32), (10, 30)])
def test_rmac_regions_follow_the_paper(height, width) -> None:
    regions = rmac_regions(height, width, levels=3)
    assert len(regions) == len(set(regions))
    assert set(regions) == _paper_regions(height, width, 3)
    assert all(t >= 0 and x >= 0 and t + s <= height and x + s <= width for t, x, s in regions)
    # the largest regions cover the whole map
    covered = np.zeros((height, width), bool)
    for t, x, s in regions:
        if s == min(height, width):
            covered[t : t + s, x : x + s] = True
    assert covered.all()


def test_region_vectors_are_normalised_region_maxima() -> None:
    fmap = torch.rand(2, 5, 6, 9)
    vectors = region_vectors(fmap, levels=2)
    regions = rmac_regions(6, 9, levels=2)
    assert vectors.shape == (2, len(regions), 5)
    t, x, s = regions[-1]
    direct = fmap[1, :, t : t + s, x : x + s].reshape(5, -1).max(1).values
    torch.testing.assert_close(vectors[1, -1], direct / direct.norm())


def test_linear_svm_separates_blobs_and_keeps_class_columns() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(20, 4)) + 5 * np.eye(4)[c] for c in (0, 2)])
    y = np.repeat([0, 2], 20)
    scores = linear_svm_scores(x, y, x, num_classes=3)
    assert scores.shape == (40, 3) and np.isneginf(scores[:, 1]).all()
    assert (scores.argmax(1) == y).mean() > 0.95


def _tiny_checkpoint_model(backbone: dict) -> torch.nn.Module:
    cls = PRETRAINING_CLASSES["instance_recognition"]
    torch.manual_seed(0)
    return cls(cls.config_class(backbone_config=backbone, num_examples=60, embedding_dim=16)).eval()


def _tiny_checkpoint(path, backbone: dict, image_size: int):
    _tiny_checkpoint_model(backbone).save_pretrained(path)
    make_image_processor(image_size).save_pretrained(path)
    return path


@pytest.mark.skipif(not PARIS.is_dir(), reason=f"{PARIS} (the shared Paris6k subset) is absent")
def test_retrieval_protocol_end_to_end_on_a_few_paris_images(tmp_path, small_sample) -> None:
    # a benchmark of 2 queries over 8 images: both query images, 3 positives each... and other landmarks
    gt = json.loads((PARIS / "gt.json").read_text())
    queries = gt["queries"][:2]
    others = [n for n in gt["database"] if not n.startswith("paris_defense")][:2]
    database = sorted({q["image"] for q in queries} | {p for q in queries for p in q["positives"][:3]} | set(others))
    bench = tmp_path / "bench"
    (bench / "database").mkdir(parents=True)
    (bench / "queries").mkdir()
    for name in database:
        shutil.copy(PARIS / "database" / f"{name}.jpg", bench / "database")
    for q in queries:
        shutil.copy(PARIS / "queries" / f"{q['query_id']}.jpg", bench / "queries")
        q["positives"] = [p for p in q["positives"] if p in database]
        q["junk"] = [j for j in q["junk"] if j in database]
    (bench / "gt.json").write_text(json.dumps({"database": database, "queries": queries}))

    model = _tiny_checkpoint(tmp_path / "ckpt", {**TINY_BACKBONE, "cifar_stem": False}, 32)
    results = evaluate_checkpoint(
        EvaluationArguments(
            model=str(model),
            dataset_name=str(small_sample),
            protocols="retrieval",
            retrieval_dataset=str(bench),
            retrieval_max_size=96,
            retrieval_whitening_samples=40,
            random_init_baseline=True,
            num_workers=0,
            batch_size=40,
            output_file=str(tmp_path / "results.json"),
            disable_tqdm=True,
        )
    )
    values = {s.baseline: s.value for s in results.scores}
    assert set(values) == {None, "random_init", "thumbnails"}
    assert all(0 < v <= 1 for v in values.values())
    assert {(s.protocol, s.dataset, s.split, s.metric) for s in results.scores} == {
        ("retrieval", "bench", "queries", "map")
    }


@pytest.mark.skipif(not CLIPS.is_dir(), reason=f"{CLIPS} (the shared two-class clips) is absent")
def test_video_svm_protocol_end_to_end_on_real_clips(tmp_path) -> None:
    backbone = {"model_type": "r3d", "hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8}
    model = _tiny_checkpoint(tmp_path / "ckpt", backbone, 32)
    results = evaluate_checkpoint(
        EvaluationArguments(
            model=str(model),
            dataset_name=str(CLIPS),
            eval_split="validation",
            protocols="video_svm",
            num_clips=2,
            num_frames=4,
            frame_stride=2,
            num_workers=0,
            batch_size=16,
            output_file=str(tmp_path / "results.json"),
            disable_tqdm=True,
        )
    )
    score = results.get(protocol="video_svm", metric="top1_accuracy")
    assert score.dataset == "clips-2cls" and score.split == "validation"
    assert 0 <= score.value <= 100


def test_card_lists_the_new_protocols_under_their_hub_tasks() -> None:
    retrieval = score_to_eval_result(Score("retrieval", "paris6k-subset", "queries", "map", 0.5))
    assert (retrieval.task_type, retrieval.task_name) == ("image-feature-extraction", "Image Retrieval")
    assert (retrieval.metric_type, retrieval.metric_name) == ("mean_average_precision", "retrieval mAP")
    svm = score_to_eval_result(Score("video_svm", "clips-2cls", "validation", "top1_accuracy", 80.0))
    assert (svm.task_type, svm.metric_type, svm.metric_name) == ("video-classification", "accuracy", "linear SVM top-1")


def test_video_svm_reads_c3d_fc6_after_its_relu_and_pooled_features_elsewhere() -> None:
    clips = torch.randn(2, 4, 3, 32, 32)
    c3d_backbone = {"model_type": "c3d", "width_multiplier": 1 / 32, "fc_dim": 256, "pool_size": [1, 2, 2]}
    with torch.no_grad():
        # a bare C3D, and C3D as a method's backbone (what `hf-ssl evaluate` loads with AutoModel)
        for model in (C3DModel(C3DConfig(**c3d_backbone)).eval(), _tiny_checkpoint_model(c3d_backbone).base_model):
            c3d = getattr(model, "backbone", model)
            fc6 = torch.relu(c3d.classifier[0](c3d.avgpool(c3d(pixel_values=clips).last_hidden_state).flatten(1)))
            torch.testing.assert_close(VideoSVMFeatures(model)(clips).embeddings, fc6)
            assert not c3d.classifier[1]._forward_hooks  # the hook is removed again
        r3d = _tiny_checkpoint_model({"model_type": "r3d", "hidden_sizes": [8, 16], "depths": [1, 1]}).base_model
        torch.testing.assert_close(VideoSVMFeatures(r3d)(clips).embeddings, r3d(pixel_values=clips).pooler_output)


def test_bad_retrieval_settings_are_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="retrieval_dataset is not set"):
        EvaluationArguments(model="m", dataset_name="d", protocols="retrieval")
    with pytest.raises(ValueError, match="retrieval_whitening="):
        EvaluationArguments(model="m", dataset_name="d", retrieval_whitening="queries")
    with pytest.raises(ValueError, match="retrieval_dataset=.*no gt.json"):
        RetrievalBenchmark.load(str(tmp_path))
