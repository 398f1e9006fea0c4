"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016)."""

import functools
import itertools

import numpy as np
import torch
from torch import nn

from .configuration_jigsaw import JigsawConfig
from .configuration_ssl import backbone_output_dim
from .modeling_contrastive import MLPHead
from .modeling_pretext import grid_patches
from .modeling_ssl import BackboneFeatureModel, SSLHeadsPreTrainedModel, SSLPreTrainingOutput


@functools.lru_cache(maxsize=4)  # the selection takes seconds for the paper's 1000; models of one config share it
def maximal_hamming_permutations(count: int, seed: int = 0, tiles: int = 9) -> np.ndarray:
    """`count` permutations of `tiles` items chosen greedily for maximal Hamming distance (the paper's Algorithm 1):
    start from a random permutation, then repeatedly add the permutation whose smallest distance to the chosen
    ones is largest (the first such in lexicographic order)."""
    every = np.array(list(itertools.permutations(range(tiles))), dtype=np.int8)
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    nearest = (every != every[chosen[0]]).sum(1)
    for _ in range(count - 1):
        chosen.append(int(nearest.argmax()))
        nearest = np.minimum(nearest, (every != every[chosen[-1]]).sum(1))
    return every[chosen].astype(np.int64)


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile to zero mean and unit variance on its own (the paper's cue against matching by colour/level)."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    std = tiles.std(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-5)
    return (tiles - mean) / std


class JigsawPreTrainedModel(SSLHeadsPreTrainedModel):
    config: JigsawConfig
    config_class = JigsawConfig
    base_model_prefix = "jigsaw"
    auto_classes = {"AutoModel": "JigsawModel", "AutoModelForPreTraining": "JigsawForPreTraining"}


class JigsawModel(BackboneFeatureModel, JigsawPreTrainedModel):
    """The tile trunk: what `AutoModel` loads (it applies to whole images as well)."""

    _keys_to_ignore_on_load_unexpected = [r"^tile_projection\.", r"^classifier\.", r"^permutations$"]


class JigsawForPreTraining(JigsawPreTrainedModel):
    """Siamese trunk over the 9 shuffled tiles, per-tile projection, classifier over the permutation set.

    `permutations` (num_permutations, 9) is part of the checkpoint (a persistent buffer): the class ids mean
    these permutations, whatever the selection code does in later versions.
    """

    num_views = 1

    def __init__(self, config: JigsawConfig):
        super().__init__(config)
        self.jigsaw = JigsawModel(config)
        dim = backbone_output_dim(config.backbone_config)
        self.tile_projection = nn.Sequential(nn.Linear(dim, config.tile_feature_dim), nn.ReLU(inplace=True))
        self.classifier = MLPHead(9 * config.tile_feature_dim, config.classifier_hidden_dim, config.num_permutations)
        permutations = maximal_hamming_permutations(config.num_permutations, config.permutation_seed)
        self.register_buffer("permutations", torch.from_numpy(permutations.copy()))
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, ids: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> SSLPreTrainingOutput | tuple:
        """`pixel_values`: (batch, C, H, W) images; each gets a random permutation of its 3x3 tiles."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.dim() != 4:
            raise ValueError(f"JigsawForPreTraining expects images (batch, C, H, W), got {tuple(pixel_values.shape)}")
        batch = len(pixel_values)
        tiles = normalize_tiles(grid_patches(pixel_values, 3, self.config.tile_gap_ratio))
        labels = torch.randint(0, self.config.num_permutations, (batch,)).to(pixel_values.device)
        order = self.permutations[labels]  # (batch, 9): position i shows tile order[i]
        shuffled = tiles[torch.arange(batch, device=tiles.device)[:, None], order]
        features = self.jigsaw(shuffled.flatten(0, 1)).embeddings
        logits = self.classifier(self.tile_projection(features).view(batch, -1))
        loss = nn.functional.cross_entropy(logits, labels)
        output = SSLPreTrainingOutput(loss=loss, embeddings=features.view(batch, 9, -1).mean(1), logits=logits)
        return output if return_dict else output.to_tuple()


JigsawConfig.register_for_auto_class()
JigsawModel.register_for_auto_class("AutoModel")
JigsawForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = ["JigsawModel", "JigsawForPreTraining", "JigsawPreTrainedModel", "maximal_hamming_permutations"]
