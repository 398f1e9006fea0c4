"""Backbones and methods. Every file here is flat on purpose: transformers copies a model's modeling file and
its single-dot relative imports next to the weights, which is what lets ``trust_remote_code=True`` load an hf_ssl
checkpoint on a machine without hf_ssl. Nothing in this folder may import from outside it except torch and
transformers."""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_alexnet import AlexNetConfig
from .configuration_byol import BYOLConfig
from .configuration_c3d import C3DConfig
from .configuration_counting import CountingConfig
from .configuration_deep_cluster import DeepClusterConfig
from .configuration_instance_recognition import InstanceRecognitionConfig
from .configuration_jigsaw import JigsawConfig
from .configuration_local_aggregation import LocalAggregationConfig
from .configuration_moco import MoCoConfig
from .configuration_multi_task import MultiTaskConfig
from .configuration_r3d import R3DConfig
from .configuration_simclr import SimCLRConfig
from .configuration_swav import SwAVConfig
from .configuration_vgg import VGGConfig
from .modeling_alexnet import AlexNetModel
from .modeling_byol import BYOLForPreTraining, BYOLModel
from .modeling_c3d import C3DModel
from .modeling_counting import CountingForPreTraining, CountingModel
from .modeling_deep_cluster import DeepClusterForPreTraining, DeepClusterModel
from .modeling_instance_recognition import InstanceRecognitionForPreTraining, InstanceRecognitionModel
from .modeling_jigsaw import JigsawForPreTraining, JigsawModel
from .modeling_local_aggregation import LocalAggregationForPreTraining, LocalAggregationModel
from .modeling_moco import MoCoForPreTraining, MoCoModel
from .modeling_multi_task import MultiTaskForPreTraining, MultiTaskModel
from .modeling_r3d import R3DModel
from .modeling_simclr import SimCLRForPreTraining, SimCLRModel
from .modeling_swav import SwAVForPreTraining, SwAVModel
from .modeling_vgg import VGGModel

for _config, _model in [
    (AlexNetConfig, AlexNetModel),
    (VGGConfig, VGGModel),
    (C3DConfig, C3DModel),
    (R3DConfig, R3DModel),
    (InstanceRecognitionConfig, InstanceRecognitionModel),
    (DeepClusterConfig, DeepClusterModel),
    (LocalAggregationConfig, LocalAggregationModel),
    (MoCoConfig, MoCoModel),
    (SimCLRConfig, SimCLRModel),
    (BYOLConfig, BYOLModel),
    (SwAVConfig, SwAVModel),
    (JigsawConfig, JigsawModel),
    (CountingConfig, CountingModel),
    (MultiTaskConfig, MultiTaskModel),
]:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

# method name (as in recipes) -> its pre-training model class
PRETRAINING_CLASSES = {
    "instance_recognition": InstanceRecognitionForPreTraining,
    "deep_cluster": DeepClusterForPreTraining,
    "local_aggregation": LocalAggregationForPreTraining,
    "moco": MoCoForPreTraining,
    "simclr": SimCLRForPreTraining,
    "byol": BYOLForPreTraining,
    "swav": SwAVForPreTraining,
    "jigsaw": JigsawForPreTraining,
    "counting": CountingForPreTraining,
    "multi_task": MultiTaskForPreTraining,
}
for _model in PRETRAINING_CLASSES.values():
    AutoModelForPreTraining.register(_model.config_class, _model, exist_ok=True)

__all__ = [
    "PRETRAINING_CLASSES",
    "AlexNetConfig",
    "AlexNetModel",
    "VGGConfig",
    "VGGModel",
    "C3DConfig",
    "C3DModel",
    "R3DConfig",
    "R3DModel",
    "InstanceRecognitionConfig",
    "InstanceRecognitionModel",
    "InstanceRecognitionForPreTraining",
    "DeepClusterConfig",
    "DeepClusterModel",
    "DeepClusterForPreTraining",
    "LocalAggregationConfig",
    "LocalAggregationModel",
    "LocalAggregationForPreTraining",
    "MoCoConfig",
    "MoCoModel",
    "MoCoForPreTraining",
    "SimCLRConfig",
    "SimCLRModel",
    "SimCLRForPreTraining",
    "BYOLConfig",
    "BYOLModel",
    "BYOLForPreTraining",
    "SwAVConfig",
    "SwAVModel",
    "SwAVForPreTraining",
    "JigsawConfig",
    "JigsawModel",
    "JigsawForPreTraining",
    "CountingConfig",
    "CountingModel",
    "CountingForPreTraining",
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskForPreTraining",
]
