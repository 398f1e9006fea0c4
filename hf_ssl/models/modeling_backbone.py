"""A method's checkpoint out to downstream models: as a transformers backbone (`AutoBackbone`, `BackboneMixin`:
`stage_names`, `out_features`, `feature_maps`, `num_features` / `channels`) and as an image or video classifier
(`AutoModelForImageClassification`, `AutoModelForVideoClassification`: a new linear head on the pooled features).

Each method defines its three classes from these mixins (`MoCoBackbone(SSLBackbone, MoCoPreTrainedModel)`, ...):
their config is the method's (`SSLConfig`, a `BackboneConfigMixin`), and they hold the method's backbone under
`backbone`, built as the feature model builds it (`build_backbone`, the CIFAR stem included), so the weights of a
pre-training checkpoint load key for key and the features are the pre-trained model's.
"""

import math

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput, ImageClassifierOutputWithNoAttention

from .configuration_ssl import backbone_output_dim
from .modeling_ssl import SSLTransferModel, backbone_forward, build_backbone


def backbone_stage_channels(config: PreTrainedConfig) -> list[int]:
    """Channels of each feature map of a backbone built from `config`, read from one forward pass on the meta device
    (shapes only: no memory, no compute) at the backbone's own input size (`image_size`, `num_frames`), so they are
    those of the maps `forward` returns whatever the architecture."""
    with torch.device("meta"):
        probe = build_backbone(config)
        modalities = getattr(probe, "input_modalities", ())
        size = getattr(config, "image_size", 224)
        height, width = (size, size) if isinstance(size, int) else size[:2]
        shape = (1, getattr(config, "num_channels", 3), height, width)
        if "video" in ((modalities,) if isinstance(modalities, str) else modalities):
            shape = (1, getattr(config, "num_frames", 16), *shape[1:])
        pixel_values = torch.empty(shape)
        hidden_states = stage_outputs(probe, pixel_values)
        return [as_feature_map(hidden, pixel_values, config).shape[1] for hidden in hidden_states]


def stage_outputs(backbone: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The backbone's hidden states, one per stage; Swin-like backbones give theirs also laid out as maps."""
    out = backbone(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
    return getattr(out, "reshaped_hidden_states", None) or out.hidden_states


def as_feature_map(hidden_state: torch.Tensor, pixel_values: torch.Tensor, config: PreTrainedConfig) -> torch.Tensor:
    """A hidden state as a feature map: maps (`(B, C, H, W)`, `(B, C, T, H, W)`) as they are; a transformer's tokens
    `(B, tokens, C)` without the class / register tokens, laid out on the patch grid as Dinov2's backbone does."""
    if hidden_state.dim() != 3:
        return hidden_state
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    grid = [pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch]
    if pixel_values.dim() == 5:  # (B, T, C, H, W) clips: tubelets of `tubelet_size` frames
        grid.insert(0, pixel_values.shape[1] // getattr(config, "tubelet_size", 1))
    patches = hidden_state[:, hidden_state.shape[1] - math.prod(grid) :]
    return patches.transpose(1, 2).reshape(hidden_state.shape[0], hidden_state.shape[2], *grid)


class SSLBackbone(SSLTransferModel, BackboneMixin):
    """Mixin of a method's `AutoBackbone` class: the method's backbone, its per-stage outputs as `feature_maps`
    (`out_features` / `out_indices` of the method config select them; `hidden_states` are the backbone's own)."""

    auto_class_name = "AutoBackbone"
    has_attentions = False

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.num_features = backbone_stage_channels(config.backbone_config)
        if len(self.num_features) != len(self.stage_names):
            raise ValueError(
                f"the {config.backbone_config.model_type!r} backbone returns {len(self.num_features)} hidden states "
                f"for {len(self.stage_names)} stage_names {self.stage_names}"
            )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        """Feature maps of `pixel_values` (images `(B, C, H, W)`, clips `(B, T, C, H, W)`), one per `out_features`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        hidden_states = stage_outputs(self.backbone, pixel_values)
        feature_maps = tuple(
            as_feature_map(hidden_state, pixel_values, self.config.backbone_config)
            for name, hidden_state in zip(self.stage_names, hidden_states)
            if name in self.out_features
        )
        hidden_states = hidden_states if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden_states,) if output_hidden_states else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)


class SSLForImageClassification(SSLTransferModel):
    """Mixin of a method's `AutoModelForImageClassification` class: the method's backbone and a linear classifier
    (`classification_head`) over its pooled features (`pooler_output` of the feature model), `config.num_labels`
    classes, for fine-tuning."""

    auto_class_name = "AutoModelForImageClassification"
    modality = "image"

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = build_backbone(config.backbone_config)
        modalities = getattr(self.backbone, "input_modalities", ())
        modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if modalities and self.modality not in modalities:
            raise ValueError(
                f"{type(self).__name__} needs a backbone for {self.modality} input; this "
                f"{config.backbone_config.model_type!r} backbone takes {' / '.join(modalities)}: use "
                f"AutoModelFor{modalities[0].capitalize()}Classification"
            )
        num_labels = config.num_labels
        feature_dim = backbone_output_dim(config.backbone_config)
        # not `classifier`: a method's own head may have that name in its pre-training checkpoint (DeepCluster's)
        self.classification_head = nn.Linear(feature_dim, num_labels) if num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        """Class logits of `pixel_values`; with `labels`, the loss of `config.problem_type` (cross-entropy for
        single-label classification), as transformers' classifiers compute it."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        _, pooled, hidden_states = backbone_forward(self.backbone, pixel_values, bool(output_hidden_states))
        logits = self.classification_head(pooled)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden_states)
        return output if return_dict else output.to_tuple()


class SSLForVideoClassification(SSLForImageClassification):
    """Mixin of a method's `AutoModelForVideoClassification` class: as the image classifier, on clips
    `(batch_size, num_frames, num_channels, height, width)` of a video backbone (C3D, R3D, VideoMAE)."""

    auto_class_name = "AutoModelForVideoClassification"
    modality = "video"
