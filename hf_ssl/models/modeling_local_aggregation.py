"""Local Aggregation (Zhuang, Zhai, Yamins, ICCV 2019): Instance Recognition's embedding and memory bank, trained
to pull together an example's close neighbours (shared k-means clusters) among its background neighbours (nearest
bank entries)."""

import torch
from torch import nn

from .configuration_local_aggregation import LocalAggregationConfig
from .modeling_instance_recognition import (
    InstanceRecognitionBackbone,
    InstanceRecognitionForImageClassification,
    InstanceRecognitionForPreTraining,
    InstanceRecognitionForVideoClassification,
    InstanceRecognitionModel,
)


class LocalAggregationModel(InstanceRecognitionModel):
    """Backbone + linear projection to the L2-normalised embedding: what `AutoModel` loads for features."""

    config: LocalAggregationConfig
    config_class = LocalAggregationConfig
    base_model_prefix = "local_aggregation"


class LocalAggregationForPreTraining(InstanceRecognitionForPreTraining):
    """The LA training model: Instance Recognition's plus `cluster_labels` (H, N), the k-means clusters of the
    memory bank that the training loop computes at each epoch start (`set_cluster_labels`).

    Until the first clustering (the warm start) the loss is Instance Recognition's; afterwards it is the LA loss
    over the exact non-parametric softmax: -log(sum_{C_i ∩ B_i} exp(v_j.f_i / tau) / sum_{B_i} exp(v_j.f_i / tau)).
    The example's own bank entry always counts as a background neighbour (it shares all its clusters, so it is
    also close): the ratio stays finite when v_i's nearest entries do not include it, early in training.
    """

    config: LocalAggregationConfig
    config_class = LocalAggregationConfig
    base_model_prefix = "local_aggregation"
    feature_model_class = LocalAggregationModel

    def _build_heads(self, config: LocalAggregationConfig, feature_dim: int) -> None:
        super()._build_heads(config, feature_dim)
        self.register_buffer(
            "cluster_labels", torch.full((config.num_clusterings, config.num_examples), -1), persistent=False
        )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LocalAggregationForPreTraining):
            module.cluster_labels.fill_(-1)

    @torch.no_grad()
    def set_cluster_labels(self, labels: torch.Tensor) -> None:
        """Install the H clusterings of the memory bank, (num_clusterings, num_examples) ints in [0, num_clusters)."""
        if tuple(labels.shape) != tuple(self.cluster_labels.shape):
            raise ValueError(
                f"cluster labels have shape {tuple(labels.shape)}, expected {tuple(self.cluster_labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_clusters):
            raise ValueError(f"cluster labels must lie in [0, {self.config.num_clusters})")
        self.cluster_labels.copy_(labels)

    @property
    def is_clustered(self) -> bool:
        """False during the Instance Recognition warm start."""
        return self.cluster_labels.numel() > 0 and bool(self.cluster_labels[0, 0] >= 0)

    def _loss(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_clustered:
            return super()._loss(embeddings, ids)
        return self._local_aggregation_loss(embeddings, ids)

    @torch.no_grad()
    def neighbours(self, logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B_i and C_i ∩ B_i from the (B, N) bank logits: background indices (B, K) and a close mask (B, K)."""
        k = min(self.config.background_neighbors, logits.shape[1])
        ranking = logits.detach().clone()
        ranking.scatter_(1, ids[:, None], float("inf"))  # the example itself is always in B_i
        background = ranking.topk(k, dim=1, sorted=False).indices
        # close: in the same cluster as i in at least one clustering, (H, B, K) -> (B, K)
        close = (self.cluster_labels[:, background] == self.cluster_labels[:, ids][:, :, None]).any(dim=0)
        return background, close

    def _local_aggregation_loss(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LA eq. 3 against the bank before this batch's update. Returns the loss and the background logits (B, K)."""
        # a snapshot: autograd needs the bank as it was, and the bank is updated in place after the loss
        logits = embeddings @ self.memory_bank.vectors.clone().t() / self.config.temperature
        background, close = self.neighbours(logits, ids)
        background_logits = logits.gather(1, background)
        log_close = torch.logsumexp(background_logits.masked_fill(~close, float("-inf")), dim=1)
        return (torch.logsumexp(background_logits, dim=1) - log_close).mean(), background_logits


class LocalAggregationBackbone(InstanceRecognitionBackbone):
    """The backbone trained by Local Aggregation, for downstream models (DETR, UperNet, ...): what `AutoBackbone`
    loads."""

    config: LocalAggregationConfig
    config_class = LocalAggregationConfig
    base_model_prefix = "local_aggregation"


class LocalAggregationForImageClassification(InstanceRecognitionForImageClassification):
    """The backbone trained by Local Aggregation and a new linear classifier: what
    `AutoModelForImageClassification` loads."""

    config: LocalAggregationConfig
    config_class = LocalAggregationConfig
    base_model_prefix = "local_aggregation"


class LocalAggregationForVideoClassification(InstanceRecognitionForVideoClassification):
    """The video backbone trained by Local Aggregation and a new linear classifier: what
    `AutoModelForVideoClassification` loads."""

    config: LocalAggregationConfig
    config_class = LocalAggregationConfig
    base_model_prefix = "local_aggregation"


__all__ = [
    "LocalAggregationModel",
    "LocalAggregationForPreTraining",
    "LocalAggregationBackbone",
    "LocalAggregationForImageClassification",
    "LocalAggregationForVideoClassification",
]
