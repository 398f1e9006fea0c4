"""Work done once, on the main process of a torch.distributed run, for every process: rows gathered to the main
process only, in chunks (features of a whole dataset: no process but the main one ever holds them), and a result
computed there and broadcast (k-means pseudo-labels, kNN scores), its errors raised on every process.

Outside a distributed run (or with one process) both are plain local work."""

import pickle
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist

from .models.modeling_ssl import is_distributed

T = TypeVar("T")

# Bytes the main process receives per round of `gather_rows` (over all processes): the device buffers the gather
# needs, whatever the size of the data (the main process's GPU holds this much extra, not the features).
GATHER_CHUNK_BYTES = 128 * 2**20


def collective_device() -> torch.device:
    """Where the process group's collectives take their tensors: the current GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if "nccl" in dist.get_backend() else torch.device("cpu")


def _take_rows(parts: list[torch.Tensor], count: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """The next `count` rows of `parts` (a (count, width) tensor, zero-padded when they run out), removed from
    `parts` so that what has been sent is freed."""
    out = torch.zeros(count, width, dtype=dtype)
    filled = 0
    while filled < count and parts:
        head = parts[0]
        n = min(count - filled, head.shape[0])
        out[filled : filled + n] = head[:n]
        filled += n
        if n == head.shape[0]:
            parts.pop(0)
        else:
            parts[0] = head[n:]
    return out


def gather_rows(
    parts: list[torch.Tensor], dtype: torch.dtype, chunk_bytes: int = GATHER_CHUNK_BYTES
) -> Iterator[tuple[int, torch.Tensor]]:
    """Every process's rows on the main process only, chunk by chunk: yields (first row, rows) on rank 0, where
    the row numbers are those of the concatenation of rank 0's rows, then rank 1's, and so on; yields nothing on
    the other ranks, which must still exhaust the iterator (it runs the collectives).

    `parts`: this process's rows as 2-D `dtype` tensors of one width (possibly none), in order; they are consumed
    (removed from the list as they are sent). No process holds more than its own rows plus one chunk of about
    `chunk_bytes` / processes; the caller on rank 0 decides what to keep of what it receives. Integers stay
    integers: ids and labels travel exactly, at any size.
    """
    if not is_distributed():
        start = 0
        while parts:
            rows = parts.pop(0)
            yield start, rows
            start += rows.shape[0]
        return
    rank, world, device = dist.get_rank(), dist.get_world_size(), collective_device()
    local = torch.tensor([[sum(p.shape[0] for p in parts), parts[0].shape[1] if parts else 0]], device=device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    counts, widths = [int(s[0, 0]) for s in sizes], {int(s[0, 1]) for s in sizes if s[0, 0] > 0}
    if len(widths) > 1:
        raise ValueError(f"gather_rows: the processes' rows have different widths {sorted(widths)}")
    width = widths.pop() if widths else 0
    offsets = [sum(counts[:r]) for r in range(world)]
    row_bytes = max(1, width) * torch.empty((), dtype=dtype).element_size()
    per_round = max(1, chunk_bytes // (world * row_bytes))
    for first in range(0, max(counts), per_round):
        size = min(per_round, max(counts) - first)
        chunk = _take_rows(parts, size, width, dtype).to(device)
        received = [torch.empty_like(chunk) for _ in range(world)] if rank == 0 else None
        dist.gather(chunk, received, dst=0)
        del chunk
        if rank != 0:
            continue
        for source, rows in enumerate(received):
            valid = min(size, max(0, counts[source] - first))
            if valid:
                yield offsets[source] + first, rows[:valid].cpu()


def run_on_main(compute: Callable[[], T]) -> T:
    """`compute()` on the main process (rank 0) only and its result, pickled, on every process of a
    torch.distributed run (a small result: scores, metrics, one label per example); outside one, `compute()`.

    An exception raised by `compute` is raised on every process (the same type and message where it pickles), so
    bad input stops the whole run instead of leaving the other processes waiting in the next collective.
    """
    if not is_distributed():
        return compute()
    if dist.get_rank() == 0:
        try:
            result = compute()
        except Exception as error:
            dist.broadcast_object_list([(None, _picklable(error))], src=0)
            raise
        dist.broadcast_object_list([(result, None)], src=0)
        return result
    box = [None]
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


def _picklable(error: Exception) -> Exception:
    """`error`, or a RuntimeError with its message where it holds state that does not pickle."""
    try:
        pickle.dumps(error)
    except Exception:
        return RuntimeError(f"on the main process: {type(error).__name__}: {error}")
    return error
