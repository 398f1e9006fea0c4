"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, sec. 3.4): each of the k
nearest training features votes for its class with weight exp(cos / tau)."""

import numpy as np
import torch

from ..clustering import knn_search
from ..metrics import load_metric


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_classify(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> np.ndarray:
    """Class scores (num_queries, num_classes) of a weighted kNN vote with cosine similarity."""
    num_classes = num_classes or int(bank_labels.max()) + 1
    similarities, indices = knn_search(_normalize(bank), _normalize(queries), k)
    weights = torch.from_numpy(similarities).double().div(temperature).exp()
    votes = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, torch.from_numpy(bank_labels[indices]).long(), weights)
    return votes.numpy()


def weighted_knn_accuracy(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    ks: list[int],
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (in %) of the weighted kNN for each k: {"knn_top1@200": ..., ...}."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    accuracy = load_metric("top_k_accuracy")
    results = {}
    for k in ks:
        scores = knn_classify(bank, bank_labels, queries, k, temperature, num_classes)
        metrics = accuracy.compute(predictions=scores, references=query_labels, k=5)
        results[f"knn_top1@{k}"] = metrics["top1_accuracy"]
        results[f"knn_top5@{k}"] = metrics[f"top{min(5, num_classes)}_accuracy"]
    return results
