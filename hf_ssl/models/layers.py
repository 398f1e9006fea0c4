"""Pieces shared by the hf_ssl backbones: width scaling, config and input checks, the fixed Sobel input filter and a
max-pool that tolerates tiny feature maps."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init


def scale_width(width: int, multiplier: float) -> int:
    """Number of channels / units of a layer whose reference width is `width`, scaled by `multiplier` (at least 1)."""
    return max(1, round(width * multiplier))


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming the config field `name` unless `value` is a finite number > 0."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")


def check_positive_ints(name: str, values: Sequence[int], length: int | None = None) -> None:
    """Raise a ValueError naming the config field `name` unless `values` is a non-empty list of positive ints (of
    exactly `length` entries when given)."""
    if length is not None and len(values) != length:
        raise ValueError(f"`{name}` must have exactly {length} entries, got {len(values)}: {list(values)}")
    if len(values) == 0 or any(value <= 0 for value in values):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers, got {list(values)}")


def check_probability(name: str, value: float) -> None:
    """Raise a ValueError naming the config field `name` unless `value` is a dropout probability in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1), got {value!r}")


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int, model_name: str, video: bool) -> None:
    """Raise a ValueError that spells out the expected layout if `pixel_values` has the wrong rank or channel count.

    Images are `(batch_size, num_channels, height, width)`; videos follow transformers' VideoMAE layout
    `(batch_size, num_frames, num_channels, height, width)`.
    """
    if video:
        expected = f"(batch_size, num_frames, {num_channels}, height, width)"
        rank, channel_dim = 5, 2
    else:
        expected = f"(batch_size, {num_channels}, height, width)"
        rank, channel_dim = 4, 1
    if pixel_values.dim() != rank or pixel_values.shape[channel_dim] != num_channels:
        raise ValueError(f"{model_name} expects pixel_values of shape {expected}, got {tuple(pixel_values.shape)}")


class SobelFilter(nn.Module):
    """DeepCluster's fixed input transform (Caron et al. 2018): RGB -> grayscale (mean of the channels) -> horizontal
    and vertical Sobel gradients, turning `(B, 3, H, W)` into `(B, 2, H, W)`.

    The kernels are persistent buffers rather than parameters: they are saved with the checkpoint (so a round trip is
    bit exact) but no optimizer can ever update them.
    """

    out_channels = 2

    def __init__(self) -> None:
        super().__init__()
        grayscale_weight, sobel_weight = self.reference_kernels()
        self.register_buffer("grayscale_weight", grayscale_weight)
        self.register_buffer("sobel_weight", sobel_weight)

    @staticmethod
    def reference_kernels(
        device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The grayscale `(1, 3, 1, 1)` and Sobel `(2, 1, 3, 3)` kernels, exactly as DeepCluster sets them."""
        grayscale = torch.full((1, 3, 1, 1), 1.0 / 3.0, device=device, dtype=dtype)
        horizontal = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
        vertical = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]
        sobel = torch.tensor([[horizontal], [vertical]], device=device, dtype=dtype)
        return grayscale, sobel

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Map `(B, 3, H, W)` RGB to `(B, 2, H, W)` gradient images."""
        grayscale = F.conv2d(pixel_values, self.grayscale_weight)
        return F.conv2d(grayscale, self.sobel_weight, padding=1)


class SafeMaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` that pads a feature map smaller than the kernel with -inf instead of failing.

    AlexNet's and VGG's pools were designed for 224 px inputs; on a 32 px image the last pools see maps smaller than
    their window. Padding such a map with -inf (which never wins the max) up to the window size yields one output,
    the max over the whole map; maps at least as large as the window, i.e. every input the original architecture
    accepts, are pooled exactly as by `nn.MaxPool2d`.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size=kernel_size, stride=stride)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Max-pool `(B, C, H, W)`, first padding H and W up to the kernel size if they are smaller."""
        pad_height = max(self.kernel_size - hidden_states.shape[-2], 0)
        pad_width = max(self.kernel_size - hidden_states.shape[-1], 0)
        if pad_height or pad_width:
            hidden_states = F.pad(hidden_states, (0, pad_width, 0, pad_height), value=float("-inf"))
        return super().forward(hidden_states)


@torch.no_grad()
def init_backbone_weights(module: nn.Module) -> None:
    """The DeepCluster / C3D initialisation every hf_ssl backbone uses: He normal (fan_out) convs, N(0, 0.01) linears,
    zero biases, identity batch norms with reset running statistics. The Sobel kernels are rebuilt from their fixed
    values, never randomised. Uses `transformers.initialization` so weights loaded from a checkpoint are skipped."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        init.normal_(module.weight, mean=0.0, std=0.01)
        init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)
    elif isinstance(module, SobelFilter):
        grayscale, sobel = SobelFilter.reference_kernels(module.sobel_weight.device, module.sobel_weight.dtype)
        init.copy_(module.grayscale_weight, grayscale)
        init.copy_(module.sobel_weight, sobel)
