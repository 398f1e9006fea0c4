"""Agreement of a clustering with the true labels (NMI, AMI, ARI): an `evaluate` metric module shipped inside
hf_ssl, computed with scikit-learn."""

import datasets
import evaluate
from sklearn import metrics

_DESCRIPTION = """Normalized mutual information, adjusted mutual information and adjusted Rand index between cluster
assignments and class labels (both integer labelings; the cluster ids need not match the class ids)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the cluster of each example.
    references: the class of each example.
Returns:
    nmi, ami, ari: floats; 1.0 for identical partitions, about 0 (ami, ari) for independent ones.
Examples:
    >>> metric = evaluate.load("hf_ssl/metrics/clustering_agreement")
    >>> metric.compute(predictions=[0, 0, 1, 1], references=[5, 5, 7, 7])
    {'nmi': 1.0, 'ami': 1.0, 'ari': 1.0}
"""

_CITATION = """@article{vinh2010information,
  title={Information Theoretic Measures for Clusterings Comparison},
  author={Vinh, Nguyen Xuan and Epps, Julien and Bailey, James},
  journal={Journal of Machine Learning Research}, volume={11}, pages={2837--2854}, year={2010}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClusteringAgreement(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        return {
            "nmi": float(metrics.normalized_mutual_info_score(references, predictions)),
            "ami": float(metrics.adjusted_mutual_info_score(references, predictions)),
            "ari": float(metrics.adjusted_rand_score(references, predictions)),
        }
