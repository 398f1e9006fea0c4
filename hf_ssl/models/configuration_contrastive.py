"""Hyper-parameters shared by the contrastive / self-distillation family (MoCo, SimCLR, BYOL, SwAV)."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig


@strict
class ContrastiveConfig(SSLConfig):
    r"""
    Base of the multi-view methods: each example is seen in `num_views` views per step, and every pair of views of
    one example is a positive pair (Feichtenhofer et al., CVPR 2021: the views are rho clips of one video, or
    augmentations of one image).

    num_views (`int`, *optional*, defaults to 2):
        Views per example per step (the paper's rho for videos; 2 for images).
    projection_hidden_dim (`int`, *optional*, defaults to 2048):
        Width of the MLP projector's hidden layers.
    projection_dim (`int`, *optional*, defaults to 128):
        Output size of the projector: the space the loss works in.
    projection_layers (`int`, *optional*, defaults to 2):
        Linear layers of the projector (BatchNorm + ReLU between them).
    num_examples (`int`, *optional*, defaults to 0):
        Set by the training loop to the dataset size; unused by these methods (no memory bank).
    """

    num_views: int = 2
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_layers: int = 2
    num_examples: int = 0

    def validate_method(self) -> None:
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2 (pairs of views are the positives), got {self.num_views}")
        for name in ("projection_hidden_dim", "projection_dim", "projection_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.validate_loss()

    def validate_loss(self) -> None:
        """The method's own hyper-parameters (raise ValueError naming the field)."""


def check_positive(name: str, value: float) -> None:
    """Raise a ValueError naming `name` unless value > 0."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_momentum(name: str, value: float) -> None:
    """Raise a ValueError naming `name` unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


__all__ = ["ContrastiveConfig"]
