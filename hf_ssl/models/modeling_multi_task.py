"""Rotation prediction and relative patch position on one shared trunk (Doersch & Zisserman, ICCV 2017)."""

import torch
from torch import nn

from .configuration_multi_task import MultiTaskConfig
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_contrastive import MLPHead
from .modeling_pretext import grid_patches
from .modeling_ssl import BackboneFeatureModel, SSLPreTrainedModel, SSLPreTraining, SSLPreTrainingOutput, keep_in_graph

# the 8 cells around the centre of a 3x3 grid (row-major cell index): the relative-position classes
NEIGHBOUR_CELLS = (0, 1, 2, 3, 5, 6, 7, 8)


class MultiTaskPreTrainedModel(SSLPreTrainedModel):
    config: MultiTaskConfig
    config_class = MultiTaskConfig
    base_model_prefix = "multi_task"


class MultiTaskModel(BackboneFeatureModel, MultiTaskPreTrainedModel):
    """The shared trunk: what `AutoModel` loads."""


class MultiTaskForPreTraining(SSLPreTraining, MultiTaskPreTrainedModel):
    """The trunk and one head per task; the loss is the weighted sum of the tasks' cross-entropies.

    - rotation: each image is rotated by 0, 90, 180 and 270 degrees, a linear head names the rotation;
    - relative_position: the centre patch of a 3x3 grid (gaps, jitter) and one of its 8 neighbours go through the
      trunk, a head on their concatenated features names the neighbour.

    `pixel_values`: (batch, C, S, S) square images; `ids` are not needed.
    """

    feature_model_class = MultiTaskModel

    def _build_heads(self, config: MultiTaskConfig, feature_dim: int) -> None:
        self.rotation_head = nn.Linear(feature_dim, 4)
        self.relative_position_head = MLPHead(2 * feature_dim, config.head_hidden_dim, len(NEIGHBOUR_CELLS))

    def unused_heads(self) -> list[nn.Module]:
        """The heads of the tasks at weight 0 (not computed)."""
        heads = {"rotation": self.rotation_head, "relative_position": self.relative_position_head}
        return [head for task, head in heads.items() if not self.config.task_weights.get(task, 0) > 0]

    def parameters_without_update(self) -> list[nn.Parameter]:
        """The parameters of the unused heads: in the graph (for DDP) with zero gradients that the loop drops, so
        neither the step nor weight decay moves them."""
        return [p for head in self.unused_heads() for p in head.parameters()]

    def check_inputs(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.dim() != 4 or pixel_values.shape[2] != pixel_values.shape[3]:
            raise self.layout_error(pixel_values, "(batch, C, S, S), square images")

    def _pretraining_output(self, pixel_values: torch.Tensor, ids: torch.Tensor | None) -> SSLPreTrainingOutput:
        weights = self.config.task_weights
        losses, logits, embeddings = {}, None, None
        if weights.get("rotation", 0) > 0:
            rotated = torch.cat([torch.rot90(pixel_values, k, dims=(2, 3)) for k in range(4)])
            features = self.multi_task(rotated).embeddings
            embeddings = features[: len(pixel_values)]
            logits = self.rotation_head(features)
            labels = torch.arange(4, device=logits.device).repeat_interleave(len(pixel_values))
            losses["rotation"] = nn.functional.cross_entropy(logits, labels)
        if weights.get("relative_position", 0) > 0:
            patches = grid_patches(pixel_values, 3, self.config.patch_gap_ratio)
            batch = len(pixel_values)
            labels = torch.randint(0, len(NEIGHBOUR_CELLS), (batch,), device=pixel_values.device)
            cells = torch.tensor(NEIGHBOUR_CELLS, device=pixel_values.device)[labels]
            rows = torch.arange(batch, device=pixel_values.device)
            pair = torch.cat([patches[:, 4], patches[rows, cells]])
            features = self.multi_task(pair).embeddings
            logits = self.relative_position_head(torch.cat([features[:batch], features[batch:]], dim=1))
            losses["relative_position"] = nn.functional.cross_entropy(logits, labels)
            embeddings = features[:batch] if embeddings is None else embeddings
        # the heads of tasks at weight 0 stay in the graph: otherwise DDP waits for their gradients forever
        loss = keep_in_graph(sum(weights[task] * value for task, value in losses.items()), self.unused_heads())
        return SSLPreTrainingOutput(loss=loss, embeddings=embeddings, logits=logits)


class MultiTaskBackbone(SSLBackbone, MultiTaskPreTrainedModel):
    """The backbone trained by the multi-task method, for downstream models (DETR, UperNet, ...): what `AutoBackbone`
    loads."""


class MultiTaskForImageClassification(SSLForImageClassification, MultiTaskPreTrainedModel):
    """The backbone trained by the multi-task method and a new linear classifier: what `AutoModelForImageClassification`
    loads."""


class MultiTaskForVideoClassification(SSLForVideoClassification, MultiTaskPreTrainedModel):
    """The video backbone trained by the multi-task method and a new linear classifier: what
    `AutoModelForVideoClassification` loads."""


__all__ = [
    "MultiTaskModel",
    "MultiTaskForPreTraining",
    "MultiTaskPreTrainedModel",
    "MultiTaskBackbone",
    "MultiTaskForImageClassification",
    "MultiTaskForVideoClassification",
]
