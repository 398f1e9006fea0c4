"""C3D configuration (Tran et al., 2015, "Learning Spatiotemporal Features with 3D Convolutional Networks")."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .layers import check_positive, check_positive_ints, check_probability, scale_width


@strict
class C3DConfig(PreTrainedConfig):
    r"""
    Configuration of [`C3DModel`]: eight 3x3x3 convs (conv1a, conv2a, conv3a/b, conv4a/b, conv5a/b) with five
    max-pools, then fc6 and fc7. The defaults are the paper's network; with them a 16x112x112 clip reaches fc6 as
    a 512x1x4x4 map (8192 inputs).

    num_channels (`int`, *optional*, defaults to 3):
        Number of channels of each input frame.
    conv_channels (`list[int]`, *optional*, defaults to `(64, 128, 256, 256, 512, 512, 512, 512)`):
        Output channels of conv1a, conv2a, conv3a, conv3b, conv4a, conv4b, conv5a, conv5b before
        `width_multiplier` is applied.
    fc_dim (`int`, *optional*, defaults to 4096):
        Width of fc6 and fc7 before `width_multiplier` is applied.
    pool_size (`list[int]`, *optional*, defaults to `(1, 4, 4)`):
        `(time, height, width)` of the adaptive average pool before fc6, so any clip size reaches fc6 with the same
        number of inputs.
    batch_norm (`bool`, *optional*, defaults to `False`):
        Add a BatchNorm3d after every conv. Not in the paper, but it makes self-supervised training from scratch much
        more stable.
    dropout_prob (`float`, *optional*, defaults to 0.5):
        Dropout probability between fc6 and fc7.
    width_multiplier (`float`, *optional*, defaults to 1.0):
        Scales every conv and fc width (rounded, at least 1); small values give tiny models for tests.
    pool5_padding (`list[int]`, *optional*, defaults to `(0, 0, 0)`):
        `(time, height, width)` padding of the last max-pool. `(0, 1, 1)` is the released Sports-1M model's pool5
        (Caffe C3D and its PyTorch port, `hf-ssl convert --from c3d`): at 112x112 it pools 7x7 to 4x4 with windows
        starting one pixel earlier than the unpadded pool's.
    temporal_kernel_depths (`list[int]`, *optional*, defaults to `(3, 3, 3, 3, 3)`):
        Temporal depth d of the d x 3 x 3 kernels of each stage, conv1 ... conv5 (odd): the paper's depth study
        (sec. 3.2): 1 (2-D convolutions per frame), homogeneous 3 / 5 / 7, increasing 3-3-5-5-7, decreasing 7-5-5-3-3.
    scale_fc_init (`bool`, *optional*, defaults to `False`):
        Initialise fc6 and fc7 with N(0, 0.01 * sqrt(F / fan_in)), F being their fan-in in the paper's network (8192,
        4096), instead of N(0, 0.01): the same at full size, and the same gain per layer in a narrower C3D, whose
        N(0, 0.01) fc layers shrink the features about 50x at 1/8 width so that a classifier on top barely learns.
    """

    model_type = "c3d"

    num_channels: int = 3
    conv_channels: list[int] | tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)
    fc_dim: int = 4096
    pool_size: list[int] | tuple[int, ...] = (1, 4, 4)
    batch_norm: bool = False
    dropout_prob: float | int = 0.5
    width_multiplier: float | int = 1.0
    pool5_padding: list[int] | tuple[int, ...] = (0, 0, 0)
    temporal_kernel_depths: list[int] | tuple[int, ...] = (3, 3, 3, 3, 3)
    scale_fc_init: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        self.conv_channels = list(self.conv_channels)
        self.pool_size = list(self.pool_size)
        self.pool5_padding = list(self.pool5_padding)
        self.temporal_kernel_depths = list(self.temporal_kernel_depths)
        super().__post_init__(**kwargs)
        # @strict re-raises class-validator errors as StrictDataclassClassValidationError, which is not a ValueError;
        # validating here first makes a bad constructor argument a plain ValueError that names the field.
        self.validate_c3d()

    @property
    def hidden_size(self) -> int:
        """Size of the pooled output (fc7), after `width_multiplier`."""
        return scale_width(self.fc_dim, self.width_multiplier)

    @property
    def stage_names(self) -> list[str]:
        """The feature maps `AutoBackbone` gives: the output of conv1a, conv2a, conv3b, conv4b, conv5b (before the
        stage's max-pool)."""
        return ["conv1", "conv2", "conv3", "conv4", "conv5"]

    def validate_c3d(self) -> None:
        """Check every architecture field, naming the offending one."""
        check_positive("width_multiplier", self.width_multiplier)
        check_positive("num_channels", self.num_channels)
        check_positive_ints("conv_channels", self.conv_channels, length=8)
        check_positive("fc_dim", self.fc_dim)
        check_positive_ints("pool_size", self.pool_size, length=3)
        check_probability("dropout_prob", self.dropout_prob)
        if len(self.pool5_padding) != 3 or not all(0 <= p <= 1 for p in self.pool5_padding):
            raise ValueError(f"`pool5_padding` must be 3 entries of 0 or 1, got {list(self.pool5_padding)}")
        check_positive_ints("temporal_kernel_depths", self.temporal_kernel_depths, length=5)
        if any(depth % 2 == 0 for depth in self.temporal_kernel_depths):
            raise ValueError(
                f"`temporal_kernel_depths` must be odd (a centred kernel keeps the clip length), got "
                f"{list(self.temporal_kernel_depths)}"
            )


__all__ = ["C3DConfig"]
