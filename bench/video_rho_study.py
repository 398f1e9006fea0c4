"""Rho clips per video and their timespan (Feichtenhofer et al., CVPR 2021), with error bars, on real video.

The paper's two claims: more clips per video as positives help (rho 4 > 2 > 1; rho=1 is two augmentations of one
clip), and a longer timespan between the positive clips helps. Each configuration trains through the real training
loop (`accelerate launch --cpu train.py training_args/<method>_r3d_moving_imagenette.yaml`, the recipe's small 3D
ResNet, clips of 4 frames at stride 4, 32 px) once per seed on each dataset, then scores video kNN (train videos as
the bank, validation videos as queries, `--eval-clips` clips per video averaged). Printed per dataset: top-1 mean
+- standard deviation over the seeds, the per-seed values, and the random init of the same seeds.

    python bench/video_rho_study.py                       # both datasets, rho 1/2/4 x timespans, 3 seeds (CPU: hours)
    python bench/video_rho_study.py --datasets clips-2cls:30:8 --seeds 0      # one dataset, one seed
    python bench/video_rho_study.py --rhos 1,2 --timespans any --datasets moving-imagenette:8:32 --seeds 0 --knn-k 200
                                                          # the earlier one-seed proof: rho=2 vs rho=1 at 8 epochs

Configurations: rho=1 (one clip, two augmentations: no timespan), and rho = 2 and 4 with the clips' starts
anywhere in the video (`max_clip_distance: null`, up to ~5 s apart on these 6.4 s videos) or within a short window
(`--short-distance` frames, default 8 = 0.8 s at 10 fps, so the clips overlap). rho=4 trains 4 views per video
(`method_config.num_views: 4`, consecutive clip pairs as SlowFast's SimCLR), rho 1 and 2 two views: equal epochs
(the paper's comparison), so rho=4 costs about twice the compute. `--datasets` takes name:epochs:batch items (batch: videos per
step; the recipe's 32 is more than clips-2cls's 49 videos give each of 2 data workers), each a videofolder under
`--data-root` (Moving Imagenette: 2,600 train / 1,000 validation videos of 10 classes;
clips-2cls: 49 train / 15 validation phone clips of 2 classes, so one query is 6.7 points there).
Finished runs are kept (their eval results file); a rerun with the same output directory resumes.
"""

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np

from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.run_layout import TRAINING_RESULTS_FILE
from hf_ssl.training.arguments import load_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Config:
    rho: int
    timespan: str  # "any" or "short"; rho=1 has none

    @property
    def name(self) -> str:
        return "rho=1" if self.rho == 1 else f"rho={self.rho} {self.timespan}"


def configs(rhos: list[int], timespans: list[str]) -> list[Config]:
    return [
        Config(1, "none") if rho == 1 else Config(rho, span)
        for rho in rhos
        for span in (timespans if rho > 1 else [None])
    ]


def run(
    config: Config, dataset: str, budget: tuple[float, int], seed: int, random_init: bool, args: argparse.Namespace
) -> EvaluationResults:
    recipe = REPO / "training_args" / f"{args.method}_r3d_moving_imagenette.yaml"
    output = args.output_dir / dataset / config.name.replace("=", "").replace(" ", "_") / f"seed{seed}"
    if (output / TRAINING_RESULTS_FILE).is_file():
        return EvaluationResults.load(output / TRAINING_RESULTS_FILE)
    method_config = load_recipe(recipe)["method_config"] | {"num_views": max(2, config.rho)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "train.py", str(recipe),
        "--dataset_name", str(args.data_root / dataset),
        "--method_config", json.dumps(method_config),
        "--num_clips", str(config.rho),
        "--num_train_epochs", str(budget[0]),
        "--per_device_train_batch_size", str(budget[1]),
        "--seed", str(seed),
        "--eval_num_clips", str(args.eval_clips),
        "--knn_k", *[str(k) for k in args.knn_k],
        "--output_dir", str(output),
        "--overwrite_output_dir", "True",  # only an unfinished run of this bench is there (a finished one returned)
        "--report_to", "none",
        "--disable_tqdm", "True",
        "--save_steps", "0",
        "--eval_random_init", str(random_init),
    ]  # fmt: skip
    if config.timespan == "short":
        command += ["--max_clip_distance", str(args.short_distance)]
    print(f"=== {dataset} {config.name} seed {seed}: {' '.join(command[3:])}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return EvaluationResults.load(output / TRAINING_RESULTS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["moco", "simclr", "byol", "swav"], default="simclr")
    parser.add_argument(
        "--datasets", default="moving-imagenette:3:32,clips-2cls:30:8", help="name:epochs:batch, comma-separated"
    )
    parser.add_argument("--rhos", default="1,2,4")
    parser.add_argument("--timespans", default="any,short", help="for rho > 1: any and/or short")
    parser.add_argument("--short-distance", type=int, default=8, help="frames between the clips' starts at most")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-clips", type=int, default=4)
    parser.add_argument("--knn-k", type=int, nargs="+", default=[20], help="the first is reported")
    parser.add_argument("--data-root", type=pathlib.Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output-dir", type=pathlib.Path, default=REPO / "outputs" / "video_rho_study")
    args = parser.parse_args()
    try:
        datasets = {
            name: (float(epochs), int(batch))
            for name, epochs, batch in (item.split(":") for item in args.datasets.split(","))
        }
    except ValueError:
        sys.exit(f"--datasets {args.datasets!r}: use name:epochs:batch items, e.g. clips-2cls:30:8")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    timespans = args.timespans.split(",")
    if not set(timespans) <= {"any", "short"}:
        sys.exit(f"--timespans {args.timespans!r}: use any and/or short")
    for name in datasets:
        if not (args.data_root / name).is_dir():
            sys.exit(f"--datasets: no videofolder {args.data_root / name}")
    grid = configs([int(rho) for rho in args.rhos.split(",")], timespans)
    k = args.knn_k[0]

    def top1(scores: EvaluationResults, baseline: str | None = None) -> float:
        return scores.get(protocol="knn", k=k, metric="top1_accuracy", baseline=baseline).value

    summary = {}
    for dataset, budget in datasets.items():
        rows: dict[str, list[float]] = {}
        for seed in seeds:
            for i, config in enumerate(grid):
                scores = run(config, dataset, budget, seed, random_init=i == 0, args=args)
                rows.setdefault(config.name, []).append(top1(scores))
                if i == 0:
                    rows.setdefault("random init", []).append(top1(scores, "random_init"))
        summary[dataset] = {"epochs": budget[0], "batch": budget[1], "top1": rows}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "summary.json").write_text(
        json.dumps(
            {
                "settings": vars(args) | {"data_root": str(args.data_root), "output_dir": str(args.output_dir)},
                "results": summary,
            },
            indent=1,
        )
    )

    print(f"\n{args.method}, video kNN top-1 (k={k}, {args.eval_clips} clips per video averaged), seeds {seeds}")
    for dataset, result in summary.items():
        print(f"\n{dataset}, {result['epochs']:g} epochs of batch {result['batch']} per run")
        print(f"{'configuration':<18}{'mean':>7}{'std':>7}   per seed")
        for name, values in result["top1"].items():
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            print(f"{name:<18}{np.mean(values):>7.2f}{std:>7.2f}   {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
