"""Streamed datasets with stable example ids, exact-resume iteration, and augmentation."""

from .stream import BatchStream, SkippedSamples, load_stream, with_stable_ids
from .transforms import EvalTransform, MultiViewTransform, ViewAugmentation, decode_image, make_image_processor

__all__ = [
    "BatchStream",
    "SkippedSamples",
    "load_stream",
    "with_stable_ids",
    "EvalTransform",
    "MultiViewTransform",
    "ViewAugmentation",
    "decode_image",
    "make_image_processor",
]
