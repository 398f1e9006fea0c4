"""Cost of MoCo, SimCLR, BYOL and SwAV on top of the backbone passes they cannot avoid, side by side.

(a) the physical limit: one forward+backward of the backbone over all views (views x batch inputs), plus, for
    the momentum methods (MoCo's key encoder, BYOL's target), one no-grad forward of a second backbone over them,
    and an SGD step; in the method's BatchNorm batches (`per_view_batchnorm`, BYOL's default: a pass per view, as
    the method must run them).
(b) the method's ForPreTraining step: forward (heads, loss, queue / Sinkhorn / momentum update), backward, SGD.

Same inputs, same process, after warm-up, alternating (a) and (b) so that drift hits both alike. Goal: (b) / (a)
<= 1.10 for every method.

    python bench/contrastive_step.py                           # ResNet-18 at width 1/4, 32 px, 2 views x 128
    python bench/contrastive_step.py --backbone r3d --frames 8 --views 2 --batch-size 16   # video clips
    python bench/contrastive_step.py --width 1 --batch-size 256 --device cuda
"""

import argparse
import copy
import statistics

import torch
from step_overhead import backbone_config, time_ms
from transformers import PreTrainedConfig

from hf_ssl.models import PRETRAINING_CLASSES, R3DConfig
from hf_ssl.models.modeling_ssl import backbone_forward

GOAL = 1.10
METHODS = ("moco", "simclr", "byol", "swav")
MOMENTUM_METHODS = {"moco", "byol"}


def build_backbone_config(name: str, width: float, image_size: int) -> PreTrainedConfig:
    if name == "r3d":
        return R3DConfig(width_multiplier=width)
    return backbone_config(name, width, cifar_stem=image_size <= 64)  # the CIFAR stem for small images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--backbone", choices=["resnet18", "resnet50", "r3d"], default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--views", type=int, default=2, help="views (rho clips) per example")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (r3d)")
    parser.add_argument(
        "--queue-size",
        type=int,
        default=4096,
        help="MoCo's negatives (4096: the CIFAR recipe, at the scale of the default backbone; 65536 for ImageNet)",
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    frames = (args.frames,) if args.backbone == "r3d" else ()
    shape = (args.views, args.batch_size, *frames, 3, args.image_size, args.image_size)
    pixel_values = torch.randn(shape, device=device)
    print(
        f"{args.backbone} width={args.width} views={args.views} batch={args.batch_size} input={tuple(shape[2:])} "
        f"moco queue={args.queue_size} "
        f"device={device} threads={torch.get_num_threads()} steps={args.steps} (after {args.warmup} warm-up)"
    )
    ratios = {}
    for method in args.methods:
        cls = PRETRAINING_CLASSES[method]
        extra = {"queue_size": args.queue_size} if method == "moco" else {}
        config = cls.config_class(
            backbone_config=build_backbone_config(args.backbone, args.width, args.image_size),
            num_views=args.views,
            **extra,
        )
        model = cls(config).to(device).train()
        backbone = copy.deepcopy(model.base_model.backbone).train()
        second = copy.deepcopy(backbone).requires_grad_(False) if method in MOMENTUM_METHODS else None
        optimizers = {
            name: torch.optim.SGD(module.parameters(), lr=0.03, momentum=0.9)
            for name, module in (("limit", backbone), ("method", model))
        }
        batches = list(pixel_values) if config.per_view_batchnorm else [pixel_values.flatten(0, 1)]

        def limit_step() -> None:
            loss = sum(backbone_forward(backbone, x)[1].pow(2).mean() for x in batches)
            if second is not None:
                with torch.no_grad():
                    for x in batches:
                        backbone_forward(second, x)
            optimizers["limit"].zero_grad(set_to_none=True)
            loss.backward()
            optimizers["limit"].step()

        def method_step() -> None:
            model.set_training_progress(0, 100)
            loss = model(pixel_values=pixel_values).loss
            optimizers["method"].zero_grad(set_to_none=True)
            loss.backward()
            optimizers["method"].step()

        steps = {"limit": limit_step, "method": method_step}
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        for i in range(args.steps):
            for name in ["limit", "method"] if i % 2 == 0 else ["method", "limit"]:
                times[name].append(time_ms(steps[name], device))
        median = {name: statistics.median(values) for name, values in times.items()}
        ratios[method] = median["method"] / median["limit"]
        passes = (
            "fwd+bwd" + (" + no-grad fwd" if second is not None else "") + (" per view" if len(batches) > 1 else "")
        )
        print(
            f"{method:7s} limit ({passes:31s}) {median['limit']:8.1f} ms   method {median['method']:8.1f} ms   "
            f"ratio {ratios[method]:.3f}   fastest-step ratio {min(times['method']) / min(times['limit']):.3f}"
        )
    worst = max(ratios, key=ratios.get)
    print(
        f"worst ratio {ratios[worst]:.3f} ({worst})   goal <= {GOAL:.2f}: {'ok' if ratios[worst] <= GOAL else 'over'}"
    )


if __name__ == "__main__":
    main()
