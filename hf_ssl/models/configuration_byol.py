"""BYOL configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig, check_momentum


@strict
class BYOLConfig(ContrastiveConfig):
    r"""
    Bootstrap Your Own Latent (Grill et al., NeurIPS 2020): an online network with a predictor regresses a
    target network's projection of another view; the target is an EMA of the online network whose momentum
    follows a cosine schedule from `base_momentum` to 1. Defaults: the paper's (projections 4096 -> 256).

    prediction_hidden_dim (`int`, *optional*, defaults to 4096): width of the predictor's hidden layer.
    base_momentum (`float`, *optional*, defaults to 0.996): target momentum at step 0.
    per_view_batchnorm (`bool`, *optional*, defaults to `True`): each view in a forward pass of its own, online
        and target, so BatchNorm statistics are per view, as official BYOL (`apply_once_fn` per view in
        byol_experiment.py).
    """

    model_type = "byol"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    prediction_hidden_dim: int = 4096
    base_momentum: float | int = 0.996
    per_view_batchnorm: bool = True

    def validate_loss(self) -> None:
        if self.prediction_hidden_dim < 1:
            raise ValueError(f"prediction_hidden_dim must be >= 1, got {self.prediction_hidden_dim}")
        check_momentum("base_momentum", self.base_momentum)


__all__ = ["BYOLConfig"]
