"""Features gathered to the main process only (issue 15): on 2 real gloo processes the main process gets exactly what
one process computes, in id order, with int64 ids and labels that survive beyond 2**24 (float32's exact range); the
other process holds nothing; an error seen on the main process (k-means input) is raised on every process."""

import io
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
import torch.multiprocessing as mp

from hf_ssl.clustering import kmeans_across_processes
from hf_ssl.data import make_image_processor
from hf_ssl.evaluation import PixelFeatures, frozen_features
from hf_ssl.evaluation.features import gather_in_id_order

from .conftest import join_cpu_processes
from .test_contrastive import _free_port

FIRST_ID = 2**24 + 1  # float32 holds 2**24 + 1 as 2**24: a float32 gather would merge ids
NUM_IMAGES = 24


def images_with_large_ids() -> datasets.IterableDataset:
    """24 distinct 8x8 images with labels and ids from 2**24 + 1, in 4 shards."""
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(NUM_IMAGES):
        buffer = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64"), "id": datasets.Value("int64")}
    )
    data = {"image": pngs, "label": [i % 3 for i in range(NUM_IMAGES)], "id": [FIRST_ID + i for i in range(NUM_IMAGES)]}
    return datasets.Dataset.from_dict(data, features=features).to_iterable_dataset(num_shards=4)


def features_of(accelerator, max_samples: int | None = None):
    processor = make_image_processor(8)
    return frozen_features(
        PixelFeatures(processor),  # row by row: the same numbers whatever the batch composition
        images_with_large_ids(),
        processor,
        accelerator,
        batch_size=5,
        label_column="label",
        max_samples=max_samples,
        progress=False,
    )


def uneven_rows(rank: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Rank 0: 7 rows in 2 batches, rank 1: 12 rows in 3; ids shuffled between them, far beyond 2**24."""
    ids = torch.randperm(19, generator=torch.Generator().manual_seed(0)) * 2**40 + 3
    mine = ids[:7] if rank == 0 else ids[7:]
    rows = torch.stack([mine.double().sin().float(), mine.double().cos().float()], 1).repeat(1, 3)
    batches = [slice(0, 4), slice(4, 7)] if rank == 0 else [slice(0, 5), slice(5, 9), slice(9, 12)]
    return [rows[b] for b in batches], [mine[b] % 7 for b in batches], [mine[b] for b in batches]


def worker(rank: int, port: int, out: str) -> None:
    join_cpu_processes(rank, port)
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    results = {}
    for name, value in [
        ("features", features_of(accelerator)),
        ("capped", features_of(accelerator, max_samples=10)),
        # chunks of 1 row per process: many rounds, the last ones padding on the process with fewer rows
        ("uneven", gather_in_id_order(*uneven_rows(rank), max_samples=15, chunk_bytes=1)),
    ]:
        results[f"{name}_none"] = np.array(value is None)
        if value is not None:
            results.update({f"{name}_{i}": array for i, array in enumerate(value)})
    # bad input seen only where the features are (k > N on rank 0) raises on every process, none waits forever
    features = np.zeros((60, 4), dtype=np.float32) if rank == 0 else None
    try:
        kmeans_across_processes(features, [3, 61])
    except ValueError as error:
        results["error"] = np.array(str(error))
    np.savez(Path(out) / f"rank{rank}.npz", **results)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("gather")
    mp.spawn(worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    return [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)]


def test_the_main_process_gets_the_one_process_features_in_id_order_with_exact_large_ids(ranks) -> None:
    from accelerate import Accelerator

    one = features_of(Accelerator(cpu=True))  # no process group: one process reads everything
    np.testing.assert_array_equal(one[2], np.arange(NUM_IMAGES) + FIRST_ID)
    main = ranks[0]
    assert not main["features_none"]
    for i, expected in enumerate(one):
        assert main[f"features_{i}"].dtype == expected.dtype
        np.testing.assert_array_equal(main[f"features_{i}"], expected)
    assert main["features_1"].dtype == np.int64 and main["features_2"].dtype == np.int64
    np.testing.assert_array_equal(main["features_1"], np.arange(NUM_IMAGES) % 3)
    # max_samples: 10 rows, each process's first ones, in id order
    capped = np.searchsorted(one[2], main["capped_2"])
    assert len(capped) == 10 and (np.diff(capped) > 0).all()
    np.testing.assert_array_equal(main["capped_0"], one[0][capped])


def test_the_other_process_holds_nothing(ranks) -> None:
    assert ranks[1]["features_none"] and ranks[1]["capped_none"] and ranks[1]["uneven_none"]
    assert not any(key.startswith(("features_", "capped_", "uneven_")) and not key.endswith("none") for key in ranks[1])


def test_uneven_shares_in_one_row_chunks_arrive_whole_and_sorted(ranks) -> None:
    parts = [uneven_rows(r) for r in (0, 1)]
    rows, labels, ids = (torch.cat([*parts[0][i], *parts[1][i]]) for i in range(3))
    order = torch.argsort(ids)[:15]
    main = ranks[0]
    np.testing.assert_array_equal(main["uneven_2"], ids[order].numpy())  # ids of 2**40 and more, exact
    np.testing.assert_array_equal(main["uneven_1"], labels[order].numpy())
    np.testing.assert_array_equal(main["uneven_0"], rows[order].numpy())


def test_an_error_on_the_main_process_is_raised_on_every_process(ranks) -> None:
    for rank in ranks:
        assert "k=61, N=60" in str(rank["error"])
