"""faiss for the methods and the evaluation: exact nearest-neighbour search, DeepCluster's PCA-whitening and k-means
(one clustering, several independent ones for Local Aggregation, and clustering once, on the main process, for all
processes of a distributed run). Inputs are float32 numpy arrays or torch tensors on any device."""

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from .distributed import run_on_main

# Relative perturbation that separates an empty cluster's new centroid from the large cluster's, as in faiss.
SPLIT_EPS = 1 / 1024
# Eigenvalues below this fraction of the largest are directions the features do not span (dropped by PCA-whitening).
DEGENERATE_EIGENVALUE = 1e-6
# Rows per block when summing squared distances, so memory stays O(block * d) at ImageNet scale.
SSE_BLOCK = 65536


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy array, which is what faiss takes."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def knn_search(
    bank: np.ndarray | torch.Tensor, queries: np.ndarray | torch.Tensor, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: for each query, the `k` bank rows of highest dot product.

    Returns (similarities, indices), both (num_queries, k), best first. With L2-normalised rows the
    similarity is the cosine similarity.
    """
    bank, queries = as_float32(bank), as_float32(queries)
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank {bank.shape} and queries {queries.shape} must be 2-D with the same feature size")
    k = min(k, bank.shape[0])
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    return index.search(queries, k)


def _checked_features(features: np.ndarray | torch.Tensor, min_rows: int, purpose: str) -> np.ndarray:
    """`features` as float32 (N, d) with at least `min_rows` rows, all finite; ValueError naming the problem."""
    x = as_float32(features)
    if x.ndim != 2:
        raise ValueError(f"{purpose} needs 2-D features (N, d), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{purpose} needs at least {min_rows} rows, got {x.shape[0]}")
    bad_rows = int((~np.isfinite(x).all(axis=1)).sum())
    if bad_rows:
        raise ValueError(f"{purpose}: {bad_rows} of {x.shape[0]} feature rows contain non-finite values (nan/inf)")
    return x


def pca_whiten(features: np.ndarray | torch.Tensor, dim: int = 256, normalize: bool = True) -> np.ndarray:
    """DeepCluster's preprocessing: PCA to `min(dim, d)` dimensions with whitening, then L2-normalised rows.

    Without `normalize` the output has identity covariance. The PCA is fitted on all rows and needs more rows than
    output dimensions. Directions in which the features do not vary (dead units of a young network) are dropped
    rather than whitened, which would divide by ~0 and let noise dominate the clustering.
    """
    x = _checked_features(features, 2, "PCA-whitening")
    n, d_in = x.shape
    d_out = min(dim, d_in)
    if dim < 1:
        raise ValueError(f"PCA-whitening needs dim >= 1, got {dim}")
    if n <= d_out:
        raise ValueError(f"PCA-whitening to {d_out} dimensions needs more than {d_out} rows, got {n}: lower `dim`")
    pca = faiss.PCAMatrix(d_in, d_out, -0.5)
    pca.max_points_per_d = math.ceil(n / d_in)  # faiss otherwise trains on a sample of 1000 * d rows
    pca.train(x)
    eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:d_out]
    # output columns come in decreasing eigenvalue order: keep those the data really spans
    rank = max(1, int((eigenvalues > DEGENERATE_EIGENVALUE * eigenvalues[0]).sum()))
    out = pca.apply(x)[:, :rank]
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # A row at the exact mean whitens to zero; leave it zero rather than 0/0.
        return out / np.maximum(norms, np.finfo(np.float32).tiny)
    # faiss whitens by the eigenvalues of the unnormalised scatter matrix (N * covariance): rescale to unit variance.
    return out * np.float32(math.sqrt(n))


@dataclass
class KMeansResult:
    """One k-means clustering of N points into k clusters."""

    labels: np.ndarray  # (N,) int64, every cluster 0..k-1 non-empty
    centroids: np.ndarray  # (k, d) float32
    empty_clusters: int  # clusters empty in the final assignment, before they were filled
    objective: float  # sum of squared distances of the points to their centroids
    seconds: float


def _check_k(k: int, n: int) -> None:
    """ValueError unless 1 <= k <= n."""
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= N (number of points), got k={k}, N={n}")


def _sum_of_squares(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum over points of the squared L2 distance to the centroid of their cluster (accumulated in float64)."""
    total = 0.0
    for start in range(0, x.shape[0], SSE_BLOCK):
        diff = x[start : start + SSE_BLOCK] - centroids[labels[start : start + SSE_BLOCK]]
        total += float(np.square(diff, dtype=np.float64).sum())
    return total


def fill_empty_clusters(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> int:
    """Give every empty cluster part of the currently largest one, in place; returns how many were empty.

    As faiss does during training: the empty cluster's centroid becomes the large one's perturbed by +eps, the large
    one's by -eps (alternating signs over dimensions), and the large cluster's members go to the nearer of the two.
    Members that cannot be told apart that way (identical points) are split in half by order. Both centroids then
    become their members' means.
    """
    k = centroids.shape[0]
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    signs = np.where(np.arange(x.shape[1]) % 2 == 0, 1.0, -1.0)
    for new in empty:
        large = int(np.argmax(counts))
        members = np.flatnonzero(labels == large)
        centre = centroids[large].astype(np.float64)
        plus, minus = centre * (1 + SPLIT_EPS * signs), centre * (1 - SPLIT_EPS * signs)
        points = x[members].astype(np.float64)
        to_new = np.square(points - plus).sum(1) < np.square(points - minus).sum(1)
        if to_new.all() or not to_new.any():
            to_new = np.arange(members.size) >= members.size // 2
        labels[members[to_new]] = new
        for cluster, side in ((new, to_new), (large, ~to_new)):
            counts[cluster] = int(side.sum())
            centroids[cluster] = x[members[side]].mean(axis=0, dtype=np.float64)
    return int(empty.size)


def kmeans(features: np.ndarray | torch.Tensor, k: int, *, seed: int = 0, niter: int = 20) -> KMeansResult:
    """faiss k-means (Lloyd, `niter` iterations, initial centroids drawn with `seed`) on all N points.

    Labels come from an exact L2 search of every point against the final centroids; clusters left empty by it are
    filled from the largest ones (`fill_empty_clusters`), so all k clusters have members. Deterministic for a
    given seed and data.
    """
    start = time.perf_counter()
    x = _checked_features(features, 1, "k-means")
    n, d = x.shape
    _check_k(k, n)
    params = faiss.ClusteringParameters()
    params.seed = seed
    params.niter = niter
    params.max_points_per_centroid = math.ceil(n / k)  # faiss otherwise trains on a sample of 256 * k points
    params.min_points_per_centroid = 1  # few points per cluster is the caller's choice; no warning on stderr
    clustering = faiss.Clustering(d, k, params)
    clustering.train(x, faiss.IndexFlatL2(d))
    centroids = faiss.vector_to_array(clustering.centroids).reshape(k, d)

    index = faiss.IndexFlatL2(d)
    index.add(centroids)
    labels = index.search(x, 1)[1][:, 0].astype(np.int64)
    empty = fill_empty_clusters(x, labels, centroids)
    return KMeansResult(
        labels=labels,
        centroids=centroids,
        empty_clusters=empty,
        objective=_sum_of_squares(x, centroids, labels),
        seconds=time.perf_counter() - start,
    )


def kmeans_many(
    features: np.ndarray | torch.Tensor,
    ks: Sequence[int],
    *,
    seed: int = 0,
    niter: int = 20,
    pca_dim: int | None = None,
) -> list[KMeansResult]:
    """Independent clusterings of the same points (Local Aggregation's H clusterings); clustering i uses `seed + i`.
    With `pca_dim`, the points are `pca_whiten`ed to `pca_dim` dimensions first (DeepCluster)."""
    x = _checked_features(features, 1, "k-means")  # a tensor is copied to numpy once, not once per clustering
    for k in ks:  # before the PCA, which can take minutes
        _check_k(k, x.shape[0])
    if pca_dim is not None:
        x = pca_whiten(x, pca_dim)
    return [kmeans(x, k, seed=seed + i, niter=niter) for i, k in enumerate(ks)]


def kmeans_across_processes(
    features: np.ndarray | torch.Tensor | None,
    ks: Sequence[int],
    *,
    seed: int = 0,
    niter: int = 20,
    pca_dim: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """`kmeans_many` once for every process of a torch.distributed run: labels (H, N) int64 and the empty-cluster
    counts, on every process.

    Only the main process (rank 0) reads `features` (the others may pass None: features gathered to the main
    process only, or a memory bank that every process holds) and runs faiss; the result is broadcast. faiss's
    multithreaded k-means is not guaranteed to be bit-identical across processes, and clustering once saves the
    other processes the work (PCA over ImageNet-size features costs minutes). Bad input raises on every process.
    Outside a distributed run (or with one process) it is `kmeans_many`.
    """

    def cluster() -> tuple[np.ndarray, list[int]]:
        results = kmeans_many(features, ks, seed=seed, niter=niter, pca_dim=pca_dim)
        labels = np.array([r.labels for r in results], dtype=np.int64).reshape(len(ks), -1)
        return labels, [r.empty_clusters for r in results]

    return run_on_main(cluster)
