"""BYOL (Grill et al., NeurIPS 2020) with rho views per example."""

import torch
from torch import nn

from .configuration_byol import BYOLConfig
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
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel


class BYOLPreTrainedModel(SSLPreTrainedModel):
    config: BYOLConfig
    config_class = BYOLConfig
    base_model_prefix = "byol"


class BYOLModel(BackboneFeatureModel, BYOLPreTrainedModel):
    """The online backbone trained by BYOL: what `AutoModel` loads."""


def byol_loss(predictions: torch.Tensor, targets: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """BYOL's loss: for each pair (v, u), 2 - 2 cos(predictions[v], targets[u]) averaged over examples, then
    summed over query views v of the mean over their partners u (the two directions summed for 2 views)."""
    return sum_over_queries(
        {(v, u): 2 - 2 * nn.functional.cosine_similarity(predictions[v], targets[u], dim=1).mean() for v, u in pairs}
    )


class BYOLForPreTraining(ContrastivePreTraining, BYOLPreTrainedModel):
    """Online encoder + projector + predictor; target = EMA of encoder + projector.

    Loss: for each pair of views (v, u) (`view_pairs`), 2 - 2 cos(prediction of v, target projection of u),
    averaged over examples; summed over query views v of the mean over their partners u (official BYOL sums the
    two directions; SlowFast sums over query clips of the mean over the other clips for rho > 2). The target
    follows the online network once per optimizer step (`after_optimizer_step`), its momentum rising from
    `base_momentum` to 1 on a cosine schedule over training (the loop reports the progress with
    `set_training_progress`).
    """

    feature_model_class = BYOLModel

    def _build_heads(self, config: BYOLConfig, feature_dim: int) -> None:
        self.projector = MLPHead.projector(config, feature_dim)
        self.predictor = MLPHead(config.projection_dim, config.prediction_hidden_dim, config.projection_dim, 2)
        self.target = MomentumEncoder(self.byol, self.projector)

    @property
    def momentum(self) -> float:
        """tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 at step k of K (the paper's schedule)."""
        return cosine_momentum(self.config.base_momentum, self.progress)

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        separately = self.config.per_view_batchnorm
        predictions = over_views(lambda x: self.predictor(self.projector(x)), features, separately)
        with torch.no_grad():
            targets = self.target(pixel_values, separately=separately)
        return byol_loss(predictions, targets, view_pairs(features.shape[0], self.config.view_pairs))


class BYOLBackbone(SSLBackbone, BYOLPreTrainedModel):
    """The backbone trained by BYOL, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class BYOLForImageClassification(SSLForImageClassification, BYOLPreTrainedModel):
    """The backbone trained by BYOL and a new linear classifier: what `AutoModelForImageClassification` loads."""


class BYOLForVideoClassification(SSLForVideoClassification, BYOLPreTrainedModel):
    """The video backbone trained by BYOL and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "BYOLModel",
    "BYOLForPreTraining",
    "BYOLPreTrainedModel",
    "BYOLBackbone",
    "BYOLForImageClassification",
    "BYOLForVideoClassification",
]
