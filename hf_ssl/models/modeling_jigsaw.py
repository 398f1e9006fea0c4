"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016)."""

import functools

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedConfig

from .configuration_jigsaw import JigsawConfig
from .layers import scale_width
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_pretext import grid_patches
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, SSLPreTraining, SSLPreTrainingOutput, keep_in_graph


def all_permutations(items: int) -> np.ndarray:
    """Every permutation of `items` items, (items!, items), in lexicographic order (as itertools lists them)."""
    every = np.zeros((1, 0), dtype=np.int8)
    for size in range(1, items + 1):  # the permutations of `size` items from those of size - 1: each first item,
        # followed by the smaller permutations relabelled around it
        every = np.concatenate(
            [
                np.concatenate([np.full((len(every), 1), first, np.int8), every + (every >= first)], axis=1)
                for first in range(size)
            ]
        )
    return every


@functools.lru_cache(maxsize=4)  # models of one config share it
def maximal_hamming_permutations(count: int, seed: int = 0, tiles: int = 9) -> np.ndarray:
    """`count` permutations of `tiles` items chosen greedily for a large average Hamming distance (the paper's
    Algorithm 1, as the official select_permutations.py does it): start from a random permutation, then repeatedly
    add the permutation, among those not chosen yet, whose summed (i.e. mean) Hamming distance to the chosen ones
    is largest (the first such in lexicographic order). For 1000 of 9 items: mean distance 8.00, minimum 2."""
    every = all_permutations(tiles)
    # summed distance = tiles * len(chosen) - summed matches: maximise one, minimise the other. The permutations
    # with value v at position i match a chosen one there; listing them once per (i, v) makes each update cheap.
    holding = np.stack([np.argsort(every[:, i], kind="stable").reshape(tiles, -1) for i in range(tiles)])
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    matches = np.zeros(len(every), dtype=np.int64)
    for _ in range(count - 1):
        for position, value in enumerate(every[chosen[-1]]):
            matches[holding[position, value]] += 1
        matches[chosen[-1]] = tiles * count + 1  # above any sum of matches: never picked twice
        chosen.append(int(matches.argmin()))
    return every[chosen].astype(np.int64)


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile to zero mean and unit variance on its own (the paper's cue against matching by colour/level)."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    std = tiles.std(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-5)
    return (tiles - mean) / std


def feature_map_channels(config: PreTrainedConfig) -> int:
    """Channels of the last feature map of a convolutional backbone built from `config` (AlexNet's pool5: 256)."""
    conv_channels = getattr(config, "conv_channels", None)  # hf_ssl's AlexNet (a list) and VGG (a list per block)
    if conv_channels:
        last = conv_channels[-1][-1] if isinstance(conv_channels[-1], list) else conv_channels[-1]
        return scale_width(last, config.width_multiplier)
    hidden_sizes = getattr(config, "hidden_sizes", None)  # transformers' ResNet, ConvNeXt, ...
    if hidden_sizes:
        return int(hidden_sizes[-1])
    raise ValueError(f"backbone_config: jigsaw needs a convolutional backbone, not {type(config).__name__}")


class JigsawPreTrainedModel(SSLPreTrainedModel):
    config: JigsawConfig
    config_class = JigsawConfig
    base_model_prefix = "jigsaw"


class JigsawModel(BackboneFeatureModel, JigsawPreTrainedModel):
    """The tile trunk: what `AutoModel` loads (it applies to whole images as well). The CFN's fc layers are the
    pre-training head's, so an AlexNet or VGG trunk's own fc6/fc7 stay at their initialisation: transfer and probe
    its conv layers, as the paper does."""


class JigsawForPreTraining(SSLPreTraining, JigsawPreTrainedModel):
    """The context-free network: a siamese trunk over the 9 shuffled tiles up to its last feature map (pool5),
    a per-tile fc6, fc7 over the 9 concatenated fc6, a classifier over the permutation set.

    `permutations` (num_permutations, 9) is part of the checkpoint (a persistent buffer): the class ids mean
    these permutations, whatever the selection code does in later versions.
    """

    feature_model_class = JigsawModel

    def _build_heads(self, config: JigsawConfig, feature_dim: int) -> None:
        pooled_map = feature_map_channels(config.backbone_config) * config.tile_pool_size**2
        self.tile_fc6 = nn.Sequential(
            nn.Linear(pooled_map, config.tile_feature_dim), nn.ReLU(inplace=True), nn.Dropout(config.dropout_prob)
        )
        self.fc7 = nn.Sequential(
            nn.Linear(9 * config.tile_feature_dim, config.classifier_hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout_prob),
        )
        self.classifier = nn.Linear(config.classifier_hidden_dim, config.num_permutations)
        permutations = maximal_hamming_permutations(config.num_permutations, config.permutation_seed)
        self.register_buffer("permutations", torch.from_numpy(permutations.copy()))

    def unused_trunk_modules(self) -> list[nn.Module]:
        """The trunk's own fc layers (AlexNet's and VGG's `classifier`): the puzzle is solved from the last map."""
        head = getattr(self.jigsaw.backbone, "classifier", None)
        return [head] if head is not None else []

    def parameters_without_update(self) -> list[nn.Parameter]:
        """The trunk's own fc layers: in the graph (for DDP), never moved (their gradients are zero anyway)."""
        return [p for module in self.unused_trunk_modules() for p in module.parameters()]

    def tiles(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, 9, C, t, t): a randomly placed tile in each cell of the 3x3 grid, resized to `tile_size`,
        each normalised on its own."""
        tiles = grid_patches(pixel_values, 3, self.config.tile_gap_ratio)
        size = self.config.tile_size
        if size and tiles.shape[-1] != size:
            resized = nn.functional.interpolate(tiles.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True)
            tiles = resized.view(*tiles.shape[:3], size, size)
        return normalize_tiles(tiles)

    def check_inputs(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4:
            raise self.layout_error(pixel_values, "(batch, C, H, W)")

    def _pretraining_output(self, pixel_values: torch.Tensor, ids: torch.Tensor | None) -> SSLPreTrainingOutput:
        """Each image gets a random permutation of its 3x3 tiles; the loss is the cross-entropy of the permutation
        classifier against the index of the permutation drawn."""
        batch, device = len(pixel_values), pixel_values.device
        tiles = self.tiles(pixel_values)
        labels = torch.randint(0, self.config.num_permutations, (batch,), device=device)
        order = self.permutations[labels]  # (batch, 9): position i shows tile order[i]
        shuffled = tiles[torch.arange(batch, device=device)[:, None], order]
        trunk = self.jigsaw(shuffled.flatten(0, 1))
        feature_map = trunk.last_hidden_state
        if feature_map.dim() != 4:
            shape = tuple(feature_map.shape)
            raise ValueError(f"backbone_config: jigsaw needs a (batch, C, h, w) feature map, got {shape}")
        grid = nn.functional.adaptive_avg_pool2d(feature_map, self.config.tile_pool_size)
        fc6 = self.tile_fc6(grid.flatten(1))
        logits = self.classifier(self.fc7(fc6.view(batch, -1)))
        loss = keep_in_graph(nn.functional.cross_entropy(logits, labels), self.unused_trunk_modules())
        return SSLPreTrainingOutput(loss=loss, embeddings=fc6.view(batch, 9, -1).mean(1), logits=logits)


class JigsawBackbone(SSLBackbone, JigsawPreTrainedModel):
    """The backbone trained by jigsaw, for downstream models (DETR, UperNet, ...): what `AutoBackbone` loads."""


class JigsawForImageClassification(SSLForImageClassification, JigsawPreTrainedModel):
    """The backbone trained by jigsaw and a new linear classifier: what `AutoModelForImageClassification` loads."""


class JigsawForVideoClassification(SSLForVideoClassification, JigsawPreTrainedModel):
    """The video backbone trained by jigsaw and a new linear classifier: what `AutoModelForVideoClassification`
    loads."""


__all__ = [
    "JigsawModel",
    "JigsawForPreTraining",
    "JigsawPreTrainedModel",
    "maximal_hamming_permutations",
    "JigsawBackbone",
    "JigsawForImageClassification",
    "JigsawForVideoClassification",
]
