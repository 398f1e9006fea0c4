"""MoCo v2 configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig, check_choice, check_momentum
from .layers import check_positive

MOMENTUM_SCHEDULES = ("constant", "cosine")


@strict
class MoCoConfig(ContrastiveConfig):
    r"""
    Momentum Contrast v2 (He et al., CVPR 2020; Chen et al., 2020): queries from the encoder, keys from a momentum
    copy of it, negatives from a queue of past keys, an MLP projector without BatchNorm. Defaults: MoCo v2 on
    ImageNet (asymmetric loss, constant momentum, the key view's keys queued, Shuffle BN).

    temperature (`float`, *optional*, defaults to 0.2): InfoNCE temperature.
    momentum (`float`, *optional*, defaults to 0.999): key encoder <- m * key encoder + (1 - m) * encoder, once per
        optimizer step.
    queue_size (`int`, *optional*, defaults to 65536): negatives kept from past batches (keys of every process).
    momentum_schedule (`str`, *optional*, defaults to `"constant"`): `"constant"` (MoCo) or `"cosine"`: m rises
        from `momentum` to 1 over training as BYOL's target momentum (SlowFast's MOMENTUM_ANNEALING for videos).
    symmetric_loss (`bool`, *optional*, defaults to `False`): `False`: MoCo v2's asymmetric loss, view 0 gives the
        queries and the other views (with `view_pairs`) the keys. `True`: every view is a query in turn, the
        losses summed over query views (MoCo v3; SlowFast's video MoCo).
    queue_all_views (`bool`, *optional*, defaults to `False`): `False`: the keys of one view enter the queue
        (MoCo); `True`: the keys of every key view (SlowFast's MOCO_MULTI_VIEW_QUEUE).
    shuffle_bn (`bool`, *optional*, defaults to `True`): on several processes, the key encoder sees a batch
        shuffled across processes, so that a query and its key do not share BatchNorm statistics (MoCo sec.
        3.3). Skipped when the key encoder's BatchNorm layers are SyncBatchNorm (global statistics, as SlowFast
        does); without either, several processes raise a ValueError.
    """

    model_type = "moco"

    projection_batchnorm: bool = False
    temperature: float | int = 0.2
    momentum: float | int = 0.999
    queue_size: int = 65536
    momentum_schedule: str = "constant"
    symmetric_loss: bool = False
    queue_all_views: bool = False
    shuffle_bn: bool = True

    def validate_loss(self) -> None:
        check_positive("temperature", self.temperature)
        check_momentum("momentum", self.momentum)
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        check_choice("momentum_schedule", self.momentum_schedule, MOMENTUM_SCHEDULES)


__all__ = ["MoCoConfig"]
