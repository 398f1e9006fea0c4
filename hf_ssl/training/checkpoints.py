"""Checkpoints of a run: atomic saves, rotation, resume, and the cross-process checks that guard them.

`checkpoint-<step>` holds Accelerate's state (model as safetensors, optimizer, each process's RNG), the method's
training state (memory bank, queues, labels) as safetensors, the epoch's sampling weights, and `trainer_state.json`
(step, schedule, data position, history). Nothing is unpickled but Accelerate's own files.
"""

import json
import os
import pathlib
import shutil

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..run_layout import BUFFERS_FILE, TRAINER_STATE, checkpoint_dir, checkpoints
from .run import Run

SAMPLE_WEIGHTS = "stream:sample_weights"  # beside the method's buffers; no module name holds a colon


def training_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The method's training state: the non-persistent buffers (memory bank, normaliser, queues, labels)."""
    buffers = {}
    for module_name, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            buffers[f"{module_name}.{name}".lstrip(".")] = getattr(module, name)
    return buffers


def statistics_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point persistent buffers: BatchNorm running statistics (also a momentum encoder's)."""
    return [
        buffer
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None and buffer.is_floating_point() and name not in module._non_persistent_buffers_set
    ]


@torch.no_grad()
def average_statistics_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Make every process hold the mean of the processes' BatchNorm running statistics.

    DDP runs with broadcast_buffers=False (re-broadcasting memory banks every step would cost a bank-sized copy
    per step), so each process's running mean/var follow its own shard. Every eval-mode feature pass and every
    save therefore averages them first: features and the saved model use the statistics of all the data.
    """
    if accelerator.num_processes == 1:
        return
    buffers = statistics_buffers(model)
    if buffers:
        flat = torch.cat([b.detach().double().flatten() for b in buffers])
        torch.distributed.all_reduce(flat)
        flat /= accelerator.num_processes
        for buffer, mean in zip(buffers, flat.split([b.numel() for b in buffers])):
            buffer.copy_(mean.view_as(buffer))


def check_processes_agree(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Raise if any process holds different parameters or buffers (BatchNorm statistics, memory bank, queues,
    labels, ...) than the others.

    DDP keeps parameters equal, the methods keep their training state equal by construction and the loop
    averages the BatchNorm statistics before a save; this guards the checkpoint against a silent divergence (a
    method that forgot to gather, a non-deterministic kernel).
    """
    if accelerator.num_processes == 1:
        return
    named = [(f"parameter {n}", p.detach()) for n, p in model.named_parameters()]
    named += [(f"buffer {n}", b) for n, b in model.named_buffers()]
    digest = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for _, t in named])
    gathered = accelerator.gather(digest[None].to(accelerator.device)).cpu()
    differs = (gathered != gathered[:1]).any(dim=0).any(dim=1)
    if differs.any():
        first = named[int(differs.nonzero()[0])][0]
        raise RuntimeError(
            f"processes disagree on {int(differs.sum())} model tensors (first: {first}); refusing to checkpoint"
        )


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: pathlib.Path) -> pathlib.Path | None:
    """The checkpoint folder `resume_from_checkpoint` names ("latest": the newest in `output_dir`), or None."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint='latest' but {output_dir} holds no checkpoint")
        return found[-1]
    path = pathlib.Path(resume_from_checkpoint)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={path} is not a checkpoint folder (no {TRAINER_STATE})")
    return path


def save_checkpoint(run: Run, step: int, state: dict) -> pathlib.Path:
    """Write `checkpoint-<step>` atomically (into a temporary folder, then one rename) with the loop's `state`
    (JSON: history, ...) beside the run's own, and keep the newest `save_total_limit`."""
    acc, output_dir = run.accelerator, pathlib.Path(run.args.output_dir)
    final, tmp = checkpoint_dir(output_dir, step), checkpoint_dir(output_dir, step, temporary=True)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    average_statistics_buffers(acc, run.model)
    check_processes_agree(acc, run.unwrapped_model)
    acc.save_state(str(tmp), safe_serialization=True)
    # every process writes its own RNG state into tmp: all must be done before the main process renames it
    # (under load a slower process found its folder already gone)
    acc.wait_for_everyone()
    if acc.is_main_process:
        buffers = {k: v.detach().cpu().contiguous() for k, v in training_buffers(run.unwrapped_model).items()}
        if run.stream.sample_weights is not None:
            buffers[SAMPLE_WEIGHTS] = torch.from_numpy(run.stream.sample_weights)
        save_file(buffers, str(tmp / BUFFERS_FILE))
        state = {
            "global_step": step,
            "scheduler": run.scheduler.state_dict(),
            "stream": run.stream.state_dict(),
            "num_examples": run.num_examples,
            **state,
        }
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        if run.args.save_total_limit:
            for old in checkpoints(output_dir)[: -run.args.save_total_limit]:
                shutil.rmtree(old)
    acc.wait_for_everyone()
    return final


def load_checkpoint(run: Run, path: pathlib.Path) -> dict:
    """Restore model, optimizer, RNG, the method's training state, schedule, data position and sampling weights
    from `path`; returns its trainer state (global_step and what the loop saved)."""
    state = json.loads((path / TRAINER_STATE).read_text())
    if state["num_examples"] != run.num_examples:
        raise ValueError(
            f"checkpoint {path} was trained on {state['num_examples']} examples, this dataset has "
            f"{run.num_examples}: the memory bank / labels would not line up"
        )
    run.accelerator.load_state(str(path))
    buffers = load_file(str(path / BUFFERS_FILE))
    for name, tensor in training_buffers(run.unwrapped_model).items():
        tensor.copy_(buffers[name])
    weights = buffers.get(SAMPLE_WEIGHTS)
    run.stream.sample_weights = None if weights is None else np.ascontiguousarray(weights.numpy())
    run.scheduler.load_state_dict(state["scheduler"])
    run.stream.load_state_dict(state["stream"])
    return state
