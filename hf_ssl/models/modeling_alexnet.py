"""AlexNet as used by DeepCluster (Caron et al., 2018, facebookresearch/deepcluster models/alexnet.py)."""

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_alexnet import AlexNetConfig
from .layers import SafeMaxPool2d, SobelFilter, check_pixel_values, init_backbone_weights, scale_width

# (kernel_size, stride, padding, max-pool after the conv) of conv1 ... conv5, as in DeepCluster's CFG["2012"].
_CONV_LAYOUT = ((11, 4, 2, True), (5, 1, 2, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, True))


class AlexNetConvBlock(nn.Module):
    """Conv -> BatchNorm -> ReLU, optionally followed by a 3x3 stride-2 max-pool.

    `forward` returns the activation before and after the pool: the former is what a per-layer probe reads.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, pool: bool):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.normalization = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()
        self.pooler = SafeMaxPool2d(kernel_size=3, stride=2) if pool else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(block output before the pool, block output after the pool)`."""
        hidden_states = self.activation(self.normalization(self.convolution(hidden_states)))
        return hidden_states, self.pooler(hidden_states)


class AlexNetPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the AlexNet models."""

    config: AlexNetConfig
    base_model_prefix = "alexnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """`layers.init_backbone_weights`: He normal (fan_out) convs, N(0, 0.01) linears, zero biases, identity batch
        norms; the fixed Sobel kernels are restored, not randomised."""
        init_backbone_weights(module)


class AlexNetModel(AlexNetPreTrainedModel):
    """AlexNet trunk plus fc6/fc7. `pooler_output` is fc7 after its ReLU, `(batch_size, config.hidden_size)`."""

    def __init__(self, config: AlexNetConfig):
        super().__init__(config)
        self.sobel = SobelFilter() if config.sobel else None
        in_channels = SobelFilter.out_channels if config.sobel else config.num_channels
        blocks = []
        for channels, (kernel_size, stride, padding, pool) in zip(config.conv_channels, _CONV_LAYOUT):
            out_channels = scale_width(channels, config.width_multiplier)
            stride = stride if blocks else config.conv1_stride
            blocks.append(AlexNetConvBlock(in_channels, out_channels, kernel_size, stride, padding, pool))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((config.pool_size, config.pool_size))
        fc_dim = config.hidden_size
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout_prob),
            nn.Linear(in_channels * config.pool_size**2, fc_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout_prob),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pooler_activation: bool = True,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode `(batch_size, num_channels, height, width)` images.

        Returns `last_hidden_state` (the last conv block's map after its max-pool), `pooler_output` (fc7; before its
        ReLU with `pooler_activation=False`, the features DeepCluster clusters) and, when `output_hidden_states`, the
        output of each conv block (after its activation, before its max-pool).
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_pixel_values(pixel_values, self.config.num_channels, type(self).__name__, video=False)

        hidden_states = self.sobel(pixel_values) if self.sobel is not None else pixel_values
        all_hidden_states = ()
        for block in self.blocks:
            block_output, hidden_states = block(hidden_states)
            all_hidden_states += (block_output,)
        head = self.classifier if pooler_activation else self.classifier[:-1]  # [-1] is fc7's ReLU
        pooled_output = head(torch.flatten(self.avgpool(hidden_states), 1))

        all_hidden_states = all_hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled_output, hidden_states=all_hidden_states
        )


__all__ = ["AlexNetModel", "AlexNetPreTrainedModel"]
