"""The results of one evaluation run: a flat list of scores with what they were measured on, one JSON file.

Model cards turn each `Score` into a `huggingface_hub.EvalResult`, so the card's `model-index` and this file hold
the same numbers. Each file carries the sha256 of the weights it measured (`weights_sha256`): a card uses only the
results of the weights beside it, and `hf-ssl evaluate` merges new scores into a file of the same weights.
"""

import dataclasses
import json
import logging
import os
import pathlib
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How one evaluation protocol is named: in a score's name, in the card's tables, and described."""

    short: str  # "kNN": a score's name starts with it ('kNN top-1 (k=200)')
    label: str  # the card's results table
    description: str
    task_type: str = "image-classification"  # the card's model-index task (a Hub task id)
    task_name: str | None = None


PROTOCOLS = {
    "knn": Protocol("kNN", "weighted kNN", "weighted kNN on the method's embedding"),
    "linear": Protocol("linear probe", "linear probe", "linear probe on the pooled backbone features"),
    "layers": Protocol(
        "linear probe",
        "linear probe per layer",
        "linear probe on each backbone layer, average-pooled (DeepCluster protocol)",
    ),
    "nmi": Protocol("k-means", "k-means", "k-means on the method's embedding vs the labels"),
    "transfer": Protocol(
        "transfer linear probe",
        "transfer linear probe",
        "linear probe on the pooled backbone features, on a dataset other than the pre-training one",
    ),
    "retrieval": Protocol(
        "retrieval",
        "instance retrieval (R-MAC)",
        "instance retrieval as in DeepCluster (Table 5): R-MAC descriptors (3 scales) of the last feature map, "
        "PCA-whitened, mAP of the Oxford/Paris protocol on cropped queries",
        task_type="image-feature-extraction",  # the Hub has no retrieval task
        task_name="Image Retrieval",
    ),
    "video_svm": Protocol(
        "linear SVM",
        "linear SVM (C3D protocol)",
        "linear SVM (scikit-learn LinearSVC) on L2-normalised pooled features averaged over each video's clips",
        task_type="video-classification",
    ),
    "detection": Protocol(
        "detection",
        "detection",
        "RoI-aligned box features of the frozen last feature map -> logistic regression over the box classes "
        "(top-1); "
        "with a DETR fine-tune, COCO box mAP@[.5:.95]",
    ),
    "segmentation": Protocol(
        "segmentation",
        "segmentation",
        "linear head on the frozen last feature map, mIoU; on a detection set, boxes painted as masks (no masks)",
    ),
}
# The weighted kNN's neighbourhood sizes and temperature, for the training loop's kNN and the suite's alike.
KNN_K = (20, 200)
KNN_TEMPERATURE = 0.07
# Scores of something other than the checkpoint, measured with the same protocol on the same data as a reference.
BASELINES = {
    "pixels": "each image's pixels at the evaluation size in place of features (un-normalised, flattened, centred "
    "on their mean)",
    "thumbnails": "each image as 16x16 RGB pixels (flattened, centred on their mean, L2-normalised) in place of "
    "R-MAC descriptors",
    "random_init": "the same network at random initialisation (measured by the training loop, or by "
    "`hf-ssl evaluate --random_init_baseline`)",
}
BASELINE_LABELS = {"pixels": "raw pixels", "thumbnails": "16x16 thumbnails", "random_init": "random init"}
# On a video dataset every protocol reads clip embeddings averaged over several clips per video (the video probe).
METRICS = {
    "top1_accuracy": "top-1 accuracy (%)",
    "top5_accuracy": "top-5 accuracy (%)",
    "nmi": "normalized mutual information",
    "ami": "adjusted mutual information",
    "ari": "adjusted Rand index",
    "map": "mean average precision (Oxford/Paris protocol)",
    "box_map": "COCO box mAP@[.5:.95] (%)",
    "miou": "mean IoU (%)",
}


def accuracy_metrics(num_classes: int) -> tuple[str, ...]:
    """The accuracies a classification over `num_classes` classes reports: top-1, and top-5 only with more than 5
    classes (with 5 or fewer every true class is among the top 5, so it would read 100% whatever the features)."""
    return ("top1_accuracy", "top5_accuracy") if num_classes > 5 else ("top1_accuracy",)


@dataclass(frozen=True)
class Score:
    """One number: `metric` of `protocol` on `dataset`/`split` (at `layer` for per-layer probes, `k` for kNN), of the
    checkpoint, or of a reference when `baseline` is set (one of `BASELINES`: e.g. kNN on raw pixels)."""

    protocol: str
    dataset: str
    split: str
    metric: str
    value: float
    layer: str | None = None
    k: int | None = None
    baseline: str | None = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not one of {sorted(PROTOCOLS)}")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not one of {sorted(METRICS)}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"baseline={self.baseline!r} is not one of {sorted(BASELINES)}")

    @property
    def measurement(self) -> tuple:
        """What one evaluation measures together (all its metrics and baselines): a later evaluation of the same
        measurement replaces these scores when results are merged."""
        return self.protocol, self.dataset, self.split, self.layer, self.k

    @property
    def name(self) -> str:
        """A human-readable name, unique within one dataset and split of a run: 'kNN top-1 (k=200)',
        'linear probe top-1 (stage2)', 'kNN top-1 (k=200, raw pixels)' (the card's model-index groups results by
        dataset and split)."""
        label = PROTOCOLS[self.protocol].short
        metric = {
            "top1_accuracy": "top-1",
            "top5_accuracy": "top-5",
            "map": "mAP",
            "box_map": "box mAP",
            "miou": "mIoU",
        }.get(self.metric, self.metric.upper())
        baseline = BASELINE_LABELS.get(self.baseline, "")
        detail = ", ".join(x for x in (f"k={self.k}" if self.k else "", self.layer or "", baseline) if x)
        return f"{label} {metric}" + (f" ({detail})" if detail else "")


def dataset_display_name(name_or_path: str) -> str:
    """A local folder's name, or the Hub id as given: results are published, the machine's paths are not."""
    return pathlib.PurePath(name_or_path).name if os.path.exists(name_or_path) else name_or_path


@dataclass
class EvaluationResults:
    """Everything one evaluation measured, with the settings that reproduce it: `hf-ssl evaluate`'s
    (evaluation_results.json) or the training loop's kNN (eval_results.json, with the corrupt samples it skipped)."""

    model: str
    method: str | None = None
    pretraining_dataset: str | None = None
    settings: dict = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    corrupt_samples_skipped: int = 0
    corrupt_samples_examples: list[str] = field(default_factory=list)
    weights_sha256: str | None = None  # `run_layout.weights_fingerprint` of the weights measured
    earlier_settings: list[dict] = field(default_factory=list)  # of earlier evaluations whose scores were merged in

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    def merged_into(self, path: str | pathlib.Path) -> "EvaluationResults":
        """These results merged into the file at `path` (if any): its scores of the same weights are kept unless
        this evaluation measured them again (same protocol, dataset, split, layer and k); a file of other weights
        is replaced. Returns what to save."""
        path = pathlib.Path(path)
        if not path.is_file():
            return self
        old = EvaluationResults.load(path)
        if old.weights_sha256 != self.weights_sha256:
            logger.warning("%s holds results of other weights (sha256 %s): replaced", path, old.weights_sha256)
            return self
        measured = {s.measurement for s in self.scores}
        kept = [s for s in old.scores if s.measurement not in measured]
        earlier = old.earlier_settings + [old.settings] if kept else []
        return dataclasses.replace(self, scores=kept + self.scores, earlier_settings=earlier)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "EvaluationResults":
        data = json.loads(pathlib.Path(path).read_text())
        return cls(**{**data, "scores": [Score(**s) for s in data["scores"]]})

    @classmethod
    def load_matching(cls, path: pathlib.Path, weights_sha256: str | None) -> "EvaluationResults | None":
        """The results at `path` if they were measured on the weights whose fingerprint is `weights_sha256`; None
        (saying so) when the file is missing or measured other weights. A file without a fingerprint (written by
        hand or before hf_ssl recorded one) is used, with a warning that it cannot be checked."""
        if not path.is_file():
            return None
        results = cls.load(path)
        if results.weights_sha256 is None:
            logger.warning("%s records no weights fingerprint: its scores cannot be checked against the model", path)
        elif results.weights_sha256 != weights_sha256:
            logger.warning(
                "%s was measured on other weights (sha256 %s, the model's is %s): its %d scores are not used",
                path,
                results.weights_sha256[:12],
                (weights_sha256 or "none")[:12],
                len(results.scores),
            )
            return None
        return results

    def get(self, **match) -> Score:
        """The one score whose fields equal `match` (e.g. protocol="knn", k=200, metric="top1_accuracy"); the
        model's own unless `baseline` is given (baseline="pixels": the raw-pixel kNN)."""
        match.setdefault("baseline", None)
        found = [s for s in self.scores if all(getattr(s, k) == v for k, v in match.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} scores match {match}")
        return found[0]

    def format(self) -> str:
        """The scores as an aligned text table."""
        header = ("protocol", "dataset", "split", "layer / k", "features", "metric", "value")
        rows = [
            (
                s.protocol,
                s.dataset,
                s.split,
                s.layer or (f"k={s.k}" if s.k else ""),
                s.baseline or "model",
                s.metric,
                f"{s.value:.2f}" if s.metric.endswith("accuracy") or s.metric in ("map", "miou") else f"{s.value:.4f}",
            )
            for s in self.scores
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])
