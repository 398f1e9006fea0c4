"""Top-k accuracy from class scores: an `evaluate` metric module shipped inside hf_ssl (the Hub is not needed)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Top-1 and top-k accuracy, in percent, of class scores (one row of scores per example) against
integer labels. Ties are broken towards the lower class index, so the result is deterministic."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: class scores, one list of `num_classes` floats per example.
    references: the true class index of each example.
    k: the k of top-k accuracy (default 5; clipped to the number of classes).
Returns:
    top1_accuracy: percentage of examples whose highest score is the true class.
    top5_accuracy (top{k}_accuracy): percentage whose true class is among the k highest scores.
Examples:
    >>> metric = evaluate.load("hf_ssl/metrics/top_k_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], k=2)
    {'top1_accuracy': 50.0, 'top2_accuracy': 100.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k: int = 5) -> dict[str, float]:
        scores, labels = np.asarray(predictions, dtype=np.float64), np.asarray(references)
        if scores.ndim != 2 or len(scores) != len(labels):
            raise ValueError(f"predictions must be (examples, classes) scores; got shape {scores.shape}")
        k = min(k, scores.shape[1])
        ranked = np.argsort(-scores, axis=1, kind="stable")
        # 100 * count / n rather than 100 * mean: 33.3, not 33.300000000000004, in results files and cards
        return {
            "top1_accuracy": 100.0 * int(np.sum(ranked[:, 0] == labels)) / len(labels),
            f"top{k}_accuracy": 100.0 * int(np.sum((ranked[:, :k] == labels[:, None]).any(axis=1))) / len(labels),
        }
