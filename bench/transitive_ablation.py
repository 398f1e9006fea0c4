"""The ablation of Wang, He & Gupta (ICCV 2017, Table 1) at a small budget: one graph of transitive invariance,
then the same network trained at an equal budget (steps x batch) on intra-instance pairs only, inter-instance pairs
only, their union without transitivity, and every pair (transitive ones included), each judged by the weighted kNN
on Imagenette-160 (bank: train images, queries: the validation images) beside the same network at random init.

1. The context model the inter-instance edges come from (the paper: Doersch et al.'s relative position): hf_ssl's
   `multi_task` with `{relative_position: 1}` on Imagenette-160 (`multi_task_alexnet_imagenette.yaml` at a small
   budget), unless `--feature-model` names a checkpoint.
2. The graph (`hf_ssl.transitive.build_pair_dataset`): tracks in moving-imagenette and clips-2cls, patches of
   Imagenette-160 train images, 4-cliques of 10-NN, transitivity; its statistics are printed.
3. The four variants (`transitive_invariance_vgg16_imagenette.yaml`, `pair_kinds` per variant).

    python bench/transitive_ablation.py                                   # about 45 minutes on 2 busy CPU cores
    python bench/transitive_ablation.py --steps 400 --max-videos 1000 --max-images 5000
"""

import argparse
import json
import pathlib
import time

import hf_ssl
from hf_ssl.transitive import TransitiveGraphArguments, build_pair_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VARIANTS = {  # the paper's Table 1 rows: pair_kinds of each
    "intra-instance only": ["intra"],
    "inter-instance only": ["inter"],
    "union, no transitivity": ["intra", "inter"],
    "transitive (all pairs)": ["intra", "inter", "transitive"],
}


def context_model(args: argparse.Namespace) -> str:
    """A relative-position model (Doersch et al. 2015) trained for `--context-steps`: the inter edges' features."""
    output = args.output_dir / "context_model"
    if (output / "config.json").is_file():
        return str(output)
    hf_ssl.pretrain(
        "multi_task_alexnet_imagenette",
        dataset_name=str(SHARED / "imagenette-160"),
        backbone_config={"model_type": "alexnet", "sobel": False, "width_multiplier": 0.5, "fc_dim": 2048},
        method_config={"task_weights": {"relative_position": 1.0}, "head_hidden_dim": 512},
        image_size=96,
        max_steps=args.context_steps,
        per_device_train_batch_size=64,
        dataloader_num_workers=1,
        eval_pixel_baseline=False,
        max_eval_bank_samples=2000,
        save_steps=10_000,
        report_to="none",
        disable_tqdm=True,
        output_dir=str(output),
        overwrite_output_dir=True,
    )
    return str(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=pathlib.Path, default=REPO / "outputs" / "transitive_ablation")
    parser.add_argument("--feature-model", help="an hf_ssl checkpoint for the inter edges (default: train one)")
    parser.add_argument("--context-steps", type=int, default=150, help="steps of the relative-position model")
    parser.add_argument("--max-videos", type=int, default=200, help="videos per video dataset in the graph")
    parser.add_argument("--max-images", type=int, default=1500, help="Imagenette-160 train images in the graph")
    parser.add_argument("--steps", type=int, default=100, help="training steps of every variant")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step")
    parser.add_argument("--image-size", type=int, default=48, help="side of the training patches and the kNN images")
    parser.add_argument(
        "--hard-negative-ratio",
        type=float,
        default=0.0,
        help="share of the 4 negatives that are the hardest (1: the recipe's hard mining, which collapsed every "
        "embedding onto one point at this budget; 0: random negatives, the paper's first epochs)",
    )
    parser.add_argument("--bank-size", type=int, default=4000, help="kNN bank: this many Imagenette train images")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    pairs = args.output_dir / "pairs"
    if not (pairs / "graph_stats.json").is_file():
        graph = TransitiveGraphArguments(
            video_datasets=[str(SHARED / "moving-imagenette"), str(SHARED / "clips-2cls")],
            image_dataset=str(SHARED / "imagenette-160"),
            feature_model=args.feature_model or context_model(args),
            max_videos=args.max_videos,
            max_images=args.max_images,
            overwrite=True,
        )
        build_pair_dataset(graph, pairs)
    stats = json.loads((pairs / "graph_stats.json").read_text())
    print(f"graph ({time.time() - started:.0f} s so far):", json.dumps({k: stats[k] for k in ("nodes", "edges")}))
    print("clique purity:", stats["clique_purity"], "pair purity:", stats["pair_purity"])

    rows = {}
    for index, name in enumerate(args.variants):
        start = time.time()
        output = hf_ssl.pretrain(
            "transitive_invariance_vgg16_imagenette",
            dataset_name=str(pairs),
            eval_dataset_name=str(SHARED / "imagenette-160"),
            pair_kinds=VARIANTS[name],
            method_config={
                "embedding_dim": 256,
                "margin": 0.5,
                "num_negatives": 4,
                "hard_negative_ratio": args.hard_negative_ratio,
            },
            image_size=args.image_size,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            max_eval_bank_samples=args.bank_size,
            dataloader_num_workers=1,
            eval_epochs=0,
            eval_random_init=index == 0,  # the same network untrained, measured once
            eval_pixel_baseline=index == 0,
            save_steps=10_000,
            logging_steps=10,
            report_to="none",
            disable_tqdm=True,
            output_dir=str(args.output_dir / f"{name.split()[0].strip(',')}-hard{args.hard_negative_ratio:g}"),
            overwrite_output_dir=True,
        )
        results = output.results
        if index == 0:
            for baseline in ("random_init", "pixels"):
                rows[baseline.replace("_", " ")] = [
                    results.get(protocol="knn", k=k, metric="top1_accuracy", baseline=baseline).value for k in (200, 20)
                ]
        rows[name] = [results.get(protocol="knn", k=k, metric="top1_accuracy").value for k in (200, 20)]
        print(f"{name}: kNN top-1 k=200 / 20 = {rows[name][0]:.1f} / {rows[name][1]:.1f} ({time.time() - start:.0f} s)")

    print(
        f"\n{args.steps} steps x {args.batch_size} pairs at {args.image_size} px per variant, hard negative ratio "
        f"{args.hard_negative_ratio}; kNN on Imagenette-160 "
        f"({args.bank_size} train images as the bank, the 3,925 validation images as queries); "
        f"{time.time() - started:.0f} s in all\n"
    )
    print("| model | pairs | kNN top-1 k=200 | k=20 |\n|---|---|---|---|")
    for name, (k200, k20) in rows.items():
        count = sum(stats["edges"][kind] for kind in VARIANTS.get(name, []))
        print(f"| {name} | {count or '-'} | {k200:.1f} | {k20:.1f} |")
    (args.output_dir / "ablation.json").write_text(
        json.dumps({"rows": rows, "args": vars(args)}, default=str, indent=2)
    )


if __name__ == "__main__":
    main()
