"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, sec. 3.4): each of the k
nearest training features votes for its class with weight exp(cos / tau)."""

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, top_k_accuracy_score

from ..clustering import knn_search
from .results import KNN_K, KNN_TEMPERATURE, Score, accuracy_metrics


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_k_accuracy(class_scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The accuracies of `accuracy_metrics` (top-1; top-5 with more than 5 classes) in % of class scores (one row
    per example, one column per class) against integer labels, by scikit-learn."""
    if class_scores.ndim != 2 or len(class_scores) != len(labels):
        raise ValueError(f"class scores must be (examples, classes) for {len(labels)} labels; got {class_scores.shape}")
    num_classes = class_scores.shape[1]
    # counts, then 100 * count / n: 33.3, not 33.300000000000004, in results files and cards
    hits = {"top1_accuracy": accuracy_score(labels, class_scores.argmax(1), normalize=False)}
    if "top5_accuracy" in accuracy_metrics(num_classes):
        all_classes = np.arange(num_classes)
        hits["top5_accuracy"] = top_k_accuracy_score(labels, class_scores, k=5, labels=all_classes, normalize=False)
    return {metric: 100.0 * int(count) / len(labels) for metric, count in hits.items()}


def _vote(similarities: np.ndarray, neighbour_labels: np.ndarray, temperature: float, num_classes: int) -> np.ndarray:
    """Class scores of the weighted vote of each query's neighbours (similarities and labels, best first)."""
    weights = torch.from_numpy(np.ascontiguousarray(similarities)).double().div(temperature).exp()
    votes = torch.zeros(len(similarities), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, torch.from_numpy(np.ascontiguousarray(neighbour_labels)).long(), weights)
    return votes.numpy()


def knn_classify(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    temperature: float = KNN_TEMPERATURE,
    num_classes: int | None = None,
) -> np.ndarray:
    """Class scores (num_queries, num_classes) of a weighted kNN vote with cosine similarity."""
    num_classes = num_classes or int(bank_labels.max()) + 1
    similarities, indices = knn_search(_normalize(bank), _normalize(queries), k)
    return _vote(similarities, bank_labels[indices], temperature, num_classes)


def knn_scores(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    dataset: str,
    split: str,
    ks: Sequence[int] = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    baseline: str | None = None,
) -> list[Score]:
    """Top-1 and top-5 accuracy (in %; top-5 with more than 5 classes) of the weighted kNN for each k, as Scores of
    protocol "knn" on `dataset`/`split` (of `baseline`'s features when set)."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    # one exact search at the largest k: the k nearest of any smaller k are its first k, best first
    similarities, indices = knn_search(_normalize(bank), _normalize(queries), max(ks))
    neighbour_labels = bank_labels[indices]
    scores = []
    for k in ks:
        votes = _vote(similarities[:, :k], neighbour_labels[:, :k], temperature, num_classes)
        metrics = top_k_accuracy(votes, query_labels)
        scores += [
            Score("knn", dataset, split, metric, metrics[metric], k=k, baseline=baseline)
            for metric in accuracy_metrics(num_classes)
        ]
    return scores
