"""Pair datasets: one positive pair of images per row (`image_a`, `image_b`, their ids `patch_a`, `patch_b`, and the
`kind` of the edge that made the pair), the format `hf_ssl.transitive` writes the graph of Transitive Invariance in.
A pair trains as one example whose views are its two images (`MultiViewTransform(view_columns=...)`)."""

import datasets

KIND_COLUMN = "kind"
# the edges of Wang, He & Gupta's graph: tracked in one video, close in a context model's features, and transitive
PAIR_KINDS = ("intra", "inter", "transitive")


def check_pair_kinds(kinds: list[str]) -> None:
    """Raise a ValueError naming `pair_kinds` unless it is a non-empty list of known kinds."""
    unknown = [kind for kind in kinds if kind not in PAIR_KINDS]
    if not kinds or unknown:
        raise ValueError(f"pair_kinds must be a non-empty list of {list(PAIR_KINDS)}, got {list(kinds)}")


def check_pair_columns(features: datasets.Features | None, columns: dict[str, list[str]], where: str) -> None:
    """Every column named by a recipe field ({field: columns}) is in `features` (unknown features pass)."""
    if features is None:
        return
    for field, names in columns.items():
        missing = [name for name in names if name not in features]
        if missing:
            raise ValueError(f"{field}: {where} has no column {missing[0]!r}; its columns are {list(features)}")


def select_pair_kinds(dataset: datasets.IterableDataset, kinds: list[str]) -> datasets.IterableDataset:
    """The rows of `dataset` whose `kind` is one of `kinds` (the ablations of the paper: intra-instance pairs only,
    inter-instance only, both without the transitive ones, all). The stream's row counts then come from one pass
    over its undecoded rows (`with_stable_ids`), not from the parquet footers."""
    selected = frozenset(kinds)
    return dataset.filter(lambda kind: kind in selected, input_columns=[KIND_COLUMN])
