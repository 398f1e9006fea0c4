"""Supervised classification as an hf_ssl method: cross-entropy on the dataset's labels, one view per example (an
image or a clip). C3D (Tran et al., ICCV 2015) was trained this way on Sports-1M."""

import torch
from torch import nn

from .configuration_supervised import SupervisedConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, SSLPreTraining, SSLPreTrainingOutput


class SupervisedPreTrainedModel(SSLPreTrainedModel):
    config: SupervisedConfig
    config_class = SupervisedConfig
    base_model_prefix = "supervised"


class SupervisedModel(BackboneFeatureModel, SupervisedPreTrainedModel):
    """The backbone trained with labels: what `AutoModel` loads (for C3D its fc7; fc6 is what the `video_svm`
    protocol reads)."""


class SupervisedForPreTraining(SSLPreTraining, SupervisedPreTrainedModel):
    """Backbone -> dropout -> linear classifier, cross-entropy against `labels`. The training loop passes the
    batch's `labels` (the recipe's `label_column`) because `requires_labels` is set. The classifier is named as
    the image / video classification models' (`classification_head`): they load it trained from this checkpoint."""

    feature_model_class = SupervisedModel
    requires_labels = True

    def _build_heads(self, config: SupervisedConfig, feature_dim: int) -> None:
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classification_head = nn.Linear(feature_dim, config.num_labels)

    def check_inputs(self, pixel_values: torch.Tensor, **inputs: torch.Tensor) -> None:
        if pixel_values.dim() not in (4, 5):  # one view per example: no views axis
            raise self.layout_error(pixel_values, "(batch, channels, height, width) or (batch, frames, channels, h, w)")

    def check_labels(self, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """`labels` as long on the model's device; a missing, mis-shaped or out-of-range label is a ValueError that
        says which field to set (cross-entropy would fail with an index error, or a device assert on GPU)."""
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs `labels`: set label_column to the dataset's class column")
        labels = labels.to(self.device, torch.long)
        if labels.shape != (batch_size,):
            raise ValueError(f"labels must have shape ({batch_size},), one per example, got {tuple(labels.shape)}")
        bad = labels[(labels < 0) | (labels >= self.config.num_labels)]
        if bad.numel():
            raise ValueError(
                f"label {int(bad[0])} is outside [0, num_labels={self.config.num_labels}): set method_config.num_labels "
                "to the number of classes of label_column"
            )
        return labels

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SSLPreTrainingOutput | tuple:
        """`pixel_values`: `(batch, channels, height, width)` images or `(batch, frames, channels, height, width)`
        clips; `labels`: `(batch,)` class indices. Other inputs of the loop's interface (`ids`) are not used."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if kwargs.get("small_pixel_values") is not None:
            raise ValueError(f"{type(self).__name__} does not take multi-crop's small crops (small_pixel_values)")
        self.check_inputs(pixel_values)
        labels = self.check_labels(labels, pixel_values.shape[0])
        features = self.base_model(pixel_values, return_dict=True).pooler_output
        logits = self.classification_head(self.dropout(features))
        # in float32 under mixed precision, as the other methods' losses
        loss = nn.functional.cross_entropy(logits.float(), labels)
        output = SSLPreTrainingOutput(loss=loss, embeddings=features, logits=logits)
        return output if return_dict else output.to_tuple()


class SupervisedBackbone(SSLBackbone, SupervisedPreTrainedModel):
    """The backbone trained with labels, for downstream models: what `AutoBackbone` loads."""


class SupervisedForImageClassification(SSLForImageClassification, SupervisedPreTrainedModel):
    """The backbone and its trained classifier: what `AutoModelForImageClassification` loads."""


class SupervisedForVideoClassification(SSLForVideoClassification, SupervisedPreTrainedModel):
    """The video backbone and its trained classifier (C3D's fc8): what `AutoModelForVideoClassification` loads."""


__all__ = [
    "SupervisedModel",
    "SupervisedForPreTraining",
    "SupervisedPreTrainedModel",
    "SupervisedBackbone",
    "SupervisedForImageClassification",
    "SupervisedForVideoClassification",
]
