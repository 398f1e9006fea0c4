"""`build_pair_dataset`: videos and images -> the graph of transitive invariance -> a parquet dataset of positive
pairs (one row per pair) and `graph_stats.json`.

Nodes are square patches: the first and the last patch of every kept track (`videos.py`), and patches cropped from
the images of an image dataset (no tracks). The first patches of the tracks and the image patches get features from
a frozen hf_ssl checkpoint (by default the relative-position model, as in the paper); their 4-cliques give the
inter-instance edges, tracks the intra-instance edges, and transitivity the rest (`graph.py`).

The pair dataset: `<output_dir>/train/train-0000i-of-0000n.parquet`, rows in random order with columns `image_a`,
`image_b` (datasets Image, PNG), `patch_a`, `patch_b` (node indices, int64), `kind` ("intra", "inter" or
"transitive"), `label_a`, `label_b` (the sources' true classes in one namespace, `label_names` of the stats; -1
unknown; for statistics only). `load_dataset(output_dir, streaming=True)` reads it.
"""

import io
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from .graph import (
    Pair,
    clique_edges,
    clique_purity,
    inter_instance_cliques,
    pair_purity,
    transitive_pairs,
)
from .videos import VideoTrack, list_videos, read_frames, track_patches

STATS_FILE = "graph_stats.json"
PAIR_FEATURES = datasets.Features(
    {
        "image_a": datasets.Image(),
        "image_b": datasets.Image(),
        "patch_a": datasets.Value("int64"),
        "patch_b": datasets.Value("int64"),
        "kind": datasets.Value("string"),
        "label_a": datasets.Value("int64"),
        "label_b": datasets.Value("int64"),
    }
)
# random candidate crops per image patch kept (the most textured of them are kept)
CANDIDATES_PER_PATCH = 8


@dataclass
class TransitiveGraphArguments:
    """What `build_pair_dataset` (and `hf-ssl transitive-graph`) builds the graph from, and its settings."""

    video_datasets: list[str] = field(
        default_factory=lambda: ["../shared/data/moving-imagenette", "../shared/data/clips-2cls"],
        metadata={"help": "Video folders in the videofolder layout (<folder>/<split>/<class>/*.mp4): intra edges."},
    )
    video_split: str = field(default="train", metadata={"help": "The split folder of the video datasets."})
    image_dataset: str | None = field(
        default="../shared/data/imagenette-160",
        metadata={
            "help": "A local image dataset (load_dataset folder) whose patches join the inter graph; None: none."
        },
    )
    image_split: str = field(default="train", metadata={"help": "The split of the image dataset."})
    image_column: str = field(default="image", metadata={"help": "The image dataset's image column."})
    label_column: str | None = field(
        default="label", metadata={"help": "The image dataset's ClassLabel column (statistics only); None: no labels."}
    )
    feature_model: str = field(
        default="outputs/multi_task_alexnet_imagenette",
        metadata={
            "help": "The hf_ssl checkpoint (folder with config, weights and image processor) whose features give "
            "the inter-instance edges; by default the relative-position (multi_task) recipe's output, as in the paper."
        },
    )
    feature_field: str = field(
        default="embeddings", metadata={"help": "The model output field used as features (embeddings, pooler_output)."}
    )
    patch_size: int = field(
        default=48,
        metadata={"help": "Side of the square patches in pixels of the video frames (112 px Moving Imagenette)."},
    )
    image_resize: int = field(
        default=112,
        metadata={"help": "Images are resized to this shortest side before patches are cut (the frames' scale)."},
    )
    patches_per_video: int = field(default=4, metadata={"help": "Moving patches proposed (and tracked) per video."})
    patches_per_image: int = field(default=1, metadata={"help": "Patches cut from each image (the most textured)."})
    track_length: int = field(default=30, metadata={"help": "Frames each patch is tracked (paper: about 30)."})
    min_psr: float = field(
        default=5.0, metadata={"help": "Tracks whose lowest peak-to-sidelobe ratio is below this are dropped."}
    )
    num_clusters: int | None = field(
        default=None, metadata={"help": "Coarse k-means clusters of the patch features; None: one per 50 patches."}
    )
    k: int = field(default=10, metadata={"help": "Nearest neighbours inside each cluster (paper: 10)."})
    clique_size: int = field(default=4, metadata={"help": "Patches all in each other's k-NN (paper: 4-cliques)."})
    max_videos: int | None = field(
        default=None, metadata={"help": "At most this many videos per video dataset (a seeded random subset)."}
    )
    max_images: int | None = field(default=None, metadata={"help": "At most this many images (shuffled, seeded)."})
    batch_size: int = field(default=256, metadata={"help": "Patches per forward pass of the feature model."})
    rows_per_shard: int = field(default=10000, metadata={"help": "Pairs per parquet shard."})
    seed: int = field(default=0, metadata={"help": "Seed of the subsets, the image crops, k-means and the row order."})
    overwrite: bool = field(default=False, metadata={"help": "Replace the pair dataset already in the output dir."})

    def __post_init__(self):
        for name in ("patch_size", "image_resize", "patches_per_video", "track_length", "k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patches_per_image < 0:
            raise ValueError(f"patches_per_image must be >= 0, got {self.patches_per_image}")
        if self.track_length < 2:
            raise ValueError(f"track_length must be >= 2 (a first and a last frame), got {self.track_length}")
        if self.clique_size < 2:
            raise ValueError(f"clique_size must be >= 2, got {self.clique_size}")
        if self.clique_size > self.k + 1:
            raise ValueError(f"clique_size ({self.clique_size}) can be at most k + 1 ({self.k + 1})")
        if self.num_clusters is not None and self.num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1 or None, got {self.num_clusters}")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")


@dataclass
class _Nodes:
    """The graph's patches, their true labels and where they come from ("first", "last" or "image")."""

    patches: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    def add(self, patch: np.ndarray, label: int, role: str) -> int:
        self.patches.append(np.ascontiguousarray(patch))
        self.labels.append(label)
        self.roles.append(role)
        return len(self.patches) - 1


def _label_id(label_names: list[str], name: str) -> int:
    if name not in label_names:
        label_names.append(name)
    return label_names.index(name)


def _track_videos(args: TransitiveGraphArguments, nodes: _Nodes, label_names: list[str], rng) -> tuple[list, dict]:
    """Tracks of every (sampled) video of every video dataset as nodes; intra edges and per-dataset counts."""
    intra: list[Pair] = []
    per_dataset: dict[str, dict] = {}
    for folder in args.video_datasets:
        videos = list_videos(folder, args.video_split)
        if not videos:
            raise ValueError(f"video_datasets: no {args.video_split}/<class>/*.mp4 videos in {folder}")
        if args.max_videos is not None and args.max_videos < len(videos):
            videos = [videos[i] for i in sorted(rng.choice(len(videos), args.max_videos, replace=False))]
        outcomes: Counter = Counter()
        displacement = []
        for path, class_name in videos:
            label = _label_id(label_names, class_name)
            tracks: list[VideoTrack]
            tracks, counts = track_patches(
                read_frames(path, args.track_length), args.patch_size, args.patches_per_video, args.min_psr
            )
            outcomes.update(counts)
            outcomes["videos_without_proposals"] += not counts
            for kept in tracks:
                first = nodes.add(kept.first_patch, label, "first")
                intra.append((first, nodes.add(kept.last_patch, label, "last")))
                displacement.append(kept.displacement)
        per_dataset[Path(folder).name] = {
            "videos": len(videos),
            "proposals": outcomes["kept"] + outcomes["low_confidence"] + outcomes["left_frame"],
            **{key: outcomes[key] for key in ("kept", "low_confidence", "left_frame", "videos_without_proposals")},
            "mean_displacement_px": float(np.mean(displacement)) if displacement else None,
        }
    return intra, per_dataset


def _textured_crops(image: np.ndarray, size: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The `count` most textured (grey-level std) of `CANDIDATES_PER_PATCH * count` random size x size crops."""
    height, width = image.shape[:2]
    tops = rng.integers(0, height - size + 1, CANDIDATES_PER_PATCH * count)
    lefts = rng.integers(0, width - size + 1, CANDIDATES_PER_PATCH * count)
    crops = [image[t : t + size, left : left + size] for t, left in zip(tops, lefts)]
    order = np.argsort([-crop.mean(axis=2).std() for crop in crops], kind="stable")
    return [crops[i] for i in order[:count]]


def _image_patches(args: TransitiveGraphArguments, nodes: _Nodes, label_names: list[str], rng) -> int:
    """Patches of the images (a seeded random `max_images` of them) as nodes; returns the number of images read."""
    if args.image_dataset is None or args.patches_per_image == 0:
        return 0
    try:
        images = datasets.load_dataset(args.image_dataset, split=args.image_split)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(
            f"image_dataset: cannot load split {args.image_split!r} of {args.image_dataset}: {err}"
        ) from None
    columns = images.features
    if args.image_column not in columns or (args.label_column is not None and args.label_column not in columns):
        raise ValueError(
            f"image_column={args.image_column!r} / label_column={args.label_column!r}: the image dataset has "
            f"columns {sorted(columns)}"
        )
    names = getattr(columns.get(args.label_column), "names", None) if args.label_column else None
    ids = [_label_id(label_names, name) for name in names] if names else None
    images = images.shuffle(seed=args.seed)
    if args.max_images is not None:
        images = images.select(range(min(args.max_images, len(images))))
    count = 0
    for example in images:
        image = example[args.image_column].convert("RGB")
        scale = args.image_resize / min(image.size)
        image = np.asarray(image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale)))))
        if min(image.shape[:2]) < args.patch_size:
            continue
        label = -1 if args.label_column is None else int(example[args.label_column])
        label = ids[label] if ids is not None and label >= 0 else label
        for patch in _textured_crops(image, args.patch_size, args.patches_per_image, rng):
            nodes.add(patch, label, "image")
        count += 1
    return count


@torch.no_grad()
def patch_features(model_path: str, patches: list[np.ndarray], feature_field: str, batch_size: int) -> np.ndarray:
    """float32 features (N, d) of uint8 (P, P, 3) patches through a frozen checkpoint and its image processor."""
    from transformers import AutoImageProcessor, AutoModel

    from .. import models  # noqa: F401 (registers the hf_ssl models with the Auto classes)
    from ..evaluation.preprocessing import TensorImageProcessor

    try:
        model = AutoModel.from_pretrained(model_path).eval()
        processor = AutoImageProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"feature_model: cannot load {model_path}: {str(err).splitlines()[0]}") from None
    tensor_processor = TensorImageProcessor.from_image_processor(processor)
    features = []
    for start in range(0, len(patches), batch_size):
        batch = patches[start : start + batch_size]
        if tensor_processor is not None:
            pixels = tensor_processor([torch.from_numpy(p).permute(2, 0, 1) for p in batch])
        else:
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
        output = model(pixel_values=pixels, return_dict=True)
        if getattr(output, feature_field, None) is None:
            raise ValueError(f"feature_field: the model output has no {feature_field!r}")
        features.append(getattr(output, feature_field).float().flatten(1).numpy())
    return np.concatenate(features)


def _png(patch: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(patch).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _write_pairs(output_dir: Path, pairs: list[tuple[int, int, str]], nodes: _Nodes, args) -> int:
    """The pairs as shuffled parquet shards under `output_dir/train`; returns the number of shards."""
    order = np.random.default_rng(args.seed).permutation(len(pairs))
    shards = max(1, math.ceil(len(pairs) / args.rows_per_shard))
    encoded: dict[int, dict] = {}
    (output_dir / "train").mkdir(parents=True)
    for shard in range(shards):
        rows = [pairs[i] for i in order[shard * args.rows_per_shard : (shard + 1) * args.rows_per_shard]]
        for a, b, _ in rows:
            for node in (a, b):
                if node not in encoded:
                    encoded[node] = _png(nodes.patches[node])
        columns = {
            "image_a": [encoded[a] for a, _, _ in rows],
            "image_b": [encoded[b] for _, b, _ in rows],
            "patch_a": [a for a, _, _ in rows],
            "patch_b": [b for _, b, _ in rows],
            "kind": [kind for _, _, kind in rows],
            "label_a": [nodes.labels[a] for a, _, _ in rows],
            "label_b": [nodes.labels[b] for _, b, _ in rows],
        }
        path = output_dir / "train" / f"train-{shard:05d}-of-{shards:05d}.parquet"
        datasets.Dataset.from_dict(columns, features=PAIR_FEATURES).to_parquet(str(path))
    return shards


def build_pair_dataset(args: TransitiveGraphArguments, output_dir: str | Path) -> dict:
    """Build the graph of transitive invariance from `args` and write it to `output_dir` as a parquet pair dataset
    plus `graph_stats.json`; returns the statistics (edges of each kind, tracks kept and dropped, cliques, purity
    against the true labels, transitive pairs added)."""
    output_dir = Path(output_dir)
    for folder in args.video_datasets:
        if not Path(folder).is_dir():
            raise ValueError(f"video_datasets: {folder} is not a folder")
    if args.image_dataset is not None and not Path(args.image_dataset).exists():
        raise ValueError(f"image_dataset: {args.image_dataset} does not exist")
    if not Path(args.feature_model).is_dir():
        raise ValueError(f"feature_model: {args.feature_model} is not a checkpoint folder")
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir: {output_dir} is a file")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not args.overwrite:
            raise ValueError(f"output_dir: {output_dir} is not empty; set overwrite=True (--overwrite) to replace it")
        shutil.rmtree(output_dir / "train", ignore_errors=True)
        (output_dir / STATS_FILE).unlink(missing_ok=True)
    rng = np.random.default_rng(args.seed)
    seconds = {}
    start = time.perf_counter()
    nodes, label_names = _Nodes(), []
    images_read = _image_patches(args, nodes, label_names, rng)
    intra, tracks = _track_videos(args, nodes, label_names, rng)
    seconds["patches_and_tracks"] = time.perf_counter() - start

    start = time.perf_counter()
    inter_nodes = np.array([i for i, role in enumerate(nodes.roles) if role != "last"], dtype=np.int64)
    if len(inter_nodes) < args.clique_size:
        raise ValueError(f"only {len(inter_nodes)} patches for the inter graph: need at least clique_size")
    features = patch_features(
        args.feature_model, [nodes.patches[i] for i in inter_nodes], args.feature_field, args.batch_size
    )
    seconds["features"] = time.perf_counter() - start

    start = time.perf_counter()
    num_clusters = args.num_clusters or max(1, len(inter_nodes) // 50)
    local_cliques, _ = inter_instance_cliques(features, num_clusters, args.k, args.clique_size, args.seed)
    cliques = [tuple(int(inter_nodes[i]) for i in clique) for clique in local_cliques]
    inter = sorted(clique_edges(cliques))
    transitive = sorted(transitive_pairs(inter, intra))
    seconds["graph"] = time.perf_counter() - start

    labels = np.array(nodes.labels, dtype=np.int64)
    roles = np.array(nodes.roles)
    start = time.perf_counter()
    pairs = [
        (a, b, kind)
        for kind, edges in (("intra", intra), ("inter", inter), ("transitive", transitive))
        for a, b in edges
    ]
    shards = _write_pairs(output_dir, pairs, nodes, args) if pairs else 0
    seconds["write"] = time.perf_counter() - start
    output_dir.mkdir(parents=True, exist_ok=True)  # also without pairs: the statistics say why

    clique_sources = Counter(
        "image" if set(roles[list(c)]) == {"image"} else "video" if "image" not in roles[list(c)] else "mixed"
        for c in cliques
    )
    stats = {
        "nodes": {
            "total": len(labels),
            "track_first": int((roles == "first").sum()),
            "track_last": int((roles == "last").sum()),
            "image": int((roles == "image").sum()),
            "images_read": images_read,
        },
        "tracks": tracks,
        "clusters": num_clusters,
        "cliques": len(cliques),
        "cliques_by_source": dict(sorted(clique_sources.items())),
        "clique_purity": clique_purity(cliques, labels),
        "edges": {"intra": len(intra), "inter": len(inter), "transitive": len(transitive)},
        "pair_purity": {
            "intra": pair_purity(intra, labels),
            "inter": pair_purity(inter, labels),
            "transitive": pair_purity(transitive, labels),
        },
        "transitive_pairs_added": len(transitive),
        "rows": len(pairs),
        "shards": shards,
        "label_names": label_names,
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "arguments": asdict(args),
    }
    (output_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats
