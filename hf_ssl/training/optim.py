"""Optimizers and learning-rate schedules of the recipes. torch has SGD and AdamW; LARS (You et al. 2017, as
used by SimCLR / BYOL / SwAV) is written here because torch does not ship it. Schedules are transformers'
(`get_scheduler`), but the multi-step decay, which it does not have."""

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

from .arguments import SSLTrainingArguments


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-tensor step is scaled by trust * ||w|| / ||g + wd w||.

    Biases and normalisation weights (1-D tensors) get neither weight decay nor the trust ratio, as in SimCLR.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust=trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), group["trust"] * w_norm / g_norm, 1.0)
                    grad = grad.mul(ratio)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _param_groups(model: nn.Module, weight_decay: float, overrides: dict[str, dict]) -> list[dict]:
    """No weight decay on biases and normalisation parameters (1-D tensors); the top-level submodules named in
    `overrides` in groups of their own, with those hyper-parameters."""
    split: dict[tuple[str | None, bool], list[nn.Parameter]] = {(None, True): [], (None, False): []}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            owner = name.split(".", 1)[0]
            split.setdefault((owner if owner in overrides else None, parameter.ndim > 1), []).append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, **overrides.get(owner, {})}
        for (owner, decay), params in split.items()
    ]


def create_optimizer(model: nn.Module, args: SSLTrainingArguments) -> torch.optim.Optimizer:
    """The optimizer a recipe names (`optim`), over the model's trainable parameters.

    A model may give submodules other hyper-parameters: `model.optimizer_overrides()` maps a top-level submodule
    name to them (DeepCluster's classifier without momentum). All groups follow the same lr schedule, but those
    with `fixed_lr: True`, which keep the recipe's learning rate (SimSiam's predictor).
    """
    overrides = model.optimizer_overrides()
    groups = _param_groups(model, args.weight_decay, overrides)
    if args.optim == "sgd":
        optimizer = torch.optim.SGD(groups, lr=args.learning_rate, momentum=args.momentum)
    elif args.optim == "lars":
        optimizer = LARS(groups, lr=args.learning_rate, momentum=args.momentum, trust=args.lars_trust_coefficient)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2))
    for owner, hyper in overrides.items():
        unknown = sorted(set(hyper) - set(optimizer.defaults) - {"fixed_lr"})
        if unknown:  # it would sit in the group unused, silently
            raise ValueError(
                f"optim={args.optim!r} has no {unknown[0]!r}, which the method config sets for its {owner!r} "
                "(e.g. DeepCluster's classifier_momentum: set it to null)"
            )
    return optimizer


# transformers' schedule of each `lr_scheduler_type` it has (`transformers.get_scheduler` names)
TRANSFORMERS_SCHEDULES = {"cosine": "cosine", "constant": "constant_with_warmup"}


def _schedule(args: SSLTrainingArguments, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate factor of each optimizer step: transformers' schedule where it has the recipe's, else
    'step' (linear warmup, then x0.1 at each of `lr_decay_epochs`, the multi-step decay of the DeepCluster and
    Instance Recognition recipes), which transformers does not have."""
    warmup = round(args.warmup_epochs * steps_per_epoch)
    if args.lr_scheduler_type in TRANSFORMERS_SCHEDULES:
        # `get_scheduler` makes a LambdaLR; its factor is taken from one built over a placeholder optimizer, so
        # that the run's optimizer can give groups with `fixed_lr` a constant factor instead
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=1.0)
        name = TRANSFORMERS_SCHEDULES[args.lr_scheduler_type]
        scheduler = get_scheduler(name, placeholder, num_warmup_steps=warmup, num_training_steps=total_steps)
        return scheduler.lr_lambdas[0]
    milestones = sorted(round(epoch * steps_per_epoch) for epoch in args.lr_decay_epochs)
    return functools.partial(_step_decay, warmup=warmup, milestones=milestones)


def _step_decay(step: int, warmup: int, milestones: list[int]) -> float:
    if step < warmup:  # as transformers' linear warmup
        return step / warmup
    return 0.1 ** sum(step >= m for m in milestones)


def _constant(step: int) -> float:
    return 1.0


def create_scheduler(
    optimizer: torch.optim.Optimizer, args: SSLTrainingArguments, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    """Linear warmup over `warmup_epochs`, then cosine decay to 0, constant, or x0.1 at each of `lr_decay_epochs`
    ('step'); param groups with `fixed_lr` (`optimizer_overrides`) stay at the recipe's learning rate throughout."""
    factor = _schedule(args, total_steps, steps_per_epoch)
    return LambdaLR(optimizer, [_constant if group.get("fixed_lr") else factor for group in optimizer.param_groups])
