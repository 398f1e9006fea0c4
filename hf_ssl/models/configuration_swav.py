"""SwAV configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_contrastive import ContrastiveConfig, check_positive


@strict
class SwAVConfig(ContrastiveConfig):
    r"""
    Swapping Assignments between Views (Caron et al., NeurIPS 2020): prototypes, codes from Sinkhorn-Knopp over
    the global batch (plus a queue of past embeddings), each view predicting the other views' codes.

    num_prototypes (`int`, *optional*, defaults to 3000): prototype vectors (the paper's K).
    temperature (`float`, *optional*, defaults to 0.1): softmax temperature of the predictions.
    sinkhorn_epsilon (`float`, *optional*, defaults to 0.05): entropic regularisation of the codes.
    sinkhorn_iterations (`int`, *optional*, defaults to 3): Sinkhorn-Knopp iterations.
    queue_size (`int`, *optional*, defaults to 0): past embeddings per view added to Sinkhorn's batch (0 = none;
        the paper uses 3840 for small batches, from epoch 15).
    queue_start_step (`int`, *optional*, defaults to 0): first step at which the queue is used.
    freeze_prototypes_steps (`int`, *optional*, defaults to 0): the prototypes get no gradient before this step.
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
