"""C3D (Tran et al., 2015): 3x3x3 convolutions all the way, for video clips."""

import math
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_c3d import C3DConfig
from .layers import check_pixel_values, init_backbone_weights, scale_width

# Number of convs in each of the five stages (conv1a | conv2a | conv3a-b | conv4a-b | conv5a-b) and the pool that
# closes the stage: pool1 keeps time, as in the paper, so early layers do not merge temporal signal too soon.
_STAGE_DEPTHS = (1, 1, 2, 2, 2)
_STAGE_POOLS = ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))


class C3DStage(nn.Module):
    """One or two d x 3 x 3 conv (-> BatchNorm3d) -> ReLU layers followed by a max-pool (d = 3 in the paper's net).

    The pools use `ceil_mode` so short or small clips (e.g. 4 frames) keep at least one position per axis instead of
    collapsing to zero; at the paper's 16x112x112 this gives its 1x4x4 pool5 output. `forward` returns the activation
    before and after the pool: the former is what a per-layer probe reads.
    """

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        pool: tuple[int, int, int],
        batch_norm: bool,
        padding: tuple[int, ...] = (0, 0, 0),
        temporal_depth: int = 3,
    ):
        super().__init__()
        layers = []
        kernel, conv_padding = (temporal_depth, 3, 3), (temporal_depth // 2, 1, 1)
        for out_channels in channels:
            # A bias right before a batch norm is cancelled by its mean subtraction.
            layers.append(
                nn.Conv3d(in_channels, out_channels, kernel_size=kernel, padding=conv_padding, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm3d(out_channels))
            layers.append(nn.ReLU())
            in_channels = out_channels
        self.layers = nn.Sequential(*layers)
        self.pooler = nn.MaxPool3d(kernel_size=pool, stride=pool, padding=tuple(padding), ceil_mode=True)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(stage output before the pool, stage output after the pool)`."""
        hidden_states = self.layers(hidden_states)
        return hidden_states, self.pooler(hidden_states)


# Copied from hf_ssl.models.modeling_alexnet.AlexNetPreTrainedModel with AlexNet->C3D, alexnet->c3d, "image"->"video"
class C3DPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the C3D models."""

    config: C3DConfig
    base_model_prefix = "c3d"
    main_input_name = "pixel_values"
    input_modalities = ("video",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """`layers.init_backbone_weights`: He normal (fan_out) convs, N(0, 0.01) linears, zero biases, identity batch
        norms; the fixed Sobel kernels are restored, not randomised."""
        init_backbone_weights(module)


class C3DModel(C3DPreTrainedModel):
    """C3D trunk plus fc6/fc7. `pooler_output` is fc7 after its ReLU, `(batch_size, config.hidden_size)`."""

    def __init__(self, config: C3DConfig):
        super().__init__(config)
        channels = [scale_width(width, config.width_multiplier) for width in config.conv_channels]
        stages = []
        in_channels, start = config.num_channels, 0
        for depth, pool, temporal_depth in zip(_STAGE_DEPTHS, _STAGE_POOLS, config.temporal_kernel_depths):
            stage_channels = channels[start : start + depth]
            padding = config.pool5_padding if len(stages) == len(_STAGE_DEPTHS) - 1 else (0, 0, 0)
            stages.append(C3DStage(in_channels, stage_channels, pool, config.batch_norm, padding, temporal_depth))
            in_channels, start = stage_channels[-1], start + depth
        self.stages = nn.ModuleList(stages)
        self.avgpool = nn.AdaptiveAvgPool3d(tuple(config.pool_size))
        fc_dim = config.hidden_size
        pool_volume = config.pool_size[0] * config.pool_size[1] * config.pool_size[2]
        # fc6 -> relu6 -> drop6 -> fc7 -> relu7; the paper's drop7 belongs to the fc8 classifier, not the features.
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * pool_volume, fc_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout_prob),
            nn.Linear(fc_dim, fc_dim),
            nn.ReLU(),
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if self.config.scale_fc_init and isinstance(module, nn.Linear):
            # the paper's fc6 and fc7 read 8192 and 4096 inputs: their N(0, 0.01) gain, kept at any width
            paper_fan_in = 8192 if module is self.classifier[0] else 4096
            init.normal_(module.weight, mean=0.0, std=0.01 * math.sqrt(paper_fan_in / module.in_features))

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encode `(batch_size, num_frames, num_channels, height, width)` clips (VideoMAE's layout).

        Returns `last_hidden_state` (the pool5 map, `(batch_size, channels, time, height, width)`), `pooler_output`
        (fc7) and, when `output_hidden_states`, the conv1a, conv2a, conv3b, conv4b and conv5b activations (after
        ReLU, before their pools).
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        check_pixel_values(pixel_values, self.config.num_channels, type(self).__name__, video=True)

        hidden_states = pixel_values.permute(0, 2, 1, 3, 4)
        all_hidden_states = ()
        for stage in self.stages:
            stage_output, hidden_states = stage(hidden_states)
            all_hidden_states += (stage_output,)
        pooled_output = self.classifier(torch.flatten(self.avgpool(hidden_states), 1))

        all_hidden_states = all_hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (hidden_states, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled_output, hidden_states=all_hidden_states
        )


__all__ = ["C3DModel", "C3DPreTrainedModel"]
