"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, sec. 3.4): each of the k
nearest training features votes for its class with weight exp(cos / tau)."""

from collections.abc import Sequence

import numpy as np
import torch

from ..clustering import knn_search
from ..metrics import load_metric
from .results import KNN_K, KNN_TEMPERATURE, Score, accuracy_metrics


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
    weights = torch.from_numpy(similarities).double().div(temperature).exp()
    votes = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    votes.scatter_add_(1, torch.from_numpy(bank_labels[indices]).long(), weights)
    return votes.numpy()


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
    accuracy = load_metric("top_k_accuracy")
    scores = []
    for k in ks:
        votes = knn_classify(bank, bank_labels, queries, k, temperature, num_classes)
        metrics = accuracy.compute(predictions=votes, references=query_labels, k=5)
        scores += [
            Score("knn", dataset, split, metric, metrics[metric], k=k, baseline=baseline)
            for metric in accuracy_metrics(num_classes)
        ]
    return scores
