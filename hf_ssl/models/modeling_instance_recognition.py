"""Instance Recognition / NPID (Wu et al., CVPR 2018): every image is its own class; a non-parametric softmax
over a memory bank, trained with noise-contrastive estimation."""

import math

import torch
from torch import nn

from .configuration_instance_recognition import InstanceRecognitionConfig
from .configuration_ssl import backbone_output_dim
from .modeling_backbone import SSLBackbone, SSLForImageClassification, SSLForVideoClassification
from .modeling_ssl import (
    MemoryBank,
    SSLFeatureModel,
    SSLPreTrainedModel,
    SSLPreTraining,
    SSLPreTrainingOutput,
    all_reduce,
    build_backbone,
    world_size,
)


class InstanceRecognitionPreTrainedModel(SSLPreTrainedModel):
    config: InstanceRecognitionConfig
    config_class = InstanceRecognitionConfig
    base_model_prefix = "instance_recognition"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # torch's default Linear init (the base's), as the official NPID code: a small-std init makes the
        # projection's output tiny, L2-normalisation then amplifies the first gradient ~1e4x and every embedding
        # collapses onto the bias direction.
        super()._init_weights(module)
        if isinstance(module, MemoryBank):
            module.reset()
        elif isinstance(module, InstanceRecognitionForPreTraining):
            module.normalizer.fill_(-1.0)


class InstanceRecognitionModel(SSLFeatureModel, InstanceRecognitionPreTrainedModel):
    """Backbone + linear projection to the L2-normalised embedding: what `AutoModel` loads for features."""

    def __init__(self, config: InstanceRecognitionConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.projection = nn.Linear(backbone_output_dim(config.backbone_config), config.embedding_dim)
        self.post_init()

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projection(pooled), dim=1)


class InstanceRecognitionForPreTraining(SSLPreTraining, InstanceRecognitionPreTrainedModel):
    """The NPID training model: the feature model plus the memory bank and the NCE loss.

    `forward(pixel_values, ids)` (one augmented view per example, the examples' stable ids: bank rows) returns the
    loss and updates the bank with the batch's embeddings (in training mode). The bank and the estimated
    normalising constant Z are training state: non-persistent buffers that the training loop checkpoints, absent
    from `save_pretrained`'s weights.
    """

    requires_ids = True
    feature_model_class = InstanceRecognitionModel  # what `base_model_prefix` names (a subclass swaps both)

    def _build_heads(self, config: InstanceRecognitionConfig, feature_dim: int) -> None:
        """The memory bank and Z; a subclass adds its own training buffers here."""
        self.memory_bank = MemoryBank(config.num_examples, config.embedding_dim, config.bank_momentum)
        # Z of the paper, estimated once by Monte Carlo on the first batch and then kept fixed; < 0 = not yet.
        self.register_buffer("normalizer", torch.full((), -1.0), persistent=False)

    def _pretraining_output(self, pixel_values: torch.Tensor, ids: torch.Tensor) -> SSLPreTrainingOutput:
        embeddings = self.base_model(pixel_values, return_dict=True).embeddings.float()
        # exp(s / 0.07) spans ~1e6: the loss is computed in float32 even under mixed precision
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            loss, logits = self._loss(embeddings, ids)
        if self.training:
            self.memory_bank.update(ids, embeddings)
        return SSLPreTrainingOutput(loss=loss, embeddings=embeddings, logits=logits)

    def _loss(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss against the bank as it was before this batch, and the scores it was computed from."""
        if self.config.num_negatives == 0:
            return self._softmax_loss(embeddings, ids)
        return self._nce_loss(embeddings, ids)

    def _softmax_loss(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact non-parametric softmax over the whole bank (NPID eq. 2): for small datasets, where it is cheap
        and where NCE's K/N noise ratio is far from the paper's regime. Returns the loss and the logits (B, N)."""
        # a snapshot: autograd needs the bank as it was, and the bank is updated in place after the loss
        logits = embeddings @ self.memory_bank.vectors.clone().t() / self.config.temperature
        return nn.functional.cross_entropy(logits, ids), logits

    def _nce_loss(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NCE with uniform noise P_n = 1/N and K noise samples (NPID eq. 5-6).

        One set of K noise rows serves the whole batch: each example still sees K i.i.d. draws from P_n, so the
        expected loss and gradient are the paper's, while the scores are one (B, D) x (D, K) matmul instead of a
        (B, K, D) gather (2x the backbone step at K=4096; bench/step_overhead.py). Returns the loss and the
        unnormalised scores exp(v.f / tau) of [positive, K noise samples].
        """
        num_examples, k = self.memory_bank.num_examples, self.config.num_negatives
        bank = self.memory_bank.vectors
        noise_ids = torch.randint(num_examples, (k,), device=bank.device)
        positive = (bank[ids] * embeddings).sum(dim=1, keepdim=True)
        scores = torch.cat([positive, embeddings @ bank[noise_ids].t()], dim=1)  # column 0 is the positive
        logits = torch.exp(scores / self.config.temperature)
        if self.normalizer < 0:
            self._estimate_normalizer(logits.detach(), num_examples)
        probs = logits / self.normalizer
        noise_mass = k / num_examples  # K * P_n
        log_pos = torch.log(probs[:, 0] / (probs[:, 0] + noise_mass))
        log_noise = torch.log(noise_mass / (probs[:, 1:] + noise_mass)).sum(dim=1)
        return -(log_pos + log_noise).mean(), logits

    @torch.no_grad()
    def _estimate_normalizer(self, logits: torch.Tensor, num_examples: int) -> None:
        """Z ~= N * E[exp(v.f / tau)], averaged over every process so they all use the same constant."""
        value = float(all_reduce(logits.mean()) / world_size()) * num_examples
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"could not estimate the NCE normalising constant (got {value}); check temperature")
        self.normalizer.fill_(value)


class InstanceRecognitionBackbone(SSLBackbone, InstanceRecognitionPreTrainedModel):
    """The backbone trained by Instance Recognition, for downstream models (DETR, UperNet, ...): what `AutoBackbone`
    loads."""


class InstanceRecognitionForImageClassification(SSLForImageClassification, InstanceRecognitionPreTrainedModel):
    """The backbone trained by Instance Recognition and a new linear classifier: what `AutoModelForImageClassification`
    loads."""


class InstanceRecognitionForVideoClassification(SSLForVideoClassification, InstanceRecognitionPreTrainedModel):
    """The video backbone trained by Instance Recognition and a new linear classifier: what
    `AutoModelForVideoClassification` loads."""


__all__ = [
    "InstanceRecognitionModel",
    "InstanceRecognitionForPreTraining",
    "InstanceRecognitionPreTrainedModel",
    "InstanceRecognitionBackbone",
    "InstanceRecognitionForImageClassification",
    "InstanceRecognitionForVideoClassification",
]
