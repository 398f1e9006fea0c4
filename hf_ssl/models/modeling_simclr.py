"""SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020) with rho views per example."""

import torch
from torch import nn

from .configuration_simclr import SimCLRConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import ContrastivePreTraining, MLPHead, over_views, view_pairs
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, gather_with_grad, rank


class SimCLRPreTrainedModel(SSLPreTrainedModel):
    config: SimCLRConfig
    config_class = SimCLRConfig
    base_model_prefix = "simclr"


class SimCLRModel(BackboneFeatureModel, SimCLRPreTrainedModel):
    """The backbone trained by SimCLR: what `AutoModel` loads."""


def nt_xent_loss(local: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent with several views: `local` (views, batch, dim) are this process's normalised projections.

    Every view of every example of the global batch is a candidate; for an anchor, each other view of the same
    example is a positive, scored against all candidates but the anchor itself (with 2 views this is SimCLR's
    loss). Anchors are this process's examples; gradients reach the other processes' projections through the
    gather, so the average over processes is the global batch's loss.
    """
    views, batch, dim = local.shape
    everyone = gather_with_grad(local.transpose(0, 1).reshape(batch, views * dim))  # (global batch, views * dim)
    candidates = everyone.view(-1, views, dim).transpose(0, 1).reshape(-1, dim)  # view-major: v * N + example
    total = everyone.shape[0]
    offset = rank() * batch
    anchors = local.reshape(-1, dim)  # v * batch + i
    logits = anchors @ candidates.T / temperature  # (views * batch, views * total)
    example = torch.arange(batch, device=local.device).repeat(views) + offset
    anchor_view = torch.arange(views, device=local.device).repeat_interleave(batch)
    own = anchor_view * total + example
    logits[torch.arange(len(anchors), device=local.device), own] = float("-inf")  # an anchor is not its own candidate
    log_prob = logits.log_softmax(1)
    positives = [(anchor_view + shift) % views * total + example for shift in range(1, views)]
    rows = torch.arange(len(anchors), device=local.device)
    return -torch.stack([log_prob[rows, column] for column in positives]).mean()


class SimCLRForPreTraining(ContrastivePreTraining, SimCLRPreTrainedModel):
    """Encoder + projector; SimCLR's NT-Xent over the global batch (`nt_xent_loss`) of each pair of views {v, u}
    (`view_pairs`), summed over pairs: for 2 views the paper's loss; for rho > 2 clips with `"consecutive"`
    pairs, SlowFast's (one two-clip loss per pair of neighbouring clips, summed)."""

    feature_model_class = SimCLRModel

    def _build_heads(self, config: SimCLRConfig, feature_dim: int) -> None:
        self.projector = MLPHead.projector(config, feature_dim, output_batchnorm=config.projection_output_batchnorm)

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        projections = over_views(self.projector, features, self.config.per_view_batchnorm)
        projections = nn.functional.normalize(projections, dim=2)
        pairs = [[v, u] for v, u in view_pairs(self.num_views, self.config.view_pairs) if v < u]
        return torch.stack([nt_xent_loss(projections[pair], self.config.temperature) for pair in pairs]).sum()


class SimCLRBackbone(SSLBackbone, SimCLRPreTrainedModel):
    """The backbone trained by SimCLR, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class SimCLRForImageClassification(SSLForImageClassification, SimCLRPreTrainedModel):
    """The backbone trained by SimCLR and a new linear classifier: what `AutoModelForImageClassification` loads."""


class SimCLRForVideoClassification(SSLForVideoClassification, SimCLRPreTrainedModel):
    """The video backbone trained by SimCLR and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "SimCLRModel",
    "SimCLRForPreTraining",
    "SimCLRPreTrainedModel",
    "SimCLRBackbone",
    "SimCLRForImageClassification",
    "SimCLRForVideoClassification",
]
