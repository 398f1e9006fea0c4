"""DeepCluster (Caron et al., ECCV 2018): a backbone trained to predict k-means pseudo-labels of its own features."""

import torch
from torch import nn
from transformers import initialization as init

from .configuration_deep_cluster import DeepClusterConfig
from .modeling_alexnet import AlexNetModel
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_ssl import BackboneFeatureModel, SSLModelOutput, SSLPreTrainedModel, SSLPreTraining, SSLPreTrainingOutput
from .modeling_vgg import VGGModel


class DeepClusterPreTrainedModel(SSLPreTrainedModel):
    config: DeepClusterConfig
    config_class = DeepClusterConfig
    base_model_prefix = "deep_cluster"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The backbone's layers are initialised by the backbone's own PreTrainedModel, so a Linear seen here is the
        # classifier. (Touching it from the top module would also overwrite loaded weights.)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, 0.0, self.config.classifier_init_std)
            init.zeros_(module.bias)
        elif isinstance(module, DeepClusterForPreTraining):
            module.pseudo_labels.fill_(-1)


class DeepClusterModel(BackboneFeatureModel, DeepClusterPreTrainedModel):
    """The backbone. `embeddings` are what k-means clusters (and kNN reads): for AlexNet/VGG fc7 *before* its
    ReLU, as the official code drops the classifier's last ReLU before computing the features to cluster;
    `pooler_output` is fc7 after the ReLU, what the classifier over the clusters is trained on. Other backbones:
    both are the pooled features."""

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SSLModelOutput | tuple:
        """Features of `(batch_size, channels, height, width)` images; see the class docstring for which."""
        if not isinstance(self.backbone, (AlexNetModel, VGGModel)):
            return super().forward(
                pixel_values, output_hidden_states=output_hidden_states, return_dict=return_dict, **kwargs
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.backbone(
            pixel_values=pixel_values,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            pooler_activation=False,
        )
        fc7 = out.pooler_output  # one pass gives both: the ReLU is applied here rather than in the backbone
        output = SSLModelOutput(
            last_hidden_state=out.last_hidden_state,
            pooler_output=self.backbone.classifier[-1](fc7),
            embeddings=fc7,
            hidden_states=out.hidden_states,
        )
        return output if return_dict else output.to_tuple()


class DeepClusterForPreTraining(SSLPreTraining, DeepClusterPreTrainedModel):
    """Backbone + the linear classifier over the k clusters, trained with cross-entropy on pseudo-labels.

    `pseudo_labels` (one cluster per example id, -1 = none yet) is training state: a non-persistent buffer that
    the training loop fills each epoch (`set_pseudo_labels`, `reset_classifier`) and checkpoints; the classifier
    is re-initialised with every new clustering because cluster indices carry no meaning from one to the next.
    The classifier reads the backbone's `pooler_output` (fc7 after its ReLU for AlexNet/VGG) and is optimised in
    a parameter group of its own (`optimizer_overrides`): without momentum, as the official top-layer SGD.
    `forward(pixel_values, ids)`: one augmented view per example, the examples' stable ids (pseudo-label rows).
    """

    requires_ids = True
    feature_model_class = DeepClusterModel

    def _build_heads(self, config: DeepClusterConfig, feature_dim: int) -> None:
        self.classifier = nn.Linear(feature_dim, config.num_clusters)
        self.register_buffer("pseudo_labels", torch.full((config.num_examples,), -1), persistent=False)

    def optimizer_overrides(self) -> dict[str, dict[str, float]]:
        """Hyper-parameters of the classifier's own parameter group (`create_optimizer` reads this): the official
        code trains the top layer with a separate SGD without momentum (same lr and weight decay), re-created at
        every clustering, while the trunk's SGD has momentum 0.9."""
        if self.config.classifier_momentum is None:
            return {}
        return {"classifier": {"momentum": float(self.config.classifier_momentum)}}

    @torch.no_grad()
    def set_pseudo_labels(self, labels: torch.Tensor) -> None:
        """Install one cluster per example id (-1 for an example without features, e.g. a corrupt image)."""
        if tuple(labels.shape) != tuple(self.pseudo_labels.shape):
            raise ValueError(
                f"pseudo-labels have shape {tuple(labels.shape)}, expected {tuple(self.pseudo_labels.shape)}"
            )
        if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= self.config.num_clusters):
            raise ValueError(f"pseudo-labels must lie in [-1, {self.config.num_clusters})")
        self.pseudo_labels.copy_(labels)

    @torch.no_grad()
    def reset_classifier(self, seed: int) -> None:
        """Fresh classifier weights, the same on every process for a given seed."""
        generator = torch.Generator(device=self.classifier.weight.device).manual_seed(seed)
        self.classifier.weight.normal_(0.0, self.config.classifier_init_std, generator=generator)
        self.classifier.bias.zero_()

    def _pretraining_output(self, pixel_values: torch.Tensor, ids: torch.Tensor) -> SSLPreTrainingOutput:
        targets = self.pseudo_labels[ids]
        if ids.numel() and int(targets.min()) < 0:
            raise ValueError(
                f"example id {int(ids[targets < 0][0])} has no pseudo-label: cluster the training set first "
                "(the training loop does it at every epoch start)"
            )
        # fc7 after its ReLU (AlexNet/VGG), as the official model's classifier ends in a ReLU again for training
        features = self.base_model(pixel_values, return_dict=True).pooler_output
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits.float(), targets)
        return SSLPreTrainingOutput(loss=loss, embeddings=features, logits=logits)


class DeepClusterBackbone(SSLBackbone, DeepClusterPreTrainedModel):
    """The backbone trained by DeepCluster, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class DeepClusterForImageClassification(SSLForImageClassification, DeepClusterPreTrainedModel):
    """The backbone trained by DeepCluster and a new linear classifier: what `AutoModelForImageClassification` loads."""


class DeepClusterForVideoClassification(SSLForVideoClassification, DeepClusterPreTrainedModel):
    """The video backbone trained by DeepCluster and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "DeepClusterModel",
    "DeepClusterForPreTraining",
    "DeepClusterPreTrainedModel",
    "DeepClusterBackbone",
    "DeepClusterForImageClassification",
    "DeepClusterForVideoClassification",
]
