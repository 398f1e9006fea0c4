"""Streamed datasets with stable example ids, exact-resume iteration, and augmentation."""

from .stream import BatchStream, SkippedSamples, load_stream, uniform_cluster_weights, with_stable_ids
from .transforms import EvalTransform, MultiViewTransform, ViewAugmentation, decode_image, make_image_processor

__all__ = [
    "BatchStream",
    "SkippedSamples",
    "load_stream",
    "with_stable_ids",
    "uniform_cluster_weights",
    "EvalTransform",
    "MultiViewTransform",
    "ViewAugmentation",
    "decode_image",
    "make_image_processor",
]
