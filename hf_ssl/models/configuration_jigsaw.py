"""Jigsaw puzzle configuration."""

from huggingface_hub.dataclasses import strict

from .configuration_ssl import SSLConfig


@strict
class JigsawConfig(SSLConfig):
    r"""
    Solving jigsaw puzzles (Noroozi & Favaro, ECCV 2016): an image is cut into 3x3 tiles with gaps and per-tile
    jitter, the tiles are shuffled by one permutation of a fixed set chosen for maximal Hamming distance, and a
    siamese trunk (shared weights, one pass per tile) with a classifier over the concatenated tile features must
    tell which permutation was used. Defaults: the paper's (1000 permutations, fc 512 per tile, fc 4096).

    num_permutations (`int`, *optional*, defaults to 1000): size of the permutation set (the classes).
    permutation_seed (`int`, *optional*, defaults to 0): seed of the greedy maximal-Hamming-distance selection.
    tile_gap_ratio (`float`, *optional*, defaults to 0.25): part of each cell left out around its tile.
    tile_feature_dim (`int`, *optional*, defaults to 512): per-tile projection before concatenation.
    classifier_hidden_dim (`int`, *optional*, defaults to 4096): hidden layer of the permutation classifier.
    num_examples (`int`, *optional*, defaults to 0): set by the training loop; unused.
    """

    model_type = "jigsaw"

    num_permutations: int = 1000
    permutation_seed: int = 0
    tile_gap_ratio: float | int = 0.25
    tile_feature_dim: int = 512
    classifier_hidden_dim: int = 4096
    num_examples: int = 0

    def validate_method(self) -> None:
        if not 2 <= self.num_permutations <= 362880:
            raise ValueError(f"num_permutations must be in [2, 9! = 362880], got {self.num_permutations}")
        if not 0.0 <= self.tile_gap_ratio < 1.0:
            raise ValueError(f"tile_gap_ratio must be in [0, 1), got {self.tile_gap_ratio}")
        for name in ("tile_feature_dim", "classifier_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


__all__ = ["JigsawConfig"]
