"""The evaluation suite: shipped metric modules, the linear probe, per-layer pooling, and `hf-ssl evaluate` end to
end on a real (tiny) checkpoint, in one and in two processes."""

import json
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from sklearn import metrics as sk_metrics

from hf_ssl.cli import main as cli_main
from hf_ssl.data import make_image_processor
from hf_ssl.data.video import VideoEvalTransform, decode_clips, uniform_clip_starts
from hf_ssl.evaluation.linear_probe import train_linear_probe
from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.evaluation.suite import EvaluationArguments, Evaluator, pool_to
from hf_ssl.metrics import load_metric
from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.training import parse_args, train

from .conftest import REPO, TINY_BACKBONE


def test_top_k_accuracy_module_matches_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(500, 10)), rng.integers(0, 10, 500)
    result = load_metric("top_k_accuracy").compute(predictions=scores, references=labels, k=5)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert result["top1_accuracy"] == pytest.approx(100 * np.mean(scores.argmax(1) == labels))
    assert result["top5_accuracy"] == pytest.approx(100 * np.mean((top5 == labels[:, None]).any(1)))


def test_clustering_agreement_module_matches_scikit_learn_and_ignores_cluster_names() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    clusters = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 5, 300))
    metric = load_metric("clustering_agreement")
    result = metric.compute(predictions=clusters, references=labels)
    assert result["nmi"] == pytest.approx(sk_metrics.normalized_mutual_info_score(labels, clusters))
    assert result["ari"] == pytest.approx(sk_metrics.adjusted_rand_score(labels, clusters))
    assert 0.2 < result["ami"] < 0.9
    renamed = metric.compute(predictions=(labels + 3) % 5, references=labels)
    assert renamed == {"nmi": pytest.approx(1.0), "ami": pytest.approx(1.0), "ari": pytest.approx(1.0)}


def test_unknown_metric_module_is_named() -> None:
    with pytest.raises(ValueError, match="no metric module 'f1'.*clustering_agreement"):
        load_metric("f1")


def test_linear_probe_separates_blobs_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(4, 32))
    labels = rng.integers(0, 4, 600)
    # one feature at a scale 1e4 times the others: standardisation makes it harmless
    features = (centres[labels] + rng.normal(size=(600, 32))).astype(np.float32)
    features[:, 0] *= 1e4
    kwargs = dict(num_classes=4, epochs=30, batch_size=64, progress=False)
    scores = train_linear_probe(features[:400], labels[:400], features[400:], **kwargs)
    assert np.mean(scores.argmax(1) == labels[400:]) > 0.97
    again = train_linear_probe(features[:400], labels[:400], features[400:], **kwargs)
    np.testing.assert_array_equal(scores, again)


def test_linear_probe_refuses_unlabelled_training_data() -> None:
    features = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="without a label"):
        train_linear_probe(features, np.array([0, 1, -1, 0]), features, num_classes=2, progress=False)


@pytest.mark.parametrize(
    ("shape", "dims", "expected"),
    [((2, 16, 32, 32), 9600, 16 * 24 * 24), ((2, 256, 4, 4), 9600, 256 * 4 * 4), ((2, 512, 2, 2), 100, 512),
     ((2, 8, 4, 6, 6), 72, 8 * 3 * 3), ((2, 50, 64), 9600, 64)],
)
def test_pool_to_reaches_about_the_requested_width(shape, dims, expected) -> None:
    assert pool_to(torch.randn(shape), dims).shape == (2, expected)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real DeepCluster checkpoint trained for a few steps on the small sample (~20 s)."""
    out = tmp_path_factory.mktemp("eval-ckpt")
    recipe = [
        "--method", "deep_cluster", "--backbone_config", json.dumps(TINY_BACKBONE),
        "--method_config", json.dumps({"num_clusters": 10, "pca_dim": 8}),
        "--dataset_name", str(REPO / "data" / "cifar10-sample"), "--image_size", "16", "--max_steps", "4",
        "--per_device_train_batch_size", "32", "--shuffle_buffer", "200", "--max_eval_bank_samples", "200",
        "--dataloader_num_workers", "0", "--save_steps", "0", "--knn_k", "20", "--report_to", "none",
        "--disable_tqdm", "True", "--output_dir", str(out),
    ]
    train(*parse_args(recipe))
    return out


def _args(checkpoint, dataset, tmp_path, **overrides) -> EvaluationArguments:
    fields = dict(
        model=str(checkpoint), dataset=str(dataset), protocols="knn,linear,layers,nmi,transfer",
        transfer_dataset=str(REPO / "data" / "cifar10-sample"), max_train_samples=200, max_eval_samples=100,
        probe_epochs=20, num_workers=0, batch_size=100, output_file=str(tmp_path / "results.json"), disable_tqdm=True,
    )
    return EvaluationArguments(**{**fields, **overrides})


def test_every_protocol_on_a_real_checkpoint_with_features_extracted_once(checkpoint, small_sample, tmp_path):
    evaluator = Evaluator(_args(checkpoint, small_sample, tmp_path))
    seen = []
    evaluator.model.register_forward_hook(lambda module, inputs, output: seen.append(len(output.embeddings)))
    results = evaluator.run()

    # one pass per split: 200 + 100 of the main dataset, 200 + 100 of the transfer dataset
    assert sum(seen) == 600
    assert EvaluationResults.load(tmp_path / "results.json") == results
    assert results.method == "deep_cluster" and results.pretraining_dataset == "cifar10-sample"
    by_protocol = {}
    for score in results.scores:
        by_protocol.setdefault(score.protocol, []).append(score)
    assert sorted(by_protocol) == ["knn", "layers", "linear", "nmi", "transfer"]
    assert {(s.k, s.metric) for s in by_protocol["knn"]} == {
        (k, m) for k in (20, 200) for m in ("top1_accuracy", "top5_accuracy")
    }
    # ResNet hidden states: the stem and the two stages of the tiny backbone, top-1 and top-5 each
    assert [s.layer for s in by_protocol["layers"] if s.metric == "top1_accuracy"] == ["stem", "stage1", "stage2"]
    assert {s.metric for s in by_protocol["nmi"]} == {"nmi", "ami", "ari"}
    assert {s.dataset for s in by_protocol["transfer"]} == {"cifar10-sample"}
    assert {s.dataset for s in by_protocol["knn"]} == {small_sample.name}
    # frozen features of a conv net beat chance (10 %) by a margin on every accuracy protocol
    for score in results.scores:
        if score.metric == "top1_accuracy":
            assert score.value > 15.0, score
        elif score.metric == "top5_accuracy":
            assert score.value > 55.0, score
        else:
            assert 0.0 <= score.value <= 1.0
    assert results.get(protocol="nmi", metric="nmi").value > 0.02


def test_cli_prints_the_table_and_writes_the_json(checkpoint, small_sample, tmp_path, capsys):
    output = tmp_path / "cli.json"
    code = cli_main([
        "evaluate", "--model", str(checkpoint), "--dataset", str(small_sample), "--protocols", "knn,nmi",
        "--knn_k", "20", "--max_eval_samples", "100", "--num_workers", "0", "--output_file", str(output),
        "--disable_tqdm", "True",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads(output.read_text())
    assert "knn_k" in results["settings"] and results["settings"]["knn_k"] == [20]
    knn = [s for s in results["scores"] if s["protocol"] == "knn" and s["metric"] == "top1_accuracy"][0]
    assert f"{knn['value']:.2f}" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--protocols", "knn,probe"], "protocols='knn,probe'"),
        (["--protocols", "transfer"], "transfer_dataset is not set"),
        (["--model", "/nonexistent/checkpoint"], "/nonexistent/checkpoint"),
        (["--dataset", "/nonexistent/data"], "/nonexistent/data"),
        (["--label_column", "caption"], "label_column='caption'"),
    ],
)
def test_bad_evaluate_arguments_fail_with_one_line(checkpoint, small_sample, tmp_path, capsys, argv, message):
    base = {"--model": str(checkpoint), "--dataset": str(small_sample), "--protocols": "knn"}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value
    code = cli_main(["evaluate", *[x for kv in base.items() for x in kv], "--num_workers", "0",
                     "--max_train_samples", "50", "--max_eval_samples", "50", "--output_file", str(tmp_path / "r.json")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("hf-ssl evaluate: error:") and message in last, last


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(checkpoint, small_sample, tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    common = [
        "evaluate", "--model", str(checkpoint), "--dataset", str(small_sample), "--protocols", "knn,linear,nmi",
        "--num_workers", "0", "--batch_size", "64", "--probe_epochs", "20", "--disable_tqdm", "True",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "29519",
         "-m", "hf_ssl.cli", *common, "--output_file", str(tmp_path / "two.json")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert cli_main([*common, "--output_file", str(tmp_path / "one.json")]) == 0
    one, two = (EvaluationResults.load(tmp_path / f"{n}.json") for n in ("one", "two"))
    assert [(s.protocol, s.metric, s.k) for s in one.scores] == [(s.protocol, s.metric, s.k) for s in two.scores]
    for a, b in zip(one.scores, two.scores):
        # same features up to float rounding across batch compositions: kNN and k-means agree, probes within 1 point
        tolerance = 1.0 if a.protocol == "linear" else 0.11 if a.metric.endswith("accuracy") else 0.01
        assert a.value == pytest.approx(b.value, abs=tolerance), (a, b)


# -- video probe: several clips per video, features averaged --

VIDEO_SAMPLE = REPO / "data" / "moving-imagenette-sample"


def _all_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_decode_clips_spreads_clips_evenly_and_loops_short_videos() -> None:
    path = sorted(VIDEO_SAMPLE.glob("validation/tench/*.mp4"))[0]
    frames = _all_frames(path)
    clips = decode_clips({"path": str(path), "bytes": None}, num_clips=3, frames_per_clip=4, frame_stride=5)
    assert clips.shape == (3, 4, 112, 112, 3) and clips.dtype == np.uint8
    starts = uniform_clip_starts(len(frames), 16, 3)
    assert starts[0] == 0 and starts[-1] == len(frames) - 16
    for clip, start in zip(clips, starts):
        for i, frame in enumerate(clip):
            np.testing.assert_array_equal(frame, frames[start + 5 * i])
    # a clip longer than the video loops over it
    long = decode_clips(path.read_bytes(), num_clips=1, frames_per_clip=10, frame_stride=10)
    np.testing.assert_array_equal(long[0, 7], frames[70 % len(frames)])


def test_an_undecodable_video_is_named() -> None:
    with pytest.raises(ValueError, match="cannot open video broken.mp4"):
        decode_clips({"path": "broken.mp4", "bytes": b"\x00" * 1000}, 2, 4, 1)


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    """Instance Recognition on a tiny 3D ResNet, at initialisation, with its image processor."""
    out = tmp_path_factory.mktemp("video-ckpt")
    cls = PRETRAINING_CLASSES["instance_recognition"]
    torch.manual_seed(0)
    config = cls.config_class(
        backbone_config={"model_type": "r3d", "hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8},
        num_examples=60, embedding_dim=16,
    )
    cls(config).save_pretrained(out)
    make_image_processor(32).save_pretrained(out)
    return out


def test_video_probe_averages_clip_features_and_skips_a_corrupt_video(video_checkpoint, tmp_path):
    data = tmp_path / "videos"
    shutil.copytree(VIDEO_SAMPLE, data)
    (data / "train" / "tench" / "zz-truncated.mp4").write_bytes(
        (VIDEO_SAMPLE / "train" / "tench").glob("*.mp4").__next__().read_bytes()[:3000]
    )
    args = EvaluationArguments(
        model=str(video_checkpoint), dataset=str(data), eval_split="validation", protocols="knn,linear,layers",
        knn_k=[5], num_clips=3, frames_per_clip=4, frame_stride=3, probe_epochs=10, num_workers=0, batch_size=8,
        output_file=str(tmp_path / "video.json"), disable_tqdm=True,
    )
    evaluator = Evaluator(args)
    train, test = evaluator.features(str(data), "validation", layers=True)
    assert len(train.embeddings) == 60 and len(test.embeddings) == 30  # 61 train files, the truncated one skipped
    assert sorted(np.bincount(train.labels)) == [6] * 10
    assert train.pooled.shape == (60, 16) and train.embeddings.shape == (60, 16)
    assert train.layers[0].shape == (60, 8 * 16 * 16)  # stem: 8 channels at 16x16, averaged over time

    # a video's feature is the mean of its clips' embeddings
    first = sorted((data / "validation").glob("*/*.mp4"))[0]
    transform = VideoEvalTransform(evaluator.image_processor, num_clips=3, frames_per_clip=4, frame_stride=3)
    batch = transform([transform.decode({"video": {"path": str(first), "bytes": None}, "id": 0})])
    with torch.no_grad():
        clip_embeddings = evaluator.model(pixel_values=batch["pixel_values"][0]).embeddings
    assert any(np.allclose(row, clip_embeddings.mean(0).numpy(), atol=1e-5) for row in test.embeddings)

    results = evaluator.run()
    assert [s.layer for s in results.scores if s.protocol == "layers" and s.metric == "top1_accuracy"] == [
        "stem", "stage1", "stage2"
    ]
    assert results.settings["num_clips"] == 3
