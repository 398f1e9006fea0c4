"""Per-layer linear probes of the pretext-task methods beside DeepCluster and random init, same data and budget.

Each method trains through the real loop (`accelerate launch --cpu train.py` with a recipe and overrides) with the
quickstart's small ResNet on the shipped CIFAR-10 sample (5,000 train / 1,000 test, 32 px); then
`hf-ssl evaluate --protocols layers,knn` probes every stage (stem, stage1..4: the DeepCluster Table 1 protocol,
each layer average-pooled to ~9.6k features) and the random-init network gets the same probes.

    python bench/pretext_layers_proof.py                     # 10 epochs each: ~30 minutes on 2 CPU cores
    python bench/pretext_layers_proof.py --epochs 3 --methods jigsaw deep_cluster
    # conv1..conv5 of DeepCluster's AlexNet (width 1/4) on Imagenette-160 at 96 px, 2,000 / 1,000 probe images:
    python bench/pretext_layers_proof.py --alexnet --epochs 3 --output-dir outputs/pretext_layers_alexnet
"""

import argparse
import json
import pathlib
import subprocess
import sys

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "cifar10-sample"
RESNET = {
    "model_type": "resnet",
    "layer_type": "basic",
    "depths": [1, 1, 1, 1],
    "hidden_sizes": [16, 32, 64, 128],
    "embedding_size": 16,
    "cifar_stem": True,
}
ALEXNET = {"model_type": "alexnet", "width_multiplier": 0.25, "fc_dim": 512}
IMAGENETTE = REPO.parent / "shared" / "data" / "imagenette-160"
RUNS = {  # method: (recipe, method_config, learning rate)
    "jigsaw": (
        "jigsaw_alexnet_imagenette",
        {"num_permutations": 100, "tile_feature_dim": 128, "classifier_hidden_dim": 512},
        0.05,
    ),
    "counting": ("counting_alexnet_imagenette", {"counting_dim": 256, "margin": 10.0}, 1e-4),  # Adam (recipe): paper lr
    "multi_task": ("multi_task_alexnet_imagenette", {"head_hidden_dim": 256}, 0.05),
    "deep_cluster": ("deep_cluster_resnet18_cifar10", {"num_clusters": 100, "pca_dim": 64}, 0.05),
}


def train(method: str, args: argparse.Namespace) -> pathlib.Path:
    recipe, method_config, lr = RUNS[method]
    output = args.output_dir / method
    overrides = {
        "backbone_config": args.backbone,
        "method_config": method_config,
        "dataset_name": str(args.dataset),
        "eval_split": args.eval_split,
        "image_size": args.image_size,
        "num_train_epochs": args.epochs,
        "learning_rate": lr,
        **({"max_eval_bank_samples": 2000} if args.alexnet else {}),
        "per_device_train_batch_size": 128,
        "shuffle_buffer": 5000,
        "dataloader_num_workers": 2,
        "save_steps": 0,
        "eval_epochs": 0,
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(output),
        "lr_scheduler_type": "cosine" if method != "deep_cluster" else "constant",
        "knn_k": [200],
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "train.py", f"training_args/{recipe}.yaml"]
    for key, value in overrides.items():
        values = (
            [str(v) for v in value]
            if isinstance(value, list)
            else [json.dumps(value) if isinstance(value, dict) else str(value)]
        )
        command += [f"--{key}", *values]
    print(f"=== {method}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return output


def random_init(args: argparse.Namespace) -> pathlib.Path:
    """The same network, untrained, saved as a checkpoint (a DeepCluster feature model: the backbone alone)."""
    from hf_ssl.data import make_image_processor
    from hf_ssl.models import DeepClusterConfig, DeepClusterModel

    output = args.output_dir / "random_init"
    torch.manual_seed(0)
    DeepClusterModel(DeepClusterConfig(backbone_config=args.backbone)).save_pretrained(output)
    make_image_processor(args.image_size).save_pretrained(output)
    return output


def probe(checkpoint: pathlib.Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        "-m",
        "hf_ssl.cli",
        "evaluate",
        "--model",
        str(checkpoint),
        "--dataset_name",
        str(args.dataset),
        "--eval_split",
        args.eval_split,
        *(["--max_train_samples", "2000", "--max_eval_samples", "1000"] if args.alexnet else []),
        "--protocols",
        "layers,knn",
        "--knn_k",
        "200",
        "--disable_tqdm",
        "True",
        "--output_file",
        str(checkpoint / "evaluation_results.json"),
    ]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    scores = json.loads((checkpoint / "evaluation_results.json").read_text())["scores"]
    top1 = {s["layer"] or "kNN": s["value"] for s in scores if s["metric"] == "top1_accuracy"}
    return top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--methods", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--output-dir", type=pathlib.Path, default=REPO / "outputs" / "pretext_layers")
    parser.add_argument("--alexnet", action="store_true", help="AlexNet (conv1..conv5) on Imagenette-160 at 96 px")
    args = parser.parse_args()
    if args.alexnet:
        args.backbone, args.dataset, args.eval_split, args.image_size = ALEXNET, IMAGENETTE, "validation", 96
    else:
        args.backbone, args.dataset, args.eval_split, args.image_size = RESNET, SAMPLE, "test", 32
    rows = {"random init": probe(random_init(args), args)}
    for method in args.methods:
        rows[method] = probe(train(method, args), args)
    (args.output_dir / "summary.json").write_text(json.dumps(rows, indent=1))
    columns = list(rows["random init"])
    print(
        f"\nlinear probe top-1 per layer ({args.dataset.name}, {args.epochs} epochs each; kNN k=200 on the embedding)"
    )
    print(f"{'model':<14}" + "".join(f"{c:>9}" for c in columns))
    for name, top1 in rows.items():
        print(f"{name:<14}" + "".join(f"{top1[c]:>9.1f}" for c in columns))


if __name__ == "__main__":
    main()
