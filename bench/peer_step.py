"""Step for step beside lightly: SimCLR, MoCo v2, BYOL and SwAV from the same initial weights on the same views,
each library with its own model, loss, optimizer, schedule and momentum update, for a few training steps.

    HF_SSL_PEER_PYTHON=<venv with lightly>/bin/python PYTHONPATH=. python bench/peer_step.py   # ~3 min on 2 cores

`bench/peer_quality.py` compares where the two libraries end after hundreds of steps, through the noise of seeds;
this compares what one step computes, where two equal implementations agree to float rounding. The settings are
peer_quality.py's CPU budget (its `settings`: recipe, `--method-config budget`, lr scaled to batch 128) without
warm-up, whose first step differs by convention (lightly's schedule starts at 1/warm-up of the lr, transformers'
at 0). lightly's side (`bench/peer_lightly_train.py --step-check`, in its own environment) draws the views with its
transforms and saves its initial weights; they are converted to hf_ssl's layout (torchvision's ResNet by
`hf_ssl.convert.resnet`, the heads layer for layer), MoCo's memory bank copied into the queue, and hf_ssl trains on
the same views. SwAV's prototypes are official SwAV's on both sides, without the bias lightly's SwaVPrototypes adds
(removed on lightly's side for the check), so the check sees the rest: normalisation, Sinkhorn codes, swapped
prediction, freezing (the budget freezes the prototypes for the first 2 steps). Printed per method:

- each step's loss on both sides (BYOL: hf_ssl's less 4, the constant of official BYOL's 2 - 2cos summed over the
  two directions, which lightly's side takes without it);
- the first step's gradients: ||g_hf - g_ly|| / ||g_ly|| over each part's parameters (backbone, projector,
  predictor, SwAV's prototypes where not frozen);
- the weights after the first step: ||w_hf - w_ly|| / ||w_ly - w_init|| per part, the difference as a fraction of
  the step itself. It includes the one known difference of the optimizers: LARS divides by ||g + wd w|| in hf_ssl
  (official SimCLR, BYOL and SwAV), by ||g|| + wd ||w|| in lightly (You et al.); `--weight-decay 1e-12` makes them
  equal.

BatchNorm batches: lightly's examples encode each view in a forward of its own; hf_ssl follows each method's official
code (`per_view_batchnorm`): BYOL per view, as lightly; MoCo one view per encoder; SimCLR both views in one batch (the
official code's tf.concat) and SwAV's crops of one size in one batch (its multi-crop forward), so their steps differ
from lightly's unless `--per-view-batchnorm` makes hf_ssl encode each view alone for the check.

hf_ssl's side is `train.py`'s run, built as peer_quality.py builds it and stepped by the training loop's own step
(`Trainer.step`: accumulation, gradient clipping, the momentum update once per optimizer step), in lightly's memory
layout: on CPU hf_ssl's training picks channels_last for ResNets (faster), whose convolutions sum in another order,
and in training mode BatchNorm's backward amplifies rounding (a ResNet-18 at random init, batch 128 at 32 px, a
random linear loss on its pooled features: its fp32 gradients are 7e-3 from its fp64 ones), so with
`--channels-last` the gradients differ by about 1e-3 (MoCo) to 1e-2 (BYOL) and the check can no longer see a
difference of the size it is there to find.

Later steps drift apart faster than rounding alone suggests: at these learning rates a relative change of 1e-5 in
the initial weights moves BYOL's weights by 15% of their change within 4 steps, so the losses of the later steps,
not their weights, are the check there.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch

from hf_ssl.convert.resnet import resnet_from_torchvision
from hf_ssl.training import parse_args
from hf_ssl.training.loop import Trainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from peer_quality import PROFILES, ROOT, default_peer_python, hf_ssl_command, settings, subset_dataset  # noqa: E402

METHODS = ("simclr", "moco", "byol", "swav")
# the constant hf_ssl's loss has over lightly's (the same gradient)
LOSS_OFFSET = {"byol": 4.0}


def lightly_side(cfg: dict, steps: int, peer_python: pathlib.Path, output: pathlib.Path) -> dict:
    command = [str(peer_python), str(ROOT / "bench" / "peer_lightly_train.py"), "--config", json.dumps(cfg)]
    subprocess.run([*command, "--step-check", str(steps), "--output", str(output)], check=True)
    saved = np.load(output)
    return {key: torch.from_numpy(saved[key]) for key in saved.files}


def hf_ssl_parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """lightly's Method state dict (backbone, head.layers, predictor.layers, prototypes.heads.0) in hf_ssl's names:
    ResNetModel's, the MLP heads', whose layers line up one for one with lightly's (Linear, BatchNorm, ReLU, ...), and
    the prototypes' Linear."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    parts = {"backbone": resnet_from_torchvision(backbone, "lightly")[1]}
    for part, prefix in (
        ("projector", "head.layers."),
        ("predictor", "predictor.layers."),
        ("prototypes", "prototypes.heads.0."),
    ):
        layers = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if layers:
            parts[part] = layers
    return parts


def prefixed(saved: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}


def distance(mine: dict, theirs: dict, reference: dict | None = None) -> float:
    """||mine - theirs|| / ||theirs - reference|| (or / ||theirs||) over the floating tensors of a part, running
    statistics left out."""
    keys = [k for k, v in theirs.items() if v.is_floating_point() and "running" not in k]
    diff = torch.cat([(mine[k].float() - theirs[k].float()).flatten() for k in keys])
    base = torch.cat([(theirs[k].float() - (reference[k].float() if reference else 0)).flatten() for k in keys])
    return float(diff.norm() / base.norm())


def compare(method: str, cfg: dict, saved: dict, steps: int, channels_last: bool = False) -> list[str]:
    """hf_ssl's run (`train.py`'s, as peer_quality.py's command builds it) from lightly's initial weights, stepped by
    the training loop's own step on lightly's views; the lines to print. Without `channels_last`, in lightly's
    memory layout (see the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = hf_ssl_command(cfg, pathlib.Path(tmp) / "run")[1:]
        trainer = Trainer(*parse_args([*command, "--channels_last", str(channels_last).lower()]))
    model = trainer.run.unwrapped_model
    modules = {"backbone": model.base_model.backbone, "projector": model.projector}
    modules |= {part: getattr(model, part) for part in ("predictor", "prototypes") if hasattr(model, part)}
    init = hf_ssl_parts(prefixed(saved, "init/"))
    for part, weights in init.items():
        modules[part].load_state_dict(weights)  # in place: the optimizer's parameters stay the ones it holds
    model._after_init()  # the momentum encoder starts as a copy, as lightly's deepcopy
    if method == "moco":
        model.queue.copy_(saved["queue"])
    grads: dict[str, dict[str, torch.Tensor]] = {}

    def keep_gradients(*_) -> None:  # the step's gradients as the optimizer takes them
        grads.update(
            {
                part: {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
                for part, module in modules.items()
            }
        )

    first_step_only = trainer.run.optimizer.optimizer.register_step_pre_hook(keep_gradients)
    model.train()
    losses, step1 = [], {}
    batch = cfg["batch_size"]
    for step in range(steps):
        ids = torch.arange(step * batch, (step + 1) * batch)
        loss = trainer.step({"pixel_values": saved["views"][step], "ids": ids})
        losses.append(loss.item() - LOSS_OFFSET.get(method, 0.0))
        if step == 0:
            first_step_only.remove()
            step1 = {part: {k: v.clone() for k, v in module.state_dict().items()} for part, module in modules.items()}
    theirs_grad = hf_ssl_parts(prefixed(saved, "grad/"))
    theirs_step1 = hf_ssl_parts(prefixed(saved, "step1/"))
    pairs = ", ".join(f"{a:.6f} / {b:.6f}" for a, b in zip(losses, saved["losses"].tolist()))
    largest = max(abs(a - b) for a, b in zip(losses, saved["losses"].tolist()))
    offset = f" less {LOSS_OFFSET[method]:g}" if method in LOSS_OFFSET else ""
    return [
        f"{method}: loss per step, hf_ssl{offset} / lightly: {pairs}; largest difference {largest:.1e}",
        "  first step's gradients, ||hf - ly|| / ||ly||: "
        + ", ".join(f"{part} {distance(grads[part], theirs_grad[part]):.1e}" for part in theirs_grad),
        "  weights after it, ||hf - ly|| / ||ly - init||: "
        + ", ".join(f"{part} {distance(step1[part], theirs_step1[part], init[part]):.1e}" for part in theirs_step1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, help="instead of the recipe's (1e-12: LARS's two forms agree)")
    parser.add_argument(
        "--per-view-batchnorm",
        action="store_true",
        help="hf_ssl encodes each view alone too, as lightly's examples always do (SimCLR's official form differs)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="hf_ssl in the layout its training picks on CPU (channels_last) instead of lightly's: rounding moves",
    )
    parser.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--peer-python", type=pathlib.Path, default=default_peer_python())
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "outputs" / "peer_step")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        sys.exit(f"--methods {args.methods!r}: use a comma-separated subset of {METHODS}")
    if not args.peer_python.exists():
        sys.exit(f"--peer-python {args.peer_python} does not exist: see ../shared/peer/README.md")
    if not (args.data / "data").is_dir():
        sys.exit(f"--data {args.data}: no CIFAR-10 parquet folder there (../shared/data/cifar10)")
    budget = argparse.Namespace(**PROFILES["cpu"], device="cpu")
    data = subset_dataset(args.data, budget.images, args.output_dir / "data")
    torch.set_num_threads(budget.threads)
    for method in methods:
        cfg = {**settings(method, budget, data, args.seed), "warmup_epochs": 0.0}
        if args.weight_decay is not None:
            cfg["weight_decay"] = args.weight_decay
        if args.per_view_batchnorm:
            cfg["method_config"] = {**cfg["method_config"], "per_view_batchnorm": True}
        saved = lightly_side(cfg, args.steps, args.peer_python, args.output_dir / f"{method}.npz")
        print("\n".join(compare(method, cfg, saved, args.steps, args.channels_last)), flush=True)


if __name__ == "__main__":
    main()
