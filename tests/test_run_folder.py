"""Run folders: nothing lost, nothing mixed up. A folder holding a run is refused unless resumed or overwritten, a
failed start changes nothing, rotation and "latest" see only the run's own intact checkpoints, results carry the
fingerprint of their weights, evaluations merge, and push keeps a card edited by hand."""

import json
import logging
import pathlib
import shutil

import pytest
from huggingface_hub import ModelCard

from hf_ssl.evaluation.results import EvaluationResults, Score
from hf_ssl.evaluation.suite import EvaluationArguments, evaluate_checkpoint
from hf_ssl.hub import render_model_card
from hf_ssl.hub.card_file import is_rendered_unedited
from hf_ssl.hub.push import push_to_hub
from hf_ssl.run_layout import (
    EVALUATION_RESULTS_FILE,
    TRAINER_STATE,
    TRAINING_RESULTS_FILE,
    checkpoints,
    weights_fingerprint,
)
from hf_ssl.training import parse_args, train
from hf_ssl.training.checkpoints import resolve_checkpoint, rotate_checkpoints

from .conftest import SAMPLE, tiny_training_args


def _args(output_dir: pathlib.Path, **settings) -> list[str]:
    settings = {
        "image_size": 16,
        "max_steps": 4,
        "per_device_train_batch_size": 32,
        "shuffle_buffer": 200,
        "max_eval_bank_samples": 300,
        "save_steps": 2,
        "eval_pixel_baseline": False,
        **settings,
    }
    return tiny_training_args(
        "instance_recognition", {"embedding_dim": 16, "num_negatives": 256}, output_dir, **settings
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A finished 4-step run with checkpoint-2 and checkpoint-4."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(*parse_args(_args(out)))
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> pathlib.Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(run_copy):
    before = _snapshot(run_copy)
    with pytest.raises(ValueError, match="already holds a run .*--overwrite_output_dir"):
        train(*parse_args(_args(run_copy, max_steps=2)))
    assert _snapshot(run_copy) == before


def test_a_start_that_fails_changes_nothing_in_the_folder(run_copy):
    before = _snapshot(run_copy)
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        train(*parse_args(_args(run_copy, resume_from_checkpoint=str(run_copy / "checkpoint-3"))))
    assert _snapshot(run_copy) == before  # the finished run's training_args.yaml included


def test_overwrite_output_dir_replaces_the_old_run_without_mixing(run_copy):
    old = EvaluationResults.load(run_copy / TRAINING_RESULTS_FILE)
    old.save(run_copy / EVALUATION_RESULTS_FILE)  # as `hf-ssl evaluate` of the old model would leave it
    train(*parse_args(_args(run_copy, max_steps=2, save_steps=1, overwrite_output_dir=True)))
    # the new run's checkpoints survive rotation; the old run's checkpoint-4 is gone, so "latest" is the new run's
    assert [p.name for p in checkpoints(run_copy)] == ["checkpoint-1", "checkpoint-2"]
    assert resolve_checkpoint("latest", run_copy) == run_copy / "checkpoint-2"
    assert json.loads((run_copy / "checkpoint-2" / TRAINER_STATE).read_text())["global_step"] == 2
    # the old model's results went with it; the new ones carry the new weights' fingerprint
    assert not (run_copy / EVALUATION_RESULTS_FILE).exists()
    new = EvaluationResults.load(run_copy / TRAINING_RESULTS_FILE)
    assert new.weights_sha256 == weights_fingerprint(run_copy) != old.weights_sha256


def _fake_checkpoint(folder: pathlib.Path, step: int, run_id: str, saved_at: float) -> None:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / TRAINER_STATE).write_text(json.dumps({"global_step": step, "run_id": run_id, "saved_at": saved_at}))


def test_rotation_keeps_the_runs_own_newest_checkpoints(tmp_path):
    # another run's checkpoints (resumed into this folder from elsewhere) are not this run's to delete
    _fake_checkpoint(tmp_path, 50, "other", 1.0)
    # this run resumed from checkpoint-5 while its older future checkpoint-10 exists: 6 and 7 are newer than 10
    for step, saved_at in [(5, 2.0), (10, 3.0), (6, 4.0), (7, 5.0)]:
        _fake_checkpoint(tmp_path, step, "mine", saved_at)
    rotate_checkpoints(tmp_path, "mine", 2)
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-7", "checkpoint-50"]
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-7"


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("model.safetensors", _truncate),
        ("optimizer.bin", _truncate),
        ("training_buffers.safetensors", _flip_a_byte),
        ("trainer_state.json", _truncate),
    ],
)
def test_a_damaged_checkpoint_is_named_and_latest_falls_back(finished, tmp_path, caplog, name, damage):
    for step in (2, 4):
        shutil.copytree(finished / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    damaged = tmp_path / "checkpoint-4" / name
    damage(damaged)
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-2"
    assert str(damaged) in caplog.text and "falls back" in caplog.text
    with pytest.raises(ValueError, match=f"checkpoint-4/{name} is (truncated|corrupt)") as error:
        resolve_checkpoint(str(tmp_path / "checkpoint-4"), tmp_path)
    assert "\n" not in str(error.value)


def test_the_card_uses_only_results_of_its_weights(run_copy, caplog):
    stale = EvaluationResults.load(run_copy / TRAINING_RESULTS_FILE)
    stale.weights_sha256 = "0" * 64  # measured on other weights: a previous model of this folder
    stale.scores = [Score("linear", "cifar10-sample", "test", "top1_accuracy", 99.5)]
    stale.save(run_copy / EVALUATION_RESULTS_FILE)
    with caplog.at_level(logging.WARNING):
        card = render_model_card(run_copy)
    assert "measured on other weights" in caplog.text and EVALUATION_RESULTS_FILE in caplog.text
    published = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert "linear probe top-1" not in published and 99.5 not in published.values()
    assert "kNN top-1 (k=20)" in published  # the training loop's kNN of these very weights


def test_a_second_evaluation_adds_to_the_first(run_copy):
    common = {
        "model": str(run_copy),
        "dataset_name": str(SAMPLE),
        "max_train_samples": 200,
        "max_eval_samples": 100,
        "knn_k": [5],
        "num_workers": 0,
        "disable_tqdm": True,
    }
    first = evaluate_checkpoint(EvaluationArguments(protocols="knn", **common))
    evaluate_checkpoint(EvaluationArguments(protocols="nmi", nmi_clusters=4, **common))
    again = evaluate_checkpoint(EvaluationArguments(protocols="knn", pixel_baseline=False, **common))
    merged = EvaluationResults.load(run_copy / EVALUATION_RESULTS_FILE)
    assert merged == again and merged.weights_sha256 == weights_fingerprint(run_copy)
    # kNN measured again replaces the first kNN (with its pixel baseline); k-means stays
    assert sorted((s.protocol, s.metric, s.baseline) for s in merged.scores) == [
        ("knn", "top1_accuracy", None),
        ("knn", "top5_accuracy", None),
        ("nmi", "ami", None),
        ("nmi", "ari", None),
        ("nmi", "nmi", None),
    ]
    assert len(first.scores) == 4 and len(merged.earlier_settings) == 2


def test_push_keeps_an_edited_card_and_renders_only_once_the_push_can_proceed(run_copy, local_hub, monkeypatch):
    readme = run_copy / "README.md"
    rendered = render_model_card(run_copy)
    assert is_rendered_unedited(readme) and rendered.content == readme.read_text()
    edited = rendered.content.replace("## ", "## Edited by hand: ", 1)
    readme.write_text(edited)
    repo_id = f"{local_hub.user}/edited-card"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_to_hub(run_copy, repo_id, render_card=True)  # no token: refused before rendering
    assert readme.read_text() == edited

    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    push_to_hub(run_copy, repo_id)
    assert readme.read_text() == edited
    assert "Edited by hand" in ModelCard.load(repo_id).content
    push_to_hub(run_copy, repo_id, render_card=True)  # asked for: re-rendered
    assert "Edited by hand" not in readme.read_text()
    assert "Edited by hand" not in ModelCard.load(repo_id).content
