"""Peak memory of each process in a 2-process feature pass (`frozen_features`), the pass that feeds DeepCluster's
k-means and the kNN bank.

Two real gloo processes (Accelerate, CPU) extract the features of a synthetic image set whose feature rows are
wide (the centre-cropped pixels repeated, `--repeat` times: 768 x 16 = 12,288 floats, 48 KiB a row, the width of
three AlexNet fc7 rows), so the features dwarf the libraries' memory. Each process prints its peak resident memory
(`resource.getrusage`, maxrss) before and after the pass, and the result it holds. Goal: the non-main process
holds its own share and one chunk, not the whole feature matrix (memory O(bank + batch), not O(features x
processes)); the main process holds the result.

    python bench/gather_memory.py                        # 8,000 rows x 12,288 floats: 393 MB of features
    python bench/gather_memory.py --num-examples 16000 --repeat 8
"""

import argparse
import io
import os
import resource
import socket
import time

import torch
import torch.multiprocessing as mp


def rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RepeatedPixels(torch.nn.Module):
    """A feature "model" with wide rows: the pixels, repeated."""

    def __init__(self, repeat: int):
        super().__init__()
        self.repeat = repeat

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True):
        return type("Output", (), {"embeddings": pixel_values.flatten(1).repeat(1, self.repeat)})


def synthetic_images(num_examples: int, shards: int):
    """`num_examples` 16x16 PNGs with labels and ids, as a stream of `shards` shards."""
    import datasets
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(64):  # a few distinct images, reused: building the set is not what is measured
        buffer = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    data = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": pngs[i % 64], "path": None} for i in range(num_examples)],
            "label": [i % 10 for i in range(num_examples)],
            "id": list(range(num_examples)),
        },
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("int64"), "id": datasets.Value("int64")}
        ),
    )
    return data.to_iterable_dataset(num_shards=shards)


def worker(rank: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
        ACCELERATE_USE_CPU="1",
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from hf_ssl.data import make_image_processor
    from hf_ssl.evaluation import frozen_features

    accelerator = Accelerator(cpu=True)
    dataset = synthetic_images(args.num_examples, shards=8)
    processor = make_image_processor(16)
    accelerator.wait_for_everyone()
    before, started = rss_mb(), time.perf_counter()
    result = frozen_features(
        RepeatedPixels(args.repeat),
        dataset,
        processor,
        accelerator,
        args.batch_size,
        label_column="label",
        progress=False,
    )
    seconds = time.perf_counter() - started
    held = "nothing" if result is None else f"{result[0].shape[0]} x {result[0].shape[1]} features"
    accelerator.wait_for_everyone()
    print(
        f"rank {rank}: peak RSS {before:.0f} MB before the pass, {rss_mb():.0f} MB after "
        f"(+{rss_mb() - before:.0f} MB); holds {held}; {seconds:.1f} s",
        flush=True,
    )
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-examples", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=16, help="feature width = 768 x repeat")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    width = 768 * args.repeat
    print(
        f"{args.num_examples} rows x {width} floats = {args.num_examples * width * 4 / 1e6:.0f} MB of features, "
        "2 processes",
        flush=True,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
