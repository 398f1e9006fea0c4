"""Configuration shared by every self-supervised method: the method's hyper-parameters plus a `backbone_config`."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_alexnet import AlexNetConfig
from .configuration_c3d import C3DConfig
from .configuration_r3d import R3DConfig
from .configuration_vgg import VGGConfig

# hf_ssl's own backbones are resolved here rather than through AutoConfig so that a checkpoint loaded with
# trust_remote_code (no hf_ssl installed, nothing registered) still finds them.
BACKBONE_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    cls.model_type: cls for cls in (AlexNetConfig, VGGConfig, C3DConfig, R3DConfig)
}


def backbone_config_from_dict(config: dict | PreTrainedConfig | None) -> PreTrainedConfig:
    """Turn a `backbone_config` given as a dict (from JSON/YAML) into a config object.

    `model_type` selects the class: hf_ssl's backbones (alexnet, vgg, c3d, r3d) or any transformers vision model
    (resnet, convnext, vit, videomae, ...). `None` means transformers' default ResNet-50.
    """
    if isinstance(config, PreTrainedConfig):
        return config
    if config is None:
        return CONFIG_MAPPING["resnet"]()
    if not isinstance(config, dict):
        raise TypeError(f"backbone_config must be a dict or a PreTrainedConfig, got {type(config).__name__}")
    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError("backbone_config needs a `model_type` (e.g. 'resnet', 'alexnet', 'vgg', 'c3d', 'r3d').")
    if model_type in BACKBONE_CONFIG_CLASSES:
        return BACKBONE_CONFIG_CLASSES[model_type](**config)
    if model_type in CONFIG_MAPPING:
        return CONFIG_MAPPING[model_type](**config)
    known = sorted(BACKBONE_CONFIG_CLASSES) + ["or any transformers model type such as resnet, convnext, vit"]
    raise ValueError(f"backbone_config.model_type={model_type!r} is not a known backbone; use one of {known}")


def backbone_output_dim(config: PreTrainedConfig) -> int:
    """Size of the pooled vector a backbone built from `config` returns."""
    hidden_size = getattr(config, "hidden_size", None)
    if isinstance(hidden_size, int):
        return hidden_size
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return int(hidden_sizes[-1])
    raise ValueError(f"cannot tell the feature size of a {type(config).__name__} backbone (no hidden_size(s))")


def backbone_stage_names(config: PreTrainedConfig) -> list[str]:
    """Names of the feature maps a backbone built from `config` gives, one per hidden state it returns: the config's
    own `stage_names` (transformers' backbone configs such as ResNet's, and hf_ssl's backbones), else `stem` and one
    `stageN` per layer of a transformer (ViT, VideoMAE: the embeddings, then each layer's output)."""
    names = getattr(config, "stage_names", None)
    if names:
        return list(names)
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int):
        return ["stem"] + [f"stage{index}" for index in range(1, layers + 1)]
    raise ValueError(
        f"cannot tell the stages of a {type(config).__name__} backbone (no stage_names or num_hidden_layers)"
    )


@strict
class SSLConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Base class of the method configurations. It is also the config of the method's `AutoBackbone` (transformers'
    `BackboneConfigMixin`): `stage_names` are the backbone's (`backbone_stage_names`), `out_features` /
    `out_indices` select the feature maps (default: the last stage).

    backbone_config (`dict` or `PreTrainedConfig`, *optional*):
        The backbone: one of hf_ssl's (alexnet, vgg, c3d, r3d) or any transformers vision model. A ResNet
        config may carry `cifar_stem=True` (3x3 stride-1 stem, no max-pool) for 32 px images; every hf_ssl model
        class built from the method config (features, backbone, classification) builds the same stem. It may also
        carry `zero_init_residual=True`: each residual block's last BatchNorm starts with scale 0 (official
        SimCLR's initialisation; torchvision's and transformers' default is 1).
    """

    backbone_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        self.backbone_config = backbone_config_from_dict(self.backbone_config)
        kwargs.pop("stage_names", None)  # derived from the backbone, never read from a saved config
        self.stage_names = backbone_stage_names(self.backbone_config)
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)
        # Validate at construction so a bad value is a ValueError naming the field (as the backbone configs do).
        self.validate_method()

    def validate_method(self) -> None:
        """Check the method's hyper-parameters (raise ValueError naming the field); each method defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define validate_method")
