"""SimSiam configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig


@strict
class SimSiamConfig(ContrastiveConfig):
    r"""
    SimSiam (Chen & He, CVPR 2021, "Exploring Simple Siamese Representation Learning"): one encoder (backbone +
    projector) for both views, a predictor on one side and a stop-gradient on the other; no negatives, no momentum
    encoder. Defaults: the paper's ImageNet model (sec. 3, "Baseline settings"): a 3-layer projector 2048-2048-2048
    with BatchNorm on every layer including the output, a 2-layer predictor 2048-512-2048, the predictor's learning
    rate fixed (sec. 4.2). The paper's CIFAR model (appendix D) has a 2-layer projector.

    projection_hidden_dim (`int`, *optional*, defaults to 2048): width of the projector's hidden layers.
    projection_dim (`int`, *optional*, defaults to 2048): the projector's output, z (the predictor's input and
        output, p).
    projection_layers (`int`, *optional*, defaults to 3): linear layers of the projector.
    projection_batchnorm (`bool`, *optional*, defaults to `True`): BatchNorm after every layer of the projector,
        its output included (the output's without affine parameters, as the official code).
    prediction_hidden_dim (`int`, *optional*, defaults to 512): the predictor's bottleneck.
    fixed_predictor_lr (`bool`, *optional*, defaults to `True`): the predictor keeps the recipe's learning rate while
        the rest follows the schedule (sec. 4.2, Table 1: 68.1% linear accuracy, 67.7% with the lr decayed).
    per_view_batchnorm (`bool`, *optional*, defaults to `True`): each view in a forward pass of its own, so
        BatchNorm statistics are per view, as the official code (`z1 = self.encoder(x1)`, `z2 = self.encoder(x2)`).
    """

    model_type = "simsiam"

    projection_hidden_dim: int = 2048
    projection_dim: int = 2048
    projection_layers: int = 3
    prediction_hidden_dim: int = 512
    fixed_predictor_lr: bool = True
    per_view_batchnorm: bool = True

    def validate_loss(self) -> None:
        if self.prediction_hidden_dim < 1:
            raise ValueError(f"prediction_hidden_dim must be >= 1, got {self.prediction_hidden_dim}")


__all__ = ["SimSiamConfig"]
