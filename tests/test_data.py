"""Tests of the streamed data pipeline on real images: stable ids over every way of splitting a stream, corrupt
files in an image folder and in parquet, load errors, exact resume, epochs, the one-pass mode, and the
augmentation / evaluation transforms. The full real datasets (../shared/data) are only used when present."""

import io
import itertools
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from hf_ssl.data import (
    BatchStream,
    MultiViewTransform,
    ViewAugmentation,
    decode_image,
    load_stream,
    make_image_processor,
    with_stable_ids,
)
from hf_ssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ColorJitter
from hf_ssl.evaluation.transforms import EvalTransform

from .conftest import SAMPLE, SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the full real datasets are not at {SHARED_DATA.resolve()}"
)


class RawRows:
    """Test transform that keeps the raw rows: a batch shows exactly which file bytes travel with which id."""

    def decode(self, example: dict) -> dict:
        return example

    def __call__(self, examples: list[dict], seed: int) -> dict:
        return {
            "ids": torch.tensor([e["id"] for e in examples]),
            "labels": torch.tensor([e["label"] for e in examples]),
            "image_bytes": [e["image"]["bytes"] for e in examples],
            "seed": seed,
        }


def consume(stream: BatchStream, num_workers: int = 0, max_batches: int | None = None) -> list[dict]:
    """Run a stream through a DataLoader as training does, recording every batch."""
    batches = []
    for batch in itertools.islice(DataLoader(stream, batch_size=None, num_workers=num_workers), max_batches):
        stream.record(batch)
        batches.append(batch)
    return batches


def file_rows(files: list[Path]) -> pa.Table:
    """The rows of parquet files in file order: what id i must be, independently of `datasets`."""
    return pa.concat_tables([pq.read_table(f) for f in files])


def write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)  # the table keeps the Hub features metadata, so `image` stays an Image column


@pytest.fixture(scope="module")
def sample_train() -> tuple:
    dataset, num_examples = with_stable_ids(load_stream(str(SAMPLE), "train"))
    return dataset, num_examples


@pytest.fixture(scope="module")
def sample_rows() -> pa.Table:
    return file_rows(sorted((SAMPLE / "data").glob("train-*.parquet")))


@pytest.fixture(scope="module")
def small_parquet(tmp_path_factory) -> Path:
    """4 real parquet shards of 42 rows: a few batches per epoch, and a tail that does not fill a batch."""
    root = tmp_path_factory.mktemp("small")
    for i, source in enumerate(sorted((SAMPLE / "data").glob("train-*.parquet"))):
        write_parquet(pq.read_table(source).slice(0, 42), root / "data" / f"train-{i:05d}-of-00004.parquet")
    return root


def sample_examples(count: int) -> list[dict]:
    """Raw rows of the sample's test split with ids, as the stream hands them to a transform."""
    rows = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, count).to_pylist()
    return [{**row, "id": i} for i, row in enumerate(rows)]


def odd_size_examples() -> list[dict]:
    """Imagenette-like images: different sizes and aspect ratios in one batch, one of them greyscale."""
    rng = np.random.default_rng(0)
    examples = []
    for i, (width, height, mode, fmt) in enumerate(
        [(213, 160, "RGB", "JPEG"), (160, 240, "RGB", "PNG"), (160, 160, "L", "JPEG"), (130, 97, "RGB", "PNG")]
    ):
        # Smooth gradients plus noise, so crops and resizes have real structure to move around.
        ramp = np.linspace(0, 255, width)[None, :, None] * np.linspace(0.2, 1, height)[:, None, None]
        pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        PIL.Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
        examples.append({"image": {"bytes": buffer.getvalue(), "path": None}, "label": i, "id": i})
    return examples


# -- stable ids --


@pytest.mark.parametrize(
    "name, shuffle_buffer, world_size, num_workers",
    [
        ("ordered", 0, 1, 0),
        ("shuffled", 500, 1, 0),
        ("2 processes", 0, 2, 0),
        ("2 workers", 0, 1, 2),
        ("shuffled, 2 processes x 2 workers", 500, 2, 2),
    ],
)
def test_ids_cover_every_example_once_and_follow_the_files(
    sample_train, sample_rows, name, shuffle_buffer, world_size, num_workers
):
    dataset, num_examples = sample_train
    assert num_examples == sample_rows.num_rows == 5000
    batches = []
    for rank in range(world_size):
        stream = BatchStream(
            dataset,
            128,
            RawRows(),
            rank=rank,
            world_size=world_size,
            num_workers=num_workers,
            seed=1,
            shuffle_buffer=shuffle_buffer,
            repeat=False,
        )
        batches += consume(stream, num_workers)
    ids = torch.cat([b["ids"] for b in batches]).tolist()
    assert sorted(ids) == list(range(num_examples)), name
    if shuffle_buffer:
        assert ids != sorted(ids), "the shuffle buffer did not shuffle"
    assert len({b["seed"] for b in batches}) == len(batches), "two batches share an augmentation seed"
    # id i is row i of the files in file order, whoever reads it: so every split gives the same mapping.
    images = sample_rows.column("image").to_pylist()
    labels = sample_rows.column("label").to_pylist()
    got_bytes = {i: b for batch in batches for i, b in zip(batch["ids"].tolist(), batch["image_bytes"])}
    got_labels = {i: y for batch in batches for i, y in zip(batch["ids"].tolist(), batch["labels"].tolist())}
    assert all(got_bytes[i] == images[i]["bytes"] for i in range(num_examples))
    assert all(got_labels[i] == labels[i] for i in range(num_examples))
    assert Counter(got_labels.values()) == Counter(labels)


def test_ids_refuse_an_existing_id_column(tmp_path):
    table = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, 8)
    write_parquet(table.append_column("id", pa.array(range(8), pa.int64())), tmp_path / "data" / "train.parquet")
    with pytest.raises(ValueError, match="'id'"):
        with_stable_ids(load_stream(str(tmp_path), "train"))


# -- corrupt files --


def make_image_folder(root: Path, corruption: str) -> Path:
    """train/<class>/<n>.jpg|png from real CIFAR images, plus one corrupt .jpg; returns the corrupt file."""
    for i, example in enumerate(sample_examples(12)):
        image = PIL.Image.open(io.BytesIO(example["image"]["bytes"]))
        folder = root / "train" / ("cat" if i % 2 else "ship")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:02d}.{'png' if i % 3 == 0 else 'jpg'}")
    good_jpeg = sample_examples(1)[0]["image"]["bytes"]
    corrupt = root / "train" / "cat" / "05b.jpg"  # sorts between real files, so it lands mid-batch
    corrupt.write_bytes(good_jpeg[: len(good_jpeg) // 2] if corruption == "truncated" else os.urandom(600))
    return corrupt


@pytest.mark.parametrize("corruption", ["truncated", "random bytes"])
def test_corrupt_file_in_image_folder_is_skipped_counted_and_named(tmp_path, corruption):
    corrupt = make_image_folder(tmp_path, corruption)
    dataset, num_examples = with_stable_ids(load_stream(str(tmp_path), "train"))
    assert num_examples == 13
    corrupt_id = next(e["id"] for e in dataset if e["image"]["path"] == str(corrupt))
    transform = MultiViewTransform(ViewAugmentation(size=16), num_views=2, label_column="label")
    stream = BatchStream(dataset, 4, transform, seed=3, shuffle_buffer=8)
    batches = consume(stream, max_batches=6)  # 12 good images = 3 full batches per epoch: two epochs
    assert [b["pixel_values"].shape for b in batches] == [(2, 4, 3, 16, 16)] * 6
    for epoch in (0, 1):
        ids = torch.cat([b["ids"] for b in batches if b["_epoch"] == epoch]).tolist()
        assert sorted(ids) == sorted(set(range(13)) - {corrupt_id})
    assert stream.skipped.count == 2  # once per epoch
    assert str(corrupt) in stream.skipped.report()
    assert f"id={corrupt_id}" in stream.skipped.report()


@pytest.mark.parametrize("corrupt_row, expected_count", [(3, 2), (10, 1)], ids=["mid-batch", "in the epoch's tail"])
def test_corrupt_row_in_parquet_is_skipped_counted_and_named(tmp_path, corrupt_row, expected_count):
    """Two files of 11 rows read by 2 workers; a garbage image mid-batch, or among the last rows of an epoch that
    fill no batch (still reported, with the next epoch's first batch)."""
    rows = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, 22)
    images = rows.column("image").to_pylist()
    images[corrupt_row] = {"bytes": b"\xff\xd8\xff\xe0 not a JPEG " + os.urandom(64), "path": "garbage.jpg"}
    rows = rows.set_column(0, rows.schema.field("image"), pa.array(images, rows.schema.field("image").type))
    for i in range(2):
        write_parquet(rows.slice(11 * i, 11), tmp_path / "data" / f"train-{i:05d}-of-00002.parquet")
    dataset, num_examples = with_stable_ids(load_stream(str(tmp_path), "train"))
    assert num_examples == 22
    transform = MultiViewTransform(ViewAugmentation(size=16), num_views=2)
    stream = BatchStream(dataset, 5, transform, num_workers=2, seed=3)
    batches = consume(stream, num_workers=2, max_batches=8)  # 2 epochs x 2 workers x 2 full batches
    assert [b["pixel_values"].shape[1] for b in batches] == [5] * 8
    assert corrupt_row not in torch.cat([b["ids"] for b in batches]).tolist()
    assert stream.skipped.count == expected_count
    assert f"id={corrupt_row} (garbage.jpg)" in stream.skipped.report()


# -- loading errors --


def test_unknown_split_lists_the_splits():
    with pytest.raises(ValueError, match="validation") as err:
        load_stream(str(SAMPLE), "validation")
    assert "'train'" in str(err.value) and "'test'" in str(err.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(FileNotFoundError) as err:
        load_stream(str(missing), "train")
    assert str(missing) in str(err.value)


# -- exact resume --


def make_training_stream(root: Path, num_workers: int) -> BatchStream:
    dataset, _ = with_stable_ids(load_stream(str(root), "train"))
    transform = MultiViewTransform(ViewAugmentation(size=16), num_views=2, label_column="label")
    return BatchStream(dataset, 16, transform, num_workers=num_workers, seed=7, shuffle_buffer=32)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [4, 11], ids=["resume in epoch 0", "resume in epoch 1"])
def test_resume_is_bit_identical(small_parquet, num_workers, stop):
    """168 examples, batch 16: 10 batches per epoch; 14 batches cross the epoch boundary either way."""
    total = 14
    uninterrupted = make_training_stream(small_parquet, num_workers)
    expected = consume(uninterrupted, num_workers, total)
    assert {int(b["_epoch"]) for b in expected} == {0, 1}

    first = make_training_stream(small_parquet, num_workers)
    got = consume(first, num_workers, stop)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
    resumed = make_training_stream(small_parquet, num_workers)
    resumed.load_state_dict(state)
    got += consume(resumed, num_workers, total - stop)

    assert len(got) == total
    for want, have in zip(expected, got):
        assert torch.equal(want["ids"], have["ids"])
        assert torch.equal(want["labels"], have["labels"])
        assert torch.equal(want["pixel_values"], have["pixel_values"])
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_resume_with_other_worker_count_is_refused(small_parquet):
    stream = make_training_stream(small_parquet, num_workers=2)
    consume(stream, 2, 3)
    with pytest.raises(ValueError, match="worker"):
        make_training_stream(small_parquet, num_workers=0).load_state_dict(stream.state_dict())


# -- epochs and the one-pass mode --


def test_epochs_reshuffle_but_cover_the_same_ids(sample_train):
    dataset, num_examples = sample_train
    stream = BatchStream(dataset, 100, RawRows(), seed=0, shuffle_buffer=1000)
    batches = consume(stream, max_batches=2 * num_examples // 100)
    orders = [torch.cat([b["ids"] for b in batches if b["_epoch"] == epoch]).tolist() for epoch in (0, 1)]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(num_examples))
    assert orders[0] != orders[1]
    # Every batch gets its own augmentation seed, epoch after epoch.
    assert len({b["seed"] for b in batches}) == len(batches)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_pass_keeps_the_partial_last_batch(num_workers):
    dataset, num_examples = with_stable_ids(load_stream(str(SAMPLE), "test"))
    transform = EvalTransform(make_image_processor(32), label_column="label")
    stream = BatchStream(dataset, 64, transform, num_workers=num_workers, repeat=False)
    batches = consume(stream, num_workers)
    sizes = [len(b["ids"]) for b in batches]
    # 1000 = 15 x 64 + 40 on one worker; 2 x (7 x 64 + 52) on two.
    assert sorted(sizes) == sorted([64] * 15 + [40] if num_workers == 0 else [64] * 14 + [52, 52])
    assert sorted(torch.cat([b["ids"] for b in batches]).tolist()) == list(range(num_examples))


def test_too_small_epoch_fails_instead_of_hanging(tmp_path):
    table = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, 10)
    write_parquet(table, tmp_path / "data" / "train.parquet")
    dataset, _ = with_stable_ids(load_stream(str(tmp_path), "train"))
    with pytest.raises(ValueError, match="fewer than batch_size=16"):
        next(iter(BatchStream(dataset, 16, RawRows())))


# -- transforms --


def decoded(transform, examples: list[dict]) -> list[dict]:
    return [transform.decode(example) for example in examples]


@pytest.mark.parametrize("name", ["cifar", "mixed sizes"])
def test_augmentation_is_a_function_of_the_seed(name):
    examples = sample_examples(8) if name == "cifar" else odd_size_examples()
    transform = MultiViewTransform(ViewAugmentation(size=24), num_views=2)
    batch = decoded(transform, examples)
    views = transform(batch, seed=5)["pixel_values"]
    assert views.shape == (2, len(examples), 3, 24, 24)
    assert torch.isfinite(views).all()
    assert torch.equal(views, transform(batch, seed=5)["pixel_values"])
    assert not torch.allclose(views, transform(batch, seed=6)["pixel_values"])
    assert not torch.allclose(views[0], views[1])  # the two views are augmented independently


def test_augmented_batch_is_normalised():
    transform = MultiViewTransform(ViewAugmentation(size=32), num_views=2, label_column="label")
    examples = sample_examples(128)
    batch = transform(decoded(transform, examples), seed=0)
    assert batch["pixel_values"].shape == (2, 128, 3, 32, 32)
    assert torch.equal(batch["ids"], torch.arange(128))
    assert batch["labels"].tolist() == [e["label"] for e in examples]
    per_channel = batch["pixel_values"].transpose(0, 2).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.3
    assert ((per_channel.std(1) > 0.7) & (per_channel.std(1) < 1.4)).all()


@pytest.mark.parametrize("name, image_size", [("cifar", 32), ("cifar", 24), ("mixed sizes", 56)])
def test_eval_transform_equals_the_image_processor(name, image_size):
    examples = sample_examples(8) if name == "cifar" else odd_size_examples()
    processor = make_image_processor(image_size)
    transform = EvalTransform(processor, label_column="label")
    batch = transform(decoded(transform, examples))
    direct = processor(images=[PIL.Image.open(io.BytesIO(e["image"]["bytes"])) for e in examples], return_tensors="pt")
    assert batch["pixel_values"].shape == (len(examples), 3, image_size, image_size)
    # torch's antialiased resize is PIL's to 3 levels of 255 (tests/test_eval_batched.py); without a resize, exact
    levels = (batch["pixel_values"] - direct["pixel_values"]).abs() * torch.tensor(processor.image_std).view(3, 1, 1)
    assert torch.equal(batch["pixel_values"], direct["pixel_values"]) if image_size == 32 else levels.max() * 255 < 3.01
    assert batch["labels"].tolist() == [e["label"] for e in examples]


# -- the full real datasets --


@needs_shared_data
@pytest.mark.parametrize(
    "name, split, num_examples, image_size", [("cifar10", "train", 50000, 32), ("imagenette-160", "train", 9469, 64)]
)
def test_full_dataset_streams_with_ids(name, split, num_examples, image_size):
    dataset, count = with_stable_ids(load_stream(str(SHARED_DATA / name), split))
    assert count == num_examples
    transform = MultiViewTransform(ViewAugmentation(size=image_size), num_views=2, label_column="label")
    stream = BatchStream(dataset, 32, transform, num_workers=2, seed=0, shuffle_buffer=1000)
    batches = consume(stream, 2, 4)
    assert [b["pixel_values"].shape for b in batches] == [(2, 32, 3, image_size, image_size)] * 4
    ids = torch.cat([b["ids"] for b in batches])
    assert len(set(ids.tolist())) == 128 and int(ids.max()) < num_examples
    assert stream.skipped.count == 0


def test_augment_on_device_splits_crop_and_colour_work_deterministically() -> None:
    """Workers return crops in [0, 1] plus the batch seed; `augment` finishes the views, reproducibly."""
    from hf_ssl.data.stream import iter_rows

    dataset, _ = with_stable_ids(load_stream(str(SAMPLE), "test"))
    raw = list(itertools.islice(iter_rows(dataset), 16))
    transform = MultiViewTransform(ViewAugmentation(size=24), num_views=2, augment_on_device=True)
    batch = transform([transform.decode(r) for r in raw], seed=7)
    crops = batch["pixel_values"]
    assert crops.shape == (2, 16, 3, 24, 24) and batch["augmentation_seed"] == 7
    assert crops.min() >= 0 and crops.max() <= 1  # not normalised yet
    views = transform.augment(crops, batch["augmentation_seed"])
    assert views.shape == crops.shape and views.min() < 0  # normalised
    assert torch.equal(views, transform.augment(crops, 7))
    assert not torch.equal(views, transform.augment(crops, 8))
    state = torch.get_rng_state()
    transform.augment(crops, 9)
    assert torch.equal(state, torch.get_rng_state())  # the training RNG is untouched


# -- augmentation settings of a recipe (DataArguments) reach the kornia pipeline of images and clips --


def recipe_views(video: bool, examples_uint8: torch.Tensor, seed: int = 0, ratio=None, **data_fields) -> torch.Tensor:
    """Views of (B, 3, H, W) uint8 images, or of still clips of them (4 frames), through the transform the training
    loop builds from a recipe's `DataArguments`; returned unnormalised, in [0, 1], as (B, [T,] 3, S, S)."""
    from hf_ssl.data import ClipViewTransform
    from hf_ssl.training.arguments import DataArguments

    kwargs = DataArguments(dataset_name="unused", **data_fields).augmentation_kwargs()
    augmentation = ViewAugmentation(**kwargs, **({"ratio": ratio} if ratio else {}))
    if video:
        clips = examples_uint8.permute(0, 2, 3, 1).numpy()[:, None, None].repeat(4, axis=2)  # (B, 1 clip, T, H, W, 3)
        transform = ClipViewTransform(augmentation, num_views=1, num_frames=4)
        views = transform([{"id": i, "clips": c} for i, c in enumerate(clips)], seed=seed)["pixel_values"]
    else:
        transform = MultiViewTransform(augmentation, num_views=1)
        views = transform([{"id": i, "image_tensor": x} for i, x in enumerate(examples_uint8)], seed=seed)
        views = views["pixel_values"]
    shape = (3, 1, 1)
    return views * torch.tensor(IMAGENET_STD).view(shape) + torch.tensor(IMAGENET_MEAN).view(shape)


def coordinate_images(count: int, side: int = 128) -> torch.Tensor:
    """Images whose red channel is the x coordinate and green the y coordinate: a crop's extent can be read back."""
    ramp = torch.linspace(0, 255, side).round().to(torch.uint8)
    image = torch.stack([ramp.expand(side, side), ramp[:, None].expand(side, side), torch.full((side, side), 128)])
    return image.to(torch.uint8).expand(count, -1, -1, -1).contiguous()


def crop_areas(views: torch.Tensor) -> torch.Tensor:
    """Area fraction of the source image each view was cropped from (views of `coordinate_images`)."""
    x, y = views[..., 0, :, :].flatten(-2), views[..., 1, :, :].flatten(-2)
    return ((x.amax(-1) - x.amin(-1)) * (y.amax(-1) - y.amin(-1))).flatten()


NO_COLOUR = dict(color_jitter=0.0, color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, hflip_p=0.0, image_size=32)


@pytest.mark.parametrize("video", [False, True], ids=["images", "clips"])
def test_crop_area_stays_within_crop_min_and_max_scale(video):
    images = coordinate_images(64)
    capped = crop_areas(recipe_views(video, images, crop_min_scale=0.2, crop_max_scale=0.5, **NO_COLOUR))
    assert capped.min() > 0.2 * 0.85 and capped.max() < 0.5 * 1.1  # bilinear edges blur the extent by ~1 px
    full = crop_areas(recipe_views(video, images, crop_min_scale=0.2, **NO_COLOUR))  # crop_max_scale: 1
    assert full.max() > 0.7
    large = crop_areas(recipe_views(video, images, crop_min_scale=0.6, crop_max_scale=1.0, **NO_COLOUR))
    assert large.min() > 0.6 * 0.85


def real_images(count: int) -> torch.Tensor:
    return torch.stack([decode_image(e["image"]) for e in sample_examples(count)])


@pytest.mark.parametrize("video", [False, True], ids=["images", "clips"])
def test_colour_jitter_probability_and_hue_are_honoured(video):
    """With a full-image crop (the sample's 32 px images, scale 1, ratio 1) a view is its image unless the jitter
    applies: color_jitter_p=0 never changes a colour, color_jitter_p=1 changes every image, 0.5 some; the hue
    jitter alone (color_jitter 0) changes most, and with neither nothing changes."""
    images = real_images(32)
    source = images.float().div(255)
    if video:
        source = source[:, None].expand(-1, 4, -1, -1, -1)
    same_crop = dict(NO_COLOUR, crop_min_scale=1.0, ratio=(1.0, 1.0))

    def change(**fields) -> torch.Tensor:  # mean absolute change of each example
        views = recipe_views(video, images, **{**same_crop, **fields})
        return (views - source).abs().flatten(1).mean(1)

    assert change().max() < 1e-4  # the identity crop keeps the pixels
    assert change(color_jitter=0.4, color_jitter_hue=0.4, color_jitter_p=0.0).max() < 1e-4
    assert change(color_jitter=0.4, color_jitter_hue=0.4, color_jitter_p=1.0).min() > 2e-3
    hue_only = change(color_jitter_hue=0.4, color_jitter_p=1.0) > 2e-3  # small shifts of greyish images stay small
    assert hue_only.float().mean() > 0.8
    assert change(color_jitter_p=1.0).max() < 1e-4  # color_jitter 0 and the default hue min(0.5, 0 / 4) = 0
    halfway = change(color_jitter=0.4, color_jitter_p=0.5) > 2e-3
    assert 0 < int(halfway.sum()) < len(halfway)


@pytest.mark.parametrize(
    "field, value",
    [
        ("crop_max_scale", 1.5),
        ("crop_max_scale", 0.1),  # below crop_min_scale (0.2)
        ("color_jitter_hue", 0.6),
        ("color_jitter_hue", -0.1),
        ("color_jitter_p", 1.2),
        ("hflip_p", -0.5),
        ("train_crop_size", 4),
    ],
)
def test_bad_augmentation_fields_fail_naming_the_field(field, value):
    from hf_ssl.training.arguments import DataArguments

    with pytest.raises(ValueError, match=f"^{field} must"):
        DataArguments(dataset_name="unused", **{field: value})


@pytest.mark.parametrize("video", [False, True], ids=["images", "clips"])
def test_train_crop_size_sets_the_training_views_and_leaves_the_eval_size(video):
    """FixRes-style training below the test size: the views come out at train_crop_size; without it at image_size
    (the run's saved eval size: tests/test_training.py)."""
    images = real_images(4)
    assert recipe_views(video, images, train_crop_size=24, **NO_COLOUR).shape[-2:] == (24, 24)
    assert recipe_views(video, images, **NO_COLOUR).shape[-2:] == (32, 32)


def test_default_hue_follows_color_jitter():
    from hf_ssl.training.arguments import DataArguments

    assert DataArguments(dataset_name="unused").augmentation_kwargs()["jitter"] == (0.4, 0.4, 0.4, 0.1)
    assert DataArguments(dataset_name="unused", color_jitter=0.6, color_jitter_hue=0.15).augmentation_kwargs()[
        "jitter"
    ] == (0.6, 0.6, 0.6, 0.15)


def test_colour_jitter_draws_its_order_per_image_as_torchvision() -> None:
    """torchvision's ColorJitter (the papers' official pipelines) draws the order of brightness, contrast, saturation
    and hue per image; kornia's draws one per batch. Each image must equal kornia's jitter with that image's own
    order and factors, the batch must hold many orders, and a clip's frames share theirs (VideoSequential)."""
    import kornia.augmentation as K

    torch.manual_seed(0)
    images = torch.rand(48, 3, 8, 8)
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    params = jitter.forward_parameters(images.shape)
    out = jitter(images, params=params)
    assert len({tuple(order.tolist()) for order in params["step_order"]}) > 12  # 24 orders, 48 draws
    for i in range(0, 48, 7):
        order = tuple(params["step_order"][i].tolist())
        one = {k: v[i : i + 1] if v.dim() and len(v) == 48 else v for k, v in params.items()}
        one["order"] = torch.tensor(order)
        reference = K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0, order=order)(images[i : i + 1], params=one)
        # 2e-6: the hue is shifted without an HSV image (shift_hue), as close to the exact value as kornia's
        torch.testing.assert_close(out[i : i + 1], reference, rtol=0, atol=2e-6)
    clips = torch.rand(4, 1, 3, 8, 8).repeat(1, 5, 1, 1, 1)  # 5 identical frames per clip
    frames = K.VideoSequential(ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0), data_format="BTCHW", same_on_frame=True)(clips)
    assert not torch.equal(frames, clips) and torch.equal(frames, frames[:, :1].expand_as(frames))
