"""Several processes, the way they fail: every method (image and video) trains through the real loop on 2 gloo
processes, finishes, and ends with identical parameters and buffers (BatchNorm statistics included) on both,
while each process draws its own randomness."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hf_ssl.models import METHODS as REGISTRY

from .conftest import VIDEO_SAMPLE, join_cpu_processes, launch_two_processes
from .multiprocess_methods import METHODS, VIDEO_METHODS
from .test_contrastive import _free_port


def test_the_two_process_run_covers_every_registered_method() -> None:
    assert set(METHODS) == set(REGISTRY)


@pytest.mark.slow
def test_every_method_trains_on_two_processes_and_the_processes_agree(tmp_path, small_sample) -> None:
    launch_two_processes(
        "-m",
        "tests.multiprocess_methods",
        str(small_sample),
        str(VIDEO_SAMPLE),
        str(tmp_path),
        port=29521,
        timeout=900,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) and len(ranks[0]) == len(METHODS) + len(VIDEO_METHODS)
    for name in ranks[0]:
        assert ranks[0][name]["digest"] == ranks[1][name]["digest"], name
        assert ranks[0][name]["rng"] != ranks[1][name]["rng"], f"{name}: both processes draw the same numbers"
        batchnorm = [k for k in ranks[0][name]["digest"] if k.endswith("running_var")]
        assert batchnorm, name  # the statistics that used to drift apart are among what was compared


def _statistics_worker(rank: int, port: int, out: dict) -> None:
    from accelerate import Accelerator

    join_cpu_processes(rank, port)
    from hf_ssl.training.checkpoints import average_statistics_buffers, check_processes_agree

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[1].running_mean.fill_(float(rank))  # as after training on different shards
    try:
        check_processes_agree(accelerator, model)
        out[rank] = {"caught": None}
    except RuntimeError as error:
        out[rank] = {"caught": str(error)}
    average_statistics_buffers(accelerator, model)
    check_processes_agree(accelerator, model)  # raises if the average did not make them equal
    out[rank] = {**out[rank], "mean": model[1].running_mean.tolist()}
    dist.destroy_process_group()


def test_drifting_batchnorm_statistics_are_caught_and_averaged() -> None:
    out = mp.Manager().dict()
    mp.spawn(_statistics_worker, args=(_free_port(), out), nprocs=2, join=True)
    for rank in (0, 1):
        assert "buffer 1.running_mean" in out[rank]["caught"]
        assert out[rank]["mean"] == [0.5] * 4


@pytest.mark.parametrize(
    ("environ", "cpu_threads", "expected"),
    [
        ({"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "True"}, 0, "cores"),  # accelerate launch --cpu's default
        ({"OMP_NUM_THREADS": "1"}, 0, 1),  # the user's own OMP_NUM_THREADS=1, no accelerate
        ({"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "True"}, 1, 1),  # cpu_threads: 1 in the recipe
        ({"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "True", "LOCAL_WORLD_SIZE": "2"}, 0, "half"),
    ],
)
def test_a_cpu_run_uses_every_core_unless_the_user_chose(monkeypatch, capsys, environ, cpu_threads, expected) -> None:
    import psutil
    from accelerate import Accelerator

    from hf_ssl.training.run import set_cpu_threads

    cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
    expected = {"cores": cores, "half": max(cores // 2, 1)}.get(expected, expected)
    for name in ("OMP_NUM_THREADS", "ACCELERATE_USE_CPU", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        set_cpu_threads(type("Args", (), {"cpu_threads": cpu_threads})(), Accelerator(cpu=True))
        assert torch.get_num_threads() == expected
        assert f"using {expected} CPU threads per process" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
