"""Checkpoints of a run: atomic saves, rotation, resume, and the cross-process checks that guard them.

`checkpoint-<step>` holds Accelerate's state (model as safetensors, optimizer, each process's RNG), the method's
training state (memory bank, queues, labels) as safetensors, the epoch's sampling weights, and `trainer_state.json`
(step, schedule, data position, history). Nothing is unpickled but Accelerate's own files.

The run folder follows transformers' Trainer: a folder that holds a run is refused unless the new run continues it
(`resume_from_checkpoint`) or replaces it (`overwrite_output_dir`: the old run's files are removed once every
start-up check passed). `trainer_state.json`, written last, records the run's id, when it was saved and the size and
sha256 of every other file: rotation and "latest" consider the run's own, intact checkpoints only.
"""

import json
import logging
import os
import pathlib
import shutil
import struct
import time

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from ..run_layout import (
    BUFFERS_FILE,
    TRAINER_STATE,
    checkpoint_dir,
    checkpoints,
    file_sha256,
    run_artefacts,
)
from .arguments import SSLTrainingArguments
from .run import Run

logger = logging.getLogger(__name__)

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


def check_output_dir(args: SSLTrainingArguments) -> None:
    """Refuse an output_dir that holds a run unless the new run resumes (`resume_from_checkpoint`) or replaces it
    (`overwrite_output_dir`), as transformers' Trainer does. Reads only: nothing is written before every check."""
    output_dir = pathlib.Path(args.output_dir)
    found = run_artefacts(output_dir)
    if found and not args.resume_from_checkpoint and not args.overwrite_output_dir:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(
            f"output_dir={output_dir} already holds a run ({names}): pass --resume_from_checkpoint latest to continue "
            "it, --overwrite_output_dir true to replace it, or choose another output_dir"
        )


def clear_previous_run(args: SSLTrainingArguments, checkpoint: pathlib.Path | None) -> list[pathlib.Path]:
    """With `overwrite_output_dir`, remove what a previous run left in output_dir (checkpoints, weights, results,
    card, logs), so that none of it outranks or mixes with the new run's; files hf_ssl does not write stay. Nothing
    is removed when the run resumes from a checkpoint inside output_dir. Call it once every start-up check passed."""
    output_dir = pathlib.Path(args.output_dir).resolve()
    resumes_here = checkpoint is not None and output_dir in checkpoint.resolve().parents
    if not args.overwrite_output_dir or resumes_here:
        return []
    removed = run_artefacts(output_dir)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def _safetensors_problem(path: pathlib.Path) -> str | None:
    """Why `path` is not a complete safetensors file (header length, JSON header, data size), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"is truncated ({size} bytes, its header alone needs {8 + length})"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return "is corrupt (its header is not JSON)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end != size:
        return f"is truncated ({size} of {8 + length + end} bytes)"
    return None


def checkpoint_problem(path: pathlib.Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from (one line naming the file), or None when intact.

    Every file is checked against the size and sha256 that `trainer_state.json` recorded when it was saved
    (checkpoints written before hf_ssl recorded them: the safetensors files' own structure)."""
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return f"{state_file} is missing: {path} is not a complete checkpoint"
    try:
        state = json.loads(state_file.read_text())
        int(state["global_step"])
    except (ValueError, KeyError, TypeError) as err:
        return f"{state_file} is corrupt ({type(err).__name__}: {err})"
    recorded = state.get("files")
    if recorded is None:  # a checkpoint from before the manifest
        for file in sorted(path.glob("*.safetensors")):
            if problem := _safetensors_problem(file):
                return f"{file} {problem}"
        return None
    for name, expected in sorted(recorded.items()):
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        size = file.stat().st_size
        if size != expected["size"]:
            return f"{file} is truncated or corrupt ({size} bytes, {expected['size']} when saved)"
        if file_sha256(file) != expected["sha256"]:
            return f"{file} is corrupt (its sha256 differs from the one recorded when it was saved)"
    return None


def _saved_order(path: pathlib.Path) -> tuple[float, int]:
    """(when it was saved, step): a resumed run's new checkpoints outrank the older future it resumed before. A
    checkpoint whose trainer state is unreadable (or predates `saved_at`) counts by its folder's time."""
    try:
        saved_at = json.loads((path / TRAINER_STATE).read_text())["saved_at"]
    except (OSError, ValueError, KeyError, TypeError):
        saved_at = path.stat().st_mtime
    return float(saved_at), int(path.name.rsplit("-", 1)[1])


def _run_id(path: pathlib.Path) -> str | None:
    try:
        return json.loads((path / TRAINER_STATE).read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: pathlib.Path) -> pathlib.Path | None:
    """The checkpoint folder `resume_from_checkpoint` names, or None; "latest": the newest intact checkpoint saved
    in `output_dir` (a truncated or corrupt one is skipped, saying so). A named checkpoint that is not intact is
    refused with one line naming the file."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        found = sorted(checkpoints(output_dir), key=_saved_order, reverse=True)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint='latest' but {output_dir} holds no checkpoint")
        for path in found:
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("%s; resume_from_checkpoint='latest' falls back to an older checkpoint", problem)
        raise ValueError(f"resume_from_checkpoint='latest' but no checkpoint in {output_dir} is intact")
    path = pathlib.Path(resume_from_checkpoint)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={path} is not a checkpoint folder (no {TRAINER_STATE})")
    if problem := checkpoint_problem(path):
        raise ValueError(f"resume_from_checkpoint={path}: {problem}")
    return path


def rotate_checkpoints(output_dir: pathlib.Path, run_id: str, save_total_limit: int | None) -> None:
    """Keep the newest `save_total_limit` checkpoints of run `run_id`, newest by save time (not by step: a run
    resumed from checkpoint-5 while checkpoint-10 exists writes a newer checkpoint-6). Other runs' checkpoints
    (another run resumed into this folder) are never removed.

    Hand-written rather than Accelerate's ProjectConfiguration(automatic_checkpoint_naming, total_limit): that one
    names folders by save count (checkpoints/checkpoint_<n>, not the step), writes in place (a crash mid-save
    leaves a partial "latest"), sorts and prunes every folder of checkpoints/ whichever run wrote it, and holds
    none of the method's buffers or the trainer state beside the model.
    """
    if not save_total_limit:
        return
    own = sorted((p for p in checkpoints(output_dir) if _run_id(p) == run_id), key=_saved_order)
    for old in own[:-save_total_limit]:
        shutil.rmtree(old)


def save_checkpoint(run: Run, step: int, state: dict) -> pathlib.Path:
    """Write `checkpoint-<step>` atomically (into a temporary folder, then one rename) with the loop's `state`
    (JSON: run_id, history, ...) beside the run's own and the size and sha256 of every file, and keep the newest
    `save_total_limit` of the run's own checkpoints."""
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
        files = {
            p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        state = {
            "global_step": step,
            "saved_at": time.time(),
            "files": files,
            "scheduler": run.scheduler.state_dict(),
            "stream": run.stream.state_dict(),
            "num_examples": run.num_examples,
            **state,
        }
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        rotate_checkpoints(output_dir, state["run_id"], run.args.save_total_limit)
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
