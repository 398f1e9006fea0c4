"""The Accelerate loop end to end on the shipped sample: checkpoints, exact resume, errors, several processes."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hf_ssl.cli import main as cli_main
from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.run_layout import BUFFERS_FILE, LOGS_FOLDER, TRACKER_PROJECT, TRAINER_STATE
from hf_ssl.training import parse_args, train

from .conftest import REPO, launch_two_processes


def _run(recipe: pathlib.Path, *overrides: str) -> dict:
    return train(*parse_args([str(recipe), *overrides]))


def _losses(output_dir: pathlib.Path) -> dict[int, float]:
    history = json.loads((output_dir / "training_history.json").read_text())
    return {r["step"]: r["loss"] for r in history if "loss" in r}


@pytest.mark.parametrize(("workers", "on_device"), [(0, False), (2, False), (2, True)])
def test_resume_continues_the_same_trajectory_bit_exactly(tiny_recipe, tmp_path, workers, on_device):
    recipe = tiny_recipe(dataloader_num_workers=workers, augment_on_device=on_device)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    _run(recipe, "--output_dir", str(full))
    checkpoint = full / "checkpoint-3"
    assert (checkpoint / TRAINER_STATE).is_file() and (checkpoint / BUFFERS_FILE).is_file()
    _run(recipe, "--output_dir", str(resumed), "--resume_from_checkpoint", str(checkpoint))

    a, b = _losses(full), _losses(resumed)
    assert sorted(a) == [1, 2, 3, 4, 5, 6]
    assert [b[s] for s in (4, 5, 6)] == [a[s] for s in (4, 5, 6)]  # exact float equality
    assert len(set(a.values())) == 6  # the loss really changes from step to step
    weights_a, weights_b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    bank_a = load_file(full / "checkpoint-6" / BUFFERS_FILE)
    bank_b = load_file(resumed / "checkpoint-6" / BUFFERS_FILE)
    assert all(torch.equal(bank_a[k], bank_b[k]) for k in bank_a)


def test_checkpoints_are_complete_and_pruned(tiny_recipe, tmp_path):
    out = tmp_path / "out"
    results = _run(tiny_recipe(save_steps=2, save_total_limit=2, report_to="tensorboard"))
    # the tracker logs into output_dir/runs/<project>, as transformers' Trainer does, never beside the model
    assert list((out / LOGS_FOLDER / TRACKER_PROJECT).glob("events.out.tfevents.*"))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(("checkpoint-", ".tmp"))) == [
        "checkpoint-4",
        "checkpoint-6",
    ]
    state = json.loads((out / "checkpoint-6" / TRAINER_STATE).read_text())
    assert state["global_step"] == 6 and state["stream"]["batches"] == 6
    bank = load_file(out / "checkpoint-6" / BUFFERS_FILE)["memory_bank.vectors"]
    assert bank.shape == (5000, 16)
    assert torch.allclose(bank.norm(dim=1), torch.ones(5000), atol=1e-5)
    # the final directory is a usable transformers checkpoint with results next to it
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "eval_results.json"} <= {
        p.name for p in out.iterdir()
    }
    assert EvaluationResults.load(out / "eval_results.json") == results
    assert 0 <= results.get(protocol="knn", k=20, metric="top1_accuracy").value <= 100


def test_train_crop_size_leaves_the_saved_eval_size_at_image_size(tiny_recipe, tmp_path):
    _run(tiny_recipe(image_size=24, train_crop_size=16, max_steps=2, save_steps=0))
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 24, "width": 24}


def test_resume_latest_refuses_an_empty_output_dir(tiny_recipe):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        _run(tiny_recipe(), "--resume_from_checkpoint", "latest")


def test_corrupt_images_are_skipped_and_training_goes_on(tmp_path, tiny_recipe):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .conftest import SAMPLE

    table = pq.read_table(next((SAMPLE / "data").glob("train-00000-*.parquet"))).slice(0, 300)
    rows = table.to_pylist()
    for i in (5, 77):
        rows[i]["image"] = {"bytes": b"\xff\xd8\xff\xe0 not really a jpeg", "path": f"broken-{i}.jpg"}
    data = tmp_path / "broken" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), data / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 100), data / "test-00000-of-00001.parquet")
    results = _run(tiny_recipe(dataset_name=str(tmp_path / "broken"), max_steps=12, save_steps=0))
    assert results.corrupt_samples_skipped >= 2
    assert any("broken-5.jpg" in name for name in results.corrupt_samples_examples)
    assert _losses(tmp_path / "out").keys() == set(range(1, 13))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": -0.1}, "learning_rate must be > 0"),
        ({"optimizer": "sgd"}, "unknown field 'optimizer'"),
        ({"backbone_config": {"model_type": "alexnett"}}, "backbone_config.model_type='alexnett'"),
        ({"method_config": {"temprature": 0.1}}, "method_config.temprature"),
        ({"dataset_name": "/nonexistent/data"}, "/nonexistent/data"),
        ({"train_split": "training"}, "no split 'training'"),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_the_problem(tiny_recipe, overrides, message, capsys):
    # in this process (the CLI's own entry point; an exception would fail the test), which saves a start-up of the
    # whole stack per recipe: the test below runs the same path as a real process
    assert cli_main(["train", str(tiny_recipe(**overrides))]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_unknown_command_line_field_fails(tiny_recipe):
    result = _cli(str(tiny_recipe()), "--learning_rat", "0.1")
    assert result.returncode == 2 and "learning_rat" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_two_cpu_processes_train_and_agree(tiny_recipe, tmp_path):
    """Two real processes (gloo): each streams half the data; at every checkpoint the loop verifies that both
    hold identical parameters and memory bank (it refuses to save otherwise); the bank holds both halves."""
    recipe = tiny_recipe(max_steps=4, save_steps=2, per_device_train_batch_size=16)
    result = launch_two_processes(str(REPO / "train.py"), str(recipe), port=29517)
    assert "2 process(es)" in result.stdout
    out = tmp_path / "out"
    state = json.loads((out / "checkpoint-4" / TRAINER_STATE).read_text())
    assert state["stream"]["world_size"] == 2
    # Steps 3-4 of 16 examples on each of 2 processes: the saved (rank 0) bank moved in 64 rows, its own 32
    # and the other process's 32, because updates use the embeddings gathered from both.
    bank = load_file(out / "checkpoint-4" / BUFFERS_FILE)["memory_bank.vectors"]
    fresh = load_file(out / "checkpoint-2" / BUFFERS_FILE)["memory_bank.vectors"]
    assert int((bank != fresh).any(dim=1).sum()) == 2 * 2 * 16


@pytest.mark.parametrize("recipe", sorted((REPO / "training_args").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_parses_and_builds_its_config(recipe):
    from hf_ssl.models import PRETRAINING_CLASSES

    model_args, data_args, training_args = parse_args([str(recipe)])
    config_class = PRETRAINING_CLASSES[model_args.method].config_class
    method_config = model_args.method_config_in_steps(config_class.__dataclass_fields__, steps_per_epoch=100)
    config = config_class(backbone_config=model_args.backbone_config, num_examples=1_281_167, **method_config)
    assert config.backbone_config.model_type == model_args.backbone_config["model_type"]
    assert training_args.output_dir.startswith("outputs/")
