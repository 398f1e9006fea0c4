"""Evaluation of frozen features: feature extraction over a stream, weighted kNN."""

from .features import extract_features
from .knn import knn_classify, weighted_knn_accuracy

__all__ = ["extract_features", "knn_classify", "weighted_knn_accuracy"]
