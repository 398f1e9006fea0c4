"""Transitive invariance (Wang, He and Gupta, ICCV 2017): the graph of positive pairs its Siamese-triplet network
trains on. tracker.py: a KCF tracker; videos.py: moving patches tracked in videos (intra-instance edges); graph.py:
inter-instance edges (k-means, k-NN, 4-cliques), transitivity, purity; build.py: `build_pair_dataset`, the parquet
pair dataset + graph_stats.json."""

from .build import STATS_FILE, TransitiveGraphArguments, build_pair_dataset, patch_features
from .graph import clique_edges, find_cliques, inter_instance_cliques, transitive_pairs
from .tracker import KCFParameters, KCFTracker, Track, track

__all__ = [
    "STATS_FILE",
    "KCFParameters",
    "KCFTracker",
    "Track",
    "TransitiveGraphArguments",
    "build_pair_dataset",
    "clique_edges",
    "find_cliques",
    "inter_instance_cliques",
    "patch_features",
    "track",
    "transitive_pairs",
]
