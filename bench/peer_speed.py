"""Training speed beside lightly: end-to-end streamed training images/s of hf_ssl and of lightly, same method,
backbone, batch, threads and data workers, runs alternating in one invocation; and, for each library, the ratio of
its streamed rate to the same step on a pre-loaded batch (what the data path costs the step).

    PYTHONPATH=. python bench/peer_speed.py                                  # SimCLR, 3 rounds, ~10 min on 2 cores
    PYTHONPATH=. python bench/peer_speed.py --methods simclr,moco,byol --rounds 5
    PYTHONPATH=. python bench/peer_speed.py --layouts channels_last --stem cifar

Each run is a fresh process (start-up is not timed) that trains `--steps` steps from the streamed data, then
`--preloaded-steps` more of the same step on the last streamed batch, with the data workers stopped. Images/s of
a measurement = batch x steps / time, over the steps after `--warmup-steps` (streamed) or after 3 (pre-loaded),
from the end time of every step, computed here for both libraries alike; `data wait` is the share of the streamed
steps' wall time the main process waited for its next batch.
- hf_ssl: the real training loop (`Trainer.train()` of `hf_ssl.training.loop`: the recipe's BatchStream, the
  DataLoader the loop builds, `Trainer.step`), from `train.py`'s command line of `peer_quality.py` (the method's
  `*_resnet18_cifar10.yaml` recipe overridden to the shared settings), with a hook that time-stamps each step and
  stops the loop after `--steps`; then `Trainer.step` on the last batch.
- lightly: `bench/peer_lightly_speed.py` in the peer environment (`--peer-python`; it never imports hf_ssl):
  lightly's transform per image in DataLoader workers, its modules and loss, the step of `peer_lightly_train.py`.
Settings are `peer_quality.py`'s (`settings`: the recipe's augmentation and optimizer, ResNet-18, the stem, the
threads: OMP_NUM_THREADS / torch.set_num_threads of the main process; DataLoader workers run 1 thread each, torch's
default in a worker), on all of ../shared/data/cifar10's train images (32 px).

Layouts (`--layouts`): `contiguous` and `channels_last` run both libraries with the model in that memory format
(the input follows the first convolution's weight on both sides). A library's default fast path is hf_ssl's
`channels_last` default (`SSLTrainingArguments`) and lightly's contiguous layout (lightly has no channels-last
option); the table prints that ratio when both layouts ran and hf_ssl's default is channels-last. In every round the runs go hf_ssl, lightly, hf_ssl,
lightly, ... (one pair per layout); medians and [min-max] over the rounds, with the 1-minute load average before
each run (other work on the machine slows both sides; the paired ratios are what to read).
"""

import argparse
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from peer_quality import ROOT, default_peer_python, environment, hf_ssl_command, settings

from hf_ssl.training.arguments import SSLTrainingArguments

LIBRARIES = ("hf_ssl", "lightly")
LAYOUTS = ("contiguous", "channels_last")
GOAL_RATIO, GOAL_STREAMED = 1.3, 0.9
PRELOADED_WARMUP = 3


class _Enough(Exception):
    """Raised by the step hook after the streamed steps: leaves the training loop (its data workers stop)."""


def run_hf_ssl_worker(cfg: dict) -> dict:
    """In a fresh process: the end time of every step of hf_ssl's training loop, streamed then pre-loaded."""
    from hf_ssl.training import parse_args
    from hf_ssl.training.loop import Trainer

    class TimedTrainer(Trainer):
        """The training loop, with the end of each step time-stamped; stops after cfg["steps"]."""

        stamps: list[float]
        starts: list[float]
        last_batch: dict | None = None

        def step(self, batch: dict):
            self.starts.append(time.perf_counter())
            loss = super().step(batch)
            self.stamps.append(time.perf_counter())
            self.last_batch = batch
            if len(self.stamps) == cfg["steps"]:
                raise _Enough
            return loss

    with tempfile.TemporaryDirectory() as output_dir:
        argv = hf_ssl_command(cfg, pathlib.Path(output_dir))[1:] + [
            "--max_steps",
            str(cfg["total_steps"]),
            "--channels_last",
            str(cfg["channels_last"]).lower(),
            "--eval_random_init",
            "false",
            "--eval_pixel_baseline",
            "false",
            "--overwrite_output_dir",
            "true",
        ]
        trainer = TimedTrainer(*parse_args(argv))
        trainer.stamps, trainer.starts = [], []
        try:
            trainer.train()
        except _Enough:
            pass
        gc.collect()  # the loop's DataLoader and its workers go with the exception's frames
        streamed, preloaded = trainer.stamps, []
        for _ in range(cfg["preloaded_steps"]):
            Trainer.step(trainer, trainer.last_batch)
            preloaded.append(time.perf_counter())
    return {"streamed": streamed, "preloaded": preloaded, "starts": trainer.starts}


def images_per_s(stamps: list[float], warmup: int, batch_size: int) -> float:
    """Images/s over the steps after the first `warmup` (stamps: the end time of each step)."""
    return (len(stamps) - warmup) * batch_size / (stamps[-1] - stamps[warmup - 1])


def data_wait(starts: list[float], stamps: list[float], warmup: int) -> float:
    """Share of the timed steps' wall time spent waiting for the next batch (a step's start - the previous end):
    what the data path fails to hide; the rest of the streamed / pre-loaded gap is the CPU its workers take from
    the step."""
    waits = sum(start - end for start, end in zip(starts[warmup:], stamps[warmup - 1 :]))
    return waits / (stamps[-1] - stamps[warmup - 1])


def run_once(library: str, cfg: dict, peer_python: pathlib.Path) -> dict:
    """One fresh process of `library`; its streamed and pre-loaded images/s and the load average before it."""
    load = os.getloadavg()[0]
    if library == "hf_ssl":
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--hf-ssl-worker", json.dumps(cfg)]
        env = {**environment(cfg), "PYTHONPATH": str(ROOT)}
    else:
        command = [str(peer_python), str(ROOT / "bench" / "peer_lightly_speed.py"), "--config", json.dumps(cfg)]
        env = environment(cfg)
    out = subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True).stdout
    stamps = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
    streamed = images_per_s(stamps["streamed"], cfg["warmup_steps"], cfg["batch_size"])
    preloaded = images_per_s(stamps["preloaded"], PRELOADED_WARMUP, cfg["batch_size"])
    wait = data_wait(stamps["starts"], stamps["streamed"], cfg["warmup_steps"])
    return {"streamed": streamed, "preloaded": preloaded, "ratio": streamed / preloaded, "wait": wait, "load": load}


def _summary(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def table(runs: list[dict], hf_default: str) -> str:
    """Per method, library and layout: medians [min-max] over rounds; then the paired hf_ssl / lightly ratios."""
    lines = [
        f"{'method':<7} {'library':<8} {'layout':<14} {'streamed img/s':>17} {'pre-loaded img/s':>17} "
        f"{'streamed/pre-loaded':>20} {'data wait':>16} {'load avg':>13}"
    ]
    lines.append("-" * len(lines[0]))
    methods = dict.fromkeys(run["method"] for run in runs)
    layouts = list(dict.fromkeys(run["layout"] for run in runs))
    for method in methods:
        for layout in layouts:
            for library in LIBRARIES:
                rows = [r for r in runs if (r["method"], r["layout"], r["library"]) == (method, layout, library)]
                lines.append(
                    f"{method:<7} {library:<8} {layout:<14} {_summary([r['streamed'] for r in rows]):>17} "
                    f"{_summary([r['preloaded'] for r in rows]):>17} {_summary([r['ratio'] for r in rows], 2):>20} "
                    f"{_summary([r['wait'] for r in rows], 2):>16} {_summary([r['load'] for r in rows], 1):>13}"
                )
    lines.append("")
    pairs = [(f"same layout, {layout}", layout, layout) for layout in layouts]
    if hf_default != "contiguous" and hf_default in layouts and "contiguous" in layouts:
        pairs.append((f"each library's default (hf_ssl {hf_default}, lightly contiguous)", hf_default, "contiguous"))
    for method in methods:
        for label, hf_layout, peer_layout in pairs:
            ratios = []
            for round_ in sorted({r["round"] for r in runs}):
                (hf,) = [
                    r
                    for r in runs
                    if (r["method"], r["round"], r["library"], r["layout"]) == (method, round_, "hf_ssl", hf_layout)
                ]
                (peer,) = [
                    r
                    for r in runs
                    if (r["method"], r["round"], r["library"], r["layout"]) == (method, round_, "lightly", peer_layout)
                ]
                ratios.append(hf["streamed"] / peer["streamed"])
            lines.append(
                f"{method}: hf_ssl / lightly streamed images/s, {label}: {_summary(ratios, 2)} (goal >= {GOAL_RATIO})"
            )
    lines.append(f"streamed / pre-loaded goal >= {GOAL_STREAMED} (lightly measured 0.67 before)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="simclr", help="comma-separated subset of simclr, moco, byol, swav")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {LAYOUTS}")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of alternating runs")
    parser.add_argument("--steps", type=int, default=60, help="streamed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=20, help="streamed steps not timed (first batches)")
    parser.add_argument("--preloaded-steps", type=int, default=20, help="steps on the pre-loaded batch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--stem", choices=("standard", "cifar"), default="standard")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--peer-python", type=pathlib.Path, default=default_peer_python())
    parser.add_argument("--hf-ssl-worker", help=argparse.SUPPRESS)  # internal: one hf_ssl run, in its own process
    args = parser.parse_args()
    if args.hf_ssl_worker:
        print("RESULT " + json.dumps(run_hf_ssl_worker(json.loads(args.hf_ssl_worker))), flush=True)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    if not layouts or any(layout not in LAYOUTS for layout in layouts):
        raise ValueError(f"--layouts {args.layouts!r}: use a comma-separated subset of {LAYOUTS}")
    if not 1 <= args.warmup_steps < args.steps:
        raise ValueError(f"--warmup-steps must be in [1, --steps), got {args.warmup_steps}")
    if args.preloaded_steps <= PRELOADED_WARMUP:
        raise ValueError(f"--preloaded-steps must be > {PRELOADED_WARMUP}, got {args.preloaded_steps}")
    if not args.peer_python.exists():
        sys.exit(f"--peer-python {args.peer_python} does not exist: see ../shared/peer/README.md")
    if not (args.data / "data").is_dir():
        sys.exit(f"--data {args.data}: no CIFAR-10 parquet folder there (../shared/data/cifar10)")
    # peer_quality's settings for all the train images, one epoch (the schedules' length; the runs stop earlier)
    budget = argparse.Namespace(**vars(args), images=50_000, epochs=1.0)
    hf_default = "channels_last" if SSLTrainingArguments.__dataclass_fields__["channels_last"].default else "contiguous"
    print(
        f"{budget.images} images, batch {args.batch_size}, {args.stem} stem, {args.threads} threads, "
        f"{args.workers} workers, {args.device}; hf_ssl's default layout: {hf_default}; {os.cpu_count()} CPUs",
        flush=True,
    )
    runs = []
    for round_ in range(args.rounds):
        for method in methods:
            for layout in layouts:
                for library in LIBRARIES:
                    cfg = settings(method, budget, args.data, seed=round_)
                    cfg.update(
                        steps=args.steps,
                        warmup_steps=args.warmup_steps,
                        preloaded_steps=args.preloaded_steps,
                        channels_last=layout == "channels_last",
                    )
                    if cfg["total_steps"] < args.steps + args.preloaded_steps:
                        raise ValueError(f"--steps + --preloaded-steps exceed one epoch ({cfg['total_steps']} steps)")
                    result = run_once(library, cfg, args.peer_python)
                    runs.append({"round": round_, "method": method, "layout": layout, "library": library, **result})
                    print(f"round {round_} {method} {library} {layout}: " + json.dumps(result), flush=True)
    print()
    print(table(runs, hf_default))


if __name__ == "__main__":
    main()
