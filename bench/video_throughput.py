"""Does the video pipeline keep up with training? Measures, in one run:

(a) producer: clips/s that `BatchStream` with `ClipViewTransform` (streamed decode of rho random clips per video,
    each augmented with one set of parameters for all its frames) delivers through DataLoader workers, with the
    main process doing nothing but receive batches;
(b) consumer: clips/s one Instance Recognition training step (forward + loss + backward + SGD, one clip per
    example) processes on a small 3D ResNet (R3D-18 layout, scaled by --backbone-width), at the torch thread count
    training runs with, fed clips the pipeline made beforehand;
(c) end to end: the same training step fed live by the pipeline (workers and the step share the cores).

Both rates count clips (T frames each), so a method that trains on all rho clips of an example consumes them at
the rate (b) measures. The goal is (a) / (b) >= 2: the pipeline should have twice the headroom the model needs.

    python bench/video_throughput.py
    python bench/video_throughput.py --dataset ../shared/data/moving-imagenette
"""

import argparse

import torch
from data_throughput import producer_vs_consumer  # the sibling benchmark's measurement (bench/ is on sys.path)
from torch.utils.data import DataLoader

from hf_ssl.data import BatchStream, ClipViewTransform, ViewAugmentation, load_stream, with_stable_ids
from hf_ssl.models import InstanceRecognitionConfig, InstanceRecognitionForPreTraining, R3DConfig


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/moving-imagenette-sample")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=8, help="frames per clip (T)")
    parser.add_argument("--frame-stride", type=int, default=2)
    parser.add_argument("--views", type=int, default=2, help="clips the pipeline samples per video (rho)")
    parser.add_argument("--max-clip-distance", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--shuffle-buffer", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement, after warm-up")
    parser.add_argument("--batches", type=int, default=None, help="batches per measurement (instead of --seconds)")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--backbone-width", type=float, default=0.25, help="x R3D-18 widths [64,128,256,512]")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads of the training step"
    )
    return parser.parse_args()


def make_stream(args: argparse.Namespace, dataset, seed: int) -> DataLoader:
    transform = ClipViewTransform(
        ViewAugmentation(size=args.image_size),
        num_views=args.views,
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        max_distance=args.max_clip_distance,
    )
    stream = BatchStream(
        dataset, args.batch_size, transform, num_workers=args.num_workers, seed=seed, shuffle_buffer=args.shuffle_buffer
    )
    return DataLoader(stream, batch_size=None, num_workers=args.num_workers)


def one_clip(batch: dict) -> torch.Tensor:
    """Instance Recognition trains on one clip per example: (B, T, C, H, W)."""
    pixel_values = batch["pixel_values"]
    return pixel_values[0] if pixel_values.dim() == 6 else pixel_values


def main() -> None:
    args = parse_args()
    dataset, num_examples = with_stable_ids(load_stream(args.dataset, args.split))
    print(
        f"dataset {args.dataset} [{args.split}]: {num_examples} videos; batch {args.batch_size}, {args.views} "
        f"clip(s) of {args.num_frames} frames at stride {args.frame_stride}, {args.image_size} px, "
        f"{args.num_workers} DataLoader worker(s); training step on {args.threads} torch thread(s)"
    )

    config = InstanceRecognitionConfig(
        backbone_config=R3DConfig(width_multiplier=args.backbone_width), num_examples=num_examples, num_negatives=0
    )
    model = InstanceRecognitionForPreTraining(config).train()
    # the pipeline makes rho clips per video; the step trains on one clip per example: both rates count clips
    producer_vs_consumer(args, dataset, make_stream, model, one_clip, unit="clips", per_example=args.views)


if __name__ == "__main__":
    main()
