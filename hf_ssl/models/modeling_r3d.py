"""R3D: 3D ResNet with basic blocks (Hara et al., 2018; Tran et al., 2018), laid out like torchvision's r3d_18."""

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_r3d import R3DConfig
from .layers import check_pixel_values, init_backbone_weights, scale_width


class R3DStem(nn.Module):
    """Conv3d (3, 7, 7), stride (1, 2, 2) -> BatchNorm3d -> ReLU. No max-pool: time is never downsampled here."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convolution = nn.Conv3d(
            in_channels, out_channels, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False
        )
        self.normalization = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Map `(B, C, T, H, W)` clips to `(B, embedding_size, T, H/2, W/2)`."""
        return self.activation(self.normalization(self.convolution(hidden_states)))


class R3DBasicBlock(nn.Module):
    """Two 3x3x3 conv + BatchNorm3d layers with a residual connection; a 1x1x1 conv + BatchNorm3d shortcut projects
    the input when the block changes the channel count or the stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Apply the block to a `(B, C, T, H, W)` map."""
        residual = self.shortcut(hidden_states)
        hidden_states = self.activation(self.norm1(self.conv1(hidden_states)))
        hidden_states = self.norm2(self.conv2(hidden_states))
        return self.activation(hidden_states + residual)


# Copied from hf_ssl.models.modeling_alexnet.AlexNetPreTrainedModel with AlexNet->R3D, alexnet->r3d, "image"->"video"
class R3DPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the R3D models."""

    config: R3DConfig
    base_model_prefix = "r3d"
    main_input_name = "pixel_values"
    input_modalities = ("video",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """`layers.init_backbone_weights`: He normal (fan_out) convs, N(0, 0.01) linears, zero biases, identity batch
        norms; the fixed Sobel kernels are restored, not randomised."""
        init_backbone_weights(module)


class R3DModel(R3DPreTrainedModel):
    """3D ResNet trunk. `pooler_output` is the global average of the last stage, `(batch_size, config.hidden_size)`."""

    def __init__(self, config: R3DConfig):
        super().__init__(config)
        in_channels = scale_width(config.embedding_size, config.width_multiplier)
        self.stem = R3DStem(config.num_channels, in_channels)
        stages = []
        for index, (width, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            out_channels = scale_width(width, config.width_multiplier)
            stride = 1 if index == 0 else 2
            blocks = [R3DBasicBlock(in_channels, out_channels, stride)]
            blocks += [R3DBasicBlock(out_channels, out_channels, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode `(batch_size, num_frames, num_channels, height, width)` clips (VideoMAE's layout).

        Returns `last_hidden_state` (the last stage's map, `(batch_size, channels, time, height, width)`),
        `pooler_output` (its global average) and, when `output_hidden_states`, the stem output followed by each
        stage's output.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_pixel_values(pixel_values, self.config.num_channels, type(self).__name__, video=True)

        hidden_states = self.stem(pixel_values.permute(0, 2, 1, 3, 4))
        all_hidden_states = (hidden_states,)
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            all_hidden_states += (hidden_states,)
        pooled_output = torch.flatten(self.avgpool(hidden_states), 1)

        all_hidden_states = all_hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled_output, hidden_states=all_hidden_states
        )


__all__ = ["R3DModel", "R3DPreTrainedModel"]
