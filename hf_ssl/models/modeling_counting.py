"""Learning to count (Noroozi, Pirsiavash & Favaro, ICCV 2017)."""

import torch
from torch import nn

from .configuration_counting import CountingConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, SSLPreTraining, SSLPreTrainingOutput

# drawn at random every step: a count must not depend on how an image was shrunk
DOWNSAMPLING_MODES = ("bilinear", "bicubic", "area", "nearest")


def quadrants(pixel_values: torch.Tensor) -> torch.Tensor:
    """The 4 tiles of a 2x2 grid: (batch, 4, C, H/2, W/2) in row-major order."""
    batch, channels, height, width = pixel_values.shape
    h, w = height // 2, width // 2
    tiles = pixel_values[:, :, : 2 * h, : 2 * w].reshape(batch, channels, 2, h, 2, w)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(batch, 4, channels, h, w)


class CountingPreTrainedModel(SSLPreTrainedModel):
    config: CountingConfig
    config_class = CountingConfig
    base_model_prefix = "counting"


class CountingModel(BackboneFeatureModel, CountingPreTrainedModel):
    """The trunk: what `AutoModel` loads."""


class CountingForPreTraining(SSLPreTraining, CountingPreTrainedModel):
    """Trunk + a ReLU head giving the count vector phi.

    Loss, with D a random-method 2x downsampling, T_j the 4 quadrants and y another image of the batch:
    |phi(D(x)) - sum_j phi(T_j(x))|^2 + max(0, M - |phi(D(y)) - sum_j phi(T_j(x))|^2), averaged over the batch.
    `pixel_values`: (batch >= 2, C, H, W); the other image of example i is example i - 1.
    """

    feature_model_class = CountingModel

    def _build_heads(self, config: CountingConfig, feature_dim: int) -> None:
        self.count_head = nn.Sequential(nn.Linear(feature_dim, config.counting_dim), nn.ReLU(inplace=True))

    def count(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The count vectors phi of a batch of images."""
        return self.count_head(self.counting(pixel_values).embeddings)

    def check_inputs(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4 or len(pixel_values) < 2:
            raise self.layout_error(pixel_values, "(batch >= 2, C, H, W)")

    def _pretraining_output(self, pixel_values: torch.Tensor, ids: torch.Tensor | None) -> SSLPreTrainingOutput:
        batch = len(pixel_values)
        tiles = quadrants(pixel_values)
        mode = DOWNSAMPLING_MODES[int(torch.randint(len(DOWNSAMPLING_MODES), (), device=pixel_values.device))]
        options = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
        downsampled = nn.functional.interpolate(pixel_values, size=tiles.shape[-2:], mode=mode, **options)
        counts = self.count(torch.cat([downsampled, tiles.flatten(0, 1)]))
        whole, parts = counts[:batch], counts[batch:].view(batch, 4, -1).sum(1)
        other = whole.roll(1, dims=0)
        loss = (whole - parts).pow(2).sum(1) + (self.config.margin - (other - parts).pow(2).sum(1)).clamp_min(0)
        return SSLPreTrainingOutput(loss=loss.mean(), embeddings=whole)


class CountingBackbone(SSLBackbone, CountingPreTrainedModel):
    """The backbone trained by counting, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class CountingForImageClassification(SSLForImageClassification, CountingPreTrainedModel):
    """The backbone trained by counting and a new linear classifier: what `AutoModelForImageClassification` loads."""


class CountingForVideoClassification(SSLForVideoClassification, CountingPreTrainedModel):
    """The video backbone trained by counting and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "CountingModel",
    "CountingForPreTraining",
    "CountingPreTrainedModel",
    "CountingBackbone",
    "CountingForImageClassification",
    "CountingForVideoClassification",
]
