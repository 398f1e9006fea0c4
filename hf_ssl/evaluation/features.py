"""Frozen-feature extraction over a streamed split, split across processes and gathered back in id order."""

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..data import BatchStream, SkippedSamples
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (`feature` field of the model output), labels and ids of every example of `dataset` (with ids).

    Each process reads its share; the result, identical on every process, is ordered by example id. The corrupt
    samples this pass skipped are added to `skipped` (the run's or the evaluation's count), when given.
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
    # ids and labels travel in the float32 feature tensor (one gather): exact below 2**24
    ids = torch.cat(ids)
    if int(ids.max()) >= 2**24:
        raise ValueError(f"{description}: example ids of 2**24 and more cannot be gathered exactly as float32")
    local = torch.cat([ids[:, None].float(), torch.cat(labels)[:, None].float(), torch.cat(feats)], 1)
    gathered = accelerator.gather(accelerator.pad_across_processes(local.to(accelerator.device), pad_index=-1)).cpu()
    gathered = gathered[gathered[:, 0] >= 0]
    gathered = gathered[torch.argsort(gathered[:, 0])]
    if max_samples is not None:
        gathered = gathered[:max_samples]
    if stream.skipped.count:
        accelerator.print(f"{description}: {stream.skipped.report()}")
    if skipped is not None:
        skipped.update(stream.skipped)
    return gathered[:, 2:].float().numpy(), gathered[:, 1].long().numpy(), gathered[:, 0].long().numpy()


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one feature pass of hf_ssl's evaluations (the training-time kNN and `hf-ssl evaluate`): every example of
    `dataset` through the checkpoint's `image_processor` (one image per example, or `num_clips` evenly spaced clips
    per video whose `embeddings` are averaged), then `model` in eval mode. Returns (embeddings, labels or -1, ids)
    in id order, identical on every process."""
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
