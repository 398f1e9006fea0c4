"""Evaluation of frozen features: feature extraction over a stream, weighted kNN, the raw-pixel baseline."""

from .features import extract_features
from .knn import knn_classify, weighted_knn_accuracy
from .pixels import PixelFeatures

__all__ = ["PixelFeatures", "extract_features", "knn_classify", "weighted_knn_accuracy"]
