"""`hf-ssl evaluate`: every protocol on the frozen features of one checkpoint, features extracted once.

    hf-ssl evaluate --model PATH_OR_REPO --dataset ../shared/data/cifar10 --protocols knn,linear,layers,nmi,transfer \
        --transfer_dataset ../shared/data/imagenette-160

Run under `accelerate launch` for several processes: each process extracts features of its share of the data and
they are gathered; the probes and k-means then run on the main process and the results are written there.
"""

import dataclasses
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoImageProcessor, AutoModel

from ..clustering import kmeans
from ..data import ClipAveragedFeatures, EvalTransform, VideoEvalTransform, load_stream, make_eval_transform
from ..data.stream import with_stable_ids
from ..metrics import load_metric
from .features import extract_features
from .knn import knn_classify
from .linear_probe import train_linear_probe
from .results import PROTOCOLS, RESULTS_FILE, EvaluationResults, Score


@dataclass
class EvaluationArguments:
    """What to evaluate, on what, and how (the fields of `hf-ssl evaluate`)."""

    model: str = field(metadata={"help": "A checkpoint folder or a Hub repo id."})
    dataset: str = field(metadata={"help": "Labelled dataset (folder or Hub id) with train and test splits."})
    protocols: str = field(
        default="knn,linear,layers,nmi", metadata={"help": f"Comma-separated, of {', '.join(PROTOCOLS)}."}
    )
    transfer_dataset: str | None = field(default=None, metadata={"help": "Second dataset for `transfer`."})
    transfer_eval_split: str | None = field(default=None, metadata={"help": "Its evaluation split; default eval_split."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    trust_remote_code: bool = False
    dataset_config_name: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    image_column: str = "image"
    video_column: str = field(default="video", metadata={"help": "A dataset with this column is probed as video."})
    label_column: str = "label"
    num_clips: int = field(default=4, metadata={"help": "Video: clips per video, features averaged over them."})
    frames_per_clip: int | None = field(
        default=None, metadata={"help": "Video: frames per clip; default the checkpoint recipe's num_frames, else 8."}
    )
    frame_stride: int | None = field(
        default=None, metadata={"help": "Video: frame stride; default the checkpoint recipe's frame_stride, else 2."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training-split examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on evaluation-split examples."})
    knn_k: list[int] = field(default_factory=lambda: [20, 200])
    knn_temperature: float = 0.07
    layer_dims: int = field(default=9600, metadata={"help": "Per-layer probes: average-pool each layer to ~this."})
    probe_epochs: int = 100
    probe_batch_size: int = 256
    probe_learning_rate: float = 1e-3
    probe_weight_decay: float = 5e-4
    nmi_clusters: int | None = field(default=None, metadata={"help": "k of k-means for nmi; default: classes."})
    batch_size: int = 256
    num_workers: int = 2
    seed: int = 0
    output_file: str | None = field(
        default=None, metadata={"help": f"Results JSON; default <model>/{RESULTS_FILE} for a folder, else ./"}
    )
    disable_tqdm: bool = False

    def __post_init__(self):
        self.protocol_list = [p.strip() for p in self.protocols.split(",") if p.strip()]
        unknown = [p for p in self.protocol_list if p not in PROTOCOLS]
        if unknown or not self.protocol_list:
            raise ValueError(f"protocols={self.protocols!r}: use a comma-separated subset of {list(PROTOCOLS)}")
        if "transfer" in self.protocol_list and not self.transfer_dataset:
            raise ValueError("protocols includes 'transfer' but transfer_dataset is not set")
        for name in ("layer_dims", "probe_epochs", "probe_batch_size", "batch_size", "num_clips", "frames_per_clip",
                     "frame_stride"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.knn_k or min(self.knn_k) < 1:
            raise ValueError(f"knn_k must be a list of positive integers, got {self.knn_k}")
        if self.output_file is None:
            folder = pathlib.Path(self.model)
            self.output_file = str((folder if folder.is_dir() else pathlib.Path(".")) / RESULTS_FILE)


def dataset_display_name(name_or_path: str) -> str:
    """A local folder's name, or the Hub id as given."""
    path = pathlib.Path(name_or_path)
    return path.name if path.exists() else name_or_path


def layer_names(model: torch.nn.Module, count: int) -> list[str]:
    """Names of the backbone's hidden states: conv1.. for the AlexNet / VGG / C3D blocks, stem and stage1.. for
    ResNets (2D and 3D), hidden_state<i> otherwise."""
    config = getattr(getattr(model, "backbone", model), "config", model.config)
    if config.model_type in ("alexnet", "vgg", "c3d"):
        return [f"conv{i + 1}" for i in range(count)]
    if config.model_type in ("resnet", "r3d"):
        return ["stem"] + [f"stage{i}" for i in range(1, count)]
    return [f"hidden_state{i}" for i in range(count)]


def pool_to(hidden: torch.Tensor, dims: int) -> torch.Tensor:
    """Average-pool a feature map to about `dims` features per example (the DeepCluster probe): (B, C, H, W) to
    C x s x s with s = round(sqrt(dims / C)) (at most the map's size), video maps averaged over time first,
    token sequences averaged over tokens."""
    if hidden.dim() == 5:
        hidden = hidden.mean(2)
    if hidden.dim() == 3:
        return hidden.mean(1)
    side = max(1, min(round((dims / hidden.shape[1]) ** 0.5), hidden.shape[2], hidden.shape[3]))
    return torch.nn.functional.adaptive_avg_pool2d(hidden, side).flatten(1)


@dataclass
class SplitFeatures:
    """Frozen features of one split, rows in example-id order."""

    embeddings: np.ndarray  # the method's embedding (IR's 128-d vector; the pooled features for DeepCluster)
    pooled: np.ndarray  # the backbone's pooled features
    labels: np.ndarray
    layers: list[np.ndarray]  # per backbone layer, average-pooled to ~layer_dims (empty unless asked for)


class ProbeFeatures(torch.nn.Module):
    """What the protocols read from one forward pass: the embedding, the pooled backbone features and, for
    per-layer probes, every hidden state pooled to ~`layer_dims`, concatenated into one row (one gather). Wrapped in
    `ClipAveragedFeatures` for video, every feature is averaged over each video's clips."""

    def __init__(self, model: torch.nn.Module, layers: bool, layer_dims: int):
        super().__init__()
        self.model, self.layers, self.layer_dims = model, layers, layer_dims
        self.widths: list[int] = []
        self.eval()  # extraction restores the wrapper's mode afterwards: it must not leave the model training

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> "ProbeFeatures.Output":
        out = self.model(pixel_values=pixel_values, output_hidden_states=self.layers, return_dict=True)
        pooled = out.pooler_output.flatten(1)
        embedding = getattr(out, "embeddings", None)  # None for a plain transformers backbone
        parts = [pooled if embedding is None else embedding.flatten(1), pooled]
        if self.layers:
            parts += [pool_to(h, self.layer_dims) for h in out.hidden_states]
        self.widths = [p.shape[1] for p in parts]
        return ProbeFeatures.Output(torch.cat(parts, 1))

    @dataclass
    class Output:
        embeddings: torch.Tensor


class Evaluator:
    """Loads the checkpoint once, extracts each dataset's features once, and runs the requested protocols."""

    def __init__(self, args: EvaluationArguments, accelerator: Accelerator | None = None):
        self.args = args
        self.accelerator = accelerator or Accelerator()
        kwargs = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
        self.model = AutoModel.from_pretrained(args.model, **kwargs).to(self.accelerator.device).eval()
        self.image_processor = AutoImageProcessor.from_pretrained(args.model, **kwargs)
        self.recipe = self._recipe()
        # clips shaped as in pre-training: the checkpoint's recipe says how (its video processing settings)
        self.frames_per_clip = args.frames_per_clip or self.recipe.get("num_frames", 8)
        self.frame_stride = args.frame_stride or self.recipe.get("frame_stride", 2)

    def _recipe(self) -> dict:
        """The training recipe saved with the checkpoint (training_args.yaml), or {} when there is none."""
        try:
            path = hf_hub_download(self.args.model, "training_args.yaml", revision=self.args.revision) if not (
                pathlib.Path(self.args.model).is_dir()
            ) else pathlib.Path(self.args.model) / "training_args.yaml"
        except EntryNotFoundError:
            return {}
        path = pathlib.Path(path)
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    def features(
        self, dataset: str, eval_split: str, layers: bool
    ) -> list[SplitFeatures]:
        """The features of the training split and of `eval_split` of `dataset`."""
        args, acc = self.args, self.accelerator
        probe_model = ProbeFeatures(self.model, layers, args.layer_dims)
        result = []
        for split, cap in ((args.train_split, args.max_train_samples), (eval_split, args.max_eval_samples)):
            with acc.main_process_first():
                stream = with_stable_ids(load_stream(dataset, split, args.dataset_config_name))[0]
            transform = self.transform(stream)
            rows, labels, _ = extract_features(
                ClipAveragedFeatures(probe_model), stream, transform, acc, args.batch_size, num_workers=args.num_workers, max_samples=cap,
                description=f"{dataset_display_name(dataset)}/{split} features", progress=not args.disable_tqdm,
            )
            if (labels < 0).any():
                raise ValueError(f"dataset {dataset!r} split {split!r}: label_column={args.label_column!r} is missing")
            splits = np.split(rows, np.cumsum(probe_model.widths)[:-1], axis=1)
            result.append(SplitFeatures(splits[0], splits[1], labels, splits[2:]))
        return result

    def transform(self, stream) -> EvalTransform | VideoEvalTransform:
        """Frames of several clips per video for a dataset with `video_column`, one image per example otherwise."""
        args = self.args
        return make_eval_transform(
            stream, self.image_processor, image_column=args.image_column, video_column=args.video_column,
            label_column=args.label_column, num_clips=args.num_clips, frames_per_clip=self.frames_per_clip,
            frame_stride=self.frame_stride,
        )

    def run(self) -> EvaluationResults:
        """Every protocol; the results (identical on every process) are saved to `output_file` by the main one."""
        args, acc = self.args, self.accelerator
        protocols = args.protocol_list
        main = dataset_display_name(args.dataset)
        scores: list[Score] = []
        if set(protocols) - {"transfer"}:
            data = self.features(args.dataset, args.eval_split, layers="layers" in protocols)
            if acc.is_main_process:
                scores += self._protocols(main, args.eval_split, data, [p for p in protocols if p != "transfer"])
        if "transfer" in protocols:
            split = args.transfer_eval_split or args.eval_split
            data = self.features(args.transfer_dataset, split, layers=False)
            if acc.is_main_process:
                scores += self._protocols(dataset_display_name(args.transfer_dataset), split, data, ["transfer"])
        scores = broadcast_object_list([scores])[0]
        results = EvaluationResults(
            model=args.model,
            method=getattr(self.model.config, "model_type", None),
            pretraining_dataset=dataset_display_name(self.recipe["dataset_name"]) if "dataset_name" in self.recipe else None,
            settings={k: v for k, v in dataclasses.asdict(args).items() if k not in ("output_file", "disable_tqdm")},
            scores=scores,
        )
        if acc.is_main_process:
            results.save(args.output_file)
        acc.wait_for_everyone()
        return results

    def _protocols(self, name: str, split: str, data: list[SplitFeatures], protocols: list[str]) -> list[Score]:
        """kNN and k-means read the method's embedding, the linear probes the pooled backbone features."""
        args = self.args
        train, test = data
        train_y, test_y = train.labels, test.labels
        num_classes = int(max(train_y.max(), test_y.max())) + 1
        accuracy = load_metric("top_k_accuracy")
        scores = []

        def add_accuracy(protocol: str, class_scores: np.ndarray, **extra) -> None:
            metrics = accuracy.compute(predictions=class_scores, references=test_y, k=5)
            for metric in ("top1_accuracy", "top5_accuracy"):
                if metric in metrics:  # top-5 only with at least 5 classes
                    scores.append(Score(protocol, name, split, metric, metrics[metric], **extra))

        def probe(protocol: str, train_x: np.ndarray, test_x: np.ndarray, layer: str | None = None) -> None:
            class_scores = train_linear_probe(
                train_x, train_y, test_x, num_classes, epochs=args.probe_epochs, batch_size=args.probe_batch_size,
                learning_rate=args.probe_learning_rate, weight_decay=args.probe_weight_decay, seed=args.seed,
                device=self.accelerator.device, description=f"{protocol} probe {layer or ''}".strip(),
                progress=not args.disable_tqdm,
            )
            add_accuracy(protocol, class_scores, layer=layer)

        for protocol in protocols:
            if protocol == "knn":
                for k in args.knn_k:
                    knn = knn_classify(train.embeddings, train_y, test.embeddings, k, args.knn_temperature, num_classes)
                    add_accuracy("knn", knn, k=k)
            elif protocol in ("linear", "transfer"):
                probe(protocol, train.pooled, test.pooled)
            elif protocol == "layers":
                names = layer_names(self.model, len(train.layers))
                for layer, train_x, test_x in zip(names, train.layers, test.layers):
                    probe("layers", train_x, test_x, layer)
            elif protocol == "nmi":
                clusters = kmeans(test.embeddings, args.nmi_clusters or num_classes, seed=args.seed).labels
                agreement = load_metric("clustering_agreement").compute(predictions=clusters, references=test_y)
                scores += [Score("nmi", name, split, metric, value) for metric, value in agreement.items()]
        return scores


def evaluate_checkpoint(args: EvaluationArguments) -> EvaluationResults:
    """Run `hf-ssl evaluate` from Python; returns (and writes) the results."""
    return Evaluator(args).run()


def format_results(results: EvaluationResults) -> str:
    """The scores as an aligned text table."""
    header = ("protocol", "dataset", "split", "layer / k", "metric", "value")
    rows = [
        (s.protocol, s.dataset, s.split, s.layer or (f"k={s.k}" if s.k else ""), s.metric,
         f"{s.value:.2f}" if s.metric.endswith("accuracy") else f"{s.value:.4f}")
        for s in results.scores
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows])
