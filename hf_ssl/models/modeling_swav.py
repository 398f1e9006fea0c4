"""SwAV (Caron et al., NeurIPS 2020): rho global views per example (images or video clips), plus multi-crop's
small crops for images (sec. 3.2), following facebookresearch/swav main_swav.py."""

import torch
import torch.distributed as dist
from torch import nn

from .configuration_swav import SwAVConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import ContrastivePreTraining, MLPHead, over_views
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, all_reduce, world_size


class SwAVPreTrainedModel(SSLPreTrainedModel):
    config: SwAVConfig
    config_class = SwAVConfig
    base_model_prefix = "swav"


class SwAVModel(BackboneFeatureModel, SwAVPreTrainedModel):
    """The backbone trained by SwAV: what `AutoModel` loads."""


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Codes (batch, prototypes) for prototype scores of this process's examples, balanced over the global batch:
    every prototype receives the same total mass, every example a distribution (SwAV's Algorithm 1, with the sums
    over the batch taken across processes)."""
    scores = scores.float()
    peak = all_reduce(scores.max().clone(), dist.ReduceOp.MAX)  # exp of scores / 0.05 overflows without a shift
    q = torch.exp((scores - peak) / epsilon).T  # (prototypes, batch)
    num_prototypes, batch = q.shape
    total_batch = batch * world_size()
    q /= all_reduce(q.sum())
    for _ in range(iterations):
        q /= all_reduce(q.sum(dim=1, keepdim=True))
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= total_batch
    return (q * total_batch).T


class SwAVForPreTraining(ContrastivePreTraining, SwAVPreTrainedModel):
    """Encoder + projector + prototypes. Codes come from Sinkhorn-Knopp over each global view's scores (with the
    queue's past embeddings when enabled); every other crop, global or small, predicts them (softmax of its scores
    / temperature, cross-entropy). As in main_swav.py the loss is, for each global view, the mean over the other
    crops, then the mean over the global views (`crops_for_assign` = the global views). Multi-crop's small crops
    (`small_pixel_values`, (num_small_crops, batch, C, s, s)) only predict the global views' codes; each resolution
    goes through the backbone separately (its own BatchNorm batch), as in SwAV."""

    feature_model_class = SwAVModel
    accepts_small_crops = True  # the training loop passes multi-crop's small crops as `small_pixel_values`

    def _build_heads(self, config: SwAVConfig, feature_dim: int) -> None:
        self.projector = MLPHead.projector(config, feature_dim)
        self.prototypes = nn.Linear(config.projection_dim, config.num_prototypes, bias=False)
        # past embeddings of each global view, newest first; zeros until filled (rows of zeros are not used)
        self.register_buffer(
            "queue", torch.zeros(config.num_views, config.queue_size, config.projection_dim), persistent=False
        )
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long), persistent=False)

    def parameters_without_update(self) -> list[nn.Parameter]:
        """The prototypes before `freeze_prototypes_steps`: they stay in the graph (DDP reduces every parameter) and
        the loop drops their gradients, as main_swav.py does after backward."""
        return list(self.prototypes.parameters()) if self.step < self.config.freeze_prototypes_steps else []

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        config = self.config
        views, (crops, batch) = self.num_views, features.shape[:2]  # global views first, then any small crops
        with torch.no_grad():  # prototypes stay on the unit sphere (the paper normalises them every step)
            self.prototypes.weight.copy_(nn.functional.normalize(self.prototypes.weight, dim=1))
        # the projector's BatchNorm sees every crop at once, as SwAV's head does (unless per_view_batchnorm)
        embeddings = nn.functional.normalize(over_views(self.projector, features, config.per_view_batchnorm), dim=2)
        scores = self.prototypes(embeddings)
        use_queue = config.queue_size > 0 and self.step >= config.queue_start_step
        codes = []
        with torch.no_grad():
            for v in range(views):
                view_scores = scores[v]
                if use_queue and int(self.queue_filled) > 0:
                    past = self.queue[v, : int(self.queue_filled)] @ self.prototypes.weight.T
                    view_scores = torch.cat([view_scores, past])
                codes.append(sinkhorn_knopp(view_scores, config.sinkhorn_epsilon, config.sinkhorn_iterations)[:batch])
        log_predictions = (scores / config.temperature).log_softmax(dim=2)
        # every global view u has crops - 1 predictors, so the plain mean is main_swav.py's mean of means
        losses = [-(codes[u] * log_predictions[v]).sum(1).mean() for u in range(views) for v in range(crops) if v != u]
        if self.training and config.queue_size > 0:
            self._enqueue(embeddings.detach()[:views])
        return torch.stack(losses).mean()

    @torch.no_grad()
    def _enqueue(self, embeddings: torch.Tensor) -> None:
        """Shift the queue by this process's batch, newest first (each process keeps its own, as in SwAV)."""
        size, batch = self.config.queue_size, embeddings.shape[1]
        if batch < size:
            self.queue[:, batch:] = self.queue[:, :-batch].clone()
        self.queue[:, : min(batch, size)] = embeddings[:, :size].float()
        self.queue_filled.copy_(torch.clamp(self.queue_filled + batch, max=size))


class SwAVBackbone(SSLBackbone, SwAVPreTrainedModel):
    """The backbone trained by SwAV, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class SwAVForImageClassification(SSLForImageClassification, SwAVPreTrainedModel):
    """The backbone trained by SwAV and a new linear classifier: what `AutoModelForImageClassification` loads."""


class SwAVForVideoClassification(SSLForVideoClassification, SwAVPreTrainedModel):
    """The video backbone trained by SwAV and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "SwAVModel",
    "SwAVForPreTraining",
    "SwAVPreTrainedModel",
    "SwAVBackbone",
    "SwAVForImageClassification",
    "SwAVForVideoClassification",
]
