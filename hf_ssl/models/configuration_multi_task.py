"""Multi-task pretext configuration (rotation, relative position)."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig

TASKS = ("rotation", "relative_position")


@strict
class MultiTaskConfig(SSLConfig):
    r"""
    Pretext tasks on one shared trunk with one head per task (Doersch & Zisserman, ICCV 2017): rotation
    prediction (0/90/180/270 degrees, Gidaris et al., ICLR 2018) and the relative position of two patches of a 3x3
    grid (Doersch, Gupta & Efros, ICCV 2015). The loss is the weighted sum of the tasks' cross-entropies; a task
    with weight 0 is not computed (its head stays in the autograd graph with a zero gradient, which the training
    loop drops, so several processes' DDP reduction completes), so `{"rotation": 1}` alone is RotNet.

    task_weights (`dict`, *optional*, defaults to `{"rotation": 1.0, "relative_position": 1.0}`): loss weight per task.
    patch_gap_ratio (`float`, *optional*, defaults to 0.25): part of each grid cell left out around its patch.
    head_hidden_dim (`int`, *optional*, defaults to 512): hidden layer of the relative-position head.
    num_examples (`int`, *optional*, defaults to 0): set by the training loop; unused.
    """

    model_type = "multi_task"

    task_weights: dict | None = None
    patch_gap_ratio: float | int = 0.25
    head_hidden_dim: int = 512
    num_examples: int = 0

    def __post_init__(self, **kwargs):
        if self.task_weights is None:
            self.task_weights = {task: 1.0 for task in TASKS}
        super().__post_init__(**kwargs)

    def validate_method(self) -> None:
        unknown = sorted(set(self.task_weights) - set(TASKS))
        if unknown:
            raise ValueError(f"task_weights has unknown tasks {unknown}; the tasks are {list(TASKS)}")
        if any(w < 0 for w in self.task_weights.values()) or not any(w > 0 for w in self.task_weights.values()):
            raise ValueError(f"task_weights must be >= 0 with at least one > 0, got {self.task_weights}")
        if not 0.0 <= self.patch_gap_ratio < 1.0:
            raise ValueError(f"patch_gap_ratio must be in [0, 1), got {self.patch_gap_ratio}")
        if self.head_hidden_dim < 1:
            raise ValueError(f"head_hidden_dim must be >= 1, got {self.head_hidden_dim}")


__all__ = ["MultiTaskConfig"]
