"""Streaming datasets for self-supervised training.

`with_stable_ids` gives every example of a streamed dataset an integer id in [0, N) that depends only on the
dataset files, not on shuffling, sharding, processes or workers; memory banks and pseudo-labels are indexed by
it. `BatchStream` turns such a dataset into batches for one process: `split_dataset_by_node` across processes and
DataLoader workers, the `datasets` shuffle buffer re-seeded each epoch, decoding and augmentation inside the
workers, corrupt samples skipped and counted, and a position that resumes exactly.

Why resume is done by replay: `datasets` does not save the shuffle buffer in `state_dict()`, so a restored
stream yields a different order. Here a stream is a pure function of (seed, epoch, split), so resuming replays
the epoch and drops the examples already consumed *before* they are decoded (reading bytes, not decoding or
augmenting them), which reproduces the same batches bit for bit.
"""

import contextlib
import itertools
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from datasets.distributed import split_dataset_by_node
from datasets.iterable_dataset import ArrowExamplesIterable
from datasets.packaged_modules.parquet.parquet import Parquet
from datasets.utils.file_utils import xopen

logger = logging.getLogger(__name__)

ID_COLUMN = "id"
# Key of the seed BatchStream adds to every raw example before `transform.decode`: a function of the example's data
# position, for decoding that samples (video clips), so that replays and resumed runs decode the same.
EXAMPLE_SEED = "_seed"
# Enough source-shard groups to spread over many processes x workers, few enough to count quickly.
MAX_ID_GROUPS = 64
# At most this many reads of the data (bytes, not decoding) per resampled epoch: see `resample_passes`.
MAX_RESAMPLE_PASSES = 8


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
        return data.to_iterable_dataset(num_shards=max(1, min(len(data), MAX_ID_GROUPS)))
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


def _generate_with_ids(groups: list[tuple[int, int, int]], source: datasets.IterableDataset) -> Iterator[dict]:
    for index, num_groups, offset in groups:
        part = source.shard(num_shards=num_groups, index=index, contiguous=True)
        for row, example in enumerate(iter_rows(part)):
            yield {**example, ID_COLUMN: offset + row}


def _footer_row_counts(source: datasets.IterableDataset, num_groups: int) -> list[int] | None:
    """Rows of each contiguous group of a plain parquet stream's source shards, from the files' footers (parquet
    metadata: no row is read or downloaded); None for any other stream (other formats, filters, map, take, ...).

    The groups are those of `source.shard(num_groups, i, contiguous=True)`, whose files (and row groups, where
    `datasets` shards a file by row groups) are read from the shard's source. `datasets` has no public way to
    list the files of a stream, so anything unexpected means None and a counting pass instead.
    """
    counts = []
    for index in range(num_groups):
        tables = getattr(source.shard(num_shards=num_groups, index=index, contiguous=True), "_ex_iterable", None)
        builder = getattr(getattr(tables, "generate_tables_fn", None), "__self__", None)
        if not (
            isinstance(tables, ArrowExamplesIterable)
            and isinstance(builder, Parquet)
            and builder.config.filters is None  # filters drop rows the footers count
            and set(tables.kwargs) == {"files", "row_groups_list"}
        ):
            return None
        count, access = 0, datasets.DownloadConfig(token=builder.token, storage_options=builder.storage_options)
        for file, row_groups in zip(tables.kwargs["files"], tables.kwargs["row_groups_list"]):
            with xopen(file, "rb", download_config=access) as f:
                metadata = pq.read_metadata(f)
            groups = range(metadata.num_row_groups) if row_groups is None else row_groups
            count += sum(metadata.row_group(g).num_rows for g in groups)
        counts.append(count)
    return counts


def with_stable_ids(dataset: datasets.IterableDataset) -> tuple[datasets.IterableDataset, int]:
    """Attach a stable integer id column to a streamed dataset; return it with the number of examples.

    Ids are assigned group by group over contiguous groups of the dataset's source shards (files), in file
    order: the id of a row is its group's offset plus its row number in the group. The groups are counted from
    the parquet footers of a parquet dataset (no row read), otherwise by one pass that reads rows without
    decoding them. The result is an IterableDataset whose shards are those groups, so `shuffle` and
    `split_dataset_by_node` work on it as on the original.
    """
    if ID_COLUMN in (dataset.column_names or []):
        raise ValueError(f"the dataset already has a column named {ID_COLUMN!r}; rename it before training")
    source = _undecoded(dataset)
    num_groups = min(source.n_shards, MAX_ID_GROUPS)
    counts = _footer_row_counts(source, num_groups)
    if counts is None:
        counts = [
            sum(1 for _ in iter_rows(source.shard(num_shards=num_groups, index=i, contiguous=True)))
            for i in range(num_groups)
        ]
    offsets = [0] + list(itertools.accumulate(counts))[:-1]
    features = source.features.copy() if source.features is not None else None
    if features is not None:
        features[ID_COLUMN] = datasets.Value("int64")
    groups = [(i, num_groups, offsets[i]) for i in range(num_groups) if counts[i]]
    with_ids = datasets.IterableDataset.from_generator(
        _generate_with_ids, gen_kwargs={"groups": groups, "source": source}, features=features
    )
    return with_ids, sum(counts)


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


class BatchStream(torch.utils.data.IterableDataset):
    """Batches of one process's part of a stream, built inside DataLoader workers.

    Each worker plays a *role*: a fixed 1/(processes x workers) part of the data. `transform.decode(example)`
    decodes one raw example (raising `ValueError` for a corrupt one, which is skipped, counted and replaced by
    the next example so batches keep their size); `transform(decoded_examples, seed)` augments and collates a
    batch. Randomness depends on the data position only: `seed` is the batch's, and each raw example carries its
    own under `EXAMPLE_SEED` (for decoding that samples, e.g. the clips of a video). Batches carry `_role`,
    `_epoch`, `_position` (raw examples of the role's epoch consumed so far) and `_skipped`, from which
    `state_dict()` is kept by the consumer via `record`.

    With `repeat=True` the stream runs epoch after epoch forever (the training loop counts steps); with
    `repeat=False` it makes one ordered pass (feature extraction) and keeps the last, smaller batch.

    `batches_per_epoch` fixes how many batches each role yields per epoch, so that epochs of every role and
    process end on the same training step (the clustering methods re-cluster between epochs): a role whose data
    runs short (corrupt samples, uneven splits, resampling) reads its epoch again, and the surplus is dropped.

    `sample_weights` (one float per example id, set before iterating) resamples each epoch: example i is
    emitted floor(w_i) or floor(w_i) + 1 times, with mean w_i. This is DeepCluster's uniform sampling over
    clusters (`uniform_cluster_weights`) without random access. The official sampler shuffles the whole index
    list, so the copies of a small cluster's image fall all over the epoch; a stream that emitted them back to
    back would leave them a shuffle buffer's span to spread over (several per batch). So the epoch is read in
    `resample_passes` passes (reading bytes again, not decoding) and each pass emits a share of every example's
    copies (`resample_counts`): the shares land a pass apart, each spread by the shuffle buffer.
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
        # role -> (epoch, raw position, batches of the epoch) after its last consumed batch
        self._positions: dict[int, tuple[int, int, int]] = {}
        self._batches = 0  # batches handed out, over all epochs

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

    # -- producer side, inside a worker --
    def _role_dataset(self, role: int, epoch: int, copies: np.ndarray | None) -> datasets.IterableDataset:
        dataset = self.dataset
        if copies is not None:
            dataset = dataset.map(_resample, batched=True, fn_kwargs={"copies": copies})
        if self.shuffle_buffer > 0:
            dataset = dataset.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        parts = self.world_size * self.num_workers
        dataset = split_dataset_by_node(dataset, rank=self.rank * self.num_workers + role, world_size=parts)
        dataset.set_epoch(epoch)
        return dataset

    def _epoch_rows(self, role: int, epoch: int) -> Iterator[dict]:
        """The role's raw rows of one epoch: one pass, or `resample_passes` with `sample_weights`; with
        `batches_per_epoch`, read again as often as needed."""
        weights = self.sample_weights
        passes = 1 if weights is None else resample_passes(weights, self.batch_size, self.shuffle_buffer)
        count = 0
        for reading in itertools.count():
            copies = None
            if weights is not None:
                repetition, index = divmod(reading, passes)
                copies = resample_counts(weights, (self.seed, epoch, repetition), passes, index)
            for row in iter_rows(self._role_dataset(role, epoch, copies)):
                count += 1
                yield row
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
            stream = itertools.islice(self._epoch_rows(role, epoch), position, None)
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


def _resample(batch: dict, copies: np.ndarray) -> dict:
    """Repeat each row of a batch as often as `copies[id]` says (0: drop it)."""
    ids = np.asarray(batch[ID_COLUMN], dtype=np.int64)
    index = np.repeat(np.arange(len(ids)), copies[ids])
    return {column: [values[i] for i in index] for column, values in batch.items()}


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
    "SkippedSamples",
    "steps_per_epoch",
    "resample_counts",
    "resample_passes",
    "uniform_cluster_weights",
]
