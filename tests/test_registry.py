"""The method table (hf_ssl/models/registry.py) agrees with everything that finds a method by its name: the
recipes' `method`, the config's `model_type`, the Auto classes and the `auto_map` of a checkpoint, the epoch hooks,
the model card sections, and the public names of hf_ssl.models."""

import json
import pathlib
import re

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_ssl.models
from hf_ssl.hub.card import METHODS_FOLDER, TEMPLATES_DIR
from hf_ssl.models import BACKBONES, METHODS, PRETRAINING_CLASSES
from hf_ssl.models.configuration_ssl import BACKBONE_CONFIG_CLASSES
from hf_ssl.training.epoch_hooks import EpochHook, epoch_hook

from .conftest import REPO, TINY_BACKBONE

# keeps the checkpoints small (jigsaw's default fc7 alone is 37M parameters)
SMALL = {
    "jigsaw": {"num_permutations": 10, "tile_feature_dim": 16, "classifier_hidden_dim": 32},
    "moco": {"queue_size": 64},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_name_of_a_method_is_its_row_name(name: str) -> None:
    row = METHODS[name]
    assert row.name == name == row.config_class.model_type
    assert PRETRAINING_CLASSES[name] is row.pretraining_class
    assert row.model_class.pretraining_class is row.pretraining_class
    assert row.pretraining_class.base_model_prefix == row.model_class.base_model_prefix
    assert (TEMPLATES_DIR / METHODS_FOLDER / row.card_template).is_file()
    assert type(epoch_hook(name)).__name__ == (row.epoch_hook or EpochHook.__name__)
    assert isinstance(epoch_hook(name), EpochHook)
    for cls in row.classes:
        assert getattr(hf_ssl.models, cls.__name__) is cls and cls.__name__ in hf_ssl.models.__all__


@pytest.mark.parametrize("name", sorted(METHODS))
def test_auto_classes_load_a_checkpoint_of_the_row(name: str, tmp_path: pathlib.Path) -> None:
    row = METHODS[name]
    row.pretraining_class(row.config_class(backbone_config=TINY_BACKBONE, **SMALL.get(name, {}))).save_pretrained(
        tmp_path
    )
    assert type(AutoConfig.from_pretrained(tmp_path)) is row.config_class
    features, loading = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(features) is row.model_class
    # the heads and training state beside the feature model are ignored without a word, and nothing is missing
    assert not loading["unexpected_keys"] and not loading["missing_keys"], loading
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is row.pretraining_class
    # what trust_remote_code loads without hf_ssl: each class's flat file, copied next to the weights
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    expected = dict(zip(("AutoConfig", "AutoModel", "AutoModelForPreTraining"), row.classes)) | row.transfer_classes
    assert auto_map.keys() == expected.keys()
    for auto_class, cls in expected.items():
        module, class_name = auto_map[auto_class].split(".")
        assert class_name == cls.__name__ and cls.__module__ == f"hf_ssl.models.{module}"
        assert (tmp_path / f"{module}.py").is_file()


def test_backbone_rows_are_the_backbones_remote_code_resolves() -> None:
    assert set(BACKBONES) == set(BACKBONE_CONFIG_CLASSES)
    for name, row in BACKBONES.items():
        assert row.config_class is BACKBONE_CONFIG_CLASSES[name] and row.config_class.model_type == name
        assert type(AutoConfig.for_model(name)) is row.config_class


def test_every_recipe_names_a_method_of_the_table() -> None:
    recipes = sorted((REPO / "training_args").glob("*.yaml"))
    named = {path.name: re.search(r"^method:\s*(\w+)", path.read_text(), re.MULTILINE) for path in recipes}
    assert any(named.values())
    unknown = {path: match[1] for path, match in named.items() if match and match[1] not in METHODS}
    assert not unknown, f"recipes name methods that are not rows of the method table: {unknown}"
