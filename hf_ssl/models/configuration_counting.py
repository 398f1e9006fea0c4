"""Counting configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_alexnet import AlexNetConfig
from .configuration_ssl import SSLConfig


@strict
class CountingConfig(SSLConfig):
    r"""
    Representation learning by learning to count (Noroozi, Pirsiavash & Favaro, ICCV 2017): the "count" vector of
    a downsampled image must equal the sum of the count vectors of its four tiles; a contrastive term keeps another
    image's count at least `margin` (squared distance) away, which rules out the all-zero solution. The
    downsampling method is drawn at random each step so low-level cues cannot tell a tile from a downsampled image.

    The default backbone is the paper's: AlexNet on RGB images (not DeepCluster's Sobel input), fc6 and fc7 4096,
    here without dropout (the paper does not use it as far as it says, and the reproduction that matches its Table 2,
    ahmdtaha/tf_learning_to_count, has none: the equivariance term compares five separate passes, and independent
    dropout masks add a noise to it that no network can remove); the count vector is fc8 + ReLU. The paper trains
    with learning rate 1e-4 (the reproduction: Adam, batch 256, no weight decay). The squared distances are
    unbounded: at classification learning rates (SGD 0.05) the loss explodes within a few steps, after which the
    ReLU count vector is all zero, costs exactly `margin` and passes no gradient again (the network stays broken).

    counting_dim (`int`, *optional*, defaults to 1000): size of the non-negative count vector (ReLU output).
    margin (`float`, *optional*, defaults to 10.0): margin of the contrastive term (the paper's M).
    num_examples (`int`, *optional*, defaults to 0): set by the training loop; unused.
    """

    model_type = "counting"

    counting_dim: int = 1000
    margin: float | int = 10.0
    num_examples: int = 0

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:  # the paper's trunk: AlexNet on RGB images, no dropout (see above)
            self.backbone_config = AlexNetConfig(sobel=False, dropout_prob=0.0)
        super().__post_init__(**kwargs)

    def validate_method(self) -> None:
        if self.counting_dim < 1:
            raise ValueError(f"counting_dim must be >= 1, got {self.counting_dim}")
        if not self.margin > 0:
            raise ValueError(f"margin must be > 0, got {self.margin}")


__all__ = ["CountingConfig"]
