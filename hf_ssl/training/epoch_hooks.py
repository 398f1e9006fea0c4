"""Work the clustering methods do between epochs, which needs faiss and the data and so lives outside the model
files (those load as remote code with torch and transformers only).

`epoch_hook(method).on_epoch_start(context)` runs on every process before the epoch's first batch, once per epoch
(also across a resume), and returns an `EpochPlan`: metrics to log, the epoch's sampling weights, parameters whose
optimizer state to forget. The loop applies the plan. A hook reads and writes only the model's training state and
what its `EpochContext` hands it, so a resumed run continues exactly.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from ..clustering import kmeans_across_processes, kmeans_many
from ..data import uniform_cluster_weights
from ..distributed import run_on_main
from ..models import METHODS


@dataclass
class EpochContext:
    """What a hook may use at the start of `epoch`."""

    model: torch.nn.Module  # the method's ForPreTraining model, unwrapped (no DDP)
    # (features, labels or -1, ids) of the whole training set through a module (eval preprocessing, eval mode),
    # in id order, on the main process; None on the others (every process must call it: each extracts its share)
    train_features: Callable[[torch.nn.Module], tuple[np.ndarray, np.ndarray, np.ndarray] | None]
    seed: int
    epoch: int


@dataclass
class EpochPlan:
    """What the loop does with a hook's work: log `metrics`, sample the epoch with `sample_weights` (one per
    example id; None: every example once) and forget the optimizer state of `reset_parameters`."""

    metrics: dict[str, float] = field(default_factory=dict)
    sample_weights: np.ndarray | None = None
    reset_parameters: list[torch.nn.Parameter] = field(default_factory=list)


class EpochHook:
    """Nothing to do between epochs (the default for methods without a hook)."""

    def on_epoch_start(self, context: EpochContext) -> EpochPlan:
        return EpochPlan()


class DeepClusterHook(EpochHook):
    """Features of the whole training set (centre crops, eval mode; the base model's `embeddings`, fc7 before its
    ReLU for AlexNet/VGG) -> PCA-whitening -> k-means -> pseudo-labels, a fresh classifier whose optimizer state
    is cleared, and uniform sampling over the new clusters."""

    def on_epoch_start(self, context: EpochContext) -> EpochPlan:
        model, epoch = context.model, context.epoch
        config = model.config
        started = time.perf_counter()
        extracted = context.train_features(model.base_model)  # on the main process only
        feature_seconds = time.perf_counter() - started
        previous = model.pseudo_labels.cpu().numpy().copy()  # .numpy() of a CPU tensor shares its memory

        def cluster() -> tuple[np.ndarray, dict[str, float]]:
            """On the main process: k-means, the pseudo-labels of every example id, the metrics."""
            features, true_labels, ids = extracted
            started = time.perf_counter()
            (result,) = kmeans_many(
                features,
                [config.num_clusters],
                seed=context.seed + epoch,
                niter=config.kmeans_iterations,
                pca_dim=config.pca_dim,
            )
            metrics = {
                "empty_clusters": float(result.empty_clusters),
                "feature_seconds": feature_seconds,
                "clustering_seconds": time.perf_counter() - started,
            }
            pseudo_labels = np.full(config.num_examples, -1, dtype=np.int64)
            pseudo_labels[ids] = result.labels  # examples without features (corrupt images) keep -1, not sampled
            if (true_labels >= 0).all():
                metrics["nmi_true_labels"] = normalized_mutual_info_score(true_labels, result.labels)
            both = previous[ids] >= 0
            if both.any():  # the paper's reassignment curve: NMI between consecutive clusterings
                metrics["nmi_previous_epoch"] = normalized_mutual_info_score(previous[ids][both], result.labels[both])
            return pseudo_labels, metrics

        # faiss runs once; every process gets the same pseudo-labels (num_examples int64) and metrics
        pseudo_labels, metrics = run_on_main(cluster)
        model.set_pseudo_labels(torch.from_numpy(pseudo_labels).to(model.pseudo_labels.device))
        model.reset_classifier(seed=context.seed + epoch)
        return EpochPlan(
            metrics,
            sample_weights=uniform_cluster_weights(pseudo_labels) if config.uniform_sampling else None,
            reset_parameters=list(model.classifier.parameters()),
        )


class LocalAggregationHook(EpochHook):
    """After the Instance Recognition warm start, H k-means clusterings of the memory bank every epoch."""

    def on_epoch_start(self, context: EpochContext) -> EpochPlan:
        model, epoch = context.model, context.epoch
        config = model.config
        if epoch < config.instance_recognition_epochs:
            return EpochPlan()
        started = time.perf_counter()
        labels, empty = kmeans_across_processes(
            model.memory_bank.vectors,
            [config.num_clusters] * config.num_clusterings,
            seed=context.seed + epoch * config.num_clusterings,
            niter=config.kmeans_iterations,
        )
        model.set_cluster_labels(torch.from_numpy(labels).to(model.cluster_labels.device))
        return EpochPlan({"empty_clusters": float(sum(empty)), "clustering_seconds": time.perf_counter() - started})


def epoch_hook(method: str) -> EpochHook:
    """The hook of this module that the method's row in the method table names, or the do-nothing one."""
    name = METHODS[method].epoch_hook
    return globals()[name]() if name else EpochHook()
