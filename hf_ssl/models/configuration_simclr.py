"""SimCLR configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig
from .layers import check_positive


@strict
class SimCLRConfig(ContrastiveConfig):
    r"""
    SimCLR (Chen et al., ICML 2020): the NT-Xent loss over every view of the global batch (all processes), each
    example's other views being its positives.

    temperature (`float`, *optional*, defaults to 0.1): NT-Xent temperature.
    projection_output_batchnorm (`bool`, *optional*, defaults to `True`):
        BatchNorm on the projector's output, its last linear layer without bias: the official code's projection
        head (`model_util.projection_head`, every layer `use_bn=True`), which the paper does not describe. The
        official output BatchNorm has a scale and no shift (`center=False`); this one has both (torch's affine
        BatchNorm, as lightly's SimCLRProjectionHead).
    """

    model_type = "simclr"

    temperature: float | int = 0.1
    projection_output_batchnorm: bool = True

    def validate_loss(self) -> None:
        check_positive("temperature", self.temperature)


__all__ = ["SimCLRConfig"]
