"""Pieces every method model shares: building the backbone from its config, the output dataclass, distributed
gathers, and the memory bank of the memory-bank methods (Instance Recognition, Local Aggregation)."""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .modeling_alexnet import AlexNetModel
from .modeling_c3d import C3DModel
from .modeling_r3d import R3DModel
from .modeling_vgg import VGGModel

BACKBONE_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    cls.config_class.model_type: cls for cls in (AlexNetModel, VGGModel, C3DModel, R3DModel)
}


def build_backbone(config: PreTrainedConfig) -> PreTrainedModel:
    """Instantiate the backbone a method config names: hf_ssl's own, or any transformers vision model."""
    model_class = BACKBONE_MODEL_CLASSES.get(config.model_type)
    backbone = model_class(config) if model_class is not None else AutoModel.from_config(config)
    if getattr(config, "cifar_stem", False):
        _use_cifar_stem(backbone, config)
    return backbone


def _use_cifar_stem(backbone: nn.Module, config: PreTrainedConfig) -> None:
    """ResNet stem for 32 px images (He et al. 2016, sec. 4.2): a 3x3 stride-1 conv and no max-pool, so the last
    stage still sees a 4x4 map instead of 1x1."""
    embedder = getattr(backbone, "embedder", None)
    if config.model_type != "resnet" or embedder is None:
        raise ValueError(f"cifar_stem is only defined for ResNet backbones, not {config.model_type!r}")
    embedder.embedder.convolution = nn.Conv2d(
        config.num_channels, config.embedding_size, kernel_size=3, stride=1, padding=1, bias=False
    )
    embedder.pooler = nn.Identity()
    nn.init.kaiming_normal_(embedder.embedder.convolution.weight, mode="fan_out", nonlinearity="relu")


def backbone_forward(
    backbone: nn.Module, pixel_values: torch.Tensor, output_hidden_states: bool = False
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run a backbone and return (last_hidden_state, pooled vector (batch, dim), per-stage hidden states)."""
    out = backbone(pixel_values=pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:  # transformers models built without a pooling layer
        hidden = out.last_hidden_state
        if hidden.dim() != 3:  # a feature map: average over space (and time)
            pooled = hidden.mean(dim=tuple(range(2, hidden.dim())))
        elif getattr(backbone.config, "use_mean_pooling", False):  # no class token (VideoMAE): mean over tokens
            pooled = hidden.mean(dim=1)
        else:  # ViT-like: the class token
            pooled = hidden[:, 0]
    return out.last_hidden_state, pooled.flatten(1), out.hidden_states if output_hidden_states else None


class SSLPreTrainedModel(PreTrainedModel):
    """Base of every method's models. `auto_classes` maps each Auto class to the method's class name, so that
    the checkpoint of either class loads with either Auto class, also as remote code without hf_ssl."""

    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    auto_classes: dict[str, str] = {}
    accepts_small_crops = False  # multi-crop's small crops (`small_pixel_values`): SwAV's alone

    def set_training_progress(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each step; methods with schedules (BYOL's momentum) override it."""

    def parameters_without_update(self) -> list[nn.Parameter]:
        """Parameters that must not change at the current optimizer step (SwAV's prototypes while frozen, the
        head of a task at weight 0). The forward keeps them in the autograd graph, so that every process's DDP
        gradient reduction completes; the training loop drops their gradients after backward (as official SwAV
        does), so neither the step nor weight decay moves them."""
        return []

    def optimizer_overrides(self) -> dict[str, dict[str, float]]:
        """Optimizer hyper-parameters of top-level submodules that differ from the recipe's (DeepCluster's
        classifier: its own momentum-free SGD); the training loop puts each in a param group of its own."""
        return {}

    def after_optimizer_step(self) -> None:
        """Called by the training loop once per optimizer step, never per micro-batch of gradient accumulation:
        momentum encoders (MoCo's key encoder, BYOL's target) update here."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with all of the method's Auto classes in the config's `auto_map`."""
        # transformers writes only the saved class's own Auto class, so a training checkpoint would not load with
        # AutoModel.from_pretrained(..., trust_remote_code=True) on a machine without hf_ssl.
        module = type(self).__module__.rsplit(".", 1)[-1]  # the flat file name, also when loaded as remote code
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            **{auto: f"{module}.{name}" for auto, name in self.auto_classes.items()},
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


class SSLFeatureModel:
    """Mixin for a method's feature model (what `AutoModel` loads): `self.backbone`, then `embed(pooled)`."""

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """The method's embedding of the pooled backbone features (the pooled features themselves by default)."""
        return pooled

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> "SSLModelOutput | tuple":
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        last_hidden_state, pooled, hidden_states = backbone_forward(
            self.backbone, pixel_values, output_hidden_states=bool(output_hidden_states)
        )
        output = SSLModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            embeddings=self.embed(pooled),
            hidden_states=hidden_states,
        )
        return output if return_dict else output.to_tuple()



class SSLHeadsPreTrainedModel(SSLPreTrainedModel):
    """Base of the methods whose heads use torch's default initialisation (the reference implementations')."""

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.BatchNorm1d):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class BackboneFeatureModel(SSLFeatureModel):
    """A feature model that is the backbone alone: `embeddings` are its pooled features (the method's heads only
    serve its training loss, as in the papers' evaluations)."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.post_init()

@dataclass
class SSLModelOutput(ModelOutput):
    """
    Features of a self-supervised model.

    last_hidden_state (`torch.FloatTensor`): the backbone's last feature map.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): the backbone's pooled features.
    embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_dim)`): the method's embedding (e.g. the
        L2-normalised 128-d vector of Instance Recognition), what kNN evaluation reads.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*): per-stage features, what per-layer probes read.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SSLPreTrainingOutput(ModelOutput):
    """
    Output of a method's pre-training forward.

    loss (`torch.FloatTensor` of shape `()`): the method's training loss.
    embeddings (`torch.FloatTensor`): the embeddings the loss was computed on.
    logits (`torch.FloatTensor`, *optional*): the method's scores (e.g. positive + noise similarities).
    """

    loss: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


def keep_in_graph(loss: torch.Tensor, modules: "list[nn.Module]") -> torch.Tensor:
    """`loss` plus 0 x every parameter of `modules`: the parameters get a (zero) gradient without changing the
    loss, so DDP's reduction sees every parameter on every step. Drop their gradients with
    `parameters_without_update`."""
    touch = [p.sum() for module in modules for p in module.parameters() if p.requires_grad]
    return loss + 0.0 * torch.stack(touch).sum() if touch else loss


def is_distributed() -> bool:
    """True inside a multi-process run."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (rank order); identity on one process."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class MemoryBank(nn.Module):
    """One L2-normalised vector per training example, indexed by the example's stable id.

    Training state, not published weights: the buffer is non-persistent, so `save_pretrained` leaves it out and
    the training loop checkpoints it with the optimizer. Updates use embeddings gathered from every process, so
    all processes hold the same bank.
    """

    def __init__(self, num_examples: int, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("vectors", torch.zeros(num_examples, dim), persistent=False)

    @property
    def num_examples(self) -> int:
        return self.vectors.shape[0]

    @torch.no_grad()
    def reset(self) -> None:
        """The NPID initialisation: uniform in [-s, s] with s = 1/sqrt(dim/3), then unit rows."""
        stdv = 1.0 / (self.vectors.shape[1] / 3) ** 0.5
        self.vectors.uniform_(-stdv, stdv)
        self.vectors.copy_(nn.functional.normalize(self.vectors, dim=1))

    def check_ids(self, ids: torch.Tensor) -> None:
        """Fail with the offending id rather than with an index error deep inside torch."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_examples):
            bad = ids[(ids < 0) | (ids >= self.num_examples)][0].item()
            raise ValueError(
                f"example id {bad} is outside the memory bank (num_examples={self.num_examples}); set "
                "num_examples to the training set size"
            )

    @torch.no_grad()
    def update(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Proximal update with the embeddings of every process: v <- normalize(m v + (1 - m) f)."""
        ids, embeddings = all_gather_no_grad(ids), all_gather_no_grad(embeddings.detach().float())
        mixed = self.vectors[ids] * self.momentum + embeddings * (1.0 - self.momentum)
        self.vectors.index_copy_(0, ids, nn.functional.normalize(mixed, dim=1))
