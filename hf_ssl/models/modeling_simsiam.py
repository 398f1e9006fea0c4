"""SimSiam (Chen & He, CVPR 2021), following facebookresearch/simsiam, with rho views per example."""

import torch
from torch import nn

from .configuration_simsiam import SimSiamConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import ContrastivePreTraining, MLPHead, over_views, view_pairs
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel


class SimSiamPreTrainedModel(SSLPreTrainedModel):
    config: SimSiamConfig
    config_class = SimSiamConfig
    base_model_prefix = "simsiam"


class SimSiamModel(BackboneFeatureModel, SimSiamPreTrainedModel):
    """The backbone trained by SimSiam: what `AutoModel` loads."""


def simsiam_loss(predictions: torch.Tensor, projections: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """D(p_v, stopgrad(z_u)) = -cos(p_v, z_u) averaged over examples, then over the ordered pairs (v, u): for 2 views
    the paper's L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 (eq. 3). `predictions`, `projections`:
    (views, batch, dim)."""
    return -torch.stack(
        [nn.functional.cosine_similarity(predictions[v], projections[u].detach(), dim=1).mean() for v, u in pairs]
    ).mean()


class SimSiamForPreTraining(ContrastivePreTraining, SimSiamPreTrainedModel):
    """Encoder (backbone + projector) for every view, a predictor on top; for each pair of views (v, u)
    (`view_pairs`) the prediction of v regresses the projection of u, which gets no gradient (`simsiam_loss`).
    The predictor keeps the recipe's learning rate when `fixed_predictor_lr` (`optimizer_overrides`)."""

    feature_model_class = SimSiamModel

    def _build_heads(self, config: SimSiamConfig, feature_dim: int) -> None:
        # SimSiam's projector has BatchNorm on every layer, its output included (without affine parameters
        # there, as the official code)
        self.projector = MLPHead.projector(
            config, feature_dim, output_batchnorm=config.projection_batchnorm, output_affine=False
        )
        self.predictor = MLPHead(config.projection_dim, config.prediction_hidden_dim, config.projection_dim, 2)

    def optimizer_overrides(self) -> dict[str, dict[str, float]]:
        return {"predictor": {"fixed_lr": True}} if self.config.fixed_predictor_lr else {}

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        separately = self.config.per_view_batchnorm
        projections = over_views(self.projector, features, separately)
        predictions = over_views(self.predictor, projections, separately)
        return simsiam_loss(predictions, projections, view_pairs(features.shape[0], self.config.view_pairs))


class SimSiamBackbone(SSLBackbone, SimSiamPreTrainedModel):
    """The backbone trained by SimSiam, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class SimSiamForImageClassification(SSLForImageClassification, SimSiamPreTrainedModel):
    """The backbone trained by SimSiam and a new linear classifier: what `AutoModelForImageClassification` loads."""


class SimSiamForVideoClassification(SSLForVideoClassification, SimSiamPreTrainedModel):
    """The video backbone trained by SimSiam and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "SimSiamModel",
    "SimSiamForPreTraining",
    "SimSiamPreTrainedModel",
    "SimSiamBackbone",
    "SimSiamForImageClassification",
    "SimSiamForVideoClassification",
]
