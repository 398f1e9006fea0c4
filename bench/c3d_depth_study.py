"""C3D's temporal-depth study (Tran et al., ICCV 2015, sec. 3.2, Fig. 2) on Moving Imagenette at equal budget.

Trains every setting of the paper's study with the supervised C3D recipe
(`training_args/supervised_c3d_moving_imagenette.yaml`) through the real training loop, each with the same steps,
learning-rate schedule (lr /10 at 1/4, 1/2 and 3/4 of training, as the paper's every 4 of 16 epochs), data and
seeds; only `temporal_kernel_depths` changes:

    depth-1 (2-D convolution per frame), homogeneous 3, 5 and 7, increasing 3-3-5-5-7, decreasing 7-5-5-3-3.

Reports, per setting (mean and std over seeds), the validation video accuracy of the trained classifier (fc8) with
`--eval-clips` evenly spaced clips per video (softmax averaged over them; with one clip: the clip accuracy of the
middle clip) and the training loop's video kNN of fc7 (k=200, train videos as the bank, validation videos as
queries, the same clips), and names the winner. The paper's finding: homogeneous 3x3x3 is best.

    python bench/c3d_depth_study.py --epochs 4 --seeds 0      # minutes per setting on 2 CPU cores
    python bench/c3d_depth_study.py --settings depth-1 depth-3 --seeds 0 1
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
from accelerate import Accelerator

import hf_ssl
from hf_ssl.data import load_stream
from hf_ssl.data.stream import with_stable_ids
from hf_ssl.evaluation import frozen_features
from hf_ssl.models.modeling_ssl import SSLModelOutput
from hf_ssl.training.arguments import load_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = REPO / "training_args" / "supervised_c3d_moving_imagenette.yaml"

# the paper's settings (Fig. 2): one temporal kernel depth per stage, conv1 ... conv5
SETTINGS = {
    "depth-1": [1, 1, 1, 1, 1],
    "depth-3": [3, 3, 3, 3, 3],
    "depth-5": [5, 5, 5, 5, 5],
    "depth-7": [7, 7, 7, 7, 7],
    "increasing": [3, 3, 5, 5, 7],
    "decreasing": [7, 5, 5, 3, 3],
}


class ClassProbabilities(torch.nn.Module):
    """A trained classifier's softmax as `embeddings`, so the evaluation's clip averaging averages predictions."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> SSLModelOutput:
        return SSLModelOutput(embeddings=self.model(pixel_values=pixel_values).logits.softmax(-1))


def classifier_accuracy(output_dir: pathlib.Path, args: argparse.Namespace, recipe: dict) -> float:
    """Validation video accuracy (%) of the checkpoint's trained classifier, softmax averaged over the clips."""
    from transformers import AutoImageProcessor, AutoModelForVideoClassification

    model = AutoModelForVideoClassification.from_pretrained(output_dir)  # the backbone and its trained fc8
    processor = AutoImageProcessor.from_pretrained(output_dir)
    validation, _ = with_stable_ids(load_stream(str(args.data), "validation"))
    probabilities, labels, _ = frozen_features(
        ClassProbabilities(model),
        validation,
        processor,
        Accelerator(cpu=True),
        64,
        video_column="video",
        label_column="label",
        num_clips=args.eval_clips,
        num_frames=recipe["num_frames"],
        frame_stride=recipe["frame_stride"],
        num_workers=args.workers,
        description="validation: classifier",
        progress=False,
    )
    return 100.0 * float((probabilities.argmax(1) == labels).mean())


def train(name: str, seed: int, args: argparse.Namespace, recipe: dict) -> dict:
    output_dir = args.output_dir / f"{name}-seed{seed}"
    started = time.time()
    output = hf_ssl.pretrain(
        RECIPE,
        dataset_name=str(args.data),
        backbone_config={**recipe["backbone_config"], "temporal_kernel_depths": SETTINGS[name]},
        num_train_epochs=args.epochs,
        lr_decay_epochs=[args.epochs / 4, args.epochs / 2, 3 * args.epochs / 4],
        seed=seed,
        eval_num_clips=args.eval_clips,
        eval_random_init=False,
        dataloader_num_workers=args.workers,
        save_steps=0,
        report_to=[],
        disable_tqdm=True,
        output_dir=str(output_dir),
        overwrite_output_dir=True,
        **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
    )
    trained_s = time.time() - started
    knn = output.results.get(protocol="knn", k=200, metric="top1_accuracy", baseline=None).value
    accuracy = classifier_accuracy(output_dir, args, recipe)
    row = {"setting": name, "depths": SETTINGS[name], "seed": seed, "accuracy": accuracy, "knn_top1": knn}
    row |= {"train_s": round(trained_s), "total_s": round(time.time() - started)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=float, default=4.0, help="Training epochs of every setting (the recipe: 16).")
    parser.add_argument("--learning-rate", type=float, default=None, help="Default: the recipe's (the paper's 0.003).")
    parser.add_argument("--eval-clips", type=int, default=1, help="Evenly spaced clips per validation / bank video.")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers.")
    parser.add_argument("--data", type=pathlib.Path, default=REPO.parent / "shared" / "data" / "moving-imagenette")
    parser.add_argument("--output-dir", type=pathlib.Path, default=REPO / "outputs" / "c3d_depth_study")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"needs the Moving Imagenette videofolder at {args.data}")
    recipe = load_recipe(RECIPE)
    rows = [train(name, seed, args, recipe) for seed in args.seeds for name in args.settings]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "summary.json").write_text(json.dumps(rows, indent=1))

    print(f"\nC3D depth study: supervised, {args.epochs} epochs each, seeds {args.seeds}, {args.eval_clips} clip(s)")
    print("| setting | depths | val. accuracy (fc8) | video kNN top-1 (fc7, k=200) |")
    print("|---|---|---|---|")
    means = {}
    for name in args.settings:
        mine = [row for row in rows if row["setting"] == name]
        cells = []
        for key in ("accuracy", "knn_top1"):
            values = [row[key] for row in mine]
            std = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.2f}{std}")
        means[name] = statistics.mean(row["accuracy"] for row in mine)
        print(f"| {name} | {'-'.join(map(str, SETTINGS[name]))} | {cells[0]} | {cells[1]} |")
    best = max(means, key=means.get)
    verdict = "as the paper" if best == "depth-3" else "not the paper's depth-3"
    print(f"\nbest by validation accuracy: {best} ({means[best]:.2f}), {verdict}")


if __name__ == "__main__":
    main()
