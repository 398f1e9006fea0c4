"""Tests of the faiss clustering shared by DeepCluster, Local Aggregation and the evaluation: PCA-whitening, k-means
on all points with empty clusters filled, several clusterings, clustering once across two processes, and exact
kNN search against brute force."""

import os
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ssl.clustering import (
    KMeansResult,
    fill_empty_clusters,
    kmeans,
    kmeans_across_processes,
    kmeans_many,
    knn_search,
    pca_whiten,
)

WORLD_SIZE = 2
DISTRIBUTED_KS = [4, 7, 3]
DISTRIBUTED_SEED = 5


def correlated_gaussian(n: int = 2000, d: int = 32, seed: int = 0) -> np.ndarray:
    """Gaussian rows with variances 0.25 to 16 along randomly rotated axes (so correlated features), mean 3.

    The variances are bounded so that faiss's float32 scatter matrix resolves even the smallest one well.
    """
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    mixing = np.diag(np.linspace(0.5, 4.0, d)) @ rotation
    return (rng.standard_normal((n, d)) @ mixing + 3.0).astype(np.float32)


def blobs(num_blobs: int, per_blob: int = 100, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs (centres ~10 apart, spread 0.3) and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = 10 * rng.standard_normal((num_blobs, d))
    truth = np.repeat(np.arange(num_blobs), per_blob)
    return (centres[truth] + 0.3 * rng.standard_normal((truth.size, d))).astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the points identically, whatever the cluster numbers."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def sse(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(np.square(x.astype(np.float64) - centroids[labels].astype(np.float64)).sum())


# PCA-whitening


def test_pca_whiten_decorrelates_to_unit_variance_and_normalizes_rows() -> None:
    x = correlated_gaussian()
    assert np.abs(np.corrcoef(x.T) - np.eye(32)).max() > 0.3  # the input is far from white

    white = pca_whiten(x, dim=8, normalize=False)
    assert white.shape == (2000, 8) and white.dtype == np.float32
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(8), atol=1e-4)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-4)

    normalized = pca_whiten(torch.from_numpy(x), dim=8)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1, rtol=1e-5)
    # Normalising only rescales rows: same directions as the whitened features.
    np.testing.assert_allclose(normalized, white / np.linalg.norm(white, axis=1, keepdims=True), atol=1e-5)


def test_pca_whiten_keeps_the_input_size_when_dim_is_larger() -> None:
    x = correlated_gaussian(n=500, d=16)
    white = pca_whiten(x, dim=256, normalize=False)
    assert white.shape == (500, 16)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(16), atol=1e-4)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros((10,), dtype=np.float32), "2-D"),
        (np.ones((1, 4), dtype=np.float32), "at least 2 rows, got 1"),
        (correlated_gaussian(n=6, d=16), "more than 8 rows, got 6"),
    ],
)
def test_pca_whiten_rejects_bad_input(features: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pca_whiten(features, dim=8)


def test_pca_whiten_drops_directions_the_features_do_not_span() -> None:
    """Duplicated columns (dead or copied units of a young network) span 4 of 8 directions: whitening the other 4
    would divide by ~0; they are dropped and the rest is whitened as usual."""
    x = np.repeat(correlated_gaussian(n=500, d=4), 2, axis=1)
    white = pca_whiten(x, dim=8, normalize=False)
    assert white.shape == (500, 4)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(4), atol=1e-4)


def test_pca_whiten_counts_non_finite_rows() -> None:
    x = correlated_gaussian(n=100, d=8)
    x[3, 1], x[7, 0], x[7, 2] = np.nan, np.inf, np.nan
    with pytest.raises(ValueError, match="2 of 100 feature rows contain non-finite"):
        pca_whiten(x, dim=4)


# k-means


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_recovers_two_blobs(seed: int) -> None:
    x, truth = blobs(2)
    result = kmeans(x, 2, seed=seed)
    assert isinstance(result, KMeansResult)
    assert result.labels.shape == (200,) and result.labels.dtype == np.int64
    assert result.centroids.shape == (2, 8) and result.centroids.dtype == np.float32
    assert same_partition(result.labels, truth)
    assert result.empty_clusters == 0 and result.seconds > 0


def test_kmeans_best_of_several_seeds_recovers_five_blobs() -> None:
    # Lloyd from random initial centroids can stop in a local minimum (two centroids in one blob); the lowest
    # objective over several seeds is the blob partition, and every other local minimum is worse.
    x, truth = blobs(5)
    results = kmeans_many(x, [5] * 8)
    best = min(results, key=lambda r: r.objective)
    assert same_partition(best.labels, truth)
    for result in results:
        if not same_partition(result.labels, truth):
            assert result.objective > 2 * best.objective


def test_kmeans_is_deterministic_for_a_seed() -> None:
    x = np.random.default_rng(1).uniform(size=(500, 4)).astype(np.float32)
    first, again = kmeans(x, 10, seed=3), kmeans(x, 10, seed=3)
    np.testing.assert_array_equal(first.labels, again.labels)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert first.objective == again.objective
    # Uniform data has many local minima: other seeds end in other partitions.
    assert any(not same_partition(kmeans(x, 10, seed=s).labels, first.labels) for s in range(4, 7))


def test_kmeans_uses_every_point() -> None:
    # N = 2000 > 256 * k: faiss's default would train on a sample of 512 points and its centroids would be those
    # points' means; here they are the means of all 2000 points of each cluster.
    x = np.random.default_rng(2).standard_normal((2000, 4)).astype(np.float32)
    x[:1000, 0] += 6
    result = kmeans(x, 2, seed=0)
    means = np.stack([x[result.labels == j].mean(axis=0, dtype=np.float64) for j in range(2)])
    np.testing.assert_allclose(result.centroids, means, atol=1e-5)
    assert result.objective == pytest.approx(sse(x, result.centroids, result.labels), rel=1e-6)

    sampled = faiss.Kmeans(4, 2, niter=20, seed=0)
    sampled.train(x)
    gaps = [np.abs(means - centroid).sum(axis=1).min() for centroid in sampled.centroids]
    assert max(gaps) > 1e-2  # the default is measurably off, so the check above can tell


def test_kmeans_objective_is_the_sum_of_squared_distances() -> None:
    x, _ = blobs(3, per_blob=50, seed=4)
    result = kmeans(x, 6, seed=1)
    assert result.objective == pytest.approx(sse(x, result.centroids, result.labels), rel=1e-6)
    # Each point is at its nearest centroid.
    distances = np.square(x[:, None, :] - result.centroids[None]).sum(axis=2)
    np.testing.assert_allclose(distances[np.arange(len(x)), result.labels], distances.min(axis=1), rtol=1e-5)


def test_kmeans_fills_empty_clusters_of_duplicate_points() -> None:
    # 5 distinct points, each 4 times, into k = N = 20 clusters: the final assignment puts each group of identical
    # points in one cluster, leaving 15 empty; filling splits the identical points by order.
    x = np.repeat(np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32), 4, axis=0)
    result = kmeans(x, 20)
    assert result.empty_clusters == 15
    np.testing.assert_array_equal(np.sort(result.labels), np.arange(20))
    np.testing.assert_array_equal(result.centroids[result.labels], x)
    assert result.objective == 0


def test_kmeans_fills_empty_clusters_with_more_points_than_clusters() -> None:
    x = np.repeat(np.random.default_rng(4).standard_normal((3, 3)).astype(np.float32), 100, axis=0)
    result = kmeans(x, 5)
    assert result.empty_clusters > 0
    counts = np.bincount(result.labels, minlength=5)
    assert counts.size == 5 and counts.min() >= 1 and counts.sum() == 300
    for cluster in range(5):  # each cluster holds copies of one point
        members = x[result.labels == cluster]
        np.testing.assert_array_equal(members, np.broadcast_to(members[0], members.shape))


def test_fill_empty_clusters_splits_the_largest_cluster_by_the_perturbed_centroids() -> None:
    # Cluster 0 holds two groups on either side of its centroid (1, 1) along (1, -1), the direction of faiss's
    # perturbation; cluster 2 (one point) is smaller; cluster 1 is empty and takes the group nearer (1 + eps, 1 - eps).
    x = np.array([[1.5, 0.5], [1.6, 0.4], [0.5, 1.5], [0.4, 1.6], [9.0, 9.0]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 2])
    centroids = np.array([[1.0, 1.0], [0.0, 0.0], [9.0, 9.0]], dtype=np.float32)
    assert fill_empty_clusters(x, labels, centroids) == 1
    np.testing.assert_array_equal(labels, [1, 1, 0, 0, 2])
    np.testing.assert_allclose(centroids, [[0.45, 1.55], [1.55, 0.45], [9.0, 9.0]], rtol=1e-6)


@pytest.mark.parametrize("k", [0, 11])
def test_kmeans_rejects_k_outside_1_to_n(k: int) -> None:
    x = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=f"k={k}, N=10"):
        kmeans(x, k)
    with pytest.raises(ValueError, match=f"k={k}, N=10"):
        kmeans_across_processes(x, [3, k])


def test_kmeans_many_seeds_each_clustering() -> None:
    x = np.random.default_rng(5).uniform(size=(400, 3)).astype(np.float32)
    results = kmeans_many(x, [8, 8, 5], seed=10)
    assert [r.centroids.shape[0] for r in results] == [8, 8, 5]
    for i, (result, k) in enumerate(zip(results, [8, 8, 5])):
        np.testing.assert_array_equal(result.labels, kmeans(x, k, seed=10 + i).labels)
    assert not same_partition(results[0].labels, results[1].labels)  # same k, different seeds

    labels, empty = kmeans_across_processes(x, [8, 8, 5], seed=10)  # one process: kmeans_many
    assert labels.shape == (3, 400) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.stack([r.labels for r in results]))
    assert empty == [r.empty_clusters for r in results]


# Two processes


def distributed_features() -> np.ndarray:
    return blobs(6, per_blob=50, seed=6)[0]


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: clusters the same features and saves what it receives."""
    torch.set_num_threads(1)  # two processes on a small CPU: avoid oversubscription
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        labels, empty = kmeans_across_processes(distributed_features(), DISTRIBUTED_KS, seed=DISTRIBUTED_SEED)
        np.save(os.path.join(out_dir, f"labels{rank}.npy"), labels)
        np.save(os.path.join(out_dir, f"empty{rank}.npy"), np.array(empty))
        # Only rank 0 reads the features: the others may have none (features gathered to the main process).
        features = distributed_features() if rank == 0 else None
        labels, _ = kmeans_across_processes(features, DISTRIBUTED_KS, seed=DISTRIBUTED_SEED)
        np.save(os.path.join(out_dir, f"labels_of_rank0_features{rank}.npy"), labels)
    finally:
        dist.destroy_process_group()


def test_two_processes_get_rank_zeros_clusterings(tmp_path: Path) -> None:
    mp.spawn(distributed_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    expected, expected_empty = kmeans_across_processes(distributed_features(), DISTRIBUTED_KS, seed=DISTRIBUTED_SEED)
    for rank in range(WORLD_SIZE):
        labels = np.load(tmp_path / f"labels{rank}.npy")
        assert labels.shape == (3, 300) and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, expected)
        assert np.load(tmp_path / f"empty{rank}.npy").tolist() == expected_empty
        np.testing.assert_array_equal(np.load(tmp_path / f"labels_of_rank0_features{rank}.npy"), expected)


# kNN search


def test_knn_search_matches_brute_force() -> None:
    generator = torch.Generator().manual_seed(7)
    bank = torch.nn.functional.normalize(torch.randn(500, 16, generator=generator), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(60, 16, generator=generator), dim=1)
    similarities, indices = knn_search(bank, queries, k=10)
    expected_similarities, expected_indices = (queries @ bank.T).topk(10, dim=1)
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    np.testing.assert_allclose(similarities, expected_similarities.numpy(), atol=1e-6)
