"""MoCo v2 configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig, check_positive, check_momentum


@strict
class MoCoConfig(ContrastiveConfig):
    r"""
    Momentum Contrast v2 (He et al., CVPR 2020; Chen et al., 2020): queries from the encoder, keys from a momentum
    copy of it, negatives from a queue of past keys, an MLP projector. Defaults: MoCo v2 on ImageNet.

    temperature (`float`, *optional*, defaults to 0.2): InfoNCE temperature.
    momentum (`float`, *optional*, defaults to 0.999): key encoder <- m * key encoder + (1 - m) * encoder.
    queue_size (`int`, *optional*, defaults to 65536): negatives kept from past batches (keys of every process).
    """

    model_type = "moco"

    temperature: float | int = 0.2
    momentum: float | int = 0.999
    queue_size: int = 65536

    def validate_loss(self) -> None:
        check_positive("temperature", self.temperature)
        check_momentum("momentum", self.momentum)
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


__all__ = ["MoCoConfig"]
