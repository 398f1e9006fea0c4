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
    """

    model_type = "simclr"

    temperature: float | int = 0.1

    def validate_loss(self) -> None:
        check_positive("temperature", self.temperature)


__all__ = ["SimCLRConfig"]
