"""faiss for the methods and the evaluation: exact nearest-neighbour search (and, with the clustering methods,
PCA-whitening and k-means). Inputs are float32 numpy arrays or torch tensors on any device."""

import faiss
import numpy as np
import torch


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy array, which is what faiss takes."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def knn_search(bank: np.ndarray | torch.Tensor, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
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
