"""R3D configuration: 3D ResNet with basic blocks (Hara et al., 2018; Tran et al., 2018, torchvision's r3d_18)."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .layers import check_positive, check_positive_ints, scale_width


@strict
class R3DConfig(PreTrainedConfig):
    r"""
    Configuration of [`R3DModel`]: a (3, 7, 7) stride-(1, 2, 2) stem without max-pool, then stages of 3D basic
    blocks, the first stage at stride 1 and every later one halving time, height and width. The defaults are
    R3D-18.

    num_channels (`int`, *optional*, defaults to 3):
        Number of channels of each input frame.
    embedding_size (`int`, *optional*, defaults to 64):
        Output channels of the stem, before `width_multiplier` is applied.
    hidden_sizes (`list[int]`, *optional*, defaults to `(64, 128, 256, 512)`):
        Output channels of each stage, before `width_multiplier` is applied.
    depths (`list[int]`, *optional*, defaults to `(2, 2, 2, 2)`):
        Number of basic blocks in each stage (`(3, 4, 6, 3)` gives R3D-34).
    width_multiplier (`float`, *optional*, defaults to 1.0):
        Scales every conv width (rounded, at least 1); small values give tiny models for tests.
    """

    model_type = "r3d"

    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    width_multiplier: float | int = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        super().__post_init__(**kwargs)
        # @strict re-raises class-validator errors as StrictDataclassClassValidationError, which is not a ValueError;
        # validating here first makes a bad constructor argument a plain ValueError that names the field.
        self.validate_r3d()

    @property
    def hidden_size(self) -> int:
        """Size of the pooled output (channels of the last stage), after `width_multiplier`."""
        return scale_width(self.hidden_sizes[-1], self.width_multiplier)

    @property
    def stage_names(self) -> list[str]:
        """The feature maps `AutoBackbone` gives: the stem's output, then each stage's."""
        return ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]

    def validate_r3d(self) -> None:
        """Check every architecture field, naming the offending one."""
        check_positive("width_multiplier", self.width_multiplier)
        check_positive("num_channels", self.num_channels)
        check_positive("embedding_size", self.embedding_size)
        check_positive_ints("hidden_sizes", self.hidden_sizes)
        check_positive_ints("depths", self.depths)
        if len(self.depths) != len(self.hidden_sizes):
            raise ValueError(
                f"`depths` and `hidden_sizes` need one entry per stage, got {len(self.depths)} and "
                f"{len(self.hidden_sizes)}"
            )


__all__ = ["R3DConfig"]
