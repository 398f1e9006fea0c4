"""The evaluation feature pass (DeepCluster's re-clustering, the training-time kNN, `hf-ssl evaluate`) with the
image processor run image by image in PIL (before) against the batched tensor version (after), side by side.

Both arms run `extract_features` over the same streamed images (decoded in DataLoader workers) into a ResNet-18 at
the recipe's eval size, alternating, at a fixed torch thread count; printed: images/s of the preprocessing alone
(a worker's work on one thread, no model, in CPU time) and of the whole feature pass (wall-clock, and per CPU-second
of all its processes), their ratios, and how far the features move.

    python bench/eval_preprocess.py                                   # imagenette-160 (../shared/data), 96 px
    python bench/eval_preprocess.py --dataset data/cifar10-sample --image-size 32
"""

import argparse
import pathlib
import resource
import time

import numpy as np
import torch
from accelerate import Accelerator
from transformers import ResNetConfig, ResNetModel

from hf_ssl.data import load_stream, with_stable_ids
from hf_ssl.data.transforms import make_image_processor
from hf_ssl.evaluation import extract_features
from hf_ssl.evaluation.transforms import EvalTransform

REPO = pathlib.Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "data" / "imagenette-160"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=96, help="crop size (resize: image_size / 0.875)")
    parser.add_argument("--max-samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each arm")
    return parser.parse_args()


class Pooled(torch.nn.Module):
    """ResNet-18 (transformers) -> pooled features as `embeddings`."""

    def __init__(self):
        super().__init__()
        config = ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic")
        self.resnet = ResNetModel(config).to(memory_format=torch.channels_last)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True):
        pooled = self.resnet(pixel_values=pixel_values.contiguous(memory_format=torch.channels_last)).pooler_output
        return type("Output", (), {"embeddings": pooled.flatten(1)})


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the DataLoader workers of finished passes): a
    measure of work that other processes' load on shared cores does not inflate."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset, count = with_stable_ids(load_stream(args.dataset, args.split))
    processor = make_image_processor(args.image_size)
    model, accelerator = Pooled().eval(), Accelerator(cpu=True)
    arms = {"PIL processor": EvalTransform(processor), "batched tensors": EvalTransform(processor)}
    arms["PIL processor"].tensor_processor = None  # the processor's own call, image by image (the fallback path)
    samples = min(args.max_samples, count)
    print(f"{args.dataset} ({args.split}), {samples} images, eval size {args.image_size}, ResNet-18, ", end="")
    print(f"batch {args.batch_size}, {args.num_workers} workers, {args.threads} threads")

    # the preprocessing alone: one batch of decoded examples through each arm, on one thread as in a DataLoader worker
    torch.set_num_threads(1)
    examples = []
    for example in dataset:
        examples.append(arms["batched tensors"].decode(example))
        if len(examples) == args.batch_size:
            break
    prep = {name: [] for name in arms}
    for _ in range(3):
        for name, transform in arms.items():
            start = time.process_time()  # CPU time: not inflated by other processes' load
            transform(examples)
            prep[name].append(len(examples) / (time.process_time() - start))

    torch.set_num_threads(args.threads)
    passes, cpu, features = {name: [] for name in arms}, {name: [] for name in arms}, {}
    for _ in range(args.repeats):
        for name, transform in arms.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            features[name], _, _ = extract_features(
                model,
                dataset,
                transform,
                accelerator,
                args.batch_size,
                args.num_workers,
                max_samples=samples,
                progress=False,
            )
            passes[name].append(samples / (time.perf_counter() - start))
            cpu[name].append(samples / (cpu_seconds() - start_cpu))
    for name in arms:
        print(
            f"{name:>16}: preprocessing {max(prep[name]):7.0f} images/s, feature pass {max(passes[name]):6.0f} ", end=""
        )
        print(f"images/s ({max(cpu[name]):6.0f} images per CPU-second, workers included)")
    before, after = "PIL processor", "batched tensors"
    print(f"ratio after / before: preprocessing {max(prep[after]) / max(prep[before]):.2f}x, ", end="")
    print(
        f"feature pass {max(passes[after]) / max(passes[before]):.2f}x wall, {max(cpu[after]) / max(cpu[before]):.2f}x CPU"
    )
    a, b = features[after], features[before]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"features: max |after - before| {np.abs(a - b).max():.4f} (max |before| {np.abs(b).max():.2f}), ", end="")
    print(f"min cosine {cosine.min():.6f}")


if __name__ == "__main__":
    main()
