"""MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick, He, 2020) with rho views per example."""

import torch
from torch import nn

from .configuration_moco import MoCoConfig
from .modeling_contrastive import ContrastivePreTraining, MLPHead, MomentumEncoder, view_pairs
from .modeling_ssl import BackboneFeatureModel, SSLHeadsPreTrainedModel, all_gather_no_grad


class MoCoPreTrainedModel(SSLHeadsPreTrainedModel):
    config: MoCoConfig
    config_class = MoCoConfig
    base_model_prefix = "moco"
    auto_classes = {"AutoModel": "MoCoModel", "AutoModelForPreTraining": "MoCoForPreTraining"}


class MoCoModel(BackboneFeatureModel, MoCoPreTrainedModel):
    """The backbone trained by MoCo: what `AutoModel` loads."""

    # the pre-training checkpoint's projector and key encoder only serve the loss
    _keys_to_ignore_on_load_unexpected = [r"^projector\.", r"^key_encoder\."]


class MoCoForPreTraining(ContrastivePreTraining, MoCoPreTrainedModel):
    """Encoder + projector (queries), a momentum copy of both (keys), and a queue of negative keys.

    For each ordered pair of views (v, u), the query of view v must pick the key of view u out of the queue
    (InfoNCE); the loss is the mean over pairs. The queue receives the first view's keys of every process, so all
    processes hold the same queue; it is a non-persistent buffer that the training loop checkpoints.
    """

    feature_model_class = MoCoModel

    def _build_heads(self, config: MoCoConfig, feature_dim: int) -> None:
        self.projector = MLPHead(feature_dim, config.projection_hidden_dim, config.projection_dim, config.projection_layers)
        self.key_encoder = MomentumEncoder(self.moco, self.projector)
        queue = nn.functional.normalize(torch.randn(config.queue_size, config.projection_dim), dim=1)
        self.register_buffer("queue", queue, persistent=False)
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long), persistent=False)

    def _after_init(self) -> None:
        self.key_encoder.copy_from(self.moco, self.projector)

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        queries = nn.functional.normalize(self.projector(features.flatten(0, 1)), dim=1).view(*features.shape[:2], -1)
        with torch.no_grad():
            if self.training:
                self.key_encoder.update(self.moco, self.projector, self.config.momentum)
            keys = nn.functional.normalize(self.key_encoder(pixel_values), dim=2)
        temperature = self.config.temperature
        # the negatives' log-sum-exp depends on the query's view only: computed once per view, not once per pair
        # (the clone: the queue changes in place below, before backward reads it)
        negatives = torch.logsumexp(queries @ self.queue.clone().T / temperature, dim=2)  # (views, batch)
        losses = []
        for v, u in view_pairs(self.config.num_views):
            positive = (queries[v] * keys[u]).sum(1) / temperature
            # cross-entropy of [positive, negatives] with the positive as the target
            losses.append((torch.logaddexp(positive, negatives[v]) - positive).mean())
        if self.training:
            self._enqueue(keys[0])
        return torch.stack(losses).mean()

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = all_gather_no_grad(keys.float())[-size:]
        positions = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue.index_copy_(0, positions, keys)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)


MoCoConfig.register_for_auto_class()
MoCoModel.register_for_auto_class("AutoModel")
MoCoForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = ["MoCoModel", "MoCoForPreTraining", "MoCoPreTrainedModel"]
