"""Shared fixtures: the shipped CIFAR-10 sample and a tiny recipe over it; launching 2 real CPU processes."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "cifar10-sample"
VIDEO_SAMPLE = REPO / "data" / "moving-imagenette-sample"
SHARED_DATA = REPO.parent / "shared" / "data"

# A ResNet of ~5k parameters on 16 px crops: fast enough for many tests on 2 cores.
TINY_BACKBONE = {
    "model_type": "resnet",
    "layer_type": "basic",
    "depths": [1, 1],
    "hidden_sizes": [8, 16],
    "embedding_size": 8,
    "cifar_stem": True,
}
# and a 3D ResNet of the same size for video
TINY_R3D = {"model_type": "r3d", "hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8}


def tiny_training_args(method: str, method_config: dict, output_dir: pathlib.Path, **settings) -> list[str]:
    """Command-line arguments of a short run of `method` with the tiny backbone on the shipped sample, loading in
    the main process, kNN at k=20, no tracker or progress bar; `settings` (steps, batch, ...) are added as given."""
    settings = {
        "method": method,
        "backbone_config": json.dumps(TINY_BACKBONE),
        "method_config": json.dumps(method_config),
        "dataset_name": SAMPLE,
        "dataloader_num_workers": 0,
        "knn_k": 20,
        "report_to": "none",
        "disable_tqdm": True,
        **settings,
        "output_dir": output_dir,
    }
    return [item for key, value in settings.items() for item in (f"--{key}", str(value))]


def short_training_args(method: str, method_config: dict, output_dir: pathlib.Path) -> list[str]:
    """A 24-step run (16 px, batch 64, checkpoints every 12 steps, kNN on 500 bank images, lr 0.05 from step 0)."""
    return tiny_training_args(
        method,
        method_config,
        output_dir,
        image_size=16,
        max_steps=24,
        per_device_train_batch_size=64,
        shuffle_buffer=500,
        max_eval_bank_samples=500,
        save_steps=12,
        logging_steps=4,
        learning_rate=0.05,
        warmup_epochs=0,
    )


@pytest.fixture
def tiny_recipe(tmp_path: pathlib.Path):
    """Write a tiny IR recipe over the shipped sample; keyword overrides change fields."""

    def make(**overrides) -> pathlib.Path:
        recipe = {
            "method": "instance_recognition",
            "backbone_config": TINY_BACKBONE,
            "method_config": {"embedding_dim": 16, "num_negatives": 256, "temperature": 0.1},
            "dataset_name": str(SAMPLE),
            "image_size": 16,
            "shuffle_buffer": 500,
            "max_eval_bank_samples": 1000,
            "output_dir": str(tmp_path / "out"),
            "per_device_train_batch_size": 32,
            "per_device_eval_batch_size": 500,
            "max_steps": 6,
            "learning_rate": 0.05,
            "warmup_epochs": 0.05,
            "dataloader_num_workers": 0,
            "logging_steps": 1,
            "save_steps": 3,
            "knn_k": [20],
            "report_to": "none",
            "disable_tqdm": True,
        }
        recipe.update(overrides)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return make


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> pathlib.Path:
    """400 training images in 4 parquet shards and 200 test images, cut from the shipped sample: a whole
    epoch of feature extraction + clustering takes about a second."""
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("small-sample")
    (root / "data").mkdir()
    for i, source in enumerate(sorted((SAMPLE / "data").glob("train-*.parquet"))):
        pq.write_table(pq.read_table(source).slice(0, 100), root / "data" / f"train-{i:05d}-of-00004.parquet")
    test = pq.read_table(SAMPLE / "data" / "test-00000-of-00001.parquet").slice(0, 200)
    pq.write_table(test, root / "data" / "test-00000-of-00001.parquet")
    return root


def launch_two_processes(*args: str, port: int, timeout: int = 600) -> subprocess.CompletedProcess:
    """`accelerate launch` of `args` (a script and its arguments, or `-m module ...`) on 2 CPU processes (gloo),
    one thread each; fails the test with the failing rank's stderr (rank 0's barrier error would hide it)."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(port), *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    if result.returncode != 0:
        # what the processes printed comes before the launcher's report, which names only the signal: each rank's
        # own last lines (one rank's crash shows as the other's lost peer), then what no rank prefixed (a C++
        # abort's message), then the launcher's root cause
        lines = result.stderr.splitlines()
        report = next((i for i, line in enumerate(lines) if "torch/distributed/elastic" in line), len(lines))
        printed = lines[:report]
        tails = ["\n".join([line for line in printed if line.startswith(f"[rank{r}]")][-12:]) for r in (0, 1)]
        unprefixed = [line for line in printed if not line.startswith("[rank")][-12:]
        pytest.fail("\n".join([*tails, *unprefixed, *lines[-12:]]), pytrace=False)
    return result


def join_cpu_processes(rank: int, port: int, world_size: int = 2) -> None:
    """In a process started by `torch.multiprocessing.spawn`: the environment that makes `Accelerator(cpu=True)`
    join a `world_size`-process gloo group on 127.0.0.1:`port` as `rank`."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        ACCELERATE_USE_CPU="1",
    )


pytest_plugins = ["tests.hub_server"]  # the `local_hub` fixture: a real Hub-compatible server on 127.0.0.1
