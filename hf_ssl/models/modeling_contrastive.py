"""Pieces of the multi-view methods (MoCo, SimCLR, BYOL, SwAV): the feature model, the MLP heads, the
pre-training skeleton that runs every view through the encoder, momentum encoders, and cross-process gathers that
keep gradients.

Views arrive as `pixel_values` of shape (views, batch, ...): views of one image, or rho clips of one video
(Feichtenhofer et al., CVPR 2021), where every pair of views of one example is a positive pair.
"""

import copy
import itertools
import torch
import torch.distributed as dist
from torch import nn
from .configuration_contrastive import ContrastiveConfig
from .configuration_ssl import backbone_output_dim
from .modeling_ssl import SSLPreTrainingOutput, is_distributed


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process (rank order), with gradients flowing back to each owner; identity
    on one process. The global-batch losses use it so that every example's negatives include other processes'."""
    if not is_distributed():
        return tensor
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor.contiguous()))


def view_pairs(num_views: int) -> list[tuple[int, int]]:
    """Every ordered pair (v, u) of different views: v predicts / is contrasted with u."""
    return list(itertools.permutations(range(num_views), 2))


class MLPHead(nn.Sequential):
    """Linear layers with BatchNorm + ReLU between them (the MoCo v2 / SimCLR / BYOL projectors and predictor)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2):
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == num_layers - 1
            layers.append(nn.Linear(a, b, bias=last))
            if not last:
                layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class ContrastivePreTraining:
    """Mixin of the methods' ForPreTraining models: encode every view with the feature model, then `_loss`.

    Subclasses set `feature_model_class`, build their heads in `_build_heads` and compute the loss in
    `_loss(features, pixel_values)` from the pooled features of shape (views, batch, dim) (and the views, for a
    second encoder).
    """

    feature_model_class: type

    def __init__(self, config: ContrastiveConfig):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.feature_model_class(config))
        self.progress = 0.0  # fraction of training done, for schedules (BYOL's momentum); set by the loop
        self.step = 0
        self._build_heads(config, backbone_output_dim(config.backbone_config))
        self.post_init()
        self._after_init()

    @property
    def num_views(self) -> int:
        """Views of each example per step, read by the training loop to build the data transform."""
        return self.config.num_views

    def _build_heads(self, config: ContrastiveConfig, feature_dim: int) -> None:
        raise NotImplementedError

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_init(self) -> None:
        """Runs once the weights are initialised (a momentum encoder starts as a copy of the online one)."""

    def set_training_progress(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each step: schedules that depend on the step use it."""
        self.step, self.progress = step, step / max(total_steps, 1)

    def encode(self, encoder: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features (views, batch, dim) of `encoder` for views stacked as (views, batch, ...)."""
        views, batch = pixel_values.shape[:2]
        return encoder(pixel_values.flatten(0, 1), return_dict=True).embeddings.view(views, batch, -1)

    def forward(self, pixel_values: torch.Tensor, ids: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> SSLPreTrainingOutput | tuple:
        """`pixel_values`: (views, batch, ...) with views = config.num_views; `ids` are not needed (no bank)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.dim() < 2 or pixel_values.shape[0] != self.num_views:
            raise ValueError(
                f"{type(self).__name__} expects pixel_values of shape (num_views={self.num_views}, batch, ...), "
                f"got {tuple(pixel_values.shape)}"
            )
        features = self.encode(self.base_model, pixel_values)
        loss = self._loss(features, pixel_values)
        output = SSLPreTrainingOutput(loss=loss, embeddings=features[0])
        return output if return_dict else output.to_tuple()


class MomentumEncoder(nn.Module):
    """An exponential moving average of (feature model, head), without gradients: MoCo's key encoder, BYOL's
    target network. Its weights are checkpointed with the model (they are training state that resumes exactly)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = copy.deepcopy(encoder), copy.deepcopy(head)
        self.requires_grad_(False)

    @torch.no_grad()
    def copy_from(self, encoder: nn.Module, head: nn.Module) -> None:
        for target, online in zip(self._tensors(), itertools.chain(_tensors(encoder), _tensors(head))):
            target.copy_(online)

    @torch.no_grad()
    def update(self, encoder: nn.Module, head: nn.Module, momentum: float) -> None:
        """target <- m * target + (1 - m) * online for parameters; buffers (BN statistics) are copied."""
        online = itertools.chain(_tensors(encoder), _tensors(head))
        for target, source in zip(self._tensors(), online):
            if target.is_floating_point() and isinstance(target, nn.Parameter):
                target.mul_(momentum).add_(source.detach(), alpha=1.0 - momentum)
            else:
                target.copy_(source)

    def _tensors(self):
        return itertools.chain(_tensors(self.encoder), _tensors(self.head))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(views, batch, ...) -> projections (views, batch, dim)."""
        views, batch = pixel_values.shape[:2]
        pooled = self.encoder(pixel_values.flatten(0, 1), return_dict=True).embeddings
        return self.head(pooled).view(views, batch, -1)


def _tensors(module: nn.Module):
    """Parameters then buffers, in a fixed order, for copying between two modules of the same structure."""
    return itertools.chain(module.parameters(), module.buffers())


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1
