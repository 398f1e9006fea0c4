"""Pieces every method model shares: building the backbone from its config, the bases of the feature models and of
the ForPreTraining models (one forward for every method), the output dataclasses, distributed gathers, and the
memory bank of the memory-bank methods (Instance Recognition, Local Aggregation)."""

import math
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_ssl import backbone_output_dim
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
    if getattr(config, "zero_init_residual", False):
        _zero_init_residual(backbone, config)
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


@torch.no_grad()
def _zero_init_residual(backbone: nn.Module, config: PreTrainedConfig) -> None:
    """Start every residual block as the identity: the scale of its last BatchNorm is 0 (Goyal et al. 2017, sec.
    5.1; official SimCLR's `BatchNormRelu(init_zero=True)`, torchvision's `zero_init_residual`). Loaded weights
    replace it, so it matters only for training from scratch."""
    encoder = getattr(backbone, "encoder", None)
    if config.model_type != "resnet" or encoder is None:
        raise ValueError(f"zero_init_residual is only defined for ResNet backbones, not {config.model_type!r}")
    for stage in encoder.stages:
        for block in stage.layers:
            block.layer[-1].normalization.weight.zero_()


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
    """Base of every method's models: their input, and torch's default initialisation for the method's own layers
    (the reference implementations'); a backbone keeps its own."""

    main_input_name = "pixel_values"
    input_modalities = ("image", "video")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.BatchNorm1d) and module.affine:  # one without affine parameters has none to set
            init.ones_(module.weight)
            init.zeros_(module.bias)


# method model_type -> {Auto class name: class} of the method's transfer classes (`SSLTransferModel`)
TRANSFER_CLASSES: dict[str, dict[str, type]] = {}


class SSLTransferModel:
    """Mixin of a method's classes for use after pre-training (its `AutoBackbone`, its image and video classifiers,
    `modeling_backbone`): each names the Auto class that loads it (`auto_class_name`) and is listed under its
    method in `TRANSFER_CLASSES` when defined, so that every save of the method names them all in `auto_map`."""

    auto_class_name: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        config_class = getattr(cls, "config_class", None)
        if config_class is not None and cls.auto_class_name:
            TRANSFER_CLASSES.setdefault(config_class.model_type, {})[cls.auto_class_name] = cls

    def post_init(self) -> None:
        ignore_keys_outside_own(self)
        super().post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        name_in_auto_map(self.config, [])
        return super().save_pretrained(save_directory, *args, **kwargs)


def ignore_keys_outside_own(model: PreTrainedModel) -> None:
    """Load `model` from a checkpoint of any class of its method without a word about the rest: a ForPreTraining
    checkpoint holds, beside the feature model (under its `base_model_prefix`), the method's heads and training
    state. Every key that is not one of the model's own submodules, with or without the prefix, is ignored."""
    own = "|".join(re.escape(name) for name in dict(model.named_children()))
    model._keys_to_ignore_on_load_unexpected = [rf"^(?!(?:{re.escape(model.base_model_prefix)}\.)?(?:{own})\.)"]


def _class_path(cls: type) -> str:
    """A class as `auto_map` names it: the flat file name, also when loaded as remote code."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def name_in_auto_map(config: PreTrainedConfig, classes: "list[type | None]") -> None:
    """Name each of a method's `classes` (its feature model, its ForPreTraining) and its transfer classes
    (`TRANSFER_CLASSES`: AutoBackbone, image / video classification) in `config.auto_map` under its Auto class, so
    that the checkpoint of any loads with every Auto class, also as remote code without hf_ssl. `save_pretrained`
    names only the saved class's own (`register_for_auto_class`, which the registry calls); a class loaded as remote
    code is registered by transformers, and finds the others in the `auto_map` it came with."""
    config.auto_map = {
        **(getattr(config, "auto_map", None) or {}),
        **{c._auto_class: _class_path(c) for c in classes if c and c._auto_class},
        **{name: _class_path(c) for name, c in TRANSFER_CLASSES.get(config.model_type, {}).items()},
    }


class SSLFeatureModel:
    """Mixin for a method's feature model (what `AutoModel` loads): `self.backbone`, then `embed(pooled)`."""

    pretraining_class: type | None = None  # the method's ForPreTraining (set when that class is defined)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """The method's embedding of the pooled backbone features (the pooled features themselves by default)."""
        return pooled

    def post_init(self) -> None:
        # the heads and training state of a ForPreTraining checkpoint only serve the pre-training loss
        ignore_keys_outside_own(self)
        super().post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        name_in_auto_map(self.config, [type(self), self.pretraining_class])
        return super().save_pretrained(save_directory, *args, **kwargs)

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


class BackboneFeatureModel(SSLFeatureModel):
    """A feature model that is the backbone alone: `embeddings` are its pooled features (the method's heads only
    serve its training loss, as in the papers' evaluations)."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.post_init()


class SSLPreTraining:
    """Mixin of every method's ForPreTraining model, the training loop's interface: the method's feature model
    (`feature_model_class`, under `base_model_prefix`) plus the heads and training state that only its loss uses
    (`_build_heads`).

    One `forward` for every method: it checks the inputs (`check_inputs`; the examples' `ids` when the method keeps
    per-example state, `requires_ids`; multi-crop's small crops when it `accepts_small_crops`), and packs what the
    method's `_pretraining_output` returns. A method writes its loss there, and what is its own.
    """

    feature_model_class: type[PreTrainedModel]
    num_views = 1  # augmented views of each example per step, read by the training loop to build the transform
    requires_ids = False  # True: per-example training state (memory bank, pseudo-labels) is indexed by `ids`
    requires_labels = False  # True: the loop passes the batch's `labels` (the recipe's label_column): supervised
    accepts_small_crops = False  # multi-crop's small crops (`small_pixel_values`): SwAV's alone
    accepts_view_ids = False  # an id per view of each example (`view_ids`: a pair's patch ids): Transitive Invariance's

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "feature_model_class" in vars(cls):  # its feature model names it in `auto_map`
            cls.feature_model_class.pretraining_class = cls

    def __init__(self, config: PreTrainedConfig):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.feature_model_class(config))
        self.step, self.progress = 0, 0.0  # optimizer steps done, fraction of training done (`set_training_progress`)
        self._build_heads(config, backbone_output_dim(config.backbone_config))
        self.post_init()
        self._after_init()

    def _build_heads(self, config: PreTrainedConfig, feature_dim: int) -> None:
        """Build the method's heads and training buffers (`feature_dim`: the backbone's pooled size)."""
        raise NotImplementedError

    def _after_init(self) -> None:
        """Runs once the weights are initialised (a momentum encoder starts as a copy of the online one)."""

    def check_inputs(self, pixel_values: torch.Tensor, **inputs: torch.Tensor) -> None:
        """Raise `layout_error` unless the inputs have the method's layout (the backbone checks the rest)."""

    def layout_error(self, pixel_values: torch.Tensor, expected: str) -> ValueError:
        return ValueError(
            f"{type(self).__name__} expects pixel_values of shape {expected}, got {tuple(pixel_values.shape)}"
        )

    def _pretraining_output(
        self, pixel_values: torch.Tensor, ids: torch.Tensor | None, **inputs
    ) -> "SSLPreTrainingOutput":
        """The method's loss, and the embeddings (and scores) it was computed from."""
        raise NotImplementedError

    def forward(
        self,
        pixel_values: torch.Tensor,
        ids: torch.Tensor | None = None,
        small_pixel_values: torch.Tensor | None = None,
        return_dict: bool | None = None,
        view_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> "SSLPreTrainingOutput | tuple":
        """`pixel_values`: the batch in the method's layout (`(views, batch, ...)` for multi-view methods); `ids`: the
        examples' stable ids, rows of the per-example training state (`requires_ids`); `small_pixel_values`:
        multi-crop's small crops `(num_small_crops, batch, ...)` (`accepts_small_crops`); `view_ids`: an id per view
        `(views, batch)` (`accepts_view_ids`)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        inputs = {} if small_pixel_values is None else {"small_pixel_values": small_pixel_values}
        if inputs and not self.accepts_small_crops:
            raise ValueError(f"{type(self).__name__} does not take multi-crop's small crops (small_pixel_values)")
        if view_ids is not None:
            if not self.accepts_view_ids:
                raise ValueError(f"{type(self).__name__} does not take view_ids: set view_id_columns to null")
            inputs["view_ids"] = view_ids
        self.check_inputs(pixel_values, **inputs)
        if self.requires_ids:
            ids = self._example_ids(ids)
        output = self._pretraining_output(pixel_values, ids, **inputs)
        return output if return_dict else output.to_tuple()

    def _example_ids(self, ids: torch.Tensor | None) -> torch.Tensor:
        """`ids` as long on the model's device; fails with the offending id rather than an index error in torch."""
        num_examples = self.config.num_examples
        if num_examples == 0:
            raise ValueError("config.num_examples is 0: set it to the training set size to pre-train")
        if ids is None:
            raise ValueError(f"{type(self).__name__} needs the examples' `ids` (rows of its per-example state)")
        ids = ids.to(self.device, torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_examples):
            bad = ids[(ids < 0) | (ids >= num_examples)][0].item()
            raise ValueError(
                f"example id {bad} is outside [0, num_examples={num_examples}): set num_examples to the training set size"
            )
        return ids

    # the training loop's hooks

    def set_training_progress(self, step: int, total_steps: int) -> None:
        """Called by the training loop before each step: schedules that depend on the step (BYOL's momentum) read
        `step` and `progress`."""
        self.step, self.progress = step, step / max(total_steps, 1)

    def parameters_without_update(self) -> list[nn.Parameter]:
        """Parameters that must not change at the current optimizer step (SwAV's prototypes while frozen, the
        head of a task at weight 0). The forward keeps them in the autograd graph, so that every process's DDP
        gradient reduction completes; the training loop drops their gradients after backward (as official SwAV
        does), so neither the step nor weight decay moves them."""
        return []

    def optimizer_overrides(self) -> dict[str, dict[str, float]]:
        """Optimizer hyper-parameters of top-level submodules that differ from the recipe's (DeepCluster's
        classifier: its own momentum-free SGD; `fixed_lr: True` keeps a submodule's learning rate out of the
        schedule); the training loop puts each in a param group of its own."""
        return {}

    def after_optimizer_step(self) -> None:
        """Called by the training loop once per optimizer step, never per micro-batch of gradient accumulation:
        momentum encoders (MoCo's key encoder, BYOL's target) update here."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        name_in_auto_map(self.config, [self.feature_model_class, type(self)])
        return super().save_pretrained(save_directory, *args, **kwargs)


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


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (rank order); identity on one process."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process (rank order), with gradients flowing back to each owner; identity
    on one process. The global-batch losses use it so that every example's negatives include other processes'."""
    if not is_distributed():
        return tensor
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor.contiguous()))


def all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """`tensor` reduced in place over every process (a sum by default) and returned; unchanged on one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=op)
    return tensor


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

    @torch.no_grad()
    def update(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Proximal update with the embeddings of every process: v <- normalize(m v + (1 - m) f)."""
        ids, embeddings = all_gather_no_grad(ids), all_gather_no_grad(embeddings.detach().float())
        mixed = self.vectors[ids] * self.momentum + embeddings * (1.0 - self.momentum)
        self.vectors.index_copy_(0, ids, nn.functional.normalize(mixed, dim=1))
