"""VGG configuration (VGG-16 with batch norm by default, optional fixed Sobel input as in DeepCluster)."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .layers import check_positive, check_positive_ints, check_probability, scale_width


@strict
class VGGConfig(PreTrainedConfig):
    r"""
    Configuration of [`VGGModel`]: blocks of 3x3 conv + batch norm + ReLU layers, each block followed by a 2x2
    max-pool, then fc6 and fc7. The defaults are VGG-16-BN (Simonyan & Zisserman, 2015) as DeepCluster uses it.

    num_channels (`int`, *optional*, defaults to 3):
        Number of channels of the input images (the Sobel filter, when on, expects RGB, i.e. 3).
    conv_channels (`list[list[int]]`, *optional*, defaults to VGG-16):
        One list per block with the output channels of its convs, before `width_multiplier` is applied. VGG-16 is
        `[[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]`; other depths (VGG-11/13/19)
        only change the lists.
    fc_dim (`int`, *optional*, defaults to 4096):
        Width of fc6 and fc7 before `width_multiplier` is applied.
    pool_size (`int`, *optional*, defaults to 7):
        Side of the adaptive average pool before fc6 (7 is what a 224 px image gives naturally).
    sobel (`bool`, *optional*, defaults to `True`):
        Feed the first conv with the fixed grayscale + Sobel gradient filter (2 channels) instead of the raw image,
        as DeepCluster does; set `False` for a plain VGG.
    dropout_prob (`float`, *optional*, defaults to 0.5):
        Dropout probability between fc6 and fc7.
    width_multiplier (`float`, *optional*, defaults to 1.0):
        Scales every conv and fc width (rounded, at least 1); small values give tiny models for tests.
    """

    model_type = "vgg"

    num_channels: int = 3
    conv_channels: list[list[int]] | tuple[tuple[int, ...], ...] = (
        (64, 64),
        (128, 128),
        (256, 256, 256),
        (512, 512, 512),
        (512, 512, 512),
    )
    fc_dim: int = 4096
    pool_size: int = 7
    sobel: bool = True
    dropout_prob: float | int = 0.5
    width_multiplier: float | int = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        self.conv_channels = [list(block) for block in self.conv_channels]
        super().__post_init__(**kwargs)
        # @strict re-raises class-validator errors as StrictDataclassClassValidationError, which is not a ValueError;
        # validating here first makes a bad constructor argument a plain ValueError that names the field.
        self.validate_vgg()

    @property
    def hidden_size(self) -> int:
        """Size of the pooled output (fc7), after `width_multiplier`."""
        return scale_width(self.fc_dim, self.width_multiplier)

    @property
    def stage_names(self) -> list[str]:
        """The feature maps `AutoBackbone` gives: each block's output (before its max-pool), conv1 ... convN."""
        return [f"conv{index}" for index in range(1, len(self.conv_channels) + 1)]

    def validate_vgg(self) -> None:
        """Check every architecture field, naming the offending one."""
        check_positive("width_multiplier", self.width_multiplier)
        check_positive("num_channels", self.num_channels)
        if len(self.conv_channels) == 0:
            raise ValueError("`conv_channels` must list at least one block")
        for index, block in enumerate(self.conv_channels):
            check_positive_ints(f"conv_channels[{index}]", block)
        check_positive("fc_dim", self.fc_dim)
        check_positive("pool_size", self.pool_size)
        check_probability("dropout_prob", self.dropout_prob)
        if self.sobel and self.num_channels != 3:
            raise ValueError(f"`sobel=True` needs RGB input (`num_channels=3`), got num_channels={self.num_channels}")


__all__ = ["VGGConfig"]
