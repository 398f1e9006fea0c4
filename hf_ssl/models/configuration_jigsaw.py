"""Jigsaw puzzle configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_alexnet import AlexNetConfig
from .configuration_ssl import SSLConfig
from .layers import check_probability


def context_free_network_backbone() -> AlexNetConfig:
    """The paper's tile trunk: AlexNet on RGB tiles (no Sobel) with a stride-2 conv1, so that a 75 px tile still
    ends in a 3x3 pool5 map (hf_ssl's AlexNet keeps DeepCluster's batch norm where the paper had LRN)."""
    return AlexNetConfig(sobel=False, conv1_stride=2)


@strict
class JigsawConfig(SSLConfig):
    r"""
    Solving jigsaw puzzles (Noroozi & Favaro, ECCV 2016): an image is cut into 3x3 cells, a tile is cropped at a
    random place inside each cell (the gap hides shared edges), the tiles are shuffled by one permutation of a
    fixed set chosen for large Hamming distance, and the context-free network (CFN) must tell which permutation
    was used: a siamese trunk (shared weights, one pass per tile) up to pool5, a per-tile fc6, the 9 tiles' fc6
    concatenated into fc7, and a classifier over the permutations. Defaults are the paper's and the official
    JigsawPuzzlePytorch code's: 1000 permutations, 225 px images (cells of 75 px) holding 64 px tiles resized to
    75 px, pool5 3x3, fc6 1024 per tile, fc7 4096, dropout 0.5; the default backbone is the paper's trunk (RGB,
    conv1 stride 2).

    num_permutations (`int`, *optional*, defaults to 1000): size of the permutation set (the classes).
    permutation_seed (`int`, *optional*, defaults to 0): picks the first permutation of the greedy selection.
    tile_gap_ratio (`float`, *optional*, defaults to 0.15): part of each cell left out around its tile (64 of 75).
    tile_size (`int`, *optional*, defaults to 75): tiles are resized to this side before the trunk (the official
        code's 64 -> 75, which makes AlexNet's pool5 3x3); 0 keeps their size.
    tile_pool_size (`int`, *optional*, defaults to 3): side of the grid the trunk's last feature map is averaged
        to before fc6 (an identity on the paper's 3x3 pool5).
    tile_feature_dim (`int`, *optional*, defaults to 1024): fc6, per tile.
    classifier_hidden_dim (`int`, *optional*, defaults to 4096): fc7, over the 9 concatenated fc6.
    dropout_prob (`float`, *optional*, defaults to 0.5): dropout after fc6 and after fc7.
    num_examples (`int`, *optional*, defaults to 0): set by the training loop; unused.
    """

    model_type = "jigsaw"

    num_permutations: int = 1000
    permutation_seed: int = 0
    tile_gap_ratio: float | int = 0.15
    tile_size: int = 75
    tile_pool_size: int = 3
    tile_feature_dim: int = 1024
    classifier_hidden_dim: int = 4096
    dropout_prob: float | int = 0.5
    num_examples: int = 0

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = context_free_network_backbone()
        super().__post_init__(**kwargs)

    def validate_method(self) -> None:
        if not 2 <= self.num_permutations <= 362880:
            raise ValueError(f"num_permutations must be in [2, 9! = 362880], got {self.num_permutations}")
        if not 0.0 <= self.tile_gap_ratio < 1.0:
            raise ValueError(f"tile_gap_ratio must be in [0, 1), got {self.tile_gap_ratio}")
        if self.tile_size < 0:
            raise ValueError(f"tile_size must be >= 0 (0 keeps the tiles' size), got {self.tile_size}")
        for name in ("tile_pool_size", "tile_feature_dim", "classifier_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_probability("dropout_prob", self.dropout_prob)


__all__ = ["JigsawConfig"]
