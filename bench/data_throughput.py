"""Does the streamed data pipeline keep up with training? Measures, in one run:

(a) producer: images/s that `BatchStream` (streamed decode + multi-view kornia augmentation, repeat=True) delivers
    through DataLoader workers, with the main process doing nothing but receive batches;
(b) consumer: images/s one Instance Recognition training step (forward + NCE loss + backward + SGD, one view per
    example) processes on a small CIFAR-style ResNet-18 layout, at the torch thread count training runs with
    (torch's default, as the training loop leaves it) and fed batches the pipeline made beforehand;
(c) end to end: the same training step fed live by the pipeline. On a machine where workers and the training step
    share the same cores, this is the rate training actually gets; (a) and (b) are each measured alone.

The goal is (a) / (b) >= 2: the pipeline should have twice the headroom the model needs.

    python bench/data_throughput.py
    python bench/data_throughput.py --dataset ../shared/data/imagenette-160 --image-size 64
"""

import argparse
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable

import torch
from step_overhead import backbone_config  # the sibling benchmark's backbones (bench/ is on sys.path)
from torch.utils.data import DataLoader

from hf_ssl.data import BatchStream, MultiViewTransform, ViewAugmentation, load_stream, with_stable_ids
from hf_ssl.models import InstanceRecognitionConfig, InstanceRecognitionForPreTraining

GOAL = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/cifar10-sample")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--views", type=int, default=2, help="augmented views the pipeline makes per image")
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement, after warm-up")
    parser.add_argument("--batches", type=int, default=None, help="batches per measurement (instead of --seconds)")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--backbone-width", type=float, default=0.25, help="x ResNet-18 widths [64,128,256,512]")
    parser.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--num-negatives", type=int, default=4096)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads of the training step"
    )
    return parser.parse_args()


def timed(batches: Iterable[dict], step: Callable[[dict], None], args: argparse.Namespace) -> tuple[float, int]:
    """(images per second, batches measured) over `batches` after warm-up, by --seconds or --batches."""
    batches = iter(batches)
    for batch in itertools.islice(batches, args.warmup_batches):
        step(batch)
    images, count, start = 0, 0, time.perf_counter()
    for batch in batches:
        step(batch)
        images, count = images + len(batch["ids"]), count + 1
        done = count >= args.batches if args.batches else time.perf_counter() - start >= args.seconds
        if done:
            break
    return images / (time.perf_counter() - start), count


def make_stream(args: argparse.Namespace, dataset, seed: int) -> DataLoader:
    transform = MultiViewTransform(ViewAugmentation(size=args.image_size), num_views=args.views)
    stream = BatchStream(
        dataset, args.batch_size, transform, num_workers=args.num_workers, seed=seed, shuffle_buffer=args.shuffle_buffer
    )
    return DataLoader(stream, batch_size=None, num_workers=args.num_workers)


def make_model(args: argparse.Namespace, num_examples: int) -> InstanceRecognitionForPreTraining:
    config = InstanceRecognitionConfig(
        backbone_config=backbone_config("resnet18", args.backbone_width, args.cifar_stem),
        num_examples=num_examples,
        num_negatives=args.num_negatives,
    )
    return InstanceRecognitionForPreTraining(config).train()


def one_view(batch: dict) -> torch.Tensor:
    """Instance Recognition trains on one view per example."""
    pixel_values = batch["pixel_values"]
    return pixel_values[0] if pixel_values.dim() == 5 else pixel_values


def producer_vs_consumer(
    args: argparse.Namespace,
    dataset,
    make_stream: Callable[[argparse.Namespace, object, int], DataLoader],
    model: torch.nn.Module,
    model_input: Callable[[dict], torch.Tensor],
    unit: str,
    per_example: int = 1,
) -> None:
    """Time (a) the pipeline alone, (b) the training step on batches the pipeline made before, (c) both live, and
    print the rates in `unit`/s (an example counts `per_example` units for the pipeline) and the ratio (a)/(b)."""
    # (a) The main process only receives batches; each worker runs with the 1 torch thread DataLoader gives it.
    feed: deque[dict] = deque(maxlen=8)  # the training step below reuses the last few batches
    examples, produced_batches = timed(make_stream(args, dataset, 0), feed.append, args)
    produced = examples * per_example
    print(f"(a) pipeline:   {produced:8.1f} {unit}/s ({examples:.1f} examples/s, {produced_batches} batches)")

    torch.set_num_threads(args.threads)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    losses: list[float] = []

    def train_step(batch: dict) -> None:
        loss = model(model_input(batch), batch["ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())

    # (b) Real augmented batches, made before, so no data work is timed.
    consumed, consumed_batches = timed(itertools.cycle(feed), train_step, args)
    print(f"(b) training:   {consumed:8.1f} {unit}/s ({consumed_batches} steps)")

    # (c) Live: workers and the training step compete for the same cores.
    end_to_end, end_to_end_batches = timed(make_stream(args, dataset, 1), train_step, args)
    print(f"(c) end to end: {end_to_end:8.1f} {unit}/s ({end_to_end_batches} steps)")

    if not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError("the training step produced a non-finite loss: the consumer timing is not meaningful")
    ratio = produced / consumed
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"ratio (a)/(b) = {ratio:.2f}x (goal >= {GOAL:.0f}x: {verdict}); (c)/(b) = {end_to_end / consumed:.2f}")


def main() -> None:
    args = parse_args()
    dataset, num_examples = with_stable_ids(load_stream(args.dataset, args.split))
    print(
        f"dataset {args.dataset} [{args.split}]: {num_examples} images; batch {args.batch_size}, "
        f"{args.image_size} px, {args.views} view(s), {args.num_workers} DataLoader worker(s); "
        f"training step on {args.threads} torch thread(s) of {torch.get_num_threads()} default"
    )

    model = make_model(args, num_examples)
    producer_vs_consumer(args, dataset, make_stream, model, one_view, unit="images")


if __name__ == "__main__":
    main()
