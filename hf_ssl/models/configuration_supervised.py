"""Supervised classification configuration: the baseline every self-supervised method is compared with, and how
C3D (Tran et al., ICCV 2015) was trained."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig
from .layers import check_probability


@strict
class SupervisedConfig(SSLConfig):
    r"""
    Supervised training: the backbone's pooled features -> dropout -> one linear classifier over `num_labels`
    classes, cross-entropy against the dataset's label column (`label_column`). With a C3D backbone this is the
    paper's network: the backbone ends with fc6 -> drop6 -> fc7 (`C3DConfig.dropout_prob`), the classifier is its
    drop7 -> fc8.

    num_labels (`int`, *optional*, defaults to 2):
        Classes of the label column (transformers' field: it sets `id2label`); labels must lie in
        `[0, num_labels)`.
    classifier_dropout (`float`, *optional*, defaults to 0.0):
        Dropout before the classifier (C3D's drop7 is 0.5).
    """

    model_type = "supervised"

    classifier_dropout: float | int = 0.0

    def validate_method(self) -> None:
        """Hyper-parameters must be in range; the message names the field."""
        if self.num_labels < 2:
            raise ValueError(f"num_labels must be >= 2 (the classes of label_column), got {self.num_labels}")
        check_probability("classifier_dropout", self.classifier_dropout)


__all__ = ["SupervisedConfig"]
