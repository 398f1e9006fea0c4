"""The one table of hf_ssl's methods and backbones, from which everything that finds them by name is derived: the
transformers Auto classes (and the `auto_map` that `trust_remote_code` loads), `PRETRAINING_CLASSES`, the public
names of `hf_ssl.models`, the epoch hooks (`hf_ssl.training.epoch_hooks.epoch_hook`) and the model card sections
(`hf_ssl.hub.card.render_method_section`). tests/test_registry.py checks that they agree.

Adding a method is one row here. The model files never import this module: they travel as remote code without it.
"""

import importlib
from dataclasses import dataclass, field

import transformers
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, PreTrainedConfig, PreTrainedModel

from .modeling_ssl import BACKBONE_MODEL_CLASSES, TRANSFER_CLASSES


@dataclass(frozen=True)
class Method:
    """One self-supervised method. `name` is its one key: the recipe's `method`, its config's `model_type` and its
    card section `model_cards/methods/<name>.md`."""

    name: str
    # "<modeling file>.<ForPreTraining class>" of this folder, as transformers' auto_map spells a class: the config
    # and feature model are the ForPreTraining's `config_class` and `feature_model_class`
    pretraining: str
    # the class in hf_ssl.training.epoch_hooks that runs between epochs; named, as that module needs faiss and the data
    epoch_hook: str | None = None
    pretraining_class: type[PreTrainedModel] = field(init=False)

    def __post_init__(self) -> None:
        module, name = self.pretraining.rsplit(".", 1)
        object.__setattr__(self, "pretraining_class", getattr(importlib.import_module(f".{module}", __package__), name))

    @property
    def config_class(self) -> type[PreTrainedConfig]:
        return self.pretraining_class.config_class

    @property
    def model_class(self) -> type[PreTrainedModel]:
        """The feature model, what `AutoModel` loads."""
        return self.pretraining_class.feature_model_class

    @property
    def transfer_classes(self) -> dict[str, type[PreTrainedModel]]:
        """Auto class name -> the method's class for downstream use: `AutoBackbone`, `AutoModelForImageClassification`,
        `AutoModelForVideoClassification` (`modeling_backbone`)."""
        return TRANSFER_CLASSES[self.name]

    @property
    def classes(self) -> tuple[type, ...]:
        return self.config_class, self.model_class, self.pretraining_class, *self.transfer_classes.values()

    @property
    def card_template(self) -> str:
        """The file of its section in the model card templates' `methods/` folder."""
        return f"{self.name}.md"


@dataclass(frozen=True)
class Backbone:
    """One of hf_ssl's own backbones (any transformers vision model is a backbone too)."""

    name: str
    model_class: type[PreTrainedModel]

    @property
    def config_class(self) -> type[PreTrainedConfig]:
        return self.model_class.config_class

    @property
    def classes(self) -> tuple[type, ...]:
        return self.config_class, self.model_class


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("instance_recognition", "modeling_instance_recognition.InstanceRecognitionForPreTraining"),
        Method("deep_cluster", "modeling_deep_cluster.DeepClusterForPreTraining", epoch_hook="DeepClusterHook"),
        Method(
            "local_aggregation",
            "modeling_local_aggregation.LocalAggregationForPreTraining",
            epoch_hook="LocalAggregationHook",
        ),
        Method("moco", "modeling_moco.MoCoForPreTraining"),
        Method("simclr", "modeling_simclr.SimCLRForPreTraining"),
        Method("byol", "modeling_byol.BYOLForPreTraining"),
        Method("swav", "modeling_swav.SwAVForPreTraining"),
        Method("simsiam", "modeling_simsiam.SimSiamForPreTraining"),
        Method("transitive_invariance", "modeling_transitive_invariance.TransitiveInvarianceForPreTraining"),
        Method("jigsaw", "modeling_jigsaw.JigsawForPreTraining"),
        Method("counting", "modeling_counting.CountingForPreTraining"),
        Method("multi_task", "modeling_multi_task.MultiTaskForPreTraining"),
        Method("supervised", "modeling_supervised.SupervisedForPreTraining"),
    )
}

# the rows of the backbones are those that build_backbone knows: remote code (without this module) resolves them there
BACKBONES: dict[str, Backbone] = {name: Backbone(name, model) for name, model in BACKBONE_MODEL_CLASSES.items()}

# method name (as in recipes) -> its pre-training model class
PRETRAINING_CLASSES: dict[str, type[PreTrainedModel]] = {name: m.pretraining_class for name, m in METHODS.items()}


def register_auto_classes() -> None:
    """Register every row with the transformers Auto classes, and each method's classes for `auto_map`:
    `register_for_auto_class` makes `save_pretrained` copy their files next to the weights and name them in the
    config, which is what `trust_remote_code=True` loads on a machine without hf_ssl."""
    for backbone in BACKBONES.values():
        AutoConfig.register(backbone.name, backbone.config_class, exist_ok=True)
        AutoModel.register(backbone.config_class, backbone.model_class, exist_ok=True)
    for method in METHODS.values():
        AutoConfig.register(method.name, method.config_class, exist_ok=True)  # raises unless name == model_type
        method.config_class.register_for_auto_class("AutoConfig")
        for auto_class, model_class in (
            (AutoModel, method.model_class),
            (AutoModelForPreTraining, method.pretraining_class),
        ):
            auto_class.register(method.config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class.__name__)
        for auto_name, model_class in method.transfer_classes.items():
            getattr(transformers, auto_name).register(method.config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_name)
