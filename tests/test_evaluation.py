"""The evaluation suite: shipped metric modules, the weighted kNN vote against the NPID paper, the raw-pixel baseline,
the linear probe protocols, per-layer pooling, and `hf-ssl evaluate` end to end on a real (tiny) checkpoint, in one
and in two processes."""

import itertools
import json
import math
import shutil

import av
import numpy as np
import PIL.Image
import pytest
import torch
from accelerate import Accelerator
from sklearn import metrics as sk_metrics

from hf_ssl.cli import main as cli_main
from hf_ssl.data import load_stream, make_image_processor
from hf_ssl.data.stream import with_stable_ids
from hf_ssl.data.video import decode_clips, uniform_clip_starts
from hf_ssl.evaluation import PixelFeatures, extract_features, knn_classify, knn_scores, top_k_accuracy
from hf_ssl.evaluation.linear_probe import RandomCropFlipTransform, train_linear_probe
from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.evaluation.suite import EvaluationArguments, Evaluator, deepcluster_pool, pool_to
from hf_ssl.evaluation.transforms import EvalTransform, VideoEvalTransform
from hf_ssl.metrics import load_metric
from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.training import parse_args, train

from .conftest import REPO, SAMPLE, VIDEO_SAMPLE, launch_two_processes, tiny_training_args


def test_top_k_accuracy_matches_a_direct_count() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(500, 10)), rng.integers(0, 10, 500)
    result = top_k_accuracy(scores, labels)
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


# -- weighted kNN: an independent reference from Wu et al. 2018, sec. 3.4 --


def _npid_knn_reference(bank, bank_labels, queries, k, tau, num_classes):
    """Per query, in float64 loops: cosine similarity s_i to every bank row, the k most similar rows, each voting
    for its class with weight exp(s_i / tau); class score = sum of the weights of its voters. Also returns the gap
    between the k-th and (k+1)-th similarity (near 0: the neighbour set is a tie)."""
    scores, gaps = [], []
    for q in queries:
        sims = []
        for j, b in enumerate(bank):
            dot = sum(float(x) * float(y) for x, y in zip(q, b))
            norm = math.sqrt(sum(float(x) ** 2 for x in q)) * math.sqrt(sum(float(y) ** 2 for y in b))
            sims.append((dot / norm, j))
        sims.sort(reverse=True)
        votes = [0.0] * num_classes
        for s, j in sims[:k]:
            votes[bank_labels[j]] += math.exp(s / tau)
        scores.append(votes)
        gaps.append(sims[k - 1][0] - sims[k][0])
    return np.array(scores), np.array(gaps)


@pytest.mark.parametrize("k", [10, 50])
def test_weighted_knn_matches_the_npid_vote(k) -> None:
    rng = np.random.default_rng(k)
    num_classes, tau = 8, 0.07
    centres = rng.normal(size=(num_classes, 12))
    bank_labels = rng.integers(0, num_classes, 150)
    bank = (centres[bank_labels] + 1.5 * rng.normal(size=(150, 12))).astype(np.float32)
    query_labels = rng.integers(0, num_classes, 60)
    queries = (centres[query_labels] + 1.5 * rng.normal(size=(60, 12))).astype(np.float32)

    reference, gaps = _npid_knn_reference(bank, bank_labels, queries, k, tau, num_classes)
    # ties excluded: the neighbour set, the top-1 class and the label's place in the top 5 must be clear-cut (the
    # margins are far above float32 similarity rounding amplified by 1/tau)
    ranked = -np.sort(-reference, axis=1)
    own = reference[np.arange(len(queries)), query_labels]
    margin = 1e-4 * ranked[:, :1]
    tie_free = (
        (gaps > 1e-4)
        & (ranked[:, 0] - ranked[:, 1] > margin[:, 0])
        & ((own - ranked[:, 5] > margin[:, 0]) | (ranked[:, 4] - own > margin[:, 0]))
    )
    assert tie_free.sum() >= 40  # ties are rare: the test still sees most queries
    scores = knn_classify(bank, bank_labels, queries, k, tau, num_classes)
    np.testing.assert_allclose(scores[tie_free], reference[tie_free], rtol=1e-4)

    kept, labels, kept_scores = queries[tie_free], query_labels[tie_free], reference[tie_free]
    own = kept_scores[np.arange(len(labels)), labels]
    expected = {
        "top1_accuracy": 100 * np.mean(kept_scores.argmax(1) == labels),
        "top5_accuracy": 100 * np.mean((kept_scores > own[:, None]).sum(1) < 5),
    }
    assert 0 < expected["top1_accuracy"] < expected["top5_accuracy"] < 100  # the test can tell them apart
    measured = knn_scores(bank, bank_labels, kept, labels, "blobs", "test", [k], tau)
    assert {(s.protocol, s.dataset, s.split, s.k) for s in measured} == {("knn", "blobs", "test", k)}
    assert {s.metric: s.value for s in measured} == pytest.approx(expected)


# -- the raw-pixel baseline --


def test_pixel_features_are_the_eval_crop_centred_on_its_mean() -> None:
    processor = make_image_processor(24, resize_size=28)
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)) for i in range(3)]
    features = PixelFeatures(processor)(processor(images=images, return_tensors="pt")["pixel_values"]).embeddings
    for image, row in zip(images, features):
        # the reference: resize the short side to 28 and centre crop 24 with PIL, then [0, 1] pixels minus their mean
        width, height = image.size
        scale = 28 / min(width, height)
        resized = image.resize((round(width * scale), round(height * scale)), PIL.Image.BICUBIC)
        left, top = (resized.size[0] - 24) // 2, (resized.size[1] - 24) // 2
        pixels = np.asarray(resized.crop((left, top, left + 24, top + 24)), dtype=np.float64).transpose(2, 0, 1) / 255
        expected = pixels.ravel() - pixels.mean()
        assert row.shape == (3 * 24 * 24,)
        assert abs(float(row.mean())) < 1e-5
        np.testing.assert_allclose(row.numpy(), expected, atol=0.02)  # resampling differences only
        assert np.corrcoef(row.numpy(), expected)[0, 1] > 0.995


@pytest.mark.slow
def test_pixel_baseline_reproduces_the_measured_knn_on_the_cifar10_sample() -> None:
    """bank = the 5k training images, queries = the 1k test images, at 32 px, tau 0.07: 41.4 (k=200), 42.3 (k=20)."""
    processor, accelerator = make_image_processor(32), Accelerator(cpu=True)
    (bank, bank_labels, _), (queries, query_labels, _) = (
        extract_features(
            PixelFeatures(processor),
            with_stable_ids(load_stream(str(SAMPLE), split))[0],
            EvalTransform(processor, label_column="label"),
            accelerator,
            500,
            progress=False,
        )
        for split in ("train", "test")
    )
    assert len(bank) == 5000 and len(queries) == 1000
    scores = knn_scores(bank, bank_labels, queries, query_labels, "cifar10-sample", "test", [200, 20])
    top1 = {s.k: s.value for s in scores if s.metric == "top1_accuracy"}
    assert top1[200] == pytest.approx(41.4) and top1[20] == pytest.approx(42.3)


# -- linear probes --


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
    [
        ((2, 16, 32, 32), 9600, 16 * 24 * 24),
        ((2, 256, 4, 4), 9600, 256 * 4 * 4),
        ((2, 512, 2, 2), 100, 512),
        ((2, 8, 4, 6, 6), 72, 8 * 3 * 3),
        ((2, 50, 64), 9600, 64),
    ],
)
def test_pool_to_reaches_about_the_requested_width(shape, dims, expected) -> None:
    assert pool_to(torch.randn(shape), dims).shape == (2, expected)


def test_deepcluster_pooling_is_eval_linear_s_per_conv_layer() -> None:
    # AlexNet's conv1..conv5 maps at 224 px; eval_linear.py's RegLog sizes its linear layer for these widths
    shapes = [(96, 55), (256, 27), (384, 13), (384, 13), (256, 13)]
    widths = [deepcluster_pool(torch.randn(2, c, s, s), i, "alexnet", 9600).shape[1] for i, (c, s) in enumerate(shapes)]
    assert widths == [9600, 9216, 9600, 9600, 9216]
    # zero padding counts in the average (AvgPool2d's default): a map of ones pools to 4/9 in conv3's corner
    assert deepcluster_pool(torch.ones(1, 1, 13, 13), 2, "alexnet", 9600)[0, 0] == pytest.approx(4 / 9)
    # other backbones, and maps smaller than the kernel, keep the adaptive pooling
    assert deepcluster_pool(torch.randn(2, 16, 32, 32), 0, "resnet", 9600).shape == (2, 16 * 24 * 24)
    assert deepcluster_pool(torch.randn(2, 96, 1, 1), 0, "alexnet", 9600).shape == (2, 96)


def test_deepcluster_views_are_random_crops_of_the_centre_square_redrawn_each_epoch() -> None:
    processor = make_image_processor(24, resize_size=32)
    rng = np.random.default_rng(0)
    examples = [
        {"image_tensor": torch.from_numpy(rng.integers(0, 256, (3, 36, 48), dtype=np.uint8)), "id": i} for i in range(8)
    ]
    square = torch.from_numpy(
        processor(
            images=[PIL.Image.fromarray(e["image_tensor"].permute(1, 2, 0).numpy()) for e in examples],
            crop_size={"height": 32, "width": 32},
            return_tensors="pt",
        )["pixel_values"].numpy()
    )

    def views(epoch: int) -> torch.Tensor:
        return RandomCropFlipTransform(processor, epoch, seed=3)(examples)["pixel_values"]

    first = views(0)
    assert first.shape == (8, 3, 24, 24)
    flips = 0
    for view, full in zip(first, square):
        windows = [
            (t, left, f)
            for t, left, f in itertools.product(range(9), range(9), (False, True))
            if torch.allclose(  # the batched resize is PIL's to 3 levels of 255 (tests/test_eval_batched.py)
                view,
                full[:, t : t + 24, left : left + 24].flip(-1) if f else full[:, t : t + 24, left : left + 24],
                atol=0.06,
            )
        ]
        assert len(windows) == 1  # exactly one crop window of the centre square, maybe flipped
        flips += windows[0][2]
    assert 0 < flips < 8
    assert torch.equal(views(0), first)  # a function of (seed, epoch, id): the same in every process and worker
    assert not torch.equal(views(1), first)  # re-drawn every epoch
    # an example's view does not depend on the batch it lands in
    alone = RandomCropFlipTransform(processor, 0, seed=3)(examples[5:6])["pixel_values"][0]
    assert torch.equal(alone, first[5])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real DeepCluster checkpoint trained for a few steps on the small sample (~20 s)."""
    out = tmp_path_factory.mktemp("eval-ckpt")
    recipe = tiny_training_args(
        "deep_cluster",
        {"num_clusters": 10, "pca_dim": 8},
        out,
        image_size=16,
        max_steps=4,
        per_device_train_batch_size=32,
        shuffle_buffer=200,
        max_eval_bank_samples=200,
        save_steps=0,
    )
    train(*parse_args(recipe))
    return out


def _args(checkpoint, dataset, tmp_path, **overrides) -> EvaluationArguments:
    fields = dict(
        model=str(checkpoint),
        dataset_name=str(dataset),
        protocols="knn,linear,layers,nmi,transfer",
        transfer_dataset_name=str(REPO / "data" / "cifar10-sample"),
        max_train_samples=200,
        max_eval_samples=100,
        probe_epochs=20,
        num_workers=0,
        batch_size=100,
        output_file=str(tmp_path / "results.json"),
        disable_tqdm=True,
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
    # the raw-pixel baseline beside every kNN score, and on nothing else
    measured = [(s.k, s.metric, s.baseline) for s in by_protocol["knn"]]
    assert len(measured) == 8 and set(measured) == {
        (k, m, b) for k in (20, 200) for m in ("top1_accuracy", "top5_accuracy") for b in (None, "pixels")
    }
    assert {s.baseline for s in results.scores if s.protocol != "knn"} == {None}
    pixels = results.get(protocol="knn", k=20, metric="top1_accuracy", baseline="pixels")
    assert pixels.name == "kNN top-1 (k=20, raw pixels)"
    values = {b: [s.value for s in by_protocol["knn"] if s.baseline == b] for b in (None, "pixels")}
    assert values[None] != values["pixels"]  # two different feature sets
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


def test_pixel_baseline_of_the_suite_is_the_knn_on_pixel_features(checkpoint, small_sample, tmp_path):
    args = _args(checkpoint, small_sample, tmp_path, protocols="knn", knn_k=[10])
    evaluator = Evaluator(args)
    train, test = evaluator.features(str(small_sample), "test", layers=False, pixels=True)
    assert train.pixels.shape == (200, 3 * 16 * 16)  # the checkpoint's 16 px eval crop
    results = evaluator.run()
    expected = knn_scores(
        train.pixels, train.labels, test.pixels, test.labels, small_sample.name, "test", [10], baseline="pixels"
    )
    assert [s for s in results.scores if s.baseline == "pixels"] == expected
    no_baseline = Evaluator(
        _args(checkpoint, small_sample, tmp_path, protocols="knn", knn_k=[10], pixel_baseline=False)
    )
    assert {s.baseline for s in no_baseline.run().scores} == {None}


def test_deepcluster_probe_protocol_runs_and_is_deterministic(checkpoint, small_sample, tmp_path):
    args = dict(
        protocols="linear,layers",
        probe_protocol="deepcluster",
        probe_epochs=2,
        max_train_samples=100,
        max_eval_samples=50,
    )
    first = Evaluator(_args(checkpoint, small_sample, tmp_path, **args)).run()
    again = Evaluator(_args(checkpoint, small_sample, tmp_path, **args)).run()
    assert first.scores == again.scores
    assert [s.layer for s in first.scores if s.metric == "top1_accuracy"] == [None, "stem", "stage1", "stage2"]
    # the protocol's defaults are resolved into the recorded settings
    assert first.settings["probe_learning_rate"] == 0.01 and first.settings["probe_weight_decay"] == 1e-4
    standardised = Evaluator(_args(checkpoint, small_sample, tmp_path, **{**args, "probe_protocol": "standardised"}))
    assert standardised.run().scores != first.scores


def test_cli_evaluate_destroys_the_process_group_however_it_ends(tmp_path, capsys):
    """`hf-ssl evaluate` leaves no process group to interpreter shutdown (as `hf-ssl train` never did), here on an
    error raised inside the evaluation, in a real one-process gloo group."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        code = cli_main(["evaluate", "--model", str(tmp_path / "missing"), "--dataset_name", str(SAMPLE)])
        assert code == 2 and "missing" in capsys.readouterr().err
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_cli_prints_the_table_and_writes_the_json(checkpoint, small_sample, tmp_path, capsys):
    output = tmp_path / "cli.json"
    code = cli_main(
        [
            "evaluate",
            "--model",
            str(checkpoint),
            "--dataset_name",
            str(small_sample),
            "--protocols",
            "knn,nmi",
            "--knn_k",
            "20",
            "--max_eval_samples",
            "100",
            "--num_workers",
            "0",
            "--output_file",
            str(output),
            "--disable_tqdm",
            "True",
        ]
    )
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
        (["--protocols", "transfer"], "transfer_dataset_name is not set"),
        (["--model", "/nonexistent/checkpoint"], "/nonexistent/checkpoint"),
        (["--dataset_name", "/nonexistent/data"], "/nonexistent/data"),
        (["--label_column", "caption"], "label_column='caption'"),
        (["--probe_protocol", "dc"], "probe_protocol='dc'"),
        (["--probe_learning_rate", "0"], "probe_learning_rate must be > 0"),
    ],
)
def test_bad_evaluate_arguments_fail_with_one_line(checkpoint, small_sample, tmp_path, capsys, argv, message):
    base = {"--model": str(checkpoint), "--dataset_name": str(small_sample), "--protocols": "knn"}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value
    code = cli_main(
        [
            "evaluate",
            *[x for kv in base.items() for x in kv],
            "--num_workers",
            "0",
            "--max_train_samples",
            "50",
            "--max_eval_samples",
            "50",
            "--output_file",
            str(tmp_path / "r.json"),
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith("hf-ssl evaluate: error:") and message in last, last


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(checkpoint, small_sample, tmp_path):
    common = [
        "evaluate",
        "--model",
        str(checkpoint),
        "--dataset_name",
        str(small_sample),
        "--protocols",
        "knn,linear,nmi",
        "--num_workers",
        "0",
        "--batch_size",
        "64",
        "--probe_epochs",
        "20",
        "--disable_tqdm",
        "True",
    ]
    launch_two_processes("-m", "hf_ssl.cli", *common, "--output_file", str(tmp_path / "two.json"), port=29519)
    assert cli_main([*common, "--output_file", str(tmp_path / "one.json")]) == 0
    one, two = (EvaluationResults.load(tmp_path / f"{n}.json") for n in ("one", "two"))
    assert [(s.protocol, s.metric, s.k) for s in one.scores] == [(s.protocol, s.metric, s.k) for s in two.scores]
    for a, b in zip(one.scores, two.scores):
        # same features up to float rounding across batch compositions: kNN and k-means agree, probes within 1 point
        tolerance = 1.0 if a.protocol == "linear" else 0.11 if a.metric.endswith("accuracy") else 0.01
        assert a.value == pytest.approx(b.value, abs=tolerance), (a, b)


# -- video probe: several clips per video, features averaged --


def _all_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_decode_clips_spreads_clips_evenly_and_loops_short_videos() -> None:
    path = sorted(VIDEO_SAMPLE.glob("validation/tench/*.mp4"))[0]
    frames = _all_frames(path)
    clips = decode_clips({"path": str(path), "bytes": None}, num_clips=3, num_frames=4, frame_stride=5)
    assert clips.shape == (3, 4, 112, 112, 3) and clips.dtype == np.uint8
    starts = uniform_clip_starts(len(frames), 16, 3)
    assert starts[0] == 0 and starts[-1] == len(frames) - 16
    for clip, start in zip(clips, starts):
        for i, frame in enumerate(clip):
            np.testing.assert_array_equal(frame, frames[start + 5 * i])
    # a clip longer than the video loops over it
    long = decode_clips(path.read_bytes(), num_clips=1, num_frames=10, frame_stride=10)
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
        num_examples=60,
        embedding_dim=16,
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
        model=str(video_checkpoint),
        dataset_name=str(data),
        eval_split="validation",
        protocols="knn,linear,layers",
        knn_k=[5],
        num_clips=3,
        num_frames=4,
        frame_stride=3,
        probe_epochs=10,
        num_workers=0,
        batch_size=8,
        output_file=str(tmp_path / "video.json"),
        disable_tqdm=True,
    )
    evaluator = Evaluator(args)
    train, test = evaluator.features(str(data), "validation", layers=True)
    assert len(train.embeddings) == 60 and len(test.embeddings) == 30  # 61 train files, the truncated one skipped
    assert sorted(np.bincount(train.labels)) == [6] * 10
    assert train.pooled.shape == (60, 16) and train.embeddings.shape == (60, 16)
    assert train.layers[0].shape == (60, 8 * 16 * 16)  # stem: 8 channels at 16x16, averaged over time

    # a video's feature is the mean of its clips' embeddings
    first = sorted((data / "validation").glob("*/*.mp4"))[0]
    transform = VideoEvalTransform(evaluator.image_processor, num_clips=3, num_frames=4, frame_stride=3)
    batch = transform([transform.decode({"video": {"path": str(first), "bytes": None}, "id": 0})])
    with torch.no_grad():
        clip_embeddings = evaluator.model(pixel_values=batch["pixel_values"][0]).embeddings
    assert any(np.allclose(row, clip_embeddings.mean(0).numpy(), atol=1e-5) for row in test.embeddings)

    results = evaluator.run()
    assert [s.layer for s in results.scores if s.protocol == "layers" and s.metric == "top1_accuracy"] == [
        "stem",
        "stage1",
        "stage2",
    ]
    assert results.settings["num_clips"] == 3
