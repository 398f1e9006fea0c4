"""The graph of Wang et al. (2017): inter-instance edges from features (coarse k-means, k-NN inside each cluster,
4-cliques), transitivity over intra- and inter-instance edges, and the graph's statistics.

Nodes are patch indices. An intra-instance edge joins the first and the last patch of a track; an inter-instance
edge joins two patches of one clique: a group of `clique_size` patches of one cluster that are all among each
other's k nearest neighbours (the paper keeps only those, for purity). Transitivity: when A-B is an inter-instance
edge and A-A' (and B-B') intra-instance edges, A' and B are one class too (and A-B', A'-B').
"""

from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np

from ..clustering import kmeans, knn_search

Pair = tuple[int, int]


def _pair(a: int, b: int) -> Pair:
    return (a, b) if a < b else (b, a)


def mutual_neighbours(neighbours: Sequence[Iterable[int]]) -> list[set[int]]:
    """Node i's set of the nodes j with j among i's neighbours and i among j's (self excluded)."""
    sets = [set(map(int, row)) for row in neighbours]
    return [{j for j in row if j != i and i in sets[j]} for i, row in enumerate(sets)]


def find_cliques(neighbours: Sequence[Iterable[int]], size: int = 4) -> list[tuple[int, ...]]:
    """Every group of `size` nodes that are all in each other's `neighbours` lists (`neighbours[i]`: node i's
    k nearest neighbours, indices into the same list): the cliques of the mutual-neighbour graph, each as sorted
    node indices, in sorted order. Each node has at most k mutual neighbours, so this is O(N k^(size-1))."""
    if size < 2:
        raise ValueError(f"clique size must be >= 2, got {size}")
    adjacent = mutual_neighbours(neighbours)
    cliques: list[tuple[int, ...]] = []

    def extend(clique: tuple[int, ...], candidates: set[int]) -> None:
        if len(clique) == size:
            cliques.append(clique)
            return
        for node in sorted(c for c in candidates if c > clique[-1]):
            extend((*clique, node), candidates & adjacent[node])

    for node in range(len(adjacent)):
        extend((node,), adjacent[node])
    return cliques


def inter_instance_cliques(
    features: np.ndarray, num_clusters: int, k: int = 10, clique_size: int = 4, seed: int = 0
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Cliques of `clique_size` patches (indices into `features`) that are all among each other's `k` nearest
    neighbours (cosine) inside one of `num_clusters` k-means clusters of the L2-normalised features; and the
    cluster of each patch."""
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    labels = kmeans(x, min(num_clusters, len(x)), seed=seed).labels
    cliques = []
    for cluster in range(labels.max() + 1):
        members = np.flatnonzero(labels == cluster)
        if len(members) < clique_size:
            continue
        _, neighbours = knn_search(x[members], x[members], k + 1)  # +1: a point is its own nearest neighbour
        for clique in find_cliques(neighbours, clique_size):
            cliques.append(tuple(int(members[i]) for i in clique))
    return sorted(cliques), labels


def clique_edges(cliques: Iterable[Sequence[int]]) -> set[Pair]:
    """Every pair of members of each clique."""
    return {_pair(a, b) for clique in cliques for a, b in combinations(clique, 2)}


def transitive_pairs(inter: Iterable[Pair], intra: Iterable[Pair]) -> set[Pair]:
    """The positives that transitivity adds: for each inter-instance edge A-B, every pair between A's instance
    (A and the patches joined to it by intra-instance edges) and B's, but A-B itself and pairs already in `intra`.

    With A-A' and B-B' intra, that is A-B', A'-B and A'-B'; with only A-A', A'-B.
    """
    intra = {_pair(*p) for p in intra}
    instance: dict[int, set[int]] = {}
    for a, b in intra:
        instance.setdefault(a, {a}).add(b)
        instance.setdefault(b, {b}).add(a)
    added = set()
    for a, b in inter:
        for x in instance.get(a, {a}):
            for y in instance.get(b, {b}):
                if x != y:
                    added.add(_pair(x, y))
    inter = {_pair(*p) for p in inter}
    return added - inter - intra


def pair_purity(pairs: Iterable[Pair], labels: np.ndarray) -> float | None:
    """Fraction of `pairs` whose two patches have the same true label (pairs with an unknown label, -1, left out);
    None when no pair has both labels."""
    same = [labels[a] == labels[b] for a, b in pairs if labels[a] >= 0 and labels[b] >= 0]
    return float(np.mean(same)) if same else None


def clique_purity(cliques: Iterable[Sequence[int]], labels: np.ndarray) -> float | None:
    """Fraction of `cliques` whose members all have one known label; None without cliques."""
    pure = [len({int(labels[i]) for i in clique}) == 1 and labels[clique[0]] >= 0 for clique in cliques]
    return float(np.mean(pure)) if pure else None
