"""Pieces of the multi-view methods (MoCo, SimCLR, BYOL, SwAV): the MLP heads, the pre-training skeleton that runs
every view through the encoder, momentum encoders, and MoCo's Shuffle BN.

Views arrive as `pixel_values` of shape (views, batch, ...): views of one image, or rho clips of one video
(Feichtenhofer et al., CVPR 2021), where every pair of views of one example is a positive pair.
"""

import copy
import itertools
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from .configuration_contrastive import ContrastiveConfig
from .modeling_ssl import SSLPreTraining, SSLPreTrainingOutput, all_gather_no_grad, is_distributed, rank, world_size


def view_pairs(num_views: int, mode: str = "all") -> list[tuple[int, int]]:
    """Ordered pairs (v, u) of different views, v predicts / is contrasted with u: every pair (`"all"`), or only
    neighbours v, v + 1 in both directions (`"consecutive"`, SlowFast's SimCLR / SwAV for rho > 2 clips)."""
    if mode == "consecutive":
        return [pair for v in range(num_views - 1) for pair in ((v, v + 1), (v + 1, v))]
    return list(itertools.permutations(range(num_views), 2))


def sum_over_queries(pair_losses: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
    """Sum over query views v of the mean over v's partner views u of the loss of (v, u): SlowFast's reduction
    for rho clips (each clip in turn is the query, the others its keys), which for 2 views is the sum of the two
    directions, as in official BYOL and symmetric MoCo."""
    partners: dict[int, list[torch.Tensor]] = {}
    for (v, _), loss in pair_losses.items():
        partners.setdefault(v, []).append(loss)
    return torch.stack([torch.stack(losses).mean() for losses in partners.values()]).sum()


def over_views(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, separately: bool) -> torch.Tensor:
    """`module` applied to views stacked as (views, batch, ...) -> (views, batch, ...): all the views in one batch,
    or each view in a batch of its own (`separately`: BatchNorm statistics per view, `per_view_batchnorm`)."""
    if separately:
        return torch.stack([module(view) for view in x])
    out = module(x.flatten(0, 1))
    return out.view(*x.shape[:2], *out.shape[1:])


def cosine_momentum(base: float, progress: float) -> float:
    """m = 1 - (1 - base) (cos(pi k / K) + 1) / 2 at progress k / K: BYOL's target schedule, which SlowFast also
    applies to MoCo (MOMENTUM_ANNEALING)."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class MLPHead(nn.Sequential):
    """Linear layers with ReLU between them, and BatchNorm before each ReLU when `batchnorm` (the SimCLR / BYOL
    projectors and BYOL's predictor; MoCo v2's projector has none). `output_batchnorm` adds BatchNorm on the output
    too, the last linear layer then without bias (official SimCLR's projector; SimSiam's, without affine parameters
    there: `output_affine=False`)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batchnorm: bool = True,
        output_batchnorm: bool = False,
        output_affine: bool = True,
    ):
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == num_layers - 1
            norm = output_batchnorm if last else batchnorm
            layers.append(nn.Linear(a, b, bias=not norm))  # a bias before BatchNorm is redundant
            layers += [nn.BatchNorm1d(b, affine=output_affine or not last)] if norm else []
            layers += [] if last else [nn.ReLU(inplace=True)]
        super().__init__(*layers)

    @classmethod
    def projector(cls, config: ContrastiveConfig, feature_dim: int, **options: bool) -> "MLPHead":
        """The method's projector from `feature_dim` features, shaped by the config's `projection_*` fields;
        `options` (`output_batchnorm`, `output_affine`) as in `MLPHead`."""
        return cls(
            feature_dim,
            config.projection_hidden_dim,
            config.projection_dim,
            config.projection_layers,
            batchnorm=config.projection_batchnorm,
            **options,
        )


class ContrastivePreTraining(SSLPreTraining):
    """Base of the multi-view methods' ForPreTraining models: encode the online views with the feature model, then
    `_loss`.

    Subclasses set `feature_model_class`, build their heads (`projector`, ...) in `_build_heads` and compute the
    loss in `_loss(features, pixel_values)` from the pooled features of shape (num_online_views, batch, dim),
    followed by those of multi-crop's small crops when the method takes them (and all the views, for a second
    encoder). A `MomentumEncoder` among the heads follows (feature model, projector) once per optimizer step, with
    the method's `momentum`.
    """

    @property
    def num_views(self) -> int:
        """Views of each example per step, read by the training loop to build the data transform."""
        return self.config.num_views

    @property
    def num_online_views(self) -> int:
        """The leading views that the online encoder encodes (all by default; asymmetric MoCo: the query view)."""
        return self.num_views

    def check_inputs(self, pixel_values: torch.Tensor, small_pixel_values: torch.Tensor | None = None) -> None:
        if pixel_values.dim() < 2 or pixel_values.shape[0] != self.num_views:
            raise self.layout_error(pixel_values, f"(num_views={self.num_views}, batch, ...)")
        if small_pixel_values is not None and (
            small_pixel_values.dim() < 2 or small_pixel_values.shape[1:2] != pixel_values.shape[1:2]
        ):
            raise ValueError(
                f"small_pixel_values must be (num_small_crops, batch, ...) with the batch of pixel_values, got "
                f"{tuple(small_pixel_values.shape)}"
            )

    def _loss(self, features: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, encoder: nn.Module, pixel_values: torch.Tensor, separately: bool = False) -> torch.Tensor:
        """Pooled features (views, batch, dim) of `encoder` for views stacked as (views, batch, ...); `separately`:
        each view in a pass of its own (`over_views`)."""
        return over_views(lambda views: encoder(views, return_dict=True).embeddings, pixel_values, separately)

    def _pretraining_output(
        self, pixel_values: torch.Tensor, ids: torch.Tensor | None, small_pixel_values: torch.Tensor | None = None
    ) -> SSLPreTrainingOutput:
        separately = self.config.per_view_batchnorm
        features = self.encode(self.base_model, pixel_values[: self.num_online_views], separately)
        if small_pixel_values is not None:  # after the global views, each resolution its own batch (as SwAV)
            features = torch.cat([features, self.encode(self.base_model, small_pixel_values, separately)])
        return SSLPreTrainingOutput(loss=self._loss(features, pixel_values), embeddings=features[0])

    def _momentum_encoders(self) -> "list[MomentumEncoder]":
        return [module for module in self.children() if isinstance(module, MomentumEncoder)]

    def _after_init(self) -> None:
        for target in self._momentum_encoders():
            target.copy_from(self.base_model, self.projector)

    def after_optimizer_step(self) -> None:
        for target in self._momentum_encoders():
            target.update(self.base_model, self.projector, self.momentum)


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

    def forward(self, pixel_values: torch.Tensor, shuffle: bool = False, separately: bool = False) -> torch.Tensor:
        """(views, batch, ...) -> projections (views, batch, dim). `shuffle`: MoCo's Shuffle BN, the examples are
        encoded in a batch drawn at random from every process's examples, then returned to their owners.
        `separately`: each view in a pass of its own (`over_views`)."""
        if shuffle:
            pixel_values, restore = batch_shuffle(pixel_values)
        projections = over_views(
            lambda views: self.head(self.encoder(views, return_dict=True).embeddings), pixel_values, separately
        )
        return batch_unshuffle(projections, restore) if shuffle else projections

    def has_plain_batchnorm(self) -> bool:
        """True when a BatchNorm layer normalises with this process's batch alone (not a SyncBatchNorm)."""
        return any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
            for m in self.modules()
        )


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's Shuffle BN (He et al. 2020, sec. 3.3), first half: `x` (views, batch, ...) of this process becomes a
    batch of the same size drawn by one random permutation (rank 0's, broadcast) from every process's examples,
    all views of an example staying together. Returns it and the index that `batch_unshuffle` needs."""
    everyone = all_gather_no_grad(x.transpose(0, 1).contiguous())  # (world * batch, views, ...)
    permutation = torch.randperm(everyone.shape[0], device=x.device)
    if is_distributed():
        dist.broadcast(permutation, src=0)
    return everyone[permutation.view(world_size(), -1)[rank()]].transpose(0, 1), torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(y: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
    """Second half of Shuffle BN: each process gets back the outputs (views, batch, ...) of its own examples."""
    everyone = all_gather_no_grad(y.transpose(0, 1).contiguous())
    return everyone[restore.view(world_size(), -1)[rank()]].transpose(0, 1)


def _tensors(module: nn.Module):
    """Parameters then buffers, in a fixed order, for copying between two modules of the same structure."""
    return itertools.chain(module.parameters(), module.buffers())
