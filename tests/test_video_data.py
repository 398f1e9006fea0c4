"""Video pre-training data: clip sampling, decoding only what is needed (with keyframe seeks), the clip views
(rho clips per video, one augmentation per clip), corrupt videos in a training stream, and Instance Recognition
trained end to end on the shipped Moving Imagenette sample, resumed bit-exactly. The full real sets
(../shared/data) are only used when present."""

import itertools
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from hf_ssl.data import (
    EXAMPLE_SEED,
    BatchStream,
    ClipViewTransform,
    ViewAugmentation,
    clip_span,
    is_video_dataset,
    load_stream,
    make_image_processor,
    read_clips,
    sample_clip_starts,
    with_stable_ids,
)
from hf_ssl.data.video import _decode, _video_stream
from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.evaluation.transforms import VideoEvalTransform
from hf_ssl.training import parse_args, train

from .conftest import SHARED_DATA, TINY_R3D, VIDEO_SAMPLE


def needs(name: str):
    return pytest.mark.skipif(
        not (SHARED_DATA / name).is_dir(), reason=f"the real dataset is not at {(SHARED_DATA / name).resolve()}"
    )


def all_frames(path: Path) -> list[np.ndarray]:
    """Every frame, decoded from the start without seeking: the reference."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def sample_videos(split: str = "train") -> list[Path]:
    return sorted((VIDEO_SAMPLE / split).glob("*/*.mp4"))


def raw_example(path: Path, index: int, seed: int) -> dict:
    """A raw videofolder row as `BatchStream` hands it to `decode`."""
    return {"video": {"path": str(path), "bytes": None}, "label": 0, "id": index, EXAMPLE_SEED: seed}


@pytest.fixture(scope="module")
def many_keyframes(tmp_path_factory) -> Path:
    """120 frames of 48x32 with a keyframe every 10 (and B-frames): seeks really skip GOPs."""
    path = tmp_path_factory.mktemp("gop") / "gop10.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "10", "keyint_min": "10", "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(120):
            # a moving ramp plus noise: every frame differs from its neighbours
            ramp = (np.arange(48)[None, :, None] * 4 + 2 * i) % 256 + rng.integers(0, 30, (32, 48, 3))
            frame = av.VideoFrame.from_ndarray(np.clip(ramp, 0, 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# -- clip sampling --


def test_clip_starts_are_uniform_and_respect_max_distance() -> None:
    generator = np.random.default_rng(0)
    span, last = clip_span(8, 2), 64 - clip_span(8, 2)
    free = np.array([sample_clip_starts(64, span, 3, None, generator) for _ in range(3000)])
    assert free.min() == 0 and free.max() == last  # every start that keeps the clip inside the video
    assert abs(free.mean() - last / 2) < 1 and np.ptp(free, axis=1).max() > 40
    near = np.array([sample_clip_starts(64, span, 3, 5, generator) for _ in range(3000)])
    assert near.min() == 0 and near.max() == last and np.ptp(near, axis=1).max() == 5
    assert abs(near.mean() - last / 2) < 1 and abs(near[:, 0].mean() - near[:, 2].mean()) < 1  # no special clip
    same = sample_clip_starts(64, span, 2, 0, np.random.default_rng(1))
    assert same[0] == same[1]
    # a video shorter than one clip: every clip starts at 0 and its frames loop (read_clips)
    assert sample_clip_starts(10, span, 2, None, generator) == [0, 0]
    a, b = (sample_clip_starts(64, span, 4, 9, np.random.default_rng(7)) for _ in range(2))
    assert a == b
    with pytest.raises(ValueError, match="max_distance"):
        sample_clip_starts(64, span, 2, -1, generator)


# -- decoding --


@pytest.mark.parametrize("video", ["sample", "keyframe every 10 frames"])
def test_seek_decoding_equals_full_decoding(video, many_keyframes) -> None:
    path = sample_videos("validation")[0] if video == "sample" else many_keyframes
    frames = all_frames(path)
    n = len(frames)
    for starts in ([0], [n - 15], [37, 3], [n // 2 + 1, n - 10, 55], [n - 1]):  # the last one loops to the start
        indices = [(s + 2 * i) % n for s in starts for i in range(8)]
        want = np.stack([frames[i] for i in indices]).reshape(len(starts), 8, *frames[0].shape)
        for seek in (True, False):
            got = read_clips({"path": str(path), "bytes": None}, lambda count, starts=starts: starts, 8, 2, seek=seek)
            np.testing.assert_array_equal(got, want, err_msg=f"starts {starts}, seek={seek}")
    # the seek itself lands where it should (no fall back to decoding from the start)
    with _video_stream(str(path)) as (container, stream, name):
        assert _decode(container, stream, name, {n - 9, n - 5}, seek=True).keys() == {n - 9, n - 5}


def test_a_video_shorter_than_declared_gets_clips_from_what_is_there(tmp_path, many_keyframes) -> None:
    """A file cut in its frame data, whose index (written first) still declares all 120 frames: cut between two
    frames it is a shorter video; cut inside a frame it is a corrupt one."""
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(many_keyframes)) as source, av.open(str(faststart), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with av.open(str(faststart)) as container:
        assert container.streams.video[0].frames == 120
        packets = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.dts is not None]
    data = faststart.read_bytes()
    asked: list[int] = []

    def last_frames(num_frames: int) -> list[int]:
        asked.append(num_frames)
        return [num_frames - 4]

    between = data[: packets[59][0] + packets[59][1]]  # the first 60 frames (decode order), whole
    clips = read_clips(between, last_frames, 4, 1)
    assert asked == [120, 60]  # asked again with the frames really there
    np.testing.assert_array_equal(clips[0], np.stack(all_frames(many_keyframes)[56:60]))
    with pytest.raises(ValueError, match="cannot decode video <bytes>"):
        read_clips(between[:-10], last_frames, 4, 1)


def test_an_unreadable_video_is_named(tmp_path) -> None:
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(sample_videos()[0].read_bytes()[:3000])  # the index comes last: nothing opens
    transform = ClipViewTransform(ViewAugmentation(size=16), num_views=2)
    with pytest.raises(ValueError, match=f"sample id=7: cannot open video {truncated}"):
        transform.decode(raw_example(truncated, 7, 0))


# -- the clip views --


def test_clip_views_come_from_the_sampled_positions_and_are_reproducible() -> None:
    transform = ClipViewTransform(
        ViewAugmentation(size=32), num_views=2, label_column="label", num_frames=4, frame_stride=3, max_distance=6
    )
    paths = sample_videos()[:4]
    examples = [transform.decode(raw_example(p, i, seed=100 + i)) for i, p in enumerate(paths)]
    for path, example in zip(paths, examples):
        frames = all_frames(path)
        starts = sample_clip_starts(len(frames), clip_span(4, 3), 2, 6, np.random.default_rng(example[EXAMPLE_SEED]))
        assert abs(starts[0] - starts[1]) <= 6
        want = np.stack([frames[s + 3 * i] for s in starts for i in range(4)]).reshape(example["clips"].shape)
        np.testing.assert_array_equal(example["clips"], want)
    again = transform.decode(raw_example(paths[0], 0, seed=100))
    np.testing.assert_array_equal(again["clips"], examples[0]["clips"])
    other = [transform.decode(raw_example(paths[0], 0, seed=s))["clips"] for s in range(5)]
    assert any(not np.array_equal(clips, other[0]) for clips in other)  # the seed moves the clips

    batch = transform(examples, seed=5)
    views = batch["pixel_values"]
    assert views.shape == (2, 4, 4, 3, 32, 32)  # (rho, B, T, C, H, W)
    assert torch.equal(batch["ids"], torch.arange(4)) and batch["labels"].tolist() == [0] * 4
    assert torch.equal(views, transform(examples, seed=5)["pixel_values"])
    assert not torch.allclose(views, transform(examples, seed=6)["pixel_values"])
    per_channel = views.transpose(0, 3).flatten(1)  # normalised with the ImageNet mean / std, like image views
    assert per_channel.mean(1).abs().max() < 0.6 and (per_channel.std(1) > 0.5).all()

    single = ClipViewTransform(ViewAugmentation(size=32), num_views=1, num_frames=4)
    one = single([single.decode(raw_example(p, i, seed=i)) for i, p in enumerate(paths)], seed=0)
    assert one["pixel_values"].shape == (4, 4, 3, 32, 32)  # (B, T, C, H, W)


def test_one_augmentation_per_clip_and_another_per_clip_and_size() -> None:
    """Clips of one repeated frame stay one repeated frame (every frame got the same crop, flip and colours);
    the clips of a video, and videos of different sizes and orientations, get their own."""
    rng = np.random.default_rng(0)
    shapes = [(48, 64), (64, 40), (48, 64), (30, 30)]
    examples = []
    for i, (h, w) in enumerate(shapes):
        still = np.broadcast_to(rng.integers(0, 256, (1, 1, h, w, 3), dtype=np.uint8), (2, 6, h, w, 3)).copy()
        examples.append({"clips": still, "id": i})
    transform = ClipViewTransform(ViewAugmentation(size=24, grayscale_p=0), num_views=2, num_frames=6)
    views = transform(examples, seed=1)["pixel_values"]
    assert views.shape == (2, 4, 6, 3, 24, 24)
    assert torch.equal(views, views[:, :, :1].expand_as(views))
    assert all(not torch.allclose(views[0, b], views[1, b]) for b in range(4))


# -- streams --


class Paths:
    """Test transform that keeps each row's file and seed: what id and clip seed each file gets."""

    def decode(self, example: dict) -> dict:
        return example

    def __call__(self, examples: list[dict], seed: int) -> dict:
        return {
            "ids": torch.tensor([e["id"] for e in examples]),
            "paths": [e["video"]["path"] for e in examples],
            "seeds": [e[EXAMPLE_SEED] for e in examples],
        }


def consume(stream: BatchStream, num_workers: int, max_batches: int | None = None) -> list[dict]:
    batches = []
    for batch in itertools.islice(DataLoader(stream, batch_size=None, num_workers=num_workers), max_batches):
        stream.record(batch)
        batches.append(batch)
    return batches


def test_a_videofolder_gets_stable_ids_and_positional_clip_seeds() -> None:
    dataset, count = with_stable_ids(load_stream(str(VIDEO_SAMPLE), "train"))
    assert count == 60 and is_video_dataset(dataset, "video") and not is_video_dataset(dataset, "image")
    files = [str(p) for p in sorted(VIDEO_SAMPLE.glob("train/*/*.mp4"), key=lambda p: (p.parent.name, p.name))]
    for num_workers in (0, 2):
        batches = consume(
            BatchStream(dataset, 10, Paths(), num_workers=num_workers, seed=3, shuffle_buffer=20, repeat=False),
            num_workers,
        )
        ids = torch.cat([b["ids"] for b in batches]).tolist()
        assert sorted(ids) == list(range(60))
        assert all(files[i] == p for b in batches for i, p in zip(b["ids"].tolist(), b["paths"]))
    # one seed per example, reproduced by a replay
    first = consume(BatchStream(dataset, 10, Paths(), seed=3, shuffle_buffer=20), 0, 8)
    seeds = [s for b in first for s in b["seeds"]]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [
        s for b in consume(BatchStream(dataset, 10, Paths(), seed=3, shuffle_buffer=20), 0, 8) for s in b["seeds"]
    ]


def test_a_truncated_video_in_a_training_stream_is_skipped_counted_and_named(tmp_path) -> None:
    folder = tmp_path / "videos" / "train"
    for path in sample_videos()[:11]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.parent.name / path.name)
    truncated = folder / "English_springer" / "ILSVRC2012_val_0000000-cut.mp4"  # sorts first: mid-batch
    truncated.write_bytes(sample_videos()[0].read_bytes()[:5000])
    dataset, count = with_stable_ids(load_stream(str(tmp_path / "videos"), "train"))
    assert count == 12
    transform = ClipViewTransform(ViewAugmentation(size=16), num_views=2, num_frames=3)
    stream = BatchStream(dataset, 4, transform, seed=0, shuffle_buffer=0)
    batches = consume(stream, 0, 4)  # 11 good videos: 2 full batches per epoch, two epochs
    assert [tuple(b["pixel_values"].shape) for b in batches] == [(2, 4, 3, 3, 16, 16)] * 4
    assert stream.skipped.count == 2  # once per epoch
    assert f"id=0: cannot open video {truncated}" in stream.skipped.report()


# -- training end to end --


def _video_recipe(tmp_path: Path, data: Path) -> Path:
    """A tiny IR recipe on videos: a 3D ResNet of ~15k parameters on 4-frame clips of 32 px."""
    recipe = {
        "method": "instance_recognition",
        "backbone_config": TINY_R3D,
        "method_config": {"embedding_dim": 16, "num_negatives": 0, "temperature": 0.1},
        "dataset_name": str(data),
        "eval_split": "validation",
        "image_size": 32,
        "num_frames": 4,
        "frame_stride": 2,
        "eval_num_clips": 2,
        "shuffle_buffer": 16,
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "max_steps": 4,
        "learning_rate": 0.05,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_steps": 2,
        "knn_k": [5],
        "report_to": "none",
        "disable_tqdm": True,
    }
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _losses(output_dir: Path) -> dict[int, float]:
    history = json.loads((output_dir / "training_history.json").read_text())
    return {r["step"]: r["loss"] for r in history if "loss" in r}


@pytest.mark.parametrize("workers", [0, 2])
def test_instance_recognition_trains_on_video_with_knn_and_resumes_bit_exactly(tmp_path, workers) -> None:
    """Tiny R3D, one 4-frame clip per video; a truncated video in the training split is skipped on the way."""
    from safetensors.torch import load_file

    data = tmp_path / "videos"
    shutil.copytree(VIDEO_SAMPLE, data)
    broken = data / "train" / "English_springer" / "A-truncated.mp4"  # id 0: among the first videos read
    broken.write_bytes(sample_videos()[0].read_bytes()[:3000])
    recipe, full, resumed = str(_video_recipe(tmp_path, data)), tmp_path / "full", tmp_path / "resumed"
    recipe = [recipe, "--dataloader_num_workers", str(workers)]
    results = train(*parse_args([*recipe, "--output_dir", str(full)]))
    assert (full / "checkpoint-2" / "trainer_state.json").is_file() and (full / "model.safetensors").is_file()
    # 30 validation videos against 60 training videos
    assert 0 <= results.get(protocol="knn", k=5, metric="top1_accuracy").value <= 100
    assert EvaluationResults.load(full / "eval_results.json") == results
    assert results.corrupt_samples_skipped >= 1
    assert any(str(broken) in example for example in results.corrupt_samples_examples)

    train(*parse_args([*recipe, "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-2")]))
    a, b = _losses(full), _losses(resumed)
    assert sorted(a) == [1, 2, 3, 4] and len(set(a.values())) == 4
    assert [b[s] for s in (3, 4)] == [a[s] for s in (3, 4)]  # exact float equality
    weights_a, weights_b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_rho_one_makes_every_view_from_the_same_clip() -> None:
    """num_clips=1 (the paper's rho=1): two views, one decoded clip, two different augmentations of it."""
    transform = ClipViewTransform(ViewAugmentation(size=32), num_views=2, num_frames=4, num_clips=1)
    examples = [transform.decode(raw_example(p, i, seed=i)) for i, p in enumerate(sample_videos()[:3])]
    assert all(example["clips"].shape[0] == 1 for example in examples)
    views = transform(examples, seed=0)["pixel_values"]
    assert views.shape == (2, 3, 4, 3, 32, 32) and not torch.allclose(views[0], views[1])
    with pytest.raises(ValueError, match=r"num_clips must be in \[1, num_views=2\], got 3"):
        ClipViewTransform(ViewAugmentation(size=32), num_views=2, num_clips=3)


@pytest.mark.parametrize("method", ["moco", "byol"])
def test_a_rho_2_method_trains_on_video_through_the_loop(tmp_path, method) -> None:
    """Two clips per video as the positives, end to end: loss, checkpoint, video kNN at the end."""
    method_config = {"projection_hidden_dim": 32, "projection_dim": 16, "num_views": 2}
    method_config.update({"queue_size": 64} if method == "moco" else {"prediction_hidden_dim": 32})
    recipe = yaml.safe_load(_video_recipe(tmp_path, VIDEO_SAMPLE).read_text())
    recipe.update(method=method, method_config=method_config, save_steps=4)
    (tmp_path / "rho2.yaml").write_text(yaml.safe_dump(recipe))
    results = train(*parse_args([str(tmp_path / "rho2.yaml")]))
    losses = _losses(tmp_path / "out")
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    assert (tmp_path / "out" / "checkpoint-4").is_dir()
    assert 0 <= results.get(protocol="knn", k=5, metric="top1_accuracy").value <= 100
    if method == "moco":  # hf-ssl evaluate shapes the clips from the checkpoint alone: its recipe's 4 x stride 2
        from hf_ssl.evaluation.suite import EvaluationArguments, Evaluator

        evaluator = Evaluator(
            EvaluationArguments(
                model=str(tmp_path / "out"),
                dataset_name=str(VIDEO_SAMPLE),
                eval_split="validation",
                protocols="knn",
                knn_k=[5],
                num_clips=2,
                num_workers=0,
                output_file=str(tmp_path / "eval.json"),
                disable_tqdm=True,
            )
        )
        assert (evaluator.num_frames, evaluator.frame_stride) == (4, 2)
        assert evaluator.run().get(protocol="knn", k=5, metric="top1_accuracy").value >= 0


# -- the full real datasets --


@needs("clips-2cls")
def test_every_clip_of_clips_2cls_decodes_to_clip_views_and_eval_clips() -> None:
    """69 hand-held phone clips: portrait and landscape, 51-61 frames; some have a second keyframe."""
    paths = sorted((SHARED_DATA / "clips-2cls").glob("*/*/*.mp4"))
    assert len(paths) == 69
    views = ClipViewTransform(ViewAugmentation(size=32), num_views=2, num_frames=8, frame_stride=4)
    evaluation = VideoEvalTransform(make_image_processor(32), num_clips=3, num_frames=8, frame_stride=4)
    decoded = []
    for i, path in enumerate(paths):
        example = views.decode(raw_example(path, i, seed=i))
        assert example["clips"].shape[:2] == (2, 8) and min(example["clips"].shape[2:4]) == 128
        decoded.append(example)
        assert evaluation.decode(raw_example(path, i, seed=0))["clips"].shape[:2] == (3, 8)
    assert len({example["clips"].shape for example in decoded}) > 1  # sizes differ within the batch
    assert views(decoded[:16], seed=0)["pixel_values"].shape == (2, 16, 8, 3, 32, 32)


@needs("moving-imagenette")
def test_full_moving_imagenette_streams_clip_views_with_ids() -> None:
    dataset, count = with_stable_ids(load_stream(str(SHARED_DATA / "moving-imagenette"), "train"))
    assert count == 2600
    transform = ClipViewTransform(ViewAugmentation(size=32), num_views=2, num_frames=8, max_distance=16)
    stream = BatchStream(dataset, 8, transform, num_workers=2, seed=0, shuffle_buffer=100)
    batches = consume(stream, 2, 2)
    assert [tuple(b["pixel_values"].shape) for b in batches] == [(2, 8, 8, 3, 32, 32)] * 2
    assert stream.skipped.count == 0 and int(torch.cat([b["ids"] for b in batches]).max()) < count
