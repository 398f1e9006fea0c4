"""Proof on real video: rho clips of one video as positives (Feichtenhofer et al., CVPR 2021) on Moving Imagenette.

Trains the same method, backbone and budget twice through the real training loop (`accelerate launch --cpu
train.py training_args/<method>_r3d_moving_imagenette.yaml`): rho=2 (the two views are two clips of the video)
and rho=1 (both views augment one clip), and reports video kNN top-1/top-5 (4 clips per video, features
averaged; train videos as the bank, validation videos as queries) next to the random init.

    python bench/video_rho_proof.py                                  # SimCLR, 8 epochs each: ~25 min on 2 CPU cores
    python bench/video_rho_proof.py --method byol --epochs 4 --output-dir outputs/video_rho_byol

Claims checked (PASS/FAIL): both runs beat the random init; rho=2 beats rho=1.
"""

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys

from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.run_layout import TRAINING_RESULTS_FILE

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(method: str, clips: int, args: argparse.Namespace) -> dict:
    output = args.output_dir / f"rho{clips}"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "train.py",
        f"training_args/{method}_r3d_moving_imagenette.yaml",
        "--dataset_name",
        str(args.data),
        "--num_clips",
        str(clips),
        "--num_train_epochs",
        str(args.epochs),
        "--output_dir",
        str(output),
        "--report_to",
        "none",
        "--disable_tqdm",
        "True",
        "--save_steps",
        "0",
        "--eval_random_init",
        "True",
    ]
    print(f"=== rho={clips}: {' '.join(command[3:])}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return EvaluationResults.load(output / TRAINING_RESULTS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["moco", "simclr", "byol", "swav"], default="simclr")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "moving-imagenette")
    parser.add_argument("--output-dir", type=pathlib.Path, default=REPO / "outputs" / "video_rho_proof")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"needs the Moving Imagenette videofolder at {args.data}")
    results = {clips: run(args.method, clips, args) for clips in (2, 1)}
    (args.output_dir / "summary.json").write_text(
        json.dumps({f"rho{k}": dataclasses.asdict(v) for k, v in results.items()}, indent=1)
    )

    print(f"\n{args.method}, {args.epochs} epochs each, video kNN (k=200; 4 clips per video averaged)")
    print(f"{'model':<14}{'top-1':>8}{'top-5':>8}")
    rows = [("random init", results[2], "random_init")] + [(f"rho={k}", results[k], None) for k in (2, 1)]

    def knn(scores: EvaluationResults, baseline: str | None, metric: str) -> float:
        return scores.get(protocol="knn", k=200, metric=metric, baseline=baseline).value

    for name, scores, baseline in rows:
        print(f"{name:<14}{knn(scores, baseline, 'top1_accuracy'):>8.2f}{knn(scores, baseline, 'top5_accuracy'):>8.2f}")
    top1 = {name: knn(scores, baseline, "top1_accuracy") for name, scores, baseline in rows}
    for name in ("rho=2", "rho=1"):
        print(
            f"{'PASS' if top1[name] > top1['random init'] else 'FAIL'}: {name} {top1[name]:.2f} > random init {top1['random init']:.2f}"
        )
    print(
        f"{'PASS' if top1['rho=2'] > top1['rho=1'] else 'FAIL'}: rho=2 {top1['rho=2']:.2f} > rho=1 {top1['rho=1']:.2f}"
    )


if __name__ == "__main__":
    main()
