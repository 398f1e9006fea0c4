"""Streamed datasets with stable example ids, exact-resume iteration, and augmentation of images and videos."""

from .stream import (
    EXAMPLE_SEED,
    BatchStream,
    SkippedSamples,
    load_stream,
    uniform_cluster_weights,
    with_stable_ids,
)
from .transforms import MultiViewTransform, ViewAugmentation, decode_image, make_image_processor
from .video import (
    ClipViewTransform,
    clip_span,
    decode_clips,
    is_video_dataset,
    read_clips,
    sample_clip_starts,
    uniform_clip_starts,
)

__all__ = [
    "BatchStream",
    "EXAMPLE_SEED",
    "SkippedSamples",
    "load_stream",
    "with_stable_ids",
    "uniform_cluster_weights",
    "MultiViewTransform",
    "ViewAugmentation",
    "decode_image",
    "make_image_processor",
    "ClipViewTransform",
    "clip_span",
    "decode_clips",
    "is_video_dataset",
    "read_clips",
    "sample_clip_starts",
    "uniform_clip_starts",
]
