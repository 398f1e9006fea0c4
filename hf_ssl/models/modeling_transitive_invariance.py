"""Transitive Invariance (Wang, He & Gupta, ICCV 2017): a Siamese-triplet network trained with the ranking loss of
Wang & Gupta (ICCV 2015) on positive pairs of patches, with hard negatives mined in the global batch.

The pairs come from the graph of the paper (intra-instance edges from tracking, inter-instance edges from a
context-trained model's features, and the pairs transitivity adds); each is one example whose two views are its
two patches (`hf_ssl.transitive` builds the graph and writes the pairs). The released code of Wang & Gupta 2015
(`xiaolonw/caffe-video_triplet`, `RankHardLossLayer`) fixes what the papers leave open: the negatives of a pair are
the patches of the other pairs of the batch, chosen by the query patch's loss, and each chosen negative is ranked
below the positive from both patches of the pair.
"""

import torch
from torch import nn

from .configuration_transitive_invariance import TransitiveInvarianceConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import ContrastivePreTraining
from .modeling_ssl import (
    BackboneFeatureModel,
    SSLPreTrainedModel,
    SSLPreTrainingOutput,
    all_gather_no_grad,
    gather_with_grad,
    rank,
)


class TransitiveInvariancePreTrainedModel(SSLPreTrainedModel):
    config: TransitiveInvarianceConfig
    config_class = TransitiveInvarianceConfig
    base_model_prefix = "transitive_invariance"


class TransitiveInvarianceModel(BackboneFeatureModel, TransitiveInvariancePreTrainedModel):
    """The backbone trained by Transitive Invariance: what `AutoModel` loads."""


def select_negatives(
    losses: torch.Tensor, allowed: torch.Tensor, num_negatives: int, hard_ratio: float
) -> torch.Tensor:
    """Which candidates are each anchor's negatives: (anchors, candidates) bool, from each candidate's loss
    (anchors, candidates) and whether it may be a negative at all (`allowed`). Only candidates with a loss > 0 are
    chosen (the others give no gradient); of the `num_negatives`, round(num_negatives * hard_ratio) are the highest
    losses and the rest are drawn at random among the remaining ones. Fewer candidates violate the margin: all
    of them."""
    violating = allowed & (losses > 0)
    chosen = torch.zeros_like(violating)
    num_hard = round(num_negatives * hard_ratio)
    for count, scores in ((num_hard, losses), (num_negatives - num_hard, torch.rand_like(losses))):
        if count:
            scores = scores.masked_fill(~violating | chosen, float("-inf"))
            chosen.scatter_(1, scores.topk(min(count, scores.shape[1]), dim=1).indices, True)
    return chosen & violating


def ranking_loss(
    embeddings: torch.Tensor,
    margin: float,
    num_negatives: int,
    hard_ratio: float = 1.0,
    view_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ranking loss of Wang & Gupta 2015 over the global batch. `embeddings` (2, batch, dim): this process's
    L2-normalised embeddings of each pair's query patch (view 0) and positive (view 1); `view_ids` (2, batch):
    an id per patch (the pair dataset's `patch_a`, `patch_b`), or None.

    With D(x, y) = 1 - x . y, each pair (a, p) takes as negatives n the patches of the other pairs of the global
    batch (`select_negatives` on max(0, D(a, p) - D(a, n) + M)); a patch with the id of a or p is never a negative of
    (a, p): the graph's pairs share patches. The loss sums max(0, D(a, p) - D(a, n) + M) + max(0, D(a, p) - D(p, n) + M)
    over pairs and chosen negatives, divided by 2 K pairs. Anchors are this process's pairs; gradients reach the
    other processes' patches through the gather, so the average over processes is the global batch's loss.
    """
    _, batch, dim = embeddings.shape
    everyone = gather_with_grad(embeddings.transpose(0, 1).reshape(batch, 2 * dim))  # (global batch, 2 dim)
    candidates = everyone.view(-1, dim)  # example-major: 2 * example + view
    anchors, positives = embeddings[0], embeddings[1]
    positive_distance = 1 - (anchors * positives).sum(1, keepdim=True)
    to_anchor = (positive_distance - (1 - anchors @ candidates.T) + margin).clamp(min=0)
    to_positive = (positive_distance - (1 - positives @ candidates.T) + margin).clamp(min=0)
    owner = torch.arange(candidates.shape[0], device=embeddings.device) // 2
    own = torch.arange(batch, device=embeddings.device) + rank() * batch
    allowed = owner[None, :] != own[:, None]
    if view_ids is not None:
        candidate_ids = all_gather_no_grad(view_ids.transpose(0, 1).contiguous()).reshape(-1)
        allowed &= (candidate_ids[None, :] != view_ids[0][:, None]) & (candidate_ids[None, :] != view_ids[1][:, None])
    chosen = select_negatives(to_anchor.detach(), allowed, num_negatives, hard_ratio)
    return ((to_anchor + to_positive) * chosen).sum() / (2 * num_negatives * batch)


class TransitiveInvarianceForPreTraining(ContrastivePreTraining, TransitiveInvariancePreTrainedModel):
    """Backbone + embedding (Linear + ReLU, L2-normalised) for both patches of each pair, then `ranking_loss`. The
    views are the two patches of a positive pair (`view_columns` of the data), `view_ids` their patch ids."""

    feature_model_class = TransitiveInvarianceModel
    num_views = 2
    accepts_view_ids = True

    def _build_heads(self, config: TransitiveInvarianceConfig, feature_dim: int) -> None:
        self.embedding = nn.Sequential(nn.Linear(feature_dim, config.embedding_dim), nn.ReLU())

    def check_inputs(self, pixel_values: torch.Tensor, view_ids: torch.Tensor | None = None) -> None:
        super().check_inputs(pixel_values)
        if view_ids is not None and tuple(view_ids.shape) != tuple(pixel_values.shape[:2]):
            raise ValueError(
                f"view_ids must be (num_views=2, batch) as pixel_values, got {tuple(view_ids.shape)} for pixel_values "
                f"{tuple(pixel_values.shape)}"
            )

    def _pretraining_output(
        self, pixel_values: torch.Tensor, ids: torch.Tensor | None, view_ids: torch.Tensor | None = None
    ) -> SSLPreTrainingOutput:
        features = self.encode(self.base_model, pixel_values)
        embeddings = nn.functional.normalize(self.embedding(features.flatten(0, 1)), dim=1).view(
            *features.shape[:2], -1
        )
        config = self.config
        if view_ids is not None:
            view_ids = view_ids.to(embeddings.device, torch.long)
        # random negatives until the switch step (the papers' first epochs), then the configured share of hard ones
        hard_ratio = config.hard_negative_ratio if self.step >= config.hard_negative_start_step else 0.0
        loss = ranking_loss(embeddings, config.margin, config.num_negatives, hard_ratio, view_ids)
        return SSLPreTrainingOutput(loss=loss, embeddings=embeddings[0])


class TransitiveInvarianceBackbone(SSLBackbone, TransitiveInvariancePreTrainedModel):
    """The backbone trained by Transitive Invariance, for downstream models (DETR, UperNet, ...): what
    `AutoBackbone` loads."""


class TransitiveInvarianceForImageClassification(SSLForImageClassification, TransitiveInvariancePreTrainedModel):
    """The backbone trained by Transitive Invariance and a new linear classifier: what
    `AutoModelForImageClassification` loads."""


class TransitiveInvarianceForVideoClassification(SSLForVideoClassification, TransitiveInvariancePreTrainedModel):
    """A video backbone trained by Transitive Invariance and a new linear classifier: what
    `AutoModelForVideoClassification` loads."""


__all__ = [
    "TransitiveInvarianceModel",
    "TransitiveInvarianceForPreTraining",
    "TransitiveInvariancePreTrainedModel",
    "TransitiveInvarianceBackbone",
    "TransitiveInvarianceForImageClassification",
    "TransitiveInvarianceForVideoClassification",
]
