"""Streaming datasets for self-supervised training.

`with_stable_ids` gives every example of a streamed dataset an integer id in [0, N) that depends only on the
dataset files, not on shuffling, sharding, processes or workers; memory banks and pseudo-labels are indexed by
it. The id of a row is its source shard's offset plus its row number in the shard, and the shards are counted
from metadata (parquet footers, the file listing of an image or video folder, an in-memory dataset's length), not
by reading rows (one pass over the undecoded rows, with a warning, only where the metadata does not tell):
`StreamShards` keeps that table.

`BatchStream` turns such a dataset into batches for one process. Each process x DataLoader worker plays a *role*
that reads whole shards (the shard order is permuted per epoch and dealt to the roles, balancing their rows; with
fewer shards than roles, every role reads every shard and keeps one row in `roles`). Its rows are shuffled window by
window (`shuffle_buffer` rows, each window permuted by its own numpy RNG), decoded and augmented inside the
workers; corrupt samples are skipped and counted, and a position resumes exactly.

Why the order is built here rather than by `datasets`' shuffle buffer: that buffer is not saved by
`state_dict()`, so a restored stream would yield a different order. Here a role's epoch is a pure function of
(seed, epoch, role) and of the shard table, so a resume skips the shards already consumed by their row counts
and reads only the shards of the current window, reproducing the same batches bit for bit.
"""

import concurrent.futures
import contextlib
import itertools
import logging
import math
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from datasets.iterable_dataset import ArrowExamplesIterable, ExamplesIterable
from datasets.packaged_modules.folder_based_builder.folder_based_builder import FolderBasedBuilder
from datasets.packaged_modules.parquet.parquet import Parquet
from datasets.utils.file_utils import xopen

logger = logging.getLogger(__name__)

ID_COLUMN = "id"
# Key of the seed BatchStream adds to every raw example before `transform.decode`: a function of the example's data
# position, for decoding that samples (video clips), so that replays and resumed runs decode the same.
EXAMPLE_SEED = "_seed"
# Shards an in-memory `datasets.Dataset` is cut into: enough to deal whole shards to many processes x workers.
IN_MEMORY_SHARDS = 64
# Parquet footers read at once (a Hub stream reads each over the network).
FOOTER_THREADS = 16
# At most this many reads of the data (bytes, not decoding) per resampled epoch: see `resample_passes`.
MAX_RESAMPLE_PASSES = 8
# Where `with_stable_ids` leaves the shard table on the dataset it returns (kept by pickling into workers).
_SHARDS_ATTRIBUTE = "_hf_ssl_shards"
_warned: set[str] = set()
# In-memory datasets handed to the Python API, by the name a run records for them (in training_args.yaml, the
# results, the card) where it would record a path or a Hub id; `load_stream` serves their splits.
IN_MEMORY_PREFIX = "in-memory:"
_IN_MEMORY: dict[str, Mapping[str, datasets.Dataset | datasets.IterableDataset]] = {}


@contextlib.contextmanager
def in_memory_dataset(splits: Mapping[str, datasets.Dataset | datasets.IterableDataset]) -> Iterator[str]:
    """Serve the splits of an in-memory dataset through `load_stream` under a name, for the duration of the block.
    The name is `in-memory:<the dataset's info.dataset_name, else "dataset">`."""
    first = next(iter(splits.values()), None)
    if first is None:
        raise ValueError("the in-memory dataset has no split")
    label = (first.info.dataset_name if first.info else None) or "dataset"
    name = f"{IN_MEMORY_PREFIX}{label}"
    name = name if name not in _IN_MEMORY else f"{name}-{len(_IN_MEMORY)}"
    _IN_MEMORY[name] = dict(splits)
    try:
        yield name
    finally:
        del _IN_MEMORY[name]


def _in_memory_split(name: str, split: str) -> datasets.IterableDataset:
    data = _IN_MEMORY[name][split]
    if isinstance(data, datasets.Dataset):  # shards, so that processes and workers read disjoint parts
        return data.to_iterable_dataset(num_shards=max(1, min(len(data), IN_MEMORY_SHARDS)))
    return data


def split_names(name_or_path: str, config_name: str | None = None) -> list[str]:
    """The split names of a dataset (a Hub id, a local folder or a name `in_memory_dataset` gives), read from its
    metadata; FileNotFoundError names a dataset that is not there."""
    if name_or_path in _IN_MEMORY:
        return list(_IN_MEMORY[name_or_path])
    try:
        return datasets.get_dataset_split_names(name_or_path, config_name)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"dataset {name_or_path!r} not found: {err}") from None


def load_stream(name_or_path: str, split: str, config_name: str | None = None) -> datasets.IterableDataset:
    """`datasets.load_dataset(name_or_path, config_name, split=split, streaming=True)`, with errors naming the
    missing dataset or split. Hub ids, local parquet / imagefolder / videofolder directories all work, and the
    names `in_memory_dataset` gives."""
    splits = split_names(name_or_path, config_name)
    if split not in splits:
        raise ValueError(f"dataset {name_or_path!r} has no split {split!r}; its splits are {splits}")
    if name_or_path in _IN_MEMORY:
        return _in_memory_split(name_or_path, split)
    return datasets.load_dataset(name_or_path, config_name, split=split, streaming=True)


def _undecoded(dataset: datasets.IterableDataset) -> datasets.IterableDataset:
    """The same stream yielding raw bytes for image/video columns: decoding happens where errors can be caught."""
    return dataset.decode(False)


def iter_rows(dataset: datasets.IterableDataset, read_size: int = 64) -> Iterator[dict]:
    """Iterate a streamed dataset example by example, exactly as given.

    Plain `iter(dataset)` inside a DataLoader worker re-shards the stream by worker id on its own; the
    processes x workers split is done explicitly here (`BatchStream` roles), so it must not happen twice.
    `IterableDataset.iter` reads without that implicit split.
    """
    for batch in dataset.iter(batch_size=read_size):
        columns = list(batch)
        for i in range(len(batch[columns[0]]) if columns else 0):
            yield {column: batch[column][i] for column in columns}


@dataclass(frozen=True)
class StreamShards:
    """The non-empty source shards of a stream with stable ids: where each is, how many rows (and, for parquet,
    compressed bytes) it holds and its first id. Known from metadata; reading a shard is the only row access."""

    source: datasets.IterableDataset  # the undecoded stream; its shards are `source.shard(num_source_shards, i)`
    num_source_shards: int
    index: np.ndarray  # source shard index of each non-empty shard
    rows: np.ndarray
    offsets: np.ndarray  # id of each shard's first row
    nbytes: np.ndarray | None  # compressed bytes of each shard (parquet footers), None when unknown

    def read(self, shard: int) -> Iterator[dict]:
        """The rows of one shard (an index into this table), undecoded, with their ids."""
        part = self.source.shard(num_shards=self.num_source_shards, index=int(self.index[shard]), contiguous=True)
        offset = int(self.offsets[shard])
        for row, example in enumerate(iter_rows(part)):
            yield {**example, ID_COLUMN: offset + row}


def stream_shards(dataset: datasets.IterableDataset) -> StreamShards | None:
    """The shard table of a stream `with_stable_ids` returned; None for any other stream (a `take`, `map`, ... of
    it included: those are read as a whole)."""
    return getattr(dataset, _SHARDS_ATTRIBUTE, None)


def _parquet_footer(file: str, row_groups: list[int] | None, access: datasets.DownloadConfig) -> tuple[int, int]:
    """Rows and compressed bytes of a parquet file (or of some of its row groups), from its footer alone."""
    with xopen(file, "rb", download_config=access) as f:
        metadata = pq.read_metadata(f)
    groups = [metadata.row_group(g) for g in (range(metadata.num_row_groups) if row_groups is None else row_groups)]
    compressed = sum(g.column(c).total_compressed_size for g in groups for c in range(g.num_columns))
    return sum(g.num_rows for g in groups), compressed


def _metadata_counts(source: datasets.IterableDataset) -> tuple[list[int] | None, list[int] | None, str]:
    """Rows (and compressed bytes, for parquet) of each source shard from metadata only, or (None, None, why not).

    `datasets` has no public way to list the files of a stream, so its builders' generator arguments are read;
    anything unexpected means a counting pass instead. Parquet: one shard per file (or row-group list), counted
    from the footers (through `xopen`: also over the Hub). Image / video folders: one shard, one row per listed
    file, unless a metadata file (which may drop or repeat files), filters or archives are involved. In-memory
    datasets: the lengths of their shards.
    """
    examples = getattr(source, "_ex_iterable", None)
    kwargs = getattr(examples, "kwargs", {})
    generate = getattr(examples, "generate_tables_fn", None) or getattr(examples, "generate_examples_fn", None)
    builder = getattr(generate, "__self__", None)
    if isinstance(examples, ArrowExamplesIterable) and isinstance(builder, Parquet):
        if builder.config.filters is not None:
            return None, None, "parquet filters drop rows the footers count"
        files, row_groups = kwargs.get("files"), kwargs.get("row_groups_list")
        if set(kwargs) != {"files", "row_groups_list"} or len(files) != source.n_shards:
            return None, None, "unexpected parquet stream layout"
        access = datasets.DownloadConfig(token=builder.token, storage_options=builder.storage_options)
        with concurrent.futures.ThreadPoolExecutor(FOOTER_THREADS) as pool:
            footers = list(pool.map(lambda f: _parquet_footer(*f, access), zip(files, row_groups)))
        return [rows for rows, _ in footers], [size for _, size in footers], ""
    if isinstance(examples, ExamplesIterable) and isinstance(builder, FolderBasedBuilder):
        if kwargs.get("add_metadata") or kwargs.get("metadata_files"):
            return None, None, "a metadata file may drop or repeat the folder's files"
        if getattr(builder.config, "filters", None) is not None:
            return None, None, "filters may drop files"
        files = kwargs.get("files")
        if not isinstance(files, tuple) or source.n_shards != 1 or any(folder is not None for _, folder, _ in files):
            return None, None, "archives (or an unexpected folder layout) hide the file count"
        return [len(files)], None, ""
    shards = kwargs.get("shards")
    if isinstance(examples, ArrowExamplesIterable) and isinstance(shards, list) and len(shards) == source.n_shards:
        if all(isinstance(shard, datasets.Dataset) for shard in shards):  # `Dataset.to_iterable_dataset`
            return [len(shard) for shard in shards], None, ""
    return None, None, f"no row counts in the metadata of this stream ({type(examples).__name__})"


def _generate_with_ids(shards: list[int], table: StreamShards) -> Iterator[dict]:
    for shard in shards:
        yield from table.read(shard)


def with_stable_ids(dataset: datasets.IterableDataset) -> tuple[datasets.IterableDataset, int]:
    """Attach a stable integer id column to a streamed dataset; return it with the number of examples.

    The id of a row is its source shard's offset (shards in file order) plus its row number in the shard. The
    shards are counted from metadata (`_metadata_counts`: no row read or downloaded); where the metadata does not
    tell, from one pass over the undecoded rows, with a warning saying why. The result is an IterableDataset with
    one shard per non-empty source shard, so `shuffle` and `split_dataset_by_node` work on it as on the original,
    and it carries the shard table (`stream_shards`) that `BatchStream` deals and resumes by.
    """
    if ID_COLUMN in (dataset.column_names or []):
        raise ValueError(f"the dataset already has a column named {ID_COLUMN!r}; rename it before training")
    source = _undecoded(dataset)
    num_shards = source.n_shards
    counts, nbytes, why = _metadata_counts(source)
    if counts is None:
        logger.warning(
            "counting the rows of %s by reading them (undecoded): %s", source.info.dataset_name or "a stream", why
        )
        counts = [
            sum(1 for _ in iter_rows(source.shard(num_shards=num_shards, index=i, contiguous=True)))
            for i in range(num_shards)
        ]
    rows = np.asarray(counts, dtype=np.int64)
    index = np.flatnonzero(rows)
    table = StreamShards(
        source=source,
        num_source_shards=num_shards,
        index=index,
        rows=rows[index],
        offsets=np.cumsum(rows[index]) - rows[index],
        nbytes=None if nbytes is None else np.asarray(nbytes, dtype=np.int64)[index],
    )
    features = source.features.copy() if source.features is not None else None
    if features is not None:
        features[ID_COLUMN] = datasets.Value("int64")
    with_ids = datasets.IterableDataset.from_generator(
        _generate_with_ids, gen_kwargs={"shards": list(range(len(index))), "table": table}, features=features
    )
    setattr(with_ids, _SHARDS_ATTRIBUTE, table)
    return with_ids, int(rows.sum())


@dataclass
class SkippedSamples:
    """Samples that could not be decoded, each under its decoding error (which names the example id and its file):
    how often each was skipped over every pass that met it (the training stream's epochs, each feature pass), so a
    corrupt file is one sample however many passes skip it. Training goes on."""

    count: int = 0  # skips over all passes
    samples: dict[str, int] = field(default_factory=dict)  # sample -> times skipped
    max_examples: int = 20

    def add(self, names: list[str]) -> None:
        """One skip of each sample named."""
        for name in names:
            self.samples[name] = self.samples.get(name, 0) + 1
        self.count += len(names)

    def update(self, other: "SkippedSamples") -> None:
        """Add the skips another pass counted."""
        for name, times in other.samples.items():
            self.samples[name] = self.samples.get(name, 0) + times
        self.count += other.count

    @property
    def examples(self) -> list[str]:
        """The first `max_examples` samples skipped."""
        return list(self.samples)[: self.max_examples]

    def report(self) -> str:
        if not self.samples:
            return "no corrupt samples"
        named = "; ".join(f"{name} ({times}x)" for name, times in list(self.samples.items())[:5])
        return f"skipped {len(self.samples)} corrupt sample(s), {self.count} time(s) over all passes: {named}"


@dataclass(frozen=True)
class RolePlan:
    """What one role (process x DataLoader worker) reads in one pass of an epoch, from the shard table: the source
    shards it opens, the rows it reads from them and the rows it keeps (fewer when roles share shards), and the
    compressed bytes it reads (parquet; None when unknown). All None for a stream without a shard table."""

    role: int  # global role: process index x workers + worker
    shards: list[int] | None
    rows_read: int | None
    rows_kept: int | None
    bytes_read: int | None


def _congruent(start: int, stop: int, modulus: int, residue: int) -> int:
    """How many i in [start, stop) have i % modulus == residue."""
    return (stop - residue + modulus - 1) // modulus - (start - residue + modulus - 1) // modulus


class BatchStream(torch.utils.data.IterableDataset):
    """Batches of one process's part of a stream, built inside DataLoader workers.

    Each worker plays a *role*: a part of the data read by one of processes x workers. With the shard table of
    `with_stable_ids` and at least as many shards as roles, each epoch permutes the shards (when shuffling) and
    deals them to the roles, balancing rows: a role reads whole shards and no other (`read_plan` says which);
    with fewer shards (or shares too small for a batch), or a stream without the table, every role reads
    everything and keeps one row in `roles` (with a warning). A role's rows are shuffled in windows of `shuffle_buffer` rows, each permuted by a numpy RNG seeded
    by (seed, epoch, role, reading, window).

    `transform.decode(example)` decodes one raw example (raising `ValueError` for a corrupt one, which is skipped,
    counted and replaced by the next example so batches keep their size); `transform(decoded_examples, seed)`
    augments and collates a batch. Randomness depends on the data position only: `seed` is the batch's, and each
    raw example carries its own under `EXAMPLE_SEED` (for decoding that samples, e.g. the clips of a video).
    Batches carry `_role`, `_epoch`, `_position` (raw examples of the role's epoch consumed so far) and
    `_skipped`, from which `state_dict()` is kept by the consumer via `record`. Resuming skips the shards before
    the position's window by their row counts and reads only the shards the window spans.

    With `repeat=True` the stream runs epoch after epoch forever (the training loop counts steps); with
    `repeat=False` it makes one ordered pass (feature extraction) and keeps the last, smaller batch.

    `batches_per_epoch` fixes how many batches each role yields per epoch, so that epochs of every role and
    process end on the same training step (the clustering methods re-cluster between epochs): a role whose data
    runs short (corrupt samples, uneven shards, resampling) reads its epoch again, and the surplus is dropped.

    `sample_weights` (one float per example id, set before iterating) resamples each epoch: example i is
    emitted floor(w_i) or floor(w_i) + 1 times, with mean w_i. This is DeepCluster's uniform sampling over
    clusters (`uniform_cluster_weights`) without random access. The official sampler shuffles the whole index
    list, so the copies of a small cluster's image fall all over the epoch; a stream that emitted them back to
    back would leave them a shuffle window to spread over (several per batch). So the epoch is read in
    `resample_passes` passes (reading bytes again, not decoding) and each pass emits a share of every example's
    copies (`resample_counts`): the shares land a pass apart, each spread over its window.

    `rows_read` counts the raw rows this object read from the source in this process (a DataLoader worker counts
    its own): what a resume or a role costs in reading.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        batch_size: int,
        transform,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_buffer: int = 0,
        repeat: bool = True,
        batches_per_epoch: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batches_per_epoch is not None and (batches_per_epoch < 1 or not repeat):
            raise ValueError(f"batches_per_epoch must be >= 1 and needs repeat=True, got {batches_per_epoch}")
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        self.rank, self.world_size, self.num_workers = rank, world_size, max(num_workers, 1)
        self.seed, self.shuffle_buffer, self.repeat = seed, shuffle_buffer, repeat
        self.batches_per_epoch = batches_per_epoch
        self.sample_weights: np.ndarray | None = None
        self.skipped = SkippedSamples()
        self.shards = stream_shards(dataset)
        self.rows_read = 0
        # role -> (epoch, raw position, batches of the epoch) after its last consumed batch
        self._positions: dict[int, tuple[int, int, int]] = {}
        self._batches = 0  # batches handed out, over all epochs
        roles = world_size * self.num_workers
        if roles > 1 and (self.shards is None or self._epoch_shards(0, 0)[1] > 1):
            shared = "a stream without a shard table" if self.shards is None else f"{len(self.shards.rows)} shard(s)"
            message = (
                f"{shared} for {world_size} process(es) x {self.num_workers} worker(s) at batch size {batch_size}: "
                f"every role reads all of it and keeps one row in {roles}"
            )
            if message not in _warned:
                _warned.add(message)
                logger.warning(message)

    # -- consumer side: what has been consumed, and resuming from it --
    def record(self, batch: dict) -> None:
        """Note a consumed batch (call once per batch, in order): this is what `state_dict` saves."""
        self._positions[int(batch["_role"])] = (int(batch["_epoch"]), int(batch["_position"]), int(batch["_batch"]))
        self._batches += 1
        skipped = batch.get("_skipped") or []
        if skipped:
            self.skipped.add(list(skipped))
            logger.warning("skipped corrupt sample(s): %s", "; ".join(skipped))

    def state_dict(self) -> dict:
        return {
            "positions": {str(role): list(pos) for role, pos in self._positions.items()},
            "batches": self._batches,
            "skipped": self.skipped.count,
            "skipped_examples": list(self.skipped.examples),
            "skipped_samples": dict(self.skipped.samples),
            "num_workers": self.num_workers,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_workers"] != self.num_workers or state["world_size"] != self.world_size:
            raise ValueError(
                "cannot resume exactly: the checkpoint was written with "
                f"{state['world_size']} process(es) x {state['num_workers']} worker(s), this run has "
                f"{self.world_size} x {self.num_workers}; use the same dataloader_num_workers and processes"
            )
        self._positions = {int(role): tuple(int(v) for v in pos) for role, pos in state["positions"].items()}
        self._batches = int(state["batches"])
        # checkpoints written before per-sample counts name the samples only
        samples = state.get("skipped_samples") or dict.fromkeys(state["skipped_examples"], 1)
        self.skipped = SkippedSamples(count=int(state["skipped"]), samples={str(k): int(v) for k, v in samples.items()})

    # -- what each role reads --
    def _epoch_shards(self, epoch: int, global_role: int) -> tuple[list[int], int]:
        """The table's shards a role reads in an epoch, in order, and the stride of the rows it keeps.

        The shards (permuted per epoch when shuffling, the same permutation in every role) are dealt in turn to the
        role holding the fewest rows so far: whole shards, stride 1, the roles' rows within a shard of each other.
        When there are fewer shards than roles, or a training role's share would not fill a batch, every role
        reads all shards and keeps one row in `roles` (stride roles)."""
        rows, roles = self.shards.rows, self.world_size * self.num_workers
        order = np.arange(len(rows))
        if self.shuffle_buffer > 0:
            order = np.random.default_rng((self.seed, epoch)).permutation(len(rows))
        if len(rows) >= roles:
            owner, loads = np.empty(len(rows), dtype=np.int64), np.zeros(roles, dtype=np.int64)
            for shard in order:
                owner[shard] = role = int(np.argmin(loads))  # ties: the lowest role, round robin for equal shards
                loads[role] += rows[shard]
            if not self.repeat or loads.min() >= self.batch_size:
                return [int(shard) for shard in order if owner[shard] == global_role], 1
        return order.tolist(), roles

    def read_plan(self, epoch: int = 0) -> list[RolePlan]:
        """What each of this process's roles reads in one pass of `epoch` (without resampling)."""
        plans = []
        for worker in range(self.num_workers):
            role = self.rank * self.num_workers + worker
            if self.shards is None:
                plans.append(RolePlan(role, None, None, None, None))
                continue
            shards, stride = self._epoch_shards(epoch, role)
            rows = int(self.shards.rows[shards].sum())
            nbytes = None if self.shards.nbytes is None else int(self.shards.nbytes[shards].sum())
            kept = _congruent(0, rows, stride, role % stride)
            plans.append(RolePlan(role, self.shards.index[shards].tolist(), rows, kept, nbytes))
        return plans

    # -- producer side, inside a worker --
    def _reading_rows(
        self, global_role: int, epoch: int, copies: np.ndarray | None, start: int
    ) -> Generator[dict, None, int]:
        """The role's raw rows of one reading, each repeated `copies[id]` times, from its `start`-th on; returns
        how many the reading holds. Shards wholly before `start` are skipped by their row counts, unread."""
        if self.shards is None:  # no table: the whole stream, one row in `roles` kept
            parts, stride, sizes = [None], self.world_size * self.num_workers, None
        else:
            parts, stride = self._epoch_shards(epoch, global_role)
            sizes = self.shards.rows
            if copies is not None:  # rows of a shard times their copies
                total = np.concatenate([[0], np.cumsum(copies)])
                ends = self.shards.offsets + self.shards.rows
                sizes = total[ends] - total[self.shards.offsets]
        keep = global_role % stride
        seen, mine = 0, 0  # items of the shards so far (every role's, when sharing), the role's items so far
        for part in parts:
            if sizes is not None:
                own = _congruent(seen, seen + int(sizes[part]), stride, keep)
                if mine + own <= start:
                    seen, mine = seen + int(sizes[part]), mine + own
                    continue
            for row in iter_rows(self.dataset) if part is None else self.shards.read(part):
                self.rows_read += 1
                for _ in range(1 if copies is None else int(copies[row[ID_COLUMN]])):
                    if seen % stride == keep:
                        if mine >= start:
                            yield dict(row)  # a copy per item: the consumer adds its seed
                        mine += 1
                    seen += 1
        return mine

    def _reading(
        self, global_role: int, epoch: int, reading: int, copies: np.ndarray | None, start: int
    ) -> Generator[dict, None, int]:
        """One reading of the role's rows from its `start`-th, shuffled in windows of `shuffle_buffer` rows; a
        resume reads from the start of its window. Returns how many rows the reading holds."""
        size = self.shuffle_buffer
        if size <= 0:
            return (yield from self._reading_rows(global_role, epoch, copies, start))
        first = start - start % size
        windows = _windows(self._reading_rows(global_role, epoch, copies, first), size)
        for window in itertools.count(first // size):
            try:
                chunk = next(windows)
            except StopIteration as end:
                return end.value
            order = np.random.default_rng((self.seed, epoch, global_role, reading, window)).permutation(len(chunk))
            for i in order[max(0, start - window * size) :]:
                yield chunk[i]

    def _epoch_rows(self, role: int, epoch: int, start: int) -> Iterator[dict]:
        """The role's raw rows of one epoch from its `start`-th: one reading, or `resample_passes` with
        `sample_weights`; with `batches_per_epoch`, read again as often as needed."""
        weights = self.sample_weights
        passes = 1 if weights is None else resample_passes(weights, self.batch_size, self.shuffle_buffer)
        global_role = self.rank * self.num_workers + role
        count = 0
        for reading in itertools.count():
            copies = None
            if weights is not None:
                repetition, index = divmod(reading, passes)
                copies = resample_counts(weights, (self.seed, epoch, repetition), passes, index)
            length = yield from self._reading(global_role, epoch, reading, copies, start)
            start, count = max(0, start - length), count + length
            if reading + 1 >= passes and (self.batches_per_epoch is None or count < self.batch_size):
                return

    def _collate(
        self,
        decoded: list[dict],
        dropped: list[str],
        role: int,
        epoch: int,
        global_role: int,
        position: int,
        batch_index: int,
    ) -> dict:
        batch = self.transform(decoded, self._position_seed(epoch, global_role, position))
        batch.update(_role=role, _epoch=epoch, _position=position, _batch=batch_index, _skipped=dropped)
        return batch

    def _position_seed(self, epoch: int, global_role: int, position: int, *salt: int) -> int:
        """A seed that depends on the data position only, not on workers or timing (ints hash the same in every
        process)."""
        return hash((self.seed, epoch, global_role, position, *salt)) & 0x7FFF_FFFF

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        # DataLoader hands batch i out from worker i % W; continuing the round-robin where it stopped means the
        # worker that serves the first batch after a resume plays role (batches % W).
        role = (worker + self._batches) % self.num_workers
        epoch, position, batch_index = self._positions.get(role, (0, 0, 0))
        if batch_index == self.batches_per_epoch:  # stopped right after the epoch's last batch
            epoch, position, batch_index = epoch + 1, 0, 0
        global_role = self.rank * self.num_workers + role
        # Corrupt samples among an epoch's dropped last examples are reported with the next epoch's first batch;
        # resetting this list per epoch would leave a corrupt file that sits in that tail uncounted forever.
        dropped: list[str] = []
        while True:
            stream = self._epoch_rows(role, epoch, position)
            decoded, start = [], position
            for raw in stream:
                position += 1
                # salted: the last example of a batch and the batch itself are at the same position
                raw[EXAMPLE_SEED] = self._position_seed(epoch, global_role, position, 1)
                try:
                    decoded.append(self.transform.decode(raw))
                except ValueError as err:
                    dropped.append(str(err))
                    continue
                if len(decoded) == self.batch_size:
                    batch_index += 1
                    yield self._collate(decoded, dropped, role, epoch, global_role, position, batch_index)
                    decoded, dropped = [], []
                    if batch_index == self.batches_per_epoch:
                        break
            # A partial last batch is kept only for one-pass feature extraction: in training, batch-size-dependent
            # losses (and equal batch sizes on every process for all_gather) need full batches.
            if decoded and not self.repeat:
                yield self._collate(decoded, dropped, role, epoch, global_role, position, batch_index + 1)
            if not self.repeat:
                return
            # A whole epoch without one full batch would otherwise loop forever without yielding.
            if start == 0 and batch_index == 0:
                raise ValueError(
                    f"process {self.rank} / dataloader worker role {role} received {position} example(s) per epoch "
                    f"({len(decoded)} decodable), fewer than batch_size={self.batch_size}: the dataset is too small "
                    f"for {self.world_size} process(es) x {self.num_workers} worker(s) at this batch size"
                )
            epoch, position, batch_index = epoch + 1, 0, 0


def _windows(rows: Generator[dict, None, int], size: int) -> Generator[list[dict], None, int]:
    """`rows` in lists of `size` (the last one shorter); returns what `rows` returns."""
    chunk: list[dict] = []
    while True:
        try:
            chunk.append(next(rows))
        except StopIteration as end:
            if chunk:
                yield chunk
            return end.value
        if len(chunk) == size:
            yield chunk
            chunk = []


def resample_passes(weights: np.ndarray, batch_size: int, shuffle_buffer: int) -> int:
    """Passes over the data one resampled epoch is read in: enough that a pass holds at most about
    shuffle_buffer / (2 batch_size) copies of any example, which the shuffle buffer then spreads to at most about
    half a copy per batch (as many as the official sampler's uniform positions give an example of weight
    ~N / (2 batches)); at most `MAX_RESAMPLE_PASSES`."""
    needed = math.ceil(2 * float(np.max(weights)) * batch_size / max(shuffle_buffer, batch_size))
    return min(MAX_RESAMPLE_PASSES, max(1, needed))


def resample_counts(weights: np.ndarray, salt: tuple[int, ...], passes: int, index: int) -> np.ndarray:
    """Copies of every example id in pass `index` of `passes`, reproducibly for a given salt.

    Example i has r_i = floor(w_i) or floor(w_i) + 1 copies in all (mean w_i), dealt round robin over the passes
    from a random first pass: every pass holds floor(r_i / passes) of them or one more.
    """
    rng = np.random.default_rng(salt)
    whole = np.floor(weights)
    total = whole.astype(np.int64) + (rng.random(len(weights)) < weights - whole)
    first = rng.integers(passes, size=len(weights))
    return total // passes + ((index - first) % passes < total % passes)


def uniform_cluster_weights(labels: np.ndarray) -> np.ndarray:
    """Per-example sampling weights that make every non-empty cluster equally frequent, with mean 1 per example.

    `labels` holds a cluster per example id (-1: no label, never sampled). Each cluster then contributes
    N / (non-empty clusters) samples per epoch in expectation, as DeepCluster's sampler over random-access data.
    """
    labels = np.asarray(labels, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        raise ValueError("no example has a cluster label: cannot build uniform cluster sampling weights")
    sizes = np.bincount(labels[valid])
    weights = np.zeros(len(labels), dtype=np.float64)
    weights[valid] = valid.sum() / (np.count_nonzero(sizes) * sizes[labels[valid]])
    return weights


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int, num_workers: int) -> int:
    """Full batches one process yields per epoch when the data splits evenly over processes x workers."""
    parts = world_size * max(num_workers, 1)
    return max(1, (num_examples // parts // batch_size) * max(num_workers, 1))


__all__ = [
    "EXAMPLE_SEED",
    "in_memory_dataset",
    "load_stream",
    "with_stable_ids",
    "iter_rows",
    "BatchStream",
    "RolePlan",
    "SkippedSamples",
    "StreamShards",
    "stream_shards",
    "steps_per_epoch",
    "resample_counts",
    "resample_passes",
    "uniform_cluster_weights",
]
