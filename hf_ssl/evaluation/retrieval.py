"""Transfer protocols beyond classification: instance retrieval (DeepCluster Table 5) and C3D's video SVM.

`retrieval`: R-MAC descriptors (Tolias et al., ICLR 2016) of the last convolutional feature map: square regions at
`levels` scales, each max-pooled, L2-normalised, PCA-whitened (whitening learned on a separate set of region
vectors), L2-normalised, summed and L2-normalised again; database images ranked by cosine similarity to each
cropped query and scored with the Oxford/Paris protocol (good + ok positives, junk ignored, the official
`compute_ap`). The benchmark is a folder laid out as `../shared/data/paris6k-subset` (`database/`, `queries/`,
`gt.json`).

`video_svm`: C3D's protocol (Tran et al., ICCV 2015): clip features averaged per video, L2-normalised, then a linear
SVM (scikit-learn `LinearSVC`).
"""

import json
import math
import pathlib
from dataclasses import dataclass

import faiss
import numpy as np
import torch
from PIL import Image
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from ..clustering import DEGENERATE_EIGENVALUE, as_float32

RMAC_LEVELS = 3
THUMBNAIL_SIZE = 16  # the tiny-image baseline: each image as 16x16 RGB pixels
RMAC_OVERLAP = 0.4  # Tolias et al.: consecutive regions overlap by as close to 40% as possible
RMAC_LONG_SIDE_STEPS = (2, 3, 4, 5, 6, 7)  # candidate numbers of largest-scale regions along the long side


def conv_feature_map(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The last convolutional feature map `(batch, channels, height, width)` of an hf_ssl checkpoint or plain
    transformers backbone (its `last_hidden_state`): the one place that reads it."""
    hidden = model(pixel_values=pixel_values, return_dict=True).last_hidden_state
    if hidden.dim() != 4:
        raise ValueError(
            f"retrieval reads a 2D convolutional feature map; this model's last_hidden_state has shape "
            f"{tuple(hidden.shape)} (a token sequence or a video map)"
        )
    return hidden


def rmac_regions(height: int, width: int, levels: int = RMAC_LEVELS) -> list[tuple[int, int, int]]:
    """R-MAC's regions of a `height` x `width` map as (top, left, side), as in Tolias et al.'s `rmac_regions.m`:
    at scale l = 1..levels square regions of side floor(2 min(H, W) / (l + 1)), l regions along the short side and
    l + m - 1 along the long one (m chosen so that the largest regions overlap by about 40%), evenly spaced."""
    short, long = min(height, width), max(height, width)
    steps = np.array(RMAC_LONG_SIDE_STEPS)
    spacing = (long - short) / (steps - 1)
    extra = int(np.argmin(np.abs((short**2 - short * spacing) / short**2 - RMAC_OVERLAP))) + 1
    extra_w, extra_h = (extra, 0) if height < width else (0, extra) if height > width else (0, 0)
    regions = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        regions += [
            (top, left, side)
            for top in _region_starts(height, side, level + extra_h)
            for left in _region_starts(width, side, level + extra_w)
        ]
    return regions


def _region_starts(size: int, side: int, count: int) -> list[int]:
    """The first index of `count` regions of `side` evenly spaced along `size` (`rmac_regions.m`'s centre rounding)."""
    half = math.floor(side / 2 - 1)
    step = (size - side) / (count - 1) if count > 1 else 0
    return [math.floor(half + i * step) - half for i in range(count)]


def region_vectors(feature_map: torch.Tensor, levels: int = RMAC_LEVELS) -> torch.Tensor:
    """(batch, regions, channels): each R-MAC region of `feature_map` (batch, channels, H, W) max-pooled and
    L2-normalised."""
    regions = rmac_regions(feature_map.shape[2], feature_map.shape[3], levels)
    pooled = torch.stack([feature_map[:, :, t : t + s, x : x + s].amax(dim=(2, 3)) for t, x, s in regions], 1)
    return torch.nn.functional.normalize(pooled, dim=-1)


class PCAWhitening:
    """PCA-whitening learned on one set of vectors and applied to others (faiss' PCAMatrix): all the dimensions the
    learning set spans (directions it does not vary in, dead units of a random network, are dropped)."""

    def __init__(self, vectors: np.ndarray):
        x = as_float32(vectors)
        n, dim = x.shape
        if n <= dim:
            raise ValueError(f"PCA-whitening of {dim}-d region vectors needs more than {dim} of them, got {n}")
        self.pca = faiss.PCAMatrix(dim, dim, -0.5)
        self.pca.max_points_per_d = math.ceil(n / dim)  # faiss otherwise samples 1000 * d rows
        self.pca.train(x)
        eigenvalues = faiss.vector_to_array(self.pca.eigenvalues)[:dim]
        self.rank = max(1, int((eigenvalues > DEGENERATE_EIGENVALUE * eigenvalues[0]).sum()))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return self.pca.apply(as_float32(vectors))[:, : self.rank]


def rmac(regions: np.ndarray, whitening: PCAWhitening) -> np.ndarray:
    """One image's R-MAC descriptor from its (regions, channels) L2-normalised region vectors: each whitened and
    L2-normalised, summed, L2-normalised."""
    return normalize(normalize(whitening(regions)).sum(0, keepdims=True))[0]


def compute_ap(ranks: np.ndarray, num_positives: int) -> float:
    """Average precision from the sorted 0-based ranks of the positives retrieved (junk already removed), as the
    Oxford/Paris `compute_ap` (trapezoids of the precision-recall curve, each positive a recall step)."""
    ap = 0.0
    for j, rank in enumerate(ranks):
        precision_before = 1.0 if rank == 0 else j / rank
        precision_after = (j + 1) / (rank + 1)
        ap += (precision_before + precision_after) / (2 * num_positives)
    return ap


def average_precision(ranking: np.ndarray, positives: list[int], junk: list[int]) -> float:
    """AP of one query: `ranking` (database indices, best first) with `junk` removed, scored against `positives`."""
    ranking = ranking[~np.isin(ranking, junk)]
    return compute_ap(np.flatnonzero(np.isin(ranking, positives)), len(positives))


def mean_average_precision(similarity: np.ndarray, queries: list["RetrievalQuery"]) -> float:
    """mAP over `queries` of the (queries, database) `similarity` matrix, the database ranked by it."""
    return float(
        np.mean(
            [average_precision(np.argsort(-s, kind="stable"), q.positives, q.junk) for s, q in zip(similarity, queries)]
        )
    )


@dataclass
class RetrievalQuery:
    image: str  # the full query image's file
    bbox: tuple[float, float, float, float]  # the query region (x0, y0, x1, y1) in that image
    positives: list[int]  # database indices (good + ok)
    junk: list[int]


@dataclass
class RetrievalBenchmark:
    """An Oxford/Paris-style benchmark folder: `database/<name>.jpg`, `queries/<query_id>.jpg` and `gt.json`."""

    database: list[str]  # image files
    queries: list[RetrievalQuery]

    @classmethod
    def load(cls, folder: str) -> "RetrievalBenchmark":
        root = pathlib.Path(folder)
        gt_file = root / "gt.json"
        if not gt_file.is_file():
            raise ValueError(f"retrieval_dataset={folder!r}: no gt.json (an Oxford/Paris layout folder is expected)")
        gt = json.loads(gt_file.read_text())
        index = {name: i for i, name in enumerate(gt["database"])}
        return cls(
            [str(root / "database" / f"{name}.jpg") for name in gt["database"]],
            [
                RetrievalQuery(
                    str(root / "queries" / f"{q['query_id']}.jpg"),
                    tuple(q["bbox_xyxy"]),
                    [index[n] for n in q["positives"]],
                    [index[n] for n in q["junk"]],
                )
                for q in gt["queries"]
            ],
        )

    def images(self, max_size: int) -> tuple[list[Image.Image], list[Image.Image]]:
        """(database images, cropped query images), each resized so its longer side is `max_size`; a query is
        cropped from its full image at the database's scale."""
        database = [resize_longer_side(Image.open(path), max_size)[0] for path in self.database]
        queries = []
        for query in self.queries:
            image, scale = resize_longer_side(Image.open(query.image), max_size)
            queries.append(image.crop(tuple(round(v * scale) for v in query.bbox)))
        return database, queries


def resize_longer_side(image: Image.Image, max_size: int) -> tuple[Image.Image, float]:
    """`image` in RGB, resized (bicubic) so that its longer side is `max_size`, and the scale applied."""
    scale = max_size / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC), scale


def thumbnails(images: list[Image.Image], size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """The tiny-image baseline: each image as `size` x `size` RGB pixels, flattened, mean-centred, L2-normalised."""
    x = np.stack([np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.float32).ravel() for im in images])
    return normalize(x - x.mean(1, keepdims=True))


@torch.no_grad()
def image_regions(
    model: torch.nn.Module, images: list[Image.Image], mean: list[float], std: list[float], levels: int = RMAC_LEVELS
) -> list[np.ndarray]:
    """Each image's (regions, channels) R-MAC region vectors, one image at a time (sizes differ), normalised with
    the checkpoint processor's `mean` / `std`."""
    device = next(model.parameters()).device
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    out = []
    for image in images:
        pixels = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)
        pixels = ((pixels - mean_t) / std_t)[None].to(device)
        out.append(region_vectors(conv_feature_map(model, pixels), levels)[0].float().cpu().numpy())
    return out


def retrieval_map(
    database_regions: list[np.ndarray],
    query_regions: list[np.ndarray],
    whitening_regions: np.ndarray,
    queries: list[RetrievalQuery],
) -> float:
    """mAP of R-MAC descriptors with PCA-whitening learned on `whitening_regions` (rows: region vectors)."""
    whitening = PCAWhitening(whitening_regions)
    database = np.stack([rmac(r, whitening) for r in database_regions])
    query = np.stack([rmac(r, whitening) for r in query_regions])
    return mean_average_precision(query @ database.T, queries)


class VideoSVMFeatures(torch.nn.Module):
    """What C3D's SVM reads, as `embeddings` (so `ClipAveragedFeatures` averages them over each video's clips): fc6
    after its ReLU for a C3D backbone (Tran et al.), the pooled backbone features for any other."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        backbone = getattr(model, "backbone", model)
        self.fc6 = backbone.classifier[1] if backbone.config.model_type == "c3d" else None
        self.train(model.training)  # feature extraction restores the wrapper's mode: it must be the model's

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> "VideoSVMFeatures.Output":
        captured = []
        hook = self.fc6.register_forward_hook(lambda *args: captured.append(args[-1])) if self.fc6 else None
        try:
            out = self.model(pixel_values=pixel_values, return_dict=True)
        finally:
            if hook is not None:
                hook.remove()
        return VideoSVMFeatures.Output(captured[0] if captured else out.pooler_output.flatten(1))

    @dataclass
    class Output:
        embeddings: torch.Tensor


def linear_svm_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, c: float = 1.0, seed: int = 0
) -> np.ndarray:
    """C3D's protocol: a linear SVM (one-vs-rest `LinearSVC`) on L2-normalised features; (test, num_classes)
    scores, -inf for classes absent from the training split."""
    svm = LinearSVC(C=c, random_state=seed).fit(normalize(as_float32(train_x)), train_y)
    scores = svm.decision_function(normalize(as_float32(test_x)))
    if scores.ndim == 1:  # two classes: one signed distance, positive for svm.classes_[1]
        scores = np.stack([-scores, scores], 1)
    full = np.full((len(test_x), num_classes), -np.inf, np.float32)
    full[:, svm.classes_] = scores
    return full
