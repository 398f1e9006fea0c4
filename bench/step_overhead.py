"""Cost of Instance Recognition on top of its backbone: one training step of each, side by side.

(a) bare backbone: forward, a trivial loss on the pooled features, backward, SGD step.
(b) InstanceRecognitionForPreTraining: forward with ids, NCE loss against the memory bank, backward, SGD step,
    bank update.

Both run on the same batch in the same process, after warm-up, and the two measurements alternate (in ABBA order)
so that drift in clock speed or background load hits both alike. The goal is (b) / (a) <= 1.10: the memory bank
and NCE should cost at most 10% on top of the backbone.

    python bench/step_overhead.py                      # ResNet-18 shape at width 1/4, cifar stem, batch 128, 32 px
    python bench/step_overhead.py --batch-size 256
    python bench/step_overhead.py --backbone resnet50 --width 1 --image-size 224 --device cuda
"""

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from transformers import PreTrainedConfig, ResNetConfig

from hf_ssl.models import AlexNetConfig, InstanceRecognitionConfig, InstanceRecognitionForPreTraining
from hf_ssl.models.modeling_ssl import backbone_forward

GOAL = 1.10
# name -> (stage widths, stage depths, block type) of transformers' ResNet
RESNETS = {
    "resnet18": ((64, 128, 256, 512), [2, 2, 2, 2], "basic"),
    "resnet50": ((256, 512, 1024, 2048), [3, 4, 6, 3], "bottleneck"),
}


def backbone_config(name: str, width: float, cifar_stem: bool) -> PreTrainedConfig:
    """The benchmarked backbone: ResNet-18/50 (transformers) or DeepCluster's AlexNet (hf_ssl), scaled by `width`."""

    def scaled(channels: int) -> int:
        return max(1, round(channels * width))

    if name in RESNETS:
        hidden_sizes, depths, layer_type = RESNETS[name]
        return ResNetConfig(
            embedding_size=scaled(64),
            hidden_sizes=[scaled(c) for c in hidden_sizes],
            depths=depths,
            layer_type=layer_type,
            cifar_stem=cifar_stem,
        )
    if name == "alexnet":
        return AlexNetConfig(width_multiplier=width)
    raise ValueError(f"unknown backbone {name!r}")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(step: Callable[[], None], device: torch.device) -> float:
    """Wall-clock milliseconds of one call of `step`."""
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    """Parse the options, build both models, time them and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", choices=["resnet18", "resnet50", "alexnet"], default="resnet18")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of the backbone")
    parser.add_argument("--no-cifar-stem", dest="cifar_stem", action="store_false", help="ImageNet ResNet stem")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each model first")
    parser.add_argument("--num-examples", type=int, default=50_000, help="memory bank rows (CIFAR-10 train set)")
    parser.add_argument("--num-negatives", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cifar_stem = args.cifar_stem and args.backbone != "alexnet"
    config = InstanceRecognitionConfig(
        backbone_config=backbone_config(args.backbone, args.width, cifar_stem),
        num_examples=args.num_examples,
        num_negatives=args.num_negatives,
    )
    model = InstanceRecognitionForPreTraining(config).to(device).train()
    backbone = copy.deepcopy(model.instance_recognition.backbone).train()  # same architecture and weights
    modules = {"backbone": backbone, "npid": model}
    # NPID's optimiser settings, for both.
    optimizers = {
        name: torch.optim.SGD(module.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
        for name, module in modules.items()
    }

    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    ids = torch.randperm(args.num_examples, device=device)[: args.batch_size]
    losses: dict[str, float] = {}

    def backbone_step() -> None:
        _, pooled, _ = backbone_forward(backbone, pixel_values)
        loss = pooled.pow(2).mean()
        optimizers["backbone"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["backbone"].step()
        losses["backbone"] = loss.detach()

    def npid_step() -> None:
        loss = model(pixel_values, ids).loss
        optimizers["npid"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["npid"].step()
        losses["npid"] = loss.detach()

    steps = {"backbone": backbone_step, "npid": npid_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    for i in range(args.steps):
        order = ["backbone", "npid"] if i % 2 == 0 else ["npid", "backbone"]
        for name in order:
            times[name].append(time_ms(steps[name], device))

    params = {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["npid"] / median["backbone"]
    print(
        f"{args.backbone} width={args.width} cifar_stem={cifar_stem} batch={args.batch_size} image={args.image_size}px "
        f"device={device} threads={torch.get_num_threads()} bank={args.num_examples}x{config.embedding_dim} "
        f"negatives={args.num_negatives} steps={args.steps} (after {args.warmup} warm-up)"
    )
    for name, label in (("backbone", "(a) backbone fwd+bwd+SGD"), ("npid", "(b) NPID fwd+NCE+bwd+SGD+bank")):
        spread = f"[{min(times[name]):.1f}, {max(times[name]):.1f}]"
        print(
            f"{label:32s} median {median[name]:8.1f} ms/step  min-max {spread:>18s}  "
            f"params {params[name]:,}  last loss {float(losses[name]):.4g}"
        )
    verdict = "ok" if ratio <= GOAL else "over"
    print(f"ratio (b)/(a) = {ratio:.3f}   goal <= {GOAL:.2f}: {verdict}")
    # Background load adds time to both sides, pulling the median ratio towards 1; the fastest steps show less of it.
    print(f"ratio of the fastest steps = {min(times['npid']) / min(times['backbone']):.3f}")


if __name__ == "__main__":
    main()
