"""Where a DeepCluster epoch goes: re-clustering (features of the whole training set, PCA-whitening + k-means)
against the training steps, measured side by side in one real run of the training loop.

One epoch of `training_args/deep_cluster_resnet18_cifar10.yaml` with the small ResNet of
bench/clustering_methods_proof.py on the full CIFAR-10 (../shared/data; the shipped 5k sample otherwise).
Goal: PCA + k-means <= 10 % of the epoch at CIFAR-10 scale.

    python bench/deep_cluster_epoch.py
    python bench/deep_cluster_epoch.py --num-clusters 1000 --dataset data/cifar10-sample
"""

import argparse
import json
import pathlib
import tempfile
import time

from clustering_methods_proof import BACKBONE, REPO

from hf_ssl.training import parse_args
from hf_ssl.training.loop import Trainer

GOAL = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = REPO.parent / "shared" / "data" / "cifar10"
    parser.add_argument("--dataset", default=str(shared if shared.is_dir() else REPO / "data" / "cifar10-sample"))
    parser.add_argument("--num-clusters", type=int, default=100)
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as output_dir:
        model_args, data_args, training_args = parse_args(
            [
                str(REPO / "training_args" / "deep_cluster_resnet18_cifar10.yaml"),
                "--backbone_config",
                json.dumps(BACKBONE),
                "--method_config",
                json.dumps({"num_clusters": args.num_clusters, "pca_dim": args.pca_dim}),
                "--dataset_name",
                args.dataset,
                "--num_train_epochs",
                "1",
                "--per_device_train_batch_size",
                str(args.batch_size),
                "--dataloader_num_workers",
                str(args.workers),
                "--save_steps",
                "0",
                "--report_to",
                "none",
                "--disable_tqdm",
                "true",
                "--output_dir",
                output_dir,
            ]
        )
        data_args.label_column = None  # no kNN evaluation: only the epoch is timed
        trainer = Trainer(model_args, data_args, training_args)
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    hook = next(r for r in trainer.history if "clustering_seconds" in r)
    features, clustering = hook["feature_seconds"], hook["clustering_seconds"]
    training = total - features - clustering

    print(
        f"DeepCluster epoch: {trainer.run.num_examples} images ({pathlib.Path(args.dataset).name}), "
        f"{trainer.run.steps_per_epoch} steps of {args.batch_size}, k={args.num_clusters}, PCA {args.pca_dim}"
    )
    for label, seconds in (
        ("features of the training set (eval pass)", features),
        ("PCA-whitening + k-means (faiss)", clustering),
        ("training steps (incl. data, save)", training),
        ("epoch", total),
    ):
        print(f"{label:44s} {seconds:8.1f} s  {100 * seconds / total:5.1f} %")
    share = clustering / total
    print(
        f"re-clustering share (PCA + k-means) = {share:.3f}   goal <= {GOAL:.2f}: {'ok' if share <= GOAL else 'over'}"
    )
    print(f"with the feature pass = {(features + clustering) / total:.3f}")


if __name__ == "__main__":
    main()
