"""AlexNet configuration (the DeepCluster variant: batch norm after every conv, optional fixed Sobel input)."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .layers import check_positive, check_positive_ints, check_probability, scale_width


@strict
class AlexNetConfig(PreTrainedConfig):
    r"""
    Configuration of [`AlexNetModel`], the AlexNet of DeepCluster (Caron et al., 2018): five conv layers with batch
    norm, max-pools after conv1, conv2 and conv5, then fc6 and fc7. The defaults reproduce DeepCluster's model.

    num_channels (`int`, *optional*, defaults to 3):
        Number of channels of the input images (the Sobel filter, when on, expects RGB, i.e. 3).
    conv_channels (`list[int]`, *optional*, defaults to `(96, 256, 384, 384, 256)`):
        Output channels of conv1 ... conv5 before `width_multiplier` is applied.
    fc_dim (`int`, *optional*, defaults to 4096):
        Width of fc6 and fc7 before `width_multiplier` is applied.
    pool_size (`int`, *optional*, defaults to 6):
        Side of the adaptive average pool between conv5 and fc6 (6 is what a 224 px image gives naturally).
    sobel (`bool`, *optional*, defaults to `True`):
        Feed conv1 with the fixed grayscale + Sobel gradient filter (2 channels) instead of the raw image.
    dropout_prob (`float`, *optional*, defaults to 0.5):
        Dropout probability before fc6 and before fc7.
    width_multiplier (`float`, *optional*, defaults to 1.0):
        Scales every conv and fc width (rounded, at least 1); small values give tiny models for tests.
    conv1_stride (`int`, *optional*, defaults to 4):
        Stride of conv1. 4 is AlexNet's and DeepCluster's; 2 is the jigsaw CFN's (Noroozi & Favaro 2016), whose
        small tiles would otherwise end in a single pool5 position.

    Example:
    ```python
    >>> from hf_ssl.models import AlexNetConfig, AlexNetModel

    >>> model = AlexNetModel(AlexNetConfig(width_multiplier=0.0625, fc_dim=512))
    ```
    """

    model_type = "alexnet"

    num_channels: int = 3
    conv_channels: list[int] | tuple[int, ...] = (96, 256, 384, 384, 256)
    fc_dim: int = 4096
    pool_size: int = 6
    sobel: bool = True
    dropout_prob: float | int = 0.5
    width_multiplier: float | int = 1.0
    conv1_stride: int = 4

    def __post_init__(self, **kwargs: Any) -> None:
        self.conv_channels = list(self.conv_channels)
        super().__post_init__(**kwargs)
        # @strict re-raises class-validator errors as StrictDataclassClassValidationError, which is not a ValueError;
        # validating here first makes a bad constructor argument a plain ValueError that names the field.
        self.validate_alexnet()

    @property
    def hidden_size(self) -> int:
        """Size of the pooled output (fc7), after `width_multiplier`."""
        return scale_width(self.fc_dim, self.width_multiplier)

    @property
    def stage_names(self) -> list[str]:
        """The feature maps `AutoBackbone` gives: each conv block's output (before its max-pool)."""
        return [f"conv{index}" for index in range(1, len(self.conv_channels) + 1)]

    def validate_alexnet(self) -> None:
        """Check every architecture field, naming the offending one."""
        check_positive("width_multiplier", self.width_multiplier)
        check_positive("num_channels", self.num_channels)
        check_positive_ints("conv_channels", self.conv_channels, length=5)
        check_positive("fc_dim", self.fc_dim)
        check_positive("pool_size", self.pool_size)
        check_probability("dropout_prob", self.dropout_prob)
        check_positive("conv1_stride", self.conv1_stride)
        if self.sobel and self.num_channels != 3:
            raise ValueError(f"`sobel=True` needs RGB input (`num_channels=3`), got num_channels={self.num_channels}")


__all__ = ["AlexNetConfig"]
