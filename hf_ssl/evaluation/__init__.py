"""Evaluation of frozen features: feature extraction over a stream, weighted kNN, the raw-pixel baseline.

The names load on first use (PEP 562), so `hf_ssl.evaluation.results` (what model cards read) imports without
faiss, datasets and accelerate.
"""

import importlib

_EXPORTS = {
    "extract_features": ".features",
    "frozen_features": ".features",
    "knn_classify": ".knn",
    "knn_scores": ".knn",
    "PixelFeatures": ".pixels",
    "top_k_accuracy": ".knn",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
