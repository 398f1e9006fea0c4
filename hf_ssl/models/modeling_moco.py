"""MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick, He, 2020) with rho views per example."""

import torch
from torch import nn

from .configuration_moco import MoCoConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import (
    ContrastivePreTraining,
    MLPHead,
    MomentumEncoder,
    cosine_momentum,
    over_views,
    sum_over_queries,
    view_pairs,
)
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, all_gather_no_grad, is_distributed


class MoCoPreTrainedModel(SSLPreTrainedModel):
    config: MoCoConfig
    config_class = MoCoConfig
    base_model_prefix = "moco"


class MoCoModel(BackboneFeatureModel, MoCoPreTrainedModel):
    """The backbone trained by MoCo: what `AutoModel` loads."""


def infonce_with_queue(
    queries: torch.Tensor,
    keys: dict[int, torch.Tensor],
    queue: torch.Tensor,
    temperature: float,
    pairs: list[tuple[int, int]],
) -> torch.Tensor:
    """MoCo's InfoNCE: for each pair (v, u), the query of view v (`queries[v]`, (batch, dim), unit norm) must pick
    the key of the same example in view u (`keys[u]`) out of the `queue`'s negatives (queue_size, dim), at
    `temperature`; averaged over examples, then summed over query views of the mean over their key views."""
    # the negatives' log-sum-exp depends on the query's view only: computed once per view, not once per pair
    negatives = torch.logsumexp(queries @ queue.T / temperature, dim=2)  # (views, batch)
    pair_losses = {}
    for v, u in pairs:
        positive = (queries[v] * keys[u]).sum(1) / temperature
        # cross-entropy of [positive, negatives] with the positive as the target
        pair_losses[v, u] = (torch.logaddexp(positive, negatives[v]) - positive).mean()
    return sum_over_queries(pair_losses)


class MoCoForPreTraining(ContrastivePreTraining, MoCoPreTrainedModel):
    """Encoder + projector (queries), a momentum copy of both (keys), and a queue of negative keys.

    For each pair (v, u) of a query view v and a key view u (`view_pairs`), the query of v must pick the key of u
    out of the queue (InfoNCE). Asymmetric (MoCo v2, the default): view 0 alone is encoded as the query; with
    `symmetric_loss` every view is. The loss is the sum over query views of the mean over their key views
    (SlowFast's reduction for rho clips; for 2 views: MoCo v2's loss, or the two directions summed as MoCo v3).
    The key encoder follows the encoder once per optimizer step (`after_optimizer_step`), with Shuffle BN across
    processes. The queue receives keys of every process, so all processes hold the same queue; it is a
    non-persistent buffer that the training loop checkpoints.
    """

    feature_model_class = MoCoModel

    def _build_heads(self, config: MoCoConfig, feature_dim: int) -> None:
        self.projector = MLPHead.projector(config, feature_dim)
        self.key_encoder = MomentumEncoder(self.moco, self.projector)
        queue = nn.functional.normalize(torch.randn(config.queue_size, config.projection_dim), dim=1)
        self.register_buffer("queue", queue, persistent=False)
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long), persistent=False)

    @property
    def num_online_views(self) -> int:
        return self.num_views if self.config.symmetric_loss else 1

    @property
    def momentum(self) -> float:
        """The key encoder's momentum at the current step (`momentum_schedule`)."""
        if self.config.momentum_schedule == "cosine":
            return cosine_momentum(self.config.momentum, self.progress)
        return self.config.momentum

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        num_queries = features.shape[0]
        pairs = [(v, u) for v, u in view_pairs(self.num_views, self.config.view_pairs) if v < num_queries]
        key_views = sorted({u for _, u in pairs})
        separately = self.config.per_view_batchnorm
        queries = nn.functional.normalize(over_views(self.projector, features, separately), dim=2)
        with torch.no_grad():
            keys = self.key_encoder(pixel_values[key_views], self._shuffle_bn(), separately=separately)
            keys = nn.functional.normalize(keys, dim=2)
        # the clone: the queue changes in place below, before backward reads it
        queue = self.queue.clone()
        loss = infonce_with_queue(queries, dict(zip(key_views, keys)), queue, self.config.temperature, pairs)
        if self.training:
            self._enqueue(keys.flatten(0, 1) if self.config.queue_all_views else keys[0])
        return loss

    def _shuffle_bn(self) -> bool:
        """Whether the key encoder needs Shuffle BN now: several processes and per-process BatchNorm statistics."""
        if not (self.training and is_distributed() and self.key_encoder.has_plain_batchnorm()):
            return False
        if not self.config.shuffle_bn:
            raise ValueError(
                "shuffle_bn=False on several processes with plain BatchNorm in the key encoder lets queries and "
                "keys share batch statistics (MoCo sec. 3.3): set shuffle_bn=true or sync_batchnorm=true"
            )
        return True

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = all_gather_no_grad(keys.float())[-size:]
        positions = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue.index_copy_(0, positions, keys)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)


class MoCoBackbone(SSLBackbone, MoCoPreTrainedModel):
    """The backbone trained by MoCo, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class MoCoForImageClassification(SSLForImageClassification, MoCoPreTrainedModel):
    """The backbone trained by MoCo and a new linear classifier: what `AutoModelForImageClassification` loads."""


class MoCoForVideoClassification(SSLForVideoClassification, MoCoPreTrainedModel):
    """The video backbone trained by MoCo and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "MoCoModel",
    "MoCoForPreTraining",
    "MoCoPreTrainedModel",
    "MoCoBackbone",
    "MoCoForImageClassification",
    "MoCoForVideoClassification",
]
