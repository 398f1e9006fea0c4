"""Work the clustering methods do between epochs, which needs faiss and the data and so lives outside the model
files (those load as remote code with torch and transformers only).

`epoch_hook(method).on_epoch_start(trainer, epoch)` runs on every process before the epoch's first batch and
returns metrics to log; `sample_weights(model)` tells the training stream how to sample the epoch (None: every
example once). Both read and write only the model's training state, so a resumed run continues exactly.
"""

import time

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from ..clustering import kmeans_across_processes
from ..data import uniform_cluster_weights
from ..models import METHODS


class EpochHook:
    """Nothing to do between epochs (the default for methods without a hook)."""

    resamples = False  # True: each epoch is sampled with new weights, so the data workers restart per epoch

    def on_epoch_start(self, trainer, epoch: int) -> dict[str, float]:
        return {}

    def sample_weights(self, model: torch.nn.Module) -> np.ndarray | None:
        return None


class DeepClusterHook(EpochHook):
    """Features of the whole training set (centre crops, eval mode; the base model's `embeddings`, fc7 before its
    ReLU for AlexNet/VGG) -> PCA-whitening -> k-means -> pseudo-labels, a fresh classifier whose optimizer state
    is cleared, and uniform sampling over the new clusters."""

    resamples = True

    def on_epoch_start(self, trainer, epoch: int) -> dict[str, float]:
        model = trainer.unwrapped_model
        config = model.config
        started = time.perf_counter()
        features, true_labels, ids = trainer.features(model.base_model, trainer.train_data, f"epoch {epoch}: features")
        feature_seconds = time.perf_counter() - started
        started = time.perf_counter()
        labels, empty = kmeans_across_processes(
            features, [config.num_clusters], seed=trainer.args.seed + epoch, niter=config.kmeans_iterations,
            pca_dim=config.pca_dim,
        )
        clustering_seconds = time.perf_counter() - started

        pseudo_labels = np.full(config.num_examples, -1, dtype=np.int64)
        pseudo_labels[ids] = labels[0]  # examples without features (corrupt images) keep -1 and are not sampled
        previous = model.pseudo_labels.cpu().numpy().copy()  # .numpy() of a CPU tensor shares its memory
        model.set_pseudo_labels(torch.from_numpy(pseudo_labels).to(model.pseudo_labels.device))
        model.reset_classifier(seed=trainer.args.seed + epoch)
        trainer.reset_optimizer_state(model.classifier.parameters())

        metrics = {
            "empty_clusters": float(empty[0]),
            "feature_seconds": feature_seconds,
            "clustering_seconds": clustering_seconds,
        }
        if (true_labels >= 0).all():
            metrics["nmi_true_labels"] = normalized_mutual_info_score(true_labels, labels[0])
        both = previous[ids] >= 0
        if both.any():  # the paper's reassignment curve: NMI between consecutive clusterings
            metrics["nmi_previous_epoch"] = normalized_mutual_info_score(previous[ids][both], labels[0][both])
        return metrics

    def sample_weights(self, model: torch.nn.Module) -> np.ndarray | None:
        if not model.config.uniform_sampling:
            return None
        return uniform_cluster_weights(model.pseudo_labels.cpu().numpy())


class LocalAggregationHook(EpochHook):
    """After the Instance Recognition warm start, H k-means clusterings of the memory bank every epoch."""

    def on_epoch_start(self, trainer, epoch: int) -> dict[str, float]:
        model = trainer.unwrapped_model
        config = model.config
        if epoch < config.instance_recognition_epochs:
            return {}
        started = time.perf_counter()
        labels, empty = kmeans_across_processes(
            model.memory_bank.vectors, [config.num_clusters] * config.num_clusterings,
            seed=trainer.args.seed + epoch * config.num_clusterings, niter=config.kmeans_iterations,
        )
        model.set_cluster_labels(torch.from_numpy(labels).to(model.cluster_labels.device))
        return {"empty_clusters": float(sum(empty)), "clustering_seconds": time.perf_counter() - started}


def epoch_hook(method: str) -> EpochHook:
    """The hook of this module that the method's row in the method table names, or the do-nothing one."""
    name = METHODS[method].epoch_hook
    return globals()[name]() if name else EpochHook()
