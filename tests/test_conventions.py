"""Accelerate's and transformers' conventions: precision and trackers from accelerate, no FSDP / DeepSpeed by
surprise, transformers' schedules, scikit-learn's top-k accuracy, examples counted without reading rows."""

import dataclasses

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from accelerate.utils import LoggerType
from sklearn.metrics import top_k_accuracy_score
from transformers import get_scheduler

import hf_ssl.data.stream as stream
from hf_ssl.data.stream import ID_COLUMN, iter_rows, load_stream, with_stable_ids
from hf_ssl.evaluation import top_k_accuracy
from hf_ssl.training import parse_args
from hf_ssl.training.arguments import REPORT_TO, RecipeError
from hf_ssl.training.optim import create_scheduler
from hf_ssl.training.run import make_accelerator

from .conftest import SAMPLE, tiny_training_args


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: each Accelerator of these tests starts from none."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def training_args(tmp_path, **settings):
    return parse_args(tiny_training_args("simclr", {}, tmp_path / "out", **settings))[2]


# -- accelerate: precision, trackers, distributed backends --


def test_precision_comes_from_accelerate_launch_unless_the_recipe_sets_it(
    tmp_path, monkeypatch, fresh_accelerate_state
) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    args = training_args(tmp_path)
    assert args.mixed_precision is None
    assert make_accelerator(args).mixed_precision == "bf16"
    AcceleratorState._reset_state(reset_partial_state=True)
    assert make_accelerator(training_args(tmp_path, mixed_precision="no")).mixed_precision == "no"


def test_report_to_takes_every_accelerate_tracker_as_transformers_does(tmp_path, fresh_accelerate_state) -> None:
    assert set(REPORT_TO) == set(LoggerType.list())
    assert training_args(tmp_path, report_to="none").report_to == []
    assert training_args(tmp_path, report_to="wandb,mlflow").report_to == ["wandb", "mlflow"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"method: simclr\ndataset_name: {SAMPLE}\nreport_to: [tensorboard, comet_ml]\n")
    args = parse_args([str(recipe), "--output_dir", str(tmp_path / "out")])[2]
    assert args.report_to == ["tensorboard", "comet_ml"]
    with pytest.raises(RecipeError, match="report_to 'tensorbord' is not a tracker.*did you mean 'tensorboard'"):
        training_args(tmp_path, report_to="tensorbord")
    assert "tensorboard" in [str(t) for t in make_accelerator(training_args(tmp_path, report_to="all")).log_with]


def test_a_tracker_that_is_not_installed_is_named_at_start(tmp_path, fresh_accelerate_state) -> None:
    from accelerate.tracking import get_available_trackers

    installed = {str(t) for t in get_available_trackers()}
    absent = next((name for name in REPORT_TO if name != "all" and name not in installed), None)
    if absent is None:
        pytest.skip("every tracker is installed")
    with pytest.raises(ValueError, match=f"report_to '{absent}': its package is not installed"):
        make_accelerator(training_args(tmp_path, report_to=absent))


@pytest.mark.parametrize("flag, backend", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_fsdp_and_deepspeed_are_refused_at_start(tmp_path, monkeypatch, fresh_accelerate_state, flag, backend):
    monkeypatch.setenv(flag, "true")  # what `accelerate launch --use_fsdp` / `--use_deepspeed` sets
    with pytest.raises(ValueError, match=f"^{backend} is not supported: hf_ssl trains with DDP"):
        make_accelerator(training_args(tmp_path))


# -- transformers' schedules --


def _lrs(scheduler, steps: int) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def _optimizer(fixed_lr: bool = False) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]}]
    if fixed_lr:
        groups.append({"params": [torch.nn.Parameter(torch.zeros(1))], "fixed_lr": True})
    return torch.optim.SGD(groups, lr=0.5)


@pytest.mark.parametrize("ours, theirs", [("cosine", "cosine"), ("constant", "constant_with_warmup")])
def test_schedules_are_transformers(tmp_path, ours, theirs) -> None:
    args = training_args(tmp_path, lr_scheduler_type=ours, warmup_epochs=1.5)
    expected = _lrs(get_scheduler(theirs, _optimizer(), num_warmup_steps=6, num_training_steps=20), 20)
    lrs = _lrs(create_scheduler(_optimizer(fixed_lr=True), args, total_steps=20, steps_per_epoch=4), 20)
    assert [lr[0] for lr in lrs] == pytest.approx([lr[0] for lr in expected])
    assert {lr[1] for lr in lrs} == {0.5}  # the fixed_lr group


def test_step_schedule_warms_up_as_transformers_then_decays_at_the_epochs(tmp_path) -> None:
    args = dataclasses.replace(
        training_args(tmp_path), lr_scheduler_type="step", warmup_epochs=0.5, lr_decay_epochs=[1, 2]
    )
    lrs = [lr[0] for lr in _lrs(create_scheduler(_optimizer(), args, total_steps=12, steps_per_epoch=4), 12)]
    assert lrs == pytest.approx([0.0, 0.25] + [0.5] * 2 + [0.05] * 4 + [0.005] * 4)


# -- scikit-learn's top-k accuracy --


def test_top_k_accuracy_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(300, 12)), rng.integers(0, 11, 300)  # class 11 never a label
    result = top_k_accuracy(scores, labels)
    assert result["top1_accuracy"] == pytest.approx(100 * np.mean(scores.argmax(1) == labels))
    assert result["top5_accuracy"] == pytest.approx(100 * top_k_accuracy_score(labels, scores, k=5, labels=range(12)))
    assert set(top_k_accuracy(scores[:, :4], labels % 4)) == {"top1_accuracy"}  # no top-5 of 4 classes
    two = top_k_accuracy(np.array([[0.8, 0.6], [0.1, 0.2], [0.3, 0.2]]), np.array([0, 1, 1]))
    assert two == {"top1_accuracy": pytest.approx(200 / 3)}  # two classes: the argmax, not a 0.5 threshold


# -- counting examples --


def test_a_parquet_dataset_is_counted_from_its_footers_without_reading_rows(monkeypatch) -> None:
    dataset = load_stream(str(SAMPLE), "train")
    expected_ids = [row[ID_COLUMN] for row in iter_rows(with_stable_ids(dataset)[0].select_columns([ID_COLUMN]))]

    def no_reading(*args, **kwargs):
        raise AssertionError("rows were read to count them")

    with monkeypatch.context() as patch:
        patch.setattr(stream, "iter_rows", no_reading)
        patch.setattr(datasets.IterableDataset, "__iter__", no_reading)
        patch.setattr(datasets.IterableDataset, "iter", no_reading)
        with_ids, num_examples = with_stable_ids(dataset)
    assert num_examples == 5000
    ids = [row[ID_COLUMN] for row in iter_rows(with_ids.select_columns([ID_COLUMN]))]
    assert ids == expected_ids == list(range(5000))


def test_datasets_without_footers_are_counted_right() -> None:
    """An iterable dataset made from memory is counted from its shards' lengths; a filtered parquet stream by
    reading (its footers would count the rows the filter drops)."""
    rows = datasets.Dataset.from_dict({"label": list(range(23))}).to_iterable_dataset(num_shards=3)
    with_ids, num_examples = with_stable_ids(rows)
    assert num_examples == 23
    assert [(row["label"], row[ID_COLUMN]) for row in iter_rows(with_ids)] == [(i, i) for i in range(23)]
    evens = load_stream(str(SAMPLE), "train").filter(lambda row: row["label"] % 2 == 0)
    expected = sum(1 for row in iter_rows(evens.select_columns(["label"])))
    assert with_stable_ids(evens)[1] == expected < 5000
