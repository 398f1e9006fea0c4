"""The fast-path defaults, measured per backbone: one training step (forward, a loss on the pooled features,
backward, SGD) in the default layout, in channels-last memory format, and (with --compile) under torch.compile,
side by side in one process on the same batch, the arms alternating so drift in load hits them alike.

Each backbone runs at the shape of a shipped recipe. `channels_last: auto` (training/fast_path.py) turns the layout
on for the backbones measured faster here (ResNet, AlexNet); it stays off for VGG, ViT and video.

    python bench/fast_path.py                         # every backbone, default layout vs channels-last, 1 thread
    python bench/fast_path.py --compile --backbones quickstart resnet18
    python bench/fast_path.py --device cuda --batch-scale 4
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import PreTrainedConfig, ResNetConfig, ViTConfig

from hf_ssl.models import AlexNetConfig
from hf_ssl.models.configuration_ssl import backbone_config_from_dict
from hf_ssl.models.modeling_ssl import backbone_forward, build_backbone
from hf_ssl.training.fast_path import resolve_channels_last


def resnet18(**kwargs) -> ResNetConfig:
    return ResNetConfig(hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic", **kwargs)


# name -> (backbone config, input shape of one example, batch): the shapes of the shipped recipes
BACKBONES: dict[str, tuple[Callable[[], PreTrainedConfig], tuple[int, ...], int]] = {
    "quickstart": (  # training_args/quickstart.yaml: ResNet 16-128 channels, one block per stage, 32 px
        lambda: ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic", cifar_stem=True
        ),
        (3, 32, 32),
        128,
    ),
    "resnet18_cifar": (lambda: resnet18(cifar_stem=True), (3, 32, 32), 32),
    "resnet18": (resnet18, (3, 96, 96), 32),  # the imagenette recipes
    "alexnet": (AlexNetConfig, (3, 96, 96), 32),  # deep_cluster_alexnet_imagenette
    "vgg16": (lambda: backbone_config_from_dict({"model_type": "vgg"}), (3, 32, 32), 16),
    "vgg16_64": (lambda: backbone_config_from_dict({"model_type": "vgg"}), (3, 64, 64), 8),
    "vit": (
        lambda: ViTConfig(
            image_size=96,
            patch_size=16,
            hidden_size=192,
            num_hidden_layers=6,
            num_attention_heads=3,
            intermediate_size=768,
        ),
        (3, 96, 96),
        32,
    ),
    "r3d": (  # video: channels_last never applies (a 5-D input); shown for the auto rule
        lambda: backbone_config_from_dict({"model_type": "r3d"}),
        (8, 3, 32, 32),
        8,
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per arm and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all arms")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-scale", type=float, default=1.0, help="multiply each backbone's batch")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(model: torch.nn.Module, inputs: torch.Tensor, optimizer: torch.optim.Optimizer, device: torch.device) -> float:
    """Milliseconds of one training step (forward, a loss on the pooled features, backward, SGD): wall-clock, or on
    CPU the process's CPU time, which other processes' load on shared cores does not inflate (use 1 thread: more
    threads add their spin-waits)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    sync(device)
    start = clock()
    loss = backbone_forward(model, inputs)[1].float().pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return (clock() - start) * 1e3


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = "wall-clock" if device.type == "cuda" else "CPU time"
    print(f"{device}, {torch.get_num_threads()} threads; {clock} ms per training step (median), speed-up vs default")
    for name in args.backbones:
        make_config, shape, batch = BACKBONES[name]
        torch.manual_seed(0)
        config = make_config()
        video = len(shape) == 4
        base = build_backbone(config).to(device)
        pixels = torch.randn(max(1, round(batch * args.batch_scale)), *shape, device=device)
        arms: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {"default": (base, pixels)}
        if not video:
            layout = build_backbone(config).to(device).to(memory_format=torch.channels_last)
            layout.load_state_dict(base.state_dict())
            arms["channels_last"] = (layout, pixels.contiguous(memory_format=torch.channels_last))
        if args.compile:
            best = arms.get("channels_last", arms["default"])
            arms["compile"] = (torch.compile(best[0]), best[1])
        optimizers = {arm: torch.optim.SGD(model.parameters(), lr=1e-3) for arm, (model, _) in arms.items()}

        first = {}
        for arm in arms:  # warm-up (and compiling: wall-clock, its work runs in compile worker processes)
            start = time.perf_counter()
            step(*arms[arm], optimizers[arm], device)
            first[arm] = time.perf_counter() - start
        times = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm in arms:
                times[arm] += [step(*arms[arm], optimizers[arm], device) for _ in range(args.steps)]
        median = {arm: statistics.median(t) for arm, t in times.items()}
        auto = resolve_channels_last("auto", config.model_type, video)
        cells = [f"{arm} {median[arm]:7.1f} ms ({median['default'] / median[arm]:.2f}x)" for arm in arms]
        extra = f", first compiled step {first['compile']:.0f} s wall" if args.compile else ""
        print(f"{name:>14} ({config.model_type}, batch {len(pixels)}): " + ", ".join(cells) + f"; auto: {auto}{extra}")


if __name__ == "__main__":
    main()
