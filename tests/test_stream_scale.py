"""What the stream costs as the data grows: rows counted from metadata (parquet footers, folder listings,
in-memory lengths) with no 64-group cap, whole files dealt to processes x workers (3 ranks over 8 files read
disjoint files), and a mid-epoch resume that reads only the shards of its window, bit for bit."""

import io
import itertools
import logging
from pathlib import Path

import datasets
import fsspec
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_ssl.data import stream as stream_module
from hf_ssl.data.stream import BatchStream, in_memory_dataset, load_stream, stream_shards, with_stable_ids


class Ids:
    """Test transform: a batch is the ids of its raw rows (and the value read from the file, to check the mapping)."""

    def decode(self, example: dict) -> dict:
        return example

    def __call__(self, examples: list[dict], seed: int) -> dict:
        return {"ids": torch.tensor([e["id"] for e in examples]), "x": torch.tensor([e["x"] for e in examples])}


def write_shards(root: Path, sizes: list[int]) -> Path:
    """Parquet files of `sizes` rows, x = the row's position in file order (what its id must be)."""
    start = 0
    for i, size in enumerate(sizes):
        path = root / "data" / f"train-{i:05d}-of-{len(sizes):05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": pa.array(range(start, start + size), pa.int64())}), path)
        start += size
    return root


@pytest.fixture
def no_row_reads(monkeypatch):
    """Counting must not read a row: any call of iter_rows fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a row was read to count the stream")

    monkeypatch.setattr(stream_module, "iter_rows", refuse)


def consume(stream: BatchStream, num_batches: int | None = None) -> list[dict]:
    batches = []
    for batch in itertools.islice(iter(stream), num_batches):
        stream.record(batch)
        batches.append(batch)
    return batches


# -- counting from metadata --


def test_parquet_is_counted_from_footers_one_group_per_file_beyond_64(tmp_path, monkeypatch):
    sizes = [i % 4 for i in range(70)]  # 70 files (beyond the old cap of 64 groups), some empty
    root = write_shards(tmp_path, sizes)
    source = load_stream(str(root), "train")
    reads = []
    monkeypatch.setattr(stream_module, "iter_rows", lambda *a, **k: reads.append(1) or iter(()))
    dataset, count = with_stable_ids(source)
    assert not reads, "rows were read to count a parquet stream"
    monkeypatch.undo()
    table = stream_shards(dataset)
    assert count == sum(sizes) and table.rows.tolist() == [s for s in sizes if s]
    assert table.index.tolist() == [i for i, s in enumerate(sizes) if s]  # the empty files hold no ids
    assert dataset.n_shards == len(table.rows)
    rows = list(dataset)
    assert [row["id"] for row in rows] == [row["x"] for row in rows] == list(range(count))


def test_a_remote_parquet_stream_is_counted_from_footers_read_through_xopen(no_row_reads):
    """As a Hub stream: the files sit behind an fsspec URL (here the in-memory filesystem), only footers are read."""
    memory = fsspec.filesystem("memory")
    urls = [f"memory://hf-ssl-remote/train-{i}.parquet" for i in range(3)]
    for i, url in enumerate(urls):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"x": pa.array(range(5 * i, 5 * i + 4 + i), pa.int64())}), buffer)
        memory.pipe(url, buffer.getvalue())
    try:
        source = datasets.load_dataset("parquet", data_files={"train": urls}, split="train", streaming=True)
        dataset, count = with_stable_ids(source)
    finally:
        memory.rm("/hf-ssl-remote", recursive=True)
    assert count == 15 and stream_shards(dataset).rows.tolist() == [4, 5, 6]


def test_image_folder_is_counted_from_its_listing(tmp_path, no_row_reads):
    for i in range(5):
        folder = tmp_path / "train" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    dataset, count = with_stable_ids(load_stream(str(tmp_path), "train"))
    assert count == 5 and stream_shards(dataset).rows.tolist() == [5]


def test_a_folder_with_a_metadata_file_is_counted_by_reading_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(3):
        PIL.Image.new("RGB", (4, 4)).save(folder / f"{i}.png")
    (folder / "metadata.csv").write_text("file_name,label\n0.png,1\n2.png,0\n")  # drops 1.png
    with caplog.at_level(logging.WARNING, logger=stream_module.__name__):
        _, count = with_stable_ids(load_stream(str(tmp_path), "train"))
    assert count == 2
    assert "metadata file" in caplog.text


def test_an_in_memory_dataset_is_counted_from_its_shards(no_row_reads):
    data = datasets.Dataset.from_dict({"x": list(range(300))})
    with in_memory_dataset({"train": data}) as name:
        dataset, count = with_stable_ids(load_stream(name, "train"))
    table = stream_shards(dataset)
    assert count == 300 and len(table.rows) == stream_module.IN_MEMORY_SHARDS and table.rows.sum() == 300


# -- whole files to processes x workers --


def test_three_ranks_over_eight_files_read_disjoint_files_covering_every_row(tmp_path):
    dataset, count = with_stable_ids(load_stream(str(write_shards(tmp_path, [25] * 7 + [13])), "train"))
    streams = [BatchStream(dataset, 8, Ids(), rank=r, world_size=3, shuffle_buffer=16, repeat=False) for r in range(3)]
    plans = [plan for s in streams for plan in s.read_plan(epoch=0)]
    files = [plan.shards for plan in plans]
    assert sorted(sum(files, [])) == list(range(8)) and sorted(map(len, files)) == [2, 3, 3]
    assert all(plan.rows_read == plan.rows_kept for plan in plans)
    assert sum(plan.bytes_read for plan in plans) > 0  # parquet footers give the bytes each rank reads
    ids = []
    for s, plan in zip(streams, plans):
        batches = consume(s)
        ids += torch.cat([b["ids"] for b in batches]).tolist()
        assert s.rows_read == plan.rows_read < count  # what the plan said, and not every file
    assert sorted(ids) == list(range(count))


def test_fewer_files_than_roles_fall_back_to_skipping_rows_with_a_warning(tmp_path, caplog):
    dataset, count = with_stable_ids(load_stream(str(write_shards(tmp_path, [20, 20])), "train"))
    with caplog.at_level(logging.WARNING, logger=stream_module.__name__):
        streams = [BatchStream(dataset, 4, Ids(), rank=r, world_size=3, repeat=False) for r in range(3)]
    assert "keeps one row in 3" in caplog.text
    ids = [torch.cat([b["ids"] for b in consume(s)]).tolist() for s in streams]
    assert sorted(sum(ids, [])) == list(range(count)) and all(s.rows_read == count for s in streams)


def test_shards_are_dealt_by_rows_and_a_share_too_small_for_a_batch_is_not_dealt(tmp_path):
    dataset, _ = with_stable_ids(load_stream(str(write_shards(tmp_path / "a", [30, 10, 10, 10])), "train"))
    plans = [BatchStream(dataset, 8, Ids(), rank=r, world_size=2).read_plan()[0] for r in range(2)]
    assert [(p.shards, p.rows_read) for p in plans] == [([0], 30), ([1, 2, 3], 30)]  # round robin: 40 / 20
    dataset, _ = with_stable_ids(load_stream(str(write_shards(tmp_path / "b", [30, 2])), "train"))
    plans = [BatchStream(dataset, 8, Ids(), rank=r, world_size=2).read_plan()[0] for r in range(2)]
    assert [(p.rows_read, p.rows_kept) for p in plans] == [(32, 16), (32, 16)]  # 2 rows would not fill a batch


# -- resume without replaying the epoch --


def make_stream(dataset, weights: np.ndarray | None) -> BatchStream:
    """Rank 1 of 2 over 12 files of 10 rows: 60 rows per reading, 12 batches of 8 per epoch (it reads again)."""
    stream = BatchStream(dataset, 8, Ids(), rank=1, world_size=2, seed=5, shuffle_buffer=16, batches_per_epoch=12)
    stream.sample_weights = weights
    return stream


@pytest.mark.parametrize("resampled", [False, True], ids=["plain", "resampled"])
def test_mid_epoch_resume_reads_only_its_window_s_shards_and_is_exact(tmp_path, resampled):
    dataset, count = with_stable_ids(load_stream(str(write_shards(tmp_path, [10] * 12)), "train"))
    weights = np.random.default_rng(0).uniform(0, 3, count) if resampled else None
    total, stop = 20, 9  # 72 rows of epoch 0 consumed at the stop: into the role's second reading
    uninterrupted = make_stream(dataset, weights)
    expected = consume(uninterrupted, total)
    first = make_stream(dataset, weights)
    got = consume(first, stop)
    resumed = make_stream(dataset, weights)
    resumed.load_state_dict(first.state_dict())
    got += consume(resumed, 1)
    # plain: the two 16-row windows the batch spans; resampled (about a copy per two rows in each of 3 passes):
    # at most one reading of the role's 60 rows; a replay reads every row consumed before, and more
    assert resumed.rows_read <= (60 if resampled else 32) < first.rows_read
    got += consume(resumed, total - stop - 1)
    for want, have in zip(expected, got, strict=True):
        assert torch.equal(want["ids"], have["ids"]) and torch.equal(want["ids"], have["x"])
    assert resumed.state_dict() == uninterrupted.state_dict()
