"""SwAV configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig
from .layers import check_positive


@strict
class SwAVConfig(ContrastiveConfig):
    r"""
    Swapping Assignments between Views (Caron et al., NeurIPS 2020): prototypes, codes from Sinkhorn-Knopp over
    the global batch (plus a queue of past embeddings), each crop predicting the other views' codes. `num_views`
    counts the global views, whose codes are computed (main_swav.py's `crops_for_assign`); multi-crop's small crops
    (the data argument `num_small_crops`) come as a second input and only predict.

    num_prototypes (`int`, *optional*, defaults to 3000): prototype vectors (the paper's K).
    temperature (`float`, *optional*, defaults to 0.1): softmax temperature of the predictions.
    sinkhorn_epsilon (`float`, *optional*, defaults to 0.05): entropic regularisation of the codes.
    sinkhorn_iterations (`int`, *optional*, defaults to 3): Sinkhorn-Knopp iterations.
    queue_size (`int`, *optional*, defaults to 0): past embeddings per global view that each process adds to its
        part of Sinkhorn's batch (0 = none). main_swav.py's `queue_length` (3840 at batch 256, from epoch 15) is
        the total over processes: use queue_length / processes here.
    queue_start_step (`int`, *optional*, defaults to 0): first step at which the queue is used.
    freeze_prototypes_steps (`int`, *optional*, defaults to 0): optimizer steps during which the prototypes do
        not move: they stay in the graph and the training loop drops their gradients after backward
        (`parameters_without_update`), as main_swav.py's `freeze_prototypes_niters` (313 steps = its first epoch
        at batch 4096, 5005 at batch 256).
    """

    model_type = "swav"

    projection_dim: int = 128
    num_prototypes: int = 3000
    temperature: float | int = 0.1
    sinkhorn_epsilon: float | int = 0.05
    sinkhorn_iterations: int = 3
    queue_size: int = 0
    queue_start_step: int = 0
    freeze_prototypes_steps: int = 0

    def validate_loss(self) -> None:
        check_positive("temperature", self.temperature)
        check_positive("sinkhorn_epsilon", self.sinkhorn_epsilon)
        for name in ("num_prototypes", "sinkhorn_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("queue_size", "queue_start_step", "freeze_prototypes_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


__all__ = ["SwAVConfig"]
