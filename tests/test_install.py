"""A normal install works (issue 12): the wheel carries the card templates and the recipes, `hf-ssl train` takes a
shipped recipe by name, and the Python API trains from a recipe or the argument dataclasses, also on an in-memory
`datasets` object. The built wheel itself is installed and run by `.ci/wheel_check`."""

import pathlib

import datasets
import pytest
import yaml
from transformers import PreTrainedModel

import hf_ssl
from hf_ssl import resources
from hf_ssl.cli import main
from hf_ssl.data import stream
from hf_ssl.data.stream import in_memory_dataset, iter_rows, load_stream
from tests.conftest import REPO, SAMPLE, TINY_BACKBONE


def test_the_wheel_carries_the_templates_and_recipes_where_the_package_finds_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert mapping == {
        resources.TEMPLATES_FOLDER: f"hf_ssl/{resources.TEMPLATES_FOLDER}",
        resources.RECIPES_FOLDER: f"hf_ssl/{resources.RECIPES_FOLDER}",
    }
    assert (REPO / "hf_ssl" / "py.typed").is_file()


def test_an_installed_copy_wins_over_the_checkout(tmp_path, monkeypatch):
    assert resources.templates_dir() == REPO / "model_cards"  # a checkout: the root folders
    (tmp_path / "model_cards").mkdir()
    monkeypatch.setattr(resources.importlib.resources, "files", lambda package: tmp_path)
    assert resources.templates_dir() == tmp_path / "model_cards"  # an installed wheel: the package's copy
    assert resources.recipes_dir() == REPO / "training_args"


def test_a_shipped_recipe_by_name(tmp_path, monkeypatch, capsys):
    shipped = REPO / "training_args" / "quickstart.yaml"
    monkeypatch.chdir(tmp_path)  # not where the recipes are
    assert resources.resolve_recipe("quickstart") == shipped
    assert resources.resolve_recipe("quickstart.yaml") == shipped
    assert "quickstart" in resources.shipped_recipes() and "resnet18_cifar10" not in resources.shipped_recipes()
    (tmp_path / "quickstart.yaml").write_text("method: moco\n")
    assert resources.resolve_recipe("quickstart.yaml") == pathlib.Path("quickstart.yaml")  # a file wins
    model_args, _, training_args = hf_ssl.recipe_arguments("quickstart", output_dir=tmp_path / "out", max_steps=5)
    assert (model_args.method, training_args.max_steps, training_args.output_dir) == (
        "simclr",
        5,
        str(tmp_path / "out"),
    )

    assert main(["train", "quickstrat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'quickstrat' is neither a file nor a shipped recipe" in err and "quickstart" in err


def test_recipe_fields_are_checked():
    with pytest.raises(ValueError, match="unknown field 'learning_rat'; did you mean 'learning_rate'"):
        hf_ssl.recipe_arguments({"dataset_name": "x", "output_dir": "y", "learning_rat": 0.1})


@pytest.fixture(scope="module")
def in_memory() -> datasets.DatasetDict:
    sample = datasets.load_dataset(str(SAMPLE))
    return datasets.DatasetDict(train=sample["train"].select(range(256)), test=sample["test"].select(range(100)))


def test_in_memory_iterable_dataset_streams(in_memory):
    with in_memory_dataset({"train": in_memory["train"].to_iterable_dataset()}) as name:
        assert name.startswith("in-memory:")
        assert sum(1 for _ in iter_rows(load_stream(name, "train"))) == 256
        with pytest.raises(ValueError, match="has no split 'test'; its splits are \\['train'\\]"):
            load_stream(name, "test")
    assert name not in stream._IN_MEMORY  # served for the block only


def test_a_dataset_without_the_knn_splits_is_refused_before_training(in_memory, tmp_path):
    data_args = hf_ssl.DataArguments(dataset_name=in_memory["train"])  # one split, the kNN evaluation needs "test"
    training_args = hf_ssl.SSLTrainingArguments(output_dir=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="dataset_name: the in-memory dataset has no split 'test'"):
        hf_ssl.pretrain(model_args=hf_ssl.ModelArguments(), data_args=data_args, training_args=training_args)
    assert not (tmp_path / "out").exists()


def test_pretrain_from_python_on_an_in_memory_dataset(in_memory, tmp_path):
    recipe = {
        "method": "simclr",
        "backbone_config": TINY_BACKBONE,
        "method_config": {"projection_dim": 16, "projection_hidden_dim": 32},
        "image_size": 16,
        "per_device_train_batch_size": 32,
        "shuffle_buffer": 100,
        "max_steps": 3,
        "dataloader_num_workers": 0,
        "knn_k": [20],
        "eval_pixel_baseline": False,
        "report_to": "none",
        "disable_tqdm": True,
    }
    output = hf_ssl.pretrain(recipe, dataset_name=in_memory, output_dir=tmp_path / "out")
    assert isinstance(output.model, PreTrainedModel) and not output.model.training
    assert output.output_dir == tmp_path / "out" and (output.output_dir / "model.safetensors").is_file()
    knn = output.results.get(protocol="knn", k=20, metric="top1_accuracy")
    assert knn.dataset == "in-memory:cifar10-sample" and knn.split == "test"
    recorded = yaml.safe_load((output.output_dir / "training_args.yaml").read_text())
    assert recorded["dataset_name"] == recorded["eval_dataset_name"] == "in-memory:cifar10-sample"
