"""faiss against plain torch on the same data, in one run, for the two searches the methods and evaluation use:

(a) k-means (DeepCluster, Local Aggregation): `hf_ssl.clustering.kmeans` against a torch Lloyd k-means with the
    same k, iterations, points (all of them) and initial centroids (faiss's own draw for the seed), each followed by
    a final assignment. Same start and same steps: the objectives should agree, and the times compare the
    implementations, not the luck of the initialisation.
(b) exact inner-product kNN (weighted kNN evaluation): `hf_ssl.clustering.knn_search` against torch matmul + topk
    over blocks of queries, with the fraction of neighbour indices that agree rank for rank.

The data is CIFAR-10 sized by default: 50,000 bank rows (the train set) and 10,000 queries (the test set) drawn from
a mixture of Gaussians, PCA-whitened and L2-normalised together as DeepCluster preprocesses features.

    python bench/clustering.py                          # 50000 x 256, k=100, 10000 queries x k=200; ~1 min on 2 cores
    python bench/clustering.py --num-points 10000 --queries 2000
    python bench/clustering.py --device cuda            # the torch side on the GPU (faiss stays on the CPU)
"""

import argparse
import math
import time
from collections.abc import Callable
from typing import TypeVar

import faiss
import numpy as np
import torch

from hf_ssl.clustering import kmeans, knn_search, pca_whiten

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """The result of `work()` and the wall-clock seconds it took."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def mixture(num_rows: int, input_dim: int, components: int, seed: int) -> np.ndarray:
    """Rows from a mixture of Gaussians with unequal spreads: structure for k-means to find, unlike white noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, input_dim))
    spreads = rng.uniform(0.3, 1.0, size=components)
    component = rng.integers(components, size=num_rows)
    noise = rng.standard_normal((num_rows, input_dim))
    return (centres[component] + spreads[component, None] * noise).astype(np.float32)


def faiss_initial_centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The centroids faiss's k-means starts from in `kmeans(x, k, seed=seed)`: the same parameters, no iteration."""
    params = faiss.ClusteringParameters()
    params.seed = seed
    params.niter = 0
    params.max_points_per_centroid = math.ceil(x.shape[0] / k)
    params.min_points_per_centroid = 1
    clustering = faiss.Clustering(x.shape[1], k, params)
    clustering.train(x, faiss.IndexFlatL2(x.shape[1]))
    return faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1])


def nearest_centroids(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (L2) of each row; ||x||^2 is the same for every centroid, so it is left out."""
    return (centroids.square().sum(1) - 2 * x @ centroids.T).argmin(dim=1)


def torch_kmeans(x: torch.Tensor, initial: torch.Tensor, niter: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Plain Lloyd k-means on all rows: (labels, centroids, sum of squared distances). Empty clusters keep their
    centroid."""
    centroids = initial.clone()
    k = centroids.shape[0]
    for _ in range(niter):
        labels = nearest_centroids(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
    labels = nearest_centroids(x, centroids)
    objective = float((x - centroids[labels]).double().square().sum())
    return labels, centroids, objective


def torch_knn(bank: torch.Tensor, queries: torch.Tensor, k: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product kNN by matmul + topk, `block` queries at a time to bound the similarity matrix."""
    parts = [(queries[i : i + block] @ bank.T).topk(k, dim=1) for i in range(0, queries.shape[0], block)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def main() -> None:
    """Parse the options, make the data, run each task with faiss and with torch and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-points", type=int, default=50_000, help="rows clustered and searched (the bank)")
    parser.add_argument("--queries", type=int, default=10_000, help="kNN queries")
    parser.add_argument("--dim", type=int, default=256, help="feature size after PCA-whitening")
    parser.add_argument("--input-dim", type=int, default=512, help="feature size before PCA-whitening")
    parser.add_argument("--components", type=int, default=500, help="Gaussians in the data mixture")
    parser.add_argument("--clusters", type=int, default=100, help="k of k-means")
    parser.add_argument("--niter", type=int, default=20, help="k-means iterations")
    parser.add_argument("--knn", type=int, default=200, help="neighbours per query")
    parser.add_argument("--block", type=int, default=1024, help="queries per torch matmul")
    parser.add_argument("--device", default="cpu", help="device of the torch side")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of torch and faiss (default: theirs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    device = torch.device(args.device)
    features = pca_whiten(
        mixture(args.num_points + args.queries, args.input_dim, args.components, args.seed), dim=args.dim
    )
    bank, queries = features[: args.num_points], features[args.num_points :]
    bank_t, queries_t = torch.from_numpy(bank).to(device), torch.from_numpy(queries).to(device)

    # Warm-up on a slice, so neither side pays one-off costs (thread pools, kernels) in the timed runs.
    small = slice(0, 2000)
    kmeans(bank[small], 10, niter=2)
    torch_kmeans(bank_t[small], bank_t[:10], 2)
    knn_search(bank[small], queries[:100], 10)
    torch_knn(bank_t[small], queries_t[:100], 10, args.block)

    result = kmeans(bank, args.clusters, seed=args.seed, niter=args.niter)
    initial = torch.from_numpy(faiss_initial_centroids(bank, args.clusters, args.seed)).to(device)
    (torch_labels, _, torch_objective), torch_kmeans_s = timed(
        lambda: torch_kmeans(bank_t, initial, args.niter), device
    )
    same_labels = float((torch_labels.cpu().numpy() == result.labels).mean())

    (faiss_sims, faiss_ids), faiss_knn_s = timed(lambda: knn_search(bank, queries, args.knn), torch.device("cpu"))
    (torch_sims, torch_ids), torch_knn_s = timed(lambda: torch_knn(bank_t, queries_t, args.knn, args.block), device)
    torch_ids = torch_ids.cpu().numpy()
    same_rank = float((faiss_ids == torch_ids).mean())
    same_set = float(np.mean([np.intersect1d(f, t).size for f, t in zip(faiss_ids, torch_ids)]) / args.knn)
    sim_gap = float(np.abs(faiss_sims - torch_sims.cpu().numpy()).max())

    print(
        f"data {args.num_points} + {args.queries} queries x {args.dim} (PCA-whitened, L2-normalised mixture of "
        f"{args.components} Gaussians in {args.input_dim}-d); faiss {faiss.__version__} "
        f"{faiss.omp_get_max_threads()} threads, torch {torch.__version__} on {device} "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'task':36s} {'faiss s':>8s} {'torch s':>8s} {'torch/faiss':>11s}  agreement")
    print(
        f"{f'(a) k-means k={args.clusters}, {args.niter} iterations':36s} {result.seconds:8.2f} {torch_kmeans_s:8.2f} "
        f"{torch_kmeans_s / result.seconds:11.2f}  objective faiss {result.objective:.8g} torch {torch_objective:.8g}, "
        f"same labels {same_labels:.2%}, faiss empty clusters {result.empty_clusters}"
    )
    print(
        f"{f'(b) kNN inner product k={args.knn}':36s} {faiss_knn_s:8.2f} {torch_knn_s:8.2f} "
        f"{torch_knn_s / faiss_knn_s:11.2f}  identical indices {same_rank:.2%} (same set {same_set:.2%}), "
        f"max |similarity gap| {sim_gap:.1e}"
    )


if __name__ == "__main__":
    main()
