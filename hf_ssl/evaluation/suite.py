"""`hf-ssl evaluate`: every protocol on the frozen features of one checkpoint, features extracted once.

    hf-ssl evaluate --model PATH_OR_REPO --dataset_name ../shared/data/cifar10 --protocols knn,linear,layers,nmi,transfer \
        --transfer_dataset_name ../shared/data/imagenette-160

Run under `accelerate launch` for several processes: each process extracts features of its share of the data and
they are gathered to the main process only; the probes and k-means then run on the main process and the results are
written there.
"""

import dataclasses
import datetime
import itertools
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch
import yaml
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.utils import broadcast_object_list
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoImageProcessor, AutoModel

from ..clustering import kmeans
from ..data import is_video_dataset, load_stream
from ..data.stream import SkippedSamples, with_stable_ids
from ..distributed import run_on_main
from ..metrics import load_metric
from ..preflight import check_dataset, check_location, check_modality
from ..run_layout import EVALUATION_RESULTS_FILE, RECIPE_FILE, weights_fingerprint
from .dense_protocols import dense_scores, load_detection_set
from .features import extract_features, frozen_features
from .knn import knn_scores, top_k_accuracy
from .linear_probe import PROBE_PROTOCOLS, LinearProbe, RandomCropFlipTransform, train_linear_probe
from .pixels import PixelFeatures
from .results import (
    KNN_K,
    KNN_TEMPERATURE,
    PROTOCOLS,
    EvaluationResults,
    Score,
    accuracy_metrics,
    dataset_display_name,
)
from .retrieval import (
    RetrievalBenchmark,
    VideoSVMFeatures,
    image_regions,
    linear_svm_scores,
    mean_average_precision,
    resize_longer_side,
    retrieval_map,
    thumbnails,
)


@dataclass
class EvaluationArguments:
    """What to evaluate, on what, and how (the fields of `hf-ssl evaluate`)."""

    model: str = field(metadata={"help": "A checkpoint folder or a Hub repo id."})
    dataset_name: str = field(metadata={"help": "Labelled dataset (folder or Hub id) with train and test splits."})
    protocols: str = field(
        default="knn,linear,layers,nmi", metadata={"help": f"Comma-separated, of {', '.join(PROTOCOLS)}."}
    )
    transfer_dataset_name: str | None = field(default=None, metadata={"help": "Second dataset for `transfer`."})
    transfer_eval_split: str | None = field(
        default=None, metadata={"help": "Its evaluation split; default eval_split."}
    )
    retrieval_dataset: str | None = field(
        default=None, metadata={"help": "`retrieval`: an Oxford/Paris layout folder (e.g. paris6k-subset)."}
    )
    retrieval_max_size: int = field(
        default=512, metadata={"help": "`retrieval`: images resized to this longer side (queries cropped after)."}
    )
    retrieval_whitening: str = field(
        default="train",
        metadata={
            "help": "`retrieval`: PCA-whitening learned on region vectors of `train` (dataset_name's training split, "
            "a separate set) or `database` (the retrieval database itself: no labels, but the same images)."
        },
    )
    retrieval_whitening_samples: int = field(
        default=500, metadata={"help": "`retrieval`: training-split images the whitening is learned on."}
    )
    svm_c: float = field(default=1.0, metadata={"help": "`video_svm`: the LinearSVC's C."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Load a checkpoint whose model code is not hf_ssl's (transformers' trust_remote_code)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_split: str = field(
        default="train", metadata={"help": "Split the probes train on and the kNN bank is built from."}
    )
    eval_split: str = field(default="test", metadata={"help": "Split the probes and the kNN are scored on."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    video_column: str = field(default="video", metadata={"help": "A dataset with this column is probed as video."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class labels."})
    num_clips: int = field(default=4, metadata={"help": "Video: clips per video, features averaged over them."})
    num_frames: int | None = field(
        default=None, metadata={"help": "Video: frames per clip; default the checkpoint recipe's num_frames, else 8."}
    )
    frame_stride: int | None = field(
        default=None, metadata={"help": "Video: frame stride; default the checkpoint recipe's frame_stride, else 2."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training-split examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on evaluation-split examples."})
    knn_k: list[int] = field(
        default_factory=lambda: list(KNN_K), metadata={"help": "k of the weighted kNN (one or more)."}
    )
    knn_temperature: float = field(default=KNN_TEMPERATURE, metadata={"help": "Temperature of the weighted kNN."})
    pixel_baseline: bool = field(
        default=True, metadata={"help": "knn also on raw pixels (mean-centred per image): a baseline beside the model."}
    )
    random_init_baseline: bool = field(
        default=False,
        metadata={
            "help": "Every protocol also on the same network at random initialisation (seeded by `seed`): a "
            "baseline beside the model; doubles the work."
        },
    )
    layer_dims: int = field(default=9600, metadata={"help": "Per-layer probes: average-pool each layer to ~this."})
    probe_protocol: str = field(
        default="standardised",
        metadata={"help": f"Linear probes: one of {', '.join(PROBE_PROTOCOLS)} (see hf_ssl.evaluation.linear_probe)."},
    )
    probe_epochs: int | None = field(default=None, metadata={"help": "Default: the protocol's (100; deepcluster 90)."})
    probe_batch_size: int = field(default=256, metadata={"help": "Batch size of linear-probe training."})
    probe_learning_rate: float | None = field(
        default=None, metadata={"help": "Default: the protocol's (AdamW 1e-3; deepcluster SGD 0.01)."}
    )
    probe_weight_decay: float | None = field(
        default=None, metadata={"help": "Default: the protocol's (5e-4; deepcluster 1e-4)."}
    )
    probe_momentum: float = field(default=0.9, metadata={"help": "SGD momentum of the deepcluster protocol."})
    nmi_clusters: int | None = field(default=None, metadata={"help": "k of k-means for nmi; default: classes."})
    batch_size: int = field(default=256, metadata={"help": "Feature-extraction batch size per process."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes decoding per process."})
    seed: int = field(default=0, metadata={"help": "Random seed (probes, k-means)."})
    output_file: str | None = field(
        default=None,
        metadata={"help": f"Results JSON; default <model>/{EVALUATION_RESULTS_FILE} for a folder, else ./"},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    ddp_timeout: int = field(
        default=1800,
        metadata={"help": "Seconds a process waits for the main one (which alone runs the probes and k-means)."},
    )
    objects_column: str = field(
        default="objects", metadata={"help": "detection / segmentation: column of COCO [x, y, w, h] boxes."}
    )
    dense_image_size: int = field(
        default=224, metadata={"help": "detection / segmentation: images resized to this square size."}
    )
    segmentation_steps: int = field(default=300, metadata={"help": "segmentation: linear head training steps."})
    detection_finetune_steps: int = field(
        default=0, metadata={"help": "detection: also fine-tune DETR this many steps and report COCO mAP (0: off)."}
    )

    def __post_init__(self):
        self.protocol_list = [p.strip() for p in self.protocols.split(",") if p.strip()]
        unknown = [p for p in self.protocol_list if p not in PROTOCOLS]
        if unknown or not self.protocol_list:
            raise ValueError(f"protocols={self.protocols!r}: use a comma-separated subset of {list(PROTOCOLS)}")
        if "transfer" in self.protocol_list and not self.transfer_dataset_name:
            raise ValueError("protocols includes 'transfer' but transfer_dataset_name is not set")
        if "retrieval" in self.protocol_list and not self.retrieval_dataset:
            raise ValueError("protocols includes 'retrieval' but retrieval_dataset is not set")
        if self.retrieval_whitening not in ("train", "database"):
            raise ValueError(f"retrieval_whitening={self.retrieval_whitening!r}: use 'train' or 'database'")
        for name in (
            "layer_dims",
            "probe_epochs",
            "probe_batch_size",
            "batch_size",
            "num_clips",
            "num_frames",
            "frame_stride",
            "retrieval_max_size",
            "retrieval_whitening_samples",
            "dense_image_size",
            "segmentation_steps",
            "ddp_timeout",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.knn_k or min(self.knn_k) < 1:
            raise ValueError(f"knn_k must be a list of positive integers, got {self.knn_k}")
        if self.probe_protocol not in PROBE_PROTOCOLS:
            raise ValueError(f"probe_protocol={self.probe_protocol!r} is not one of {list(PROBE_PROTOCOLS)}")
        # the protocol's defaults, resolved here so the results' settings record what ran
        defaults = PROBE_PROTOCOLS[self.probe_protocol]
        self.probe_epochs = self.probe_epochs or defaults.epochs
        if self.probe_learning_rate is None:
            self.probe_learning_rate = defaults.learning_rate
        if self.probe_weight_decay is None:
            self.probe_weight_decay = defaults.weight_decay
        if not self.probe_learning_rate > 0:
            raise ValueError(f"probe_learning_rate must be > 0, got {self.probe_learning_rate}")
        for name in ("probe_weight_decay", "probe_momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.output_file is None:
            folder = pathlib.Path(self.model)
            self.output_file = str((folder if folder.is_dir() else pathlib.Path(".")) / EVALUATION_RESULTS_FILE)


def model_weights_sha256(model: str, revision: str | None) -> str | None:
    """`weights_fingerprint` of a checkpoint folder, or of a Hub model's snapshot (from_pretrained downloaded it)."""
    folder = pathlib.Path(model)
    if not folder.is_dir():
        folder = pathlib.Path(hf_hub_download(model, "config.json", revision=revision)).parent
    return weights_fingerprint(folder)


def backbone_type(model: torch.nn.Module) -> str:
    """The backbone's model_type (the model's own for a plain transformers backbone)."""
    return getattr(getattr(model, "backbone", model), "config", model.config).model_type


def layer_names(model: torch.nn.Module, count: int) -> list[str]:
    """Names of the backbone's hidden states: conv1.. for the AlexNet / VGG / C3D blocks, stem and stage1.. for
    ResNets (2D and 3D), hidden_state<i> otherwise."""
    model_type = backbone_type(model)
    if model_type in ("alexnet", "vgg", "c3d"):
        return [f"conv{i + 1}" for i in range(count)]
    if model_type in ("resnet", "r3d"):
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


# Protocols on a detection set (`objects_column`), run by `dense_protocols` on the frozen backbone's feature maps.
DENSE_PROTOCOLS = ("detection", "segmentation")
# Protocols with their own data or feature pass, outside the classification protocols' shared one on dataset_name.
OWN_DATA_PROTOCOLS = ("retrieval", "video_svm", *DENSE_PROTOCOLS)

# DeepCluster's eval_linear.py (RegLog): AvgPool2d (kernel, stride, padding) of AlexNet's conv1..conv5 outputs (after
# ReLU, before max-pool; zero padding counted in the average). At 224 px (maps 55, 27, 13, 13, 13) they leave
# 9600, 9216, 9600, 9600, 9216 features.
DEEPCLUSTER_ALEXNET_POOLS = ((6, 6, 3), (4, 4, 0), (3, 3, 1), (3, 3, 1), (2, 2, 0))


def deepcluster_pool(hidden: torch.Tensor, index: int, model_type: str, dims: int) -> torch.Tensor:
    """The `deepcluster` probe protocol's pooling of hidden state `index`: AlexNet's conv layers exactly as
    DeepCluster's eval_linear.py pools them; any other layer (other backbones, maps smaller than the kernel) with
    `pool_to` to about `dims` features, eval_linear.py defining pools for AlexNet only."""
    if model_type == "alexnet" and hidden.dim() == 4 and index < len(DEEPCLUSTER_ALEXNET_POOLS):
        kernel, stride, padding = DEEPCLUSTER_ALEXNET_POOLS[index]
        if min(hidden.shape[2:]) + 2 * padding >= kernel:
            return torch.nn.functional.avg_pool2d(hidden, kernel, stride, padding).flatten(1)
    return pool_to(hidden, dims)


@dataclass
class SplitFeatures:
    """Frozen features of one split, rows in example-id order."""

    embeddings: np.ndarray  # the method's embedding (IR's 128-d vector; the pooled features for DeepCluster)
    pooled: np.ndarray  # the backbone's pooled features
    labels: np.ndarray
    layers: list[np.ndarray]  # per backbone layer, pooled by the probe protocol (empty unless asked for)
    pixels: np.ndarray | None = None  # the raw-pixel baseline's features (`PixelFeatures`), when asked for


class ProbeFeatures(torch.nn.Module):
    """What the protocols read from one forward pass: the embedding, the pooled backbone features, optionally the
    raw-pixel baseline's features of the same input and, for per-layer probes, every hidden state pooled by
    `pool(hidden, index)`, concatenated into one row (one gather). Wrapped in `ClipAveragedFeatures` for video,
    every feature is averaged over each video's clips."""

    def __init__(
        self,
        model: torch.nn.Module,
        layers: bool,
        pool,
        pixels: PixelFeatures | None = None,
    ):
        super().__init__()
        self.model, self.layers, self.pool, self.pixels = model, layers, pool, pixels
        self.widths: list[int] = []
        self.eval()  # extraction restores the wrapper's mode afterwards: it must not leave the model training

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> "ProbeFeatures.Output":
        out = self.model(pixel_values=pixel_values, output_hidden_states=self.layers, return_dict=True)
        pooled = out.pooler_output.flatten(1)
        embedding = getattr(out, "embeddings", None)  # None for a plain transformers backbone
        parts = [pooled if embedding is None else embedding.flatten(1), pooled]
        if self.pixels is not None:
            parts.append(self.pixels(pixel_values).embeddings)
        if self.layers:
            parts += [self.pool(h, i) for i, h in enumerate(out.hidden_states)]
        self.widths = [p.shape[1] for p in parts]
        return ProbeFeatures.Output(torch.cat(parts, 1))

    @dataclass
    class Output:
        embeddings: torch.Tensor


class Evaluator:
    """Loads the checkpoint once, extracts each dataset's features once, and runs the requested protocols."""

    def __init__(self, args: EvaluationArguments, accelerator: Accelerator | None = None):
        self.args = args
        self.accelerator = accelerator or Accelerator(
            kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=args.ddp_timeout))]
        )
        kwargs = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
        self.model = AutoModel.from_pretrained(args.model, **kwargs).to(self.accelerator.device).eval()
        self.image_processor = AutoImageProcessor.from_pretrained(args.model, **kwargs)
        self.recipe = self._recipe()
        # clips shaped as in pre-training: the checkpoint's recipe says how (its video processing settings)
        self.num_frames = args.num_frames or self.recipe.get("num_frames", 8)
        self.frame_stride = args.frame_stride or self.recipe.get("frame_stride", 2)
        self.skipped = SkippedSamples()  # over every feature pass

    def _recipe(self) -> dict:
        """The training recipe saved with the checkpoint (`RECIPE_FILE`), or {} when there is none."""
        try:
            path = (
                hf_hub_download(self.args.model, RECIPE_FILE, revision=self.args.revision)
                if not (pathlib.Path(self.args.model).is_dir())
                else pathlib.Path(self.args.model) / RECIPE_FILE
            )
        except EntryNotFoundError:
            return {}
        path = pathlib.Path(path)
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    def pool(self, hidden: torch.Tensor, index: int) -> torch.Tensor:
        """Hidden state `index` as the per-layer probes read it: average-pooled to about `layer_dims` features
        (`standardised`), or as DeepCluster's eval_linear.py pools AlexNet's conv layers (`deepcluster`)."""
        if self.args.probe_protocol == "deepcluster":
            return deepcluster_pool(hidden, index, backbone_type(self.model), self.args.layer_dims)
        return pool_to(hidden, self.args.layer_dims)

    def stream(self, dataset: str, split: str):
        """`split` of `dataset`, streamed, with stable example ids."""
        with self.accelerator.main_process_first():
            return with_stable_ids(load_stream(dataset, split, self.args.dataset_config_name))[0]

    def split_features(
        self, model: torch.nn.Module, stream, max_samples: int | None, description: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """`frozen_features` of `model` over `stream` with this evaluation's settings (columns, clips, batches): on
        the main process, None on the others."""
        args = self.args
        return frozen_features(
            model,
            stream,
            self.image_processor,
            self.accelerator,
            args.batch_size,
            image_column=args.image_column,
            video_column=args.video_column,
            label_column=args.label_column,
            num_clips=args.num_clips,
            num_frames=self.num_frames,
            frame_stride=self.frame_stride,
            num_workers=args.num_workers,
            max_samples=max_samples,
            description=f"{description} features",
            progress=not args.disable_tqdm,
            skipped=self.skipped,
        )

    def features(
        self, dataset: str, eval_split: str, layers: bool, pixels: bool = False, model: torch.nn.Module | None = None
    ) -> list[SplitFeatures | None]:
        """The features of the training split and of `eval_split` of `dataset` (and the raw-pixel baseline's), of
        the checkpoint or of `model` (the random-init baseline): on the main process, [None, None] on the others."""
        args = self.args
        probe_model = ProbeFeatures(model if model is not None else self.model, layers, self.pool)
        result = []
        for split, cap in ((args.train_split, args.max_train_samples), (eval_split, args.max_eval_samples)):
            stream = self.stream(dataset, split)
            # images only: a video's raw pixels (clips x frames x C x H x W) are too large to hold for a whole bank
            video = is_video_dataset(stream, args.video_column)
            probe_model.pixels = PixelFeatures(self.image_processor) if pixels and not video else None
            extracted = self.split_features(probe_model, stream, cap, f"{dataset_display_name(dataset)}/{split}")
            # checked where the labels are, raised on every process
            if run_on_main(lambda extracted=extracted: bool((extracted[1] < 0).any())):
                raise ValueError(f"dataset {dataset!r} split {split!r}: label_column={args.label_column!r} is missing")
            if extracted is None:
                result.append(None)
                continue
            rows, labels, _ = extracted
            splits = np.split(rows, np.cumsum(probe_model.widths)[:-1], axis=1)
            if probe_model.pixels is not None:
                result.append(SplitFeatures(splits[0], splits[1], labels, splits[3:], splits[2]))
            else:
                result.append(SplitFeatures(splits[0], splits[1], labels, splits[2:]))
        return result

    def augmented_probes(
        self, dataset: str, test: SplitFeatures | None, protocols: list[str], model: torch.nn.Module | None = None
    ) -> dict[tuple[str, str | None], np.ndarray]:
        """The `deepcluster` probe protocol: every linear probe of `protocols` ("linear" / "transfer" on the pooled
        features, "layers" on each hidden state), trained on training views re-drawn each epoch and passed through
        the frozen backbone. Each epoch every process extracts its share of the views; the main process trains.
        Returns {(protocol, layer): class scores on `test`} on the main process (`test` is None on the others), {}
        elsewhere."""
        args, acc = self.args, self.accelerator
        stream = self.stream(dataset, args.train_split)
        if is_video_dataset(stream, args.video_column):
            raise ValueError("probe_protocol='deepcluster' probes images; use probe_protocol='standardised' for video")
        layers = "layers" in protocols
        probe_model = ProbeFeatures(model if model is not None else self.model, layers, self.pool)
        # what each probe reads: (protocol, layer, column of the extracted rows, its test features); main process
        targets = [(p, None, 1, test.pooled) for p in protocols if p != "layers"] if test is not None else []
        if layers and test is not None:
            names = layer_names(self.model, len(test.layers))
            targets += [("layers", name, 2 + i, x) for i, (name, x) in enumerate(zip(names, test.layers))]
        probes = []
        for epoch in range(args.probe_epochs):
            transform = RandomCropFlipTransform(
                self.image_processor, epoch, args.seed, image_column=args.image_column, label_column=args.label_column
            )
            extracted = extract_features(
                probe_model,
                stream,
                transform,
                acc,
                args.batch_size,
                num_workers=args.num_workers,
                max_samples=args.max_train_samples,
                description=f"{dataset_display_name(dataset)} views, epoch {epoch}",
                progress=not args.disable_tqdm,
                skipped=self.skipped,
            )
            if extracted is None:  # not the main process
                continue
            rows, labels, _ = extracted
            columns = np.split(rows, np.cumsum(probe_model.widths)[:-1], axis=1)
            if not probes:
                num_classes = int(max(labels.max(), test.labels.max())) + 1
                probes = [
                    LinearProbe(
                        columns[column].shape[1],
                        num_classes,
                        "deepcluster",
                        args.probe_epochs,
                        args.probe_batch_size,
                        args.probe_learning_rate,
                        args.probe_weight_decay,
                        args.probe_momentum,
                        args.seed,
                        acc.device,
                        description=f"{protocol} probe {layer or ''}".strip(),
                    )
                    for protocol, layer, column, _ in targets
                ]
            for probe, (_, _, column, _) in zip(probes, targets):
                probe.fit_epoch(columns[column], labels)
        return {(protocol, layer): probe.predict(x) for probe, (protocol, layer, _, x) in zip(probes, targets)}

    def run(self) -> EvaluationResults:
        """Every protocol; the results (identical on every process) are saved to `output_file` by the main one."""
        args, acc = self.args, self.accelerator
        protocols = args.protocol_list
        scores: list[Score] = []
        jobs = []  # (dataset, its eval split, its protocols)
        if set(protocols) - {"transfer", *OWN_DATA_PROTOCOLS}:
            wanted = [p for p in protocols if p not in ("transfer", *OWN_DATA_PROTOCOLS)]
            jobs.append((args.dataset_name, args.eval_split, wanted))
        if "transfer" in protocols:
            jobs.append((args.transfer_dataset_name, args.transfer_eval_split or args.eval_split, ["transfer"]))
        # the checkpoint, and the same network at random initialisation as a baseline when asked for
        models = [(self.model, None)] + (
            [(self.random_init_model(), "random_init")] if args.random_init_baseline else []
        )
        for (dataset, split, wanted), (model, baseline) in itertools.product(jobs, models):
            pixels = args.pixel_baseline and "knn" in wanted and baseline is None
            data = self.features(dataset, split, layers="layers" in wanted, pixels=pixels, model=model)
            probes = [p for p in wanted if p in ("linear", "layers", "transfer")]
            augmented = {}
            if probes and args.probe_protocol == "deepcluster":
                augmented = self.augmented_probes(dataset, data[1], probes, model=model)
            if acc.is_main_process:
                scores += self._protocols(dataset_display_name(dataset), split, data, wanted, augmented, baseline)
        if "retrieval" in protocols:
            scores += self.retrieval(models)
        if "video_svm" in protocols:
            scores += self.video_svm(models)
        if set(protocols) & set(DENSE_PROTOCOLS) and acc.is_main_process:
            scores += self.dense(models)
        scores = broadcast_object_list([scores])[0]
        results = EvaluationResults(
            model=args.model,
            method=getattr(self.model.config, "model_type", None),
            pretraining_dataset=dataset_display_name(self.recipe["dataset_name"])
            if "dataset_name" in self.recipe
            else None,
            settings={
                k: v
                for k, v in dataclasses.asdict(args).items()
                if k not in ("output_file", "disable_tqdm", "ddp_timeout")
            },
            scores=scores,
            weights_sha256=model_weights_sha256(args.model, args.revision),
            corrupt_samples_skipped=len(self.skipped.samples),
            corrupt_samples_examples=self.skipped.examples,
        )
        if self.skipped.count:
            acc.print(f"skipped corrupt samples: {self.skipped.report()}")
        if acc.is_main_process:
            # merged into the file's earlier results of the same weights: a second evaluation adds to the first
            results = results.merged_into(args.output_file)
            results.save(args.output_file)
        return broadcast_object_list([results])[0]

    def retrieval(self, models: list[tuple[torch.nn.Module, str | None]]) -> list[Score]:
        """The `retrieval` protocol's mAP for each (model, baseline) of `models`, and for 16x16 thumbnails (with
        `pixel_baseline`), on the main process (a few hundred images of different sizes, one at a time); [] on the
        others. The whitening set's images (`train`) are read at the benchmark's resolution, as the benchmark's
        regions are: whitening learned at another scale does not fit them."""
        args = self.args
        if not self.accelerator.is_main_process:
            return []
        benchmark = RetrievalBenchmark.load(args.retrieval_dataset)
        name = dataset_display_name(args.retrieval_dataset)
        database, queries = benchmark.images(args.retrieval_max_size)
        if args.retrieval_whitening == "train":
            stream = load_stream(args.dataset_name, args.train_split, args.dataset_config_name)  # decoded images
            examples = itertools.islice(stream, args.retrieval_whitening_samples)
            learning_images = [resize_longer_side(e[args.image_column], args.retrieval_max_size)[0] for e in examples]
        mean, std = self.image_processor.image_mean, self.image_processor.image_std
        scores = []
        for model, baseline in models:
            database_regions = image_regions(model, database, mean, std)
            query_regions = image_regions(model, queries, mean, std)
            # learned on the database's own regions ("database"): no labels, but the very images it ranks
            learning_set = database_regions
            if args.retrieval_whitening == "train":
                learning_set = image_regions(model, learning_images, mean, std)
            value = retrieval_map(database_regions, query_regions, np.concatenate(learning_set), benchmark.queries)
            scores.append(Score("retrieval", name, "queries", "map", value, baseline=baseline))
        if args.pixel_baseline:
            similarity = thumbnails(queries) @ thumbnails(database).T
            value = mean_average_precision(similarity, benchmark.queries)
            scores.append(Score("retrieval", name, "queries", "map", value, baseline="thumbnails"))
        return scores

    def video_svm(self, models: list[tuple[torch.nn.Module, str | None]]) -> list[Score]:
        """C3D's protocol for each (model, baseline) of `models`: `VideoSVMFeatures` (fc6 of C3D, else the pooled
        features) averaged over each video's clips, a linear SVM trained on the training split and scored on
        `eval_split`. Its own feature pass (C3D's SVM reads fc6, no other protocol does); scores on the main
        process, [] on the others."""
        args, acc = self.args, self.accelerator
        name = dataset_display_name(args.dataset_name)
        scores = []
        for model, baseline in models:
            train, test = [
                self.split_features(
                    VideoSVMFeatures(model), self.stream(args.dataset_name, split), cap, f"{name}/{split} SVM"
                )
                for split, cap in ((args.train_split, args.max_train_samples), (args.eval_split, args.max_eval_samples))
            ]
            if not acc.is_main_process:
                continue
            (train_x, train_y, _), (test_x, test_y, _) = train, test
            num_classes = int(max(train_y.max(), test_y.max())) + 1
            metrics = top_k_accuracy(
                linear_svm_scores(train_x, train_y, test_x, num_classes, args.svm_c, args.seed), test_y
            )
            scores += [
                Score("video_svm", name, args.eval_split, metric, metrics[metric], baseline=baseline)
                for metric in accuracy_metrics(num_classes)
            ]
        return scores

    def dense(self, models: list[tuple[torch.nn.Module, str | None]]) -> list[Score]:
        """The `detection` / `segmentation` protocols (`dense_protocols`) of each model, on the main process."""
        args, processor = self.args, self.image_processor
        splits = [
            load_detection_set(
                self.stream(args.dataset_name, split).take(cap) if cap else self.stream(args.dataset_name, split),
                args.dense_image_size,
                processor.image_mean,
                processor.image_std,
                args.image_column,
                args.objects_column,
            )
            for split, cap in ((args.train_split, args.max_train_samples), (args.eval_split, args.max_eval_samples))
        ]
        num_classes = int(max(np.concatenate(s.labels).max() for s in splits)) + 1
        return [
            score
            for model, baseline in models
            for score in dense_scores(
                model.cpu(),
                [p for p in args.protocol_list if p in DENSE_PROTOCOLS],
                *splits,
                num_classes,
                dataset_display_name(args.dataset_name),
                args.eval_split,
                baseline=baseline,
                segmentation_steps=args.segmentation_steps,
                detection_finetune_steps=args.detection_finetune_steps,
                seed=args.seed,
            )
        ]

    def random_init_model(self) -> torch.nn.Module:
        """The checkpoint's network at random initialisation (its own init, seeded by `seed`): the baseline that
        shows what training added."""
        torch.manual_seed(self.args.seed)
        return type(self.model)(self.model.config).to(self.accelerator.device).eval()

    def _protocols(
        self,
        name: str,
        split: str,
        data: list[SplitFeatures],
        protocols: list[str],
        augmented: dict[tuple[str, str | None], np.ndarray],
        baseline: str | None = None,
    ) -> list[Score]:
        """kNN and k-means read the method's embedding (kNN also the raw pixels, as a baseline), the linear probes
        the pooled backbone features or each layer; `augmented` holds the class scores of probes already trained
        (the deepcluster protocol). The scores are `baseline`'s when set (features of the random-init network)."""
        args = self.args
        train, test = data
        train_y, test_y = train.labels, test.labels
        num_classes = int(max(train_y.max(), test_y.max())) + 1
        scores = []

        def add_accuracy(protocol: str, class_scores: np.ndarray, **extra) -> None:
            metrics = top_k_accuracy(class_scores, test_y)
            for metric in accuracy_metrics(num_classes):  # top-5 only with more than 5 classes
                scores.append(Score(protocol, name, split, metric, metrics[metric], baseline=baseline, **extra))

        def probe(protocol: str, train_x: np.ndarray, test_x: np.ndarray, layer: str | None = None) -> None:
            class_scores = augmented.get((protocol, layer))
            if class_scores is None:
                class_scores = train_linear_probe(
                    train_x,
                    train_y,
                    test_x,
                    num_classes,
                    protocol=args.probe_protocol,
                    epochs=args.probe_epochs,
                    batch_size=args.probe_batch_size,
                    learning_rate=args.probe_learning_rate,
                    weight_decay=args.probe_weight_decay,
                    seed=args.seed,
                    device=self.accelerator.device,
                    description=f"{protocol} probe {layer or ''}".strip(),
                    progress=not args.disable_tqdm,
                )
            add_accuracy(protocol, class_scores, layer=layer)

        for protocol in protocols:
            if protocol == "knn":
                # the same weighted vote on the raw pixels: the floor that learned features have to beat
                baselines = [(train.pixels, test.pixels, "pixels")] if train.pixels is not None else []
                for bank, queries, features in [(train.embeddings, test.embeddings, baseline), *baselines]:
                    scores += knn_scores(
                        bank, train_y, queries, test_y, name, split, args.knn_k, args.knn_temperature, features
                    )
            elif protocol in ("linear", "transfer"):
                probe(protocol, train.pooled, test.pooled)
            elif protocol == "layers":
                names = layer_names(self.model, len(train.layers))
                for layer, train_x, test_x in zip(names, train.layers, test.layers):
                    probe("layers", train_x, test_x, layer)
            elif protocol == "nmi":
                clusters = kmeans(test.embeddings, args.nmi_clusters or num_classes, seed=args.seed).labels
                agreement = load_metric("clustering_agreement").compute(predictions=clusters, references=test_y)
                scores += [
                    Score("nmi", name, split, metric, value, baseline=baseline) for metric, value in agreement.items()
                ]
        return scores


def check_evaluation_inputs(args: EvaluationArguments) -> dict[tuple[str, str], bool]:
    """What `hf-ssl evaluate` reads, checked before loading the model: the checkpoint's location and every
    dataset's splits and columns. Returns {(field, dataset): whether it holds videos} for `check_modality`."""
    check_location(args.model, "model")
    classification = set(args.protocol_list) - set(DENSE_PROTOCOLS)  # the dense ones read `objects_column`
    label_column = args.label_column if classification else None
    columns = {"image_column": args.image_column, "video_column": args.video_column, "label_column": label_column}
    datasets_used = {}
    if set(args.protocol_list) - {"transfer"}:
        datasets_used["dataset_name"] = (args.dataset_name, args.eval_split)
    if "transfer" in args.protocol_list:
        datasets_used["transfer_dataset_name"] = (
            args.transfer_dataset_name,
            args.transfer_eval_split or args.eval_split,
        )
    return {
        (argument, name): check_dataset(
            name,
            args.dataset_config_name,
            {"train_split": args.train_split, "eval_split": eval_split},
            field=argument,
            **columns,
        )
        for argument, (name, eval_split) in datasets_used.items()
    }


def evaluate_checkpoint(args: EvaluationArguments) -> EvaluationResults:
    """Run `hf-ssl evaluate` from Python; returns (and writes) the results."""
    videos = check_evaluation_inputs(args)  # before loading anything: the checkpoint's location, splits, columns
    evaluator = Evaluator(args)
    for (argument, name), video in videos.items():
        check_modality(evaluator.model, video, name, argument)
    return evaluator.run()
