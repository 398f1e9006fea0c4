"""What the training stream costs before and at resume, without decoding: counting a split, the files / rows /
bytes each process x worker reads, and the rows a mid-epoch resume reads before its first batch.

    python bench/stream_costs.py ../shared/data/cifar10 --world_size 3 --num_workers 1 --resume_at 25600

Rows are read raw (no image decoding), so the numbers are the stream's own, not the model's or the augmentation's.
"""

import argparse
import time

from hf_ssl.data.stream import BatchStream, load_stream, with_stable_ids


class RawIds:
    """A transform that decodes nothing: a batch is the ids of its raw rows."""

    def decode(self, example: dict) -> dict:
        return example

    def __call__(self, examples: list[dict], seed: int) -> dict:
        return {"ids": [example["id"] for example in examples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--world_size", type=int, default=3)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--shuffle_buffer", type=int, default=10_000)
    parser.add_argument("--resume_at", type=int, default=None, help="raw position of the resume (default: half)")
    args = parser.parse_args()

    start = time.perf_counter()
    source = load_stream(args.dataset, args.split)
    loaded = time.perf_counter()
    dataset, count = with_stable_ids(source)
    print(
        f"{args.dataset}/{args.split}: load {loaded - start:.2f} s, count {count} rows {time.perf_counter() - loaded:.2f} s"
    )

    def stream(rank: int, world_size: int, num_workers: int) -> BatchStream:
        return BatchStream(
            dataset,
            args.batch_size,
            RawIds(),
            rank=rank,
            world_size=world_size,
            num_workers=num_workers,
            shuffle_buffer=args.shuffle_buffer,
            batches_per_epoch=max(1, count // (world_size * num_workers * args.batch_size)),
        )

    for rank in range(args.world_size):
        for plan in stream(rank, args.world_size, args.num_workers).read_plan():
            size = "?" if plan.bytes_read is None else f"{plan.bytes_read / 1e6:.1f} MB"
            print(
                f"process {rank} role {plan.role}: {len(plan.shards or [])} file(s), reads {plan.rows_read} rows "
                f"({size}), keeps {plan.rows_kept}"
            )

    position = count // 2 if args.resume_at is None else args.resume_at
    resumed = stream(0, 1, 1)
    batches = position // args.batch_size
    state = {"positions": {"0": [0, position, batches]}, "batches": batches, "num_workers": 1, "world_size": 1}
    resumed.load_state_dict({**state, "skipped": 0, "skipped_examples": []})  # as a checkpoint holds it
    start = time.perf_counter()
    next(iter(resumed))
    print(
        f"resume at row {position} of epoch 0: first batch after reading {resumed.rows_read} rows, "
        f"{time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()
