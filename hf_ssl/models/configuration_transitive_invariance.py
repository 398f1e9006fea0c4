"""Transitive Invariance configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig
from .layers import check_positive

# the paper's network: VGG-16 (plain RGB input: DeepCluster's Sobel filter is the VGG config's default)
DEFAULT_BACKBONE = {"model_type": "vgg", "sobel": False}


@strict
class TransitiveInvarianceConfig(SSLConfig):
    r"""
    Transitive Invariance (Wang, He & Gupta, ICCV 2017, "Transitive Invariance for Self-supervised Visual
    Representation Learning"): a Siamese-triplet network trained on positive pairs of patches (the two views of an
    example: two patches of one track, two patches linked by an inter-instance edge, or by transitivity), with the
    ranking loss of Wang & Gupta (ICCV 2015) on the cosine distance D = 1 - cos and negatives mined among the other
    pairs of the global batch.

    backbone_config (`dict`, *optional*): defaults to VGG-16 on RGB input, the paper's network (hf_ssl's VGG has
        BatchNorm after every conv, the paper's has none).
    embedding_dim (`int`, *optional*, defaults to 1024): the embedding on top of the backbone's pooled features
        (Linear + ReLU, then L2-normalised): the 1024-d fc7 of Wang & Gupta 2015. hf_ssl's VGG keeps its own
        4096-d fc6 and fc7, so the embedding is one layer more than the paper's pool5 -> 4096 -> 1024.
    margin (`float`, *optional*, defaults to 0.5): M in max(0, D(a, p) - D(a, n) + M) (Wang & Gupta 2015; their
        released VGG training script uses 1).
    num_negatives (`int`, *optional*, defaults to 4): negatives per pair, K (the released code's `neg_num: 4`).
    hard_negative_ratio (`float`, *optional*, defaults to 1.0): the share of the K negatives that are the hardest
        (highest loss) candidates; the rest are drawn at random among the other candidates that violate the margin,
        as the released code's `hard_ratio` / `rand_ratio` (its VGG script: 0.5; 0 gives the random negatives of
        the paper's first epochs).
    hard_negative_start_step (`int`, *optional*, defaults to 0): optimizer steps trained with random negatives
        (ratio 0) before `hard_negative_ratio` applies: Wang & Gupta 2015 and the paper start with random negatives
        for their first epochs, then mine hard ones. A recipe gives it in epochs as `hard_negative_start_epochs`.
    num_examples (`int`, *optional*, defaults to 0): set by the training loop to the dataset size; unused.
    """

    model_type = "transitive_invariance"

    embedding_dim: int = 1024
    margin: float | int = 0.5
    num_negatives: int = 4
    hard_negative_ratio: float | int = 1.0
    hard_negative_start_step: int = 0
    num_examples: int = 0

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = dict(DEFAULT_BACKBONE)
        super().__post_init__(**kwargs)

    def validate_method(self) -> None:
        for name in ("embedding_dim", "num_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hard_negative_start_step < 0:
            raise ValueError(f"hard_negative_start_step must be >= 0, got {self.hard_negative_start_step}")
        check_positive("margin", self.margin)
        if not 0 <= self.hard_negative_ratio <= 1:
            raise ValueError(f"hard_negative_ratio must be in [0, 1], got {self.hard_negative_ratio}")


__all__ = ["TransitiveInvarianceConfig"]
