"""The Hub round trip through the real huggingface_hub client over HTTP, against a Hub-compatible server on
127.0.0.1 (`local_hub`): push a trained and evaluated checkpoint, pull it into a fresh cache, load it with and
without hf_ssl, push again and load the old revision; the token never lands in a file or the output."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel, pipeline

from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.evaluation.suite import EvaluationArguments, evaluate_checkpoint
from hf_ssl.hub.push import push_to_hub
from hf_ssl.training import parse_args, train

from .conftest import SAMPLE, TINY_BACKBONE, tiny_training_args
from .test_instance_recognition import REMOTE_CODE_CHILD, run_without_hf_ssl

HF_SSL = shutil.which("hf-ssl", path=os.path.dirname(sys.executable))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """A real Instance Recognition run of a few steps on the shipped sample, then `hf-ssl evaluate` on it."""
    out = tmp_path_factory.mktemp("trained") / "tiny-ir"
    train(
        *parse_args(
            tiny_training_args(
                "instance_recognition",
                {"embedding_dim": 16, "num_negatives": 256},
                out,
                image_size=16,
                max_steps=4,
                per_device_train_batch_size=32,
                shuffle_buffer=200,
                max_eval_bank_samples=300,
                save_steps=2,
            )
        )
    )
    evaluate_checkpoint(
        EvaluationArguments(
            model=str(out),
            dataset_name=str(SAMPLE),
            protocols="knn,linear,nmi",
            max_train_samples=300,
            max_eval_samples=200,
            probe_epochs=10,
            num_workers=0,
            disable_tqdm=True,
        )
    )
    return out


def _copy(folder: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _files_containing(root: pathlib.Path, secret: str) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_push_with_the_cli_then_pull_into_a_fresh_cache(trained, local_hub, tmp_path):
    folder = _copy(trained, tmp_path)
    repo_id = f"{local_hub.user}/tiny-ir"
    result = subprocess.run(
        [HF_SSL, "push", str(folder), "--repo-id", repo_id],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_TOKEN": local_hub.token},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert local_hub.token not in result.stdout + result.stderr

    files = set(HfApi().list_repo_files(repo_id))
    expected = {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "training_args.yaml",
        "training_history.json",
        "eval_results.json",
        "evaluation_results.json",
        "modeling_instance_recognition.py",
        "configuration_instance_recognition.py",
    }
    assert expected <= files, expected - files
    assert any(f.startswith("plots/") and f.endswith(".png") for f in files)
    # training state stays local: checkpoints (optimizer, memory bank) are not part of the model
    assert (folder / "checkpoint-4").is_dir() and not any(f.startswith("checkpoint-") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)

    # pull into the fixture's fresh cache: the same weights, bit for bit, and the processor
    pulled = AutoModel.from_pretrained(repo_id)
    _assert_same_weights(_weights(pulled), _weights(AutoModel.from_pretrained(folder)))
    assert AutoImageProcessor.from_pretrained(repo_id).crop_size == {"height": 16, "width": 16}
    assert pathlib.Path(local_hub.hf_home).exists()

    # the card on the Hub carries the evaluation results as model-index
    card = ModelCard.load(repo_id)
    results = EvaluationResults.load(folder / "evaluation_results.json")
    published = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert published == {s.name: pytest.approx(s.value) for s in results.scores if s.baseline is None}

    # the token is in no stored blob, no pushed file and no local file
    assert _files_containing(local_hub.storage_dir, local_hub.token) == []
    assert _files_containing(folder, local_hub.token) == []

    # what a user does with a Hub id: the feature-extraction pipeline, and hf-ssl evaluate on the repo
    extractor = pipeline("image-feature-extraction", model=repo_id)
    assert torch.tensor(extractor(Image.new("RGB", (40, 30), "red"), pool=True)).shape == (
        1,
        TINY_BACKBONE["hidden_sizes"][-1],
    )
    remote = evaluate_checkpoint(
        EvaluationArguments(
            model=repo_id,
            dataset_name=str(SAMPLE),
            protocols="knn",
            knn_k=[20],
            max_train_samples=300,
            max_eval_samples=200,
            num_workers=0,
            output_file=str(tmp_path / "remote.json"),
            disable_tqdm=True,
        )
    )
    local = results.get(protocol="knn", k=20, metric="top1_accuracy").value
    assert remote.get(protocol="knn", k=20, metric="top1_accuracy").value == local
    assert remote.pretraining_dataset == "cifar10-sample"  # read from the repo's training_args.yaml


def test_pulled_checkpoint_loads_as_remote_code_without_hf_ssl(trained, local_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    folder = _copy(trained, tmp_path)
    repo_id = f"{local_hub.user}/tiny-ir-remote"
    push_to_hub(folder, repo_id)
    model = AutoModel.from_pretrained(folder).eval()
    pixel_values = torch.randn(2, 3, 16, 16)
    out = model(pixel_values)
    save_file(
        {
            "pixel_values": pixel_values,
            "embeddings": out.embeddings.detach().clone(),
            "pooler_output": out.pooler_output.detach(),
        },
        tmp_path / "expected.safetensors",
    )
    arguments = [repo_id, str(tmp_path / "expected.safetensors"), str(torch.get_num_threads()), type(model).__name__]
    hub = {"HF_ENDPOINT": local_hub.url, "HF_HUB_DISABLE_XET": "1"}
    stdout = run_without_hf_ssl(REMOTE_CODE_CHILD, arguments, tmp_path, hub)
    assert "REMOTE-OK transformers_modules." in stdout


def test_a_second_push_makes_a_new_revision_and_the_old_one_still_loads(trained, local_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    folder = _copy(trained, tmp_path)
    repo_id = f"{local_hub.user}/tiny-ir-revisions"
    first = push_to_hub(folder, repo_id)
    old = _weights(AutoModel.from_pretrained(folder))

    weights = load_file(folder / "model.safetensors")
    weights = {k: v + 1.0 if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    second = push_to_hub(folder, repo_id, commit_message="more training")
    assert second.oid != first.oid
    commits = HfApi().list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]

    _assert_same_weights(_weights(AutoModel.from_pretrained(repo_id, revision=first.oid)), old)
    latest = _weights(AutoModel.from_pretrained(repo_id))
    _assert_same_weights(latest, _weights(AutoModel.from_pretrained(folder)))
    assert not torch.equal(next(iter(latest.values())), next(iter(old.values())))


def test_push_to_hub_at_the_end_of_training(tiny_recipe, local_hub, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", local_hub.token)
    repo_id = f"{local_hub.user}/pushed-by-training"
    recipe = tiny_recipe(max_steps=2, save_steps=0, push_to_hub=True, hub_model_id=repo_id)
    train(*parse_args([str(recipe)]))
    printed = capsys.readouterr()
    assert f"pushed to {repo_id}" in printed.out
    assert local_hub.token not in printed.out + printed.err + caplog.text
    files = set(HfApi().list_repo_files(repo_id))
    assert {"model.safetensors", "README.md", "training_args.yaml"} <= files
    published_recipe = yaml.safe_load(open(HfApi().hf_hub_download(repo_id, "training_args.yaml")))
    assert published_recipe["hub_model_id"] == repo_id and published_recipe["max_steps"] == 2
    assert not any("token" in key for key in published_recipe)


def test_push_without_a_token_fails_with_one_line(trained, local_hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    result = subprocess.run(
        [HF_SSL, "push", str(_copy(trained, tmp_path)), "--repo-id", f"{local_hub.user}/no-token"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("hf-ssl push: error:") and "HF_TOKEN" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_push_of_a_folder_without_weights_names_the_file(local_hub, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = subprocess.run([HF_SSL, "push", str(tmp_path), "--repo-id", "tester/x"], capture_output=True, text=True)
    assert result.returncode == 2 and "model.safetensors" in result.stderr and "Traceback" not in result.stderr
