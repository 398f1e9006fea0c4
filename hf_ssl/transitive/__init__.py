"""Transitive invariance (Wang, He and Gupta, ICCV 2017): the graph of positive pairs its Siamese-triplet network
trains on. tracker.py: a KCF tracker for moving patches in videos (intra-instance edges)."""

from .tracker import KCFParameters, KCFTracker, Track, track

__all__ = ["KCFParameters", "KCFTracker", "Track", "track"]
