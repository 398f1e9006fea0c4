"""Frozen-feature extraction over a streamed split, split across processes and gathered, in id order, to the main
process only."""

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..data import BatchStream, SkippedSamples
from ..distributed import GATHER_CHUNK_BYTES, gather_rows, is_distributed
from .transforms import ClipAveragedFeatures, EvalTransform, VideoEvalTransform, make_eval_transform


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    dataset: datasets.IterableDataset,
    transform: EvalTransform | VideoEvalTransform,
    accelerator: Accelerator,
    batch_size: int,
    num_workers: int = 0,
    feature: str = "embeddings",
    max_samples: int | None = None,
    description: str = "features",
    progress: bool = True,
    skipped: SkippedSamples | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Features (`feature` field of the model output, float32), labels (int64, -1 without labels) and ids (int64)
    of every example of `dataset` (with ids), ordered by example id, on the main process; None on the others.

    Each process reads its share, which is gathered to the main process only (`gather_in_id_order`): memory per
    process is its share plus a chunk, the main process's the whole result. The corrupt samples this pass skipped
    are added to `skipped` (the run's or the evaluation's count, on every process), when given.
    """
    stream = BatchStream(
        dataset,
        batch_size,
        transform,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        num_workers=num_workers,
        repeat=False,
    )
    # The DataLoader gets its own generator so evaluating never moves the training RNG (exact resume).
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, generator=torch.Generator().manual_seed(0)
    )
    was_training = model.training
    model.eval()
    feats, labels, ids = [], [], []
    seen = 0
    for batch in tqdm(
        loader, desc=description, disable=not (progress and accelerator.is_local_main_process), leave=False
    ):
        stream.record(batch)
        out = model(pixel_values=transform.pixel_values(batch, accelerator.device), return_dict=True)
        feats.append(getattr(out, feature).float().flatten(1).cpu())
        labels.append(batch.get("labels", torch.full_like(batch["ids"], -1)))
        ids.append(batch["ids"])
        seen += len(batch["ids"])
        if max_samples is not None and seen * accelerator.num_processes >= max_samples:
            break
    model.train(was_training)
    if stream.skipped.count:
        accelerator.print(f"{description}: {stream.skipped.report()}")
    if skipped is not None:
        skipped.update(stream.skipped)
    return gather_in_id_order(feats, labels, ids, max_samples)


def gather_in_id_order(
    features: list[torch.Tensor],
    labels: list[torch.Tensor],
    ids: list[torch.Tensor],
    max_samples: int | None = None,
    chunk_bytes: int = GATHER_CHUNK_BYTES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every process's rows (batches of features, their int64 labels and ids) on the main process, ordered by id
    and cut to the first `max_samples`: (features float32, labels int64, ids int64) there, None on the others.

    The ids and labels travel first (16 bytes a row), so that the main process knows where each feature row goes;
    the features then arrive in chunks and are written straight to their place in the result. No process holds
    more than its own rows and a chunk, but the main one, which also holds the result. `features` is consumed.
    """
    keys = [torch.stack([i.long(), lab.long()], 1) for i, lab in zip(ids, labels)]
    received = sorted(gather_rows(keys, torch.int64, chunk_bytes), key=lambda chunk: chunk[0])  # [] off the main
    keys = torch.cat([rows for _, rows in received]) if received else torch.empty(0, 2, dtype=torch.int64)
    order = torch.argsort(keys[:, 0], stable=True)
    kept = len(order) if max_samples is None else min(max_samples, len(order))
    place = torch.empty_like(order)  # the row of the result that each received row goes to (kept or not)
    place[order] = torch.arange(len(order))
    result = None
    for first, rows in gather_rows(features, torch.float32, chunk_bytes):  # nothing arrives off the main process
        if result is None:  # the width comes with the first rows (the main process may have none of its own)
            result = np.empty((kept, rows.shape[1]), dtype=np.float32)
        where = place[first : first + rows.shape[0]]
        keep = where < kept
        result[where[keep].numpy()] = rows[keep].numpy()
    if is_distributed() and torch.distributed.get_rank() != 0:
        return None
    if result is None:  # no rows on any process
        result = np.empty((0, 0), dtype=np.float32)
    keys = keys[order[:kept]]
    return result, keys[:, 1].numpy(), keys[:, 0].numpy()


def frozen_features(
    model: torch.nn.Module,
    dataset: datasets.IterableDataset,
    image_processor,
    accelerator: Accelerator,
    batch_size: int,
    *,
    image_column: str = "image",
    video_column: str = "video",
    label_column: str | None = None,
    num_clips: int = 4,
    num_frames: int = 8,
    frame_stride: int = 2,
    num_workers: int = 0,
    max_samples: int | None = None,
    description: str = "features",
    progress: bool = True,
    skipped: SkippedSamples | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The one feature pass of hf_ssl's evaluations (the training-time kNN and `hf-ssl evaluate`): every example of
    `dataset` through the checkpoint's `image_processor` (one image per example, or `num_clips` evenly spaced clips
    per video whose `embeddings` are averaged), then `model` in eval mode. Returns (embeddings, labels or -1, ids)
    in id order on the main process, None on the others (`extract_features`)."""
    transform = make_eval_transform(
        dataset,
        image_processor,
        image_column=image_column,
        video_column=video_column,
        label_column=label_column,
        num_clips=num_clips,
        num_frames=num_frames,
        frame_stride=frame_stride,
        device=accelerator.device,
    )
    return extract_features(
        ClipAveragedFeatures(model),
        dataset,
        transform,
        accelerator,
        batch_size,
        num_workers=num_workers,
        max_samples=max_samples,
        description=description,
        progress=progress,
        skipped=skipped,
    )
