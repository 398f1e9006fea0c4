"""Pre-training from a pretrained backbone (`ModelArguments.backbone_name_or_path`).

The source is a local folder or Hub id of any transformers vision / video model (a `ResNetModel`,
`ResNetForImageClassification`, ViT, VideoMAE, ...: `AutoModel` loads its base model) or an hf_ssl checkpoint of any
method, of which only the backbone is taken (its heads and training state belong to its own method). The run's
backbone is built from `backbone_config`, or from the source's architecture when the recipe gives none; the source's
weights must then fit it exactly, or the run stops with one line naming the first weight that does not.

Continuing a checkpoint of the same method, heads and all, is `model_name_or_path` (the pre-flight check refuses a
checkpoint of another method there).
"""

import logging

from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig

from ..models.configuration_ssl import SSLConfig
from ..models.modeling_ssl import SSLFeatureModel

logger = logging.getLogger(__name__)


def pretrained_backbone_config(name_or_path: str) -> PreTrainedConfig:
    """The backbone architecture of a pretrained model: an hf_ssl checkpoint's `backbone_config`, else the model's
    own config."""
    config = AutoConfig.from_pretrained(name_or_path)
    return config.backbone_config if isinstance(config, SSLConfig) else config


def load_backbone_weights(backbone: nn.Module, name_or_path: str) -> None:
    """Copy the weights of the pretrained model `name_or_path` into `backbone` (a method's, built from its
    `backbone_config`). Weights the source checkpoint does not hold (a ViT pooler a classifier checkpoint leaves
    out) keep their initialisation, which is logged; any other difference is a ValueError naming the weight."""
    where = f"backbone_name_or_path={name_or_path!r}"
    source, loading = AutoModel.from_pretrained(name_or_path, output_loading_info=True)
    not_in_checkpoint = set(loading["missing_keys"])
    if isinstance(source, SSLFeatureModel):  # an hf_ssl checkpoint: its backbone only
        source = source.backbone
        not_in_checkpoint = {key.removeprefix("backbone.") for key in not_in_checkpoint}
    if type(source) is not type(backbone):
        raise ValueError(
            f"{where} holds a {type(source).__name__} but backbone_config builds a {type(backbone).__name__}: drop "
            "backbone_config to take the pretrained model's architecture, or give one of the same model_type"
        )
    own = backbone.state_dict()
    weights = {key: value for key, value in source.state_dict().items() if key not in not_in_checkpoint}
    for key, value in weights.items():
        if key not in own:
            raise ValueError(f"{where}: its weight {key} has no place in the backbone that backbone_config builds")
        if value.shape != own[key].shape:
            raise ValueError(
                f"{where}: {key} has shape {tuple(value.shape)}, the backbone that backbone_config builds "
                f"{tuple(own[key].shape)}: backbone_config must describe the pretrained architecture"
            )
    kept = sorted(own.keys() - weights.keys())
    if kept and not_in_checkpoint >= set(kept):
        logger.warning("%s has no %s: left at their initialisation", where, ", ".join(kept))
    elif kept:
        raise ValueError(f"{where} has no weight {kept[0]} of the backbone that backbone_config builds")
    backbone.load_state_dict(weights, strict=False)
