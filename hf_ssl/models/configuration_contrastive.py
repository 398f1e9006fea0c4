"""Hyper-parameters shared by the contrastive / self-distillation family (MoCo, SimCLR, BYOL, SwAV)."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig

VIEW_PAIRS = ("all", "consecutive")


@strict
class ContrastiveConfig(SSLConfig):
    r"""
    Base of the multi-view methods: each example is seen in `num_views` views per step, and pairs of views of one
    example are positive pairs (Feichtenhofer et al., CVPR 2021: the views are rho clips of one video, or
    augmentations of one image).

    num_views (`int`, *optional*, defaults to 2):
        Views per example per step (the paper's rho for videos; 2 for images).
    projection_hidden_dim (`int`, *optional*, defaults to 2048):
        Width of the MLP projector's hidden layers.
    projection_dim (`int`, *optional*, defaults to 128):
        Output size of the projector: the space the loss works in.
    projection_layers (`int`, *optional*, defaults to 2):
        Linear layers of the projector (ReLU between them).
    projection_batchnorm (`bool`, *optional*, defaults to `True`):
        BatchNorm after each hidden layer of the projector, as SimCLR's and BYOL's; MoCo v2's projector has none.
    view_pairs (`str`, *optional*, defaults to `"all"`):
        Which pairs of views are positives when num_views > 2: `"all"` (every pair: each view is contrasted with
        every other view, as SlowFast's MoCo and BYOL do for rho > 2 clips) or `"consecutive"` (views v and v + 1
        only, as SlowFast's SimCLR and SwAV do). Both are the same pair for 2 views. The default is `"all"`
        because it is the paper's objective (every other clip of the video is a positive of a query clip) and the
        reference code's choice for the two momentum methods; `"consecutive"` reproduces SlowFast's SimCLR/SwAV.
    per_view_batchnorm (`bool`, *optional*, defaults to `False`):
        Encode each view in a pass of its own (backbone, heads and momentum encoder), so that BatchNorm normalises
        each view's batch alone, as official BYOL and SimSiam do (their defaults are `True`). `False`: all views
        of the batch in one pass, BatchNorm statistics over all of them, as official SimCLR (`tf.concat` of the
        views) and SwAV (the crops of one size together) do.
    num_examples (`int`, *optional*, defaults to 0):
        Set by the training loop to the dataset size; unused by these methods (no memory bank).
    """

    num_views: int = 2
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_layers: int = 2
    projection_batchnorm: bool = True
    view_pairs: str = "all"
    per_view_batchnorm: bool = False
    num_examples: int = 0

    def validate_method(self) -> None:
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2 (pairs of views are the positives), got {self.num_views}")
        for name in ("projection_hidden_dim", "projection_dim", "projection_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_choice("view_pairs", self.view_pairs, VIEW_PAIRS)
        self.validate_loss()

    def validate_loss(self) -> None:
        """The method's own hyper-parameters (raise ValueError naming the field)."""


def check_momentum(name: str, value: float) -> None:
    """Raise a ValueError naming `name` unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming `name` unless value is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


__all__ = ["ContrastiveConfig"]
