"""Recipe files: base recipes (includes), duplicate keys, and the epoch-valued forms of step-valued settings."""

import pathlib

import pytest

from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.training import RecipeError, parse_args
from hf_ssl.training.arguments import load_recipe

from .conftest import REPO


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_recipe_overrides_its_base_and_merges_mappings_key_by_key(tmp_path):
    write(
        tmp_path / "base" / "common.yaml",
        (
            "backbone_config: {model_type: resnet, depths: [1, 1, 1, 1], cifar_stem: true}\n"
            "method_config: {temperature: 0.1, num_negatives: 256}\n"
            "image_size: 32\nlearning_rate: 0.1\nknn_k: [200, 20]\n"
        ),
    )
    recipe = write(
        tmp_path / "recipes" / "run.yaml",
        (
            "base: ../base/common.yaml\n"  # relative to the including file, not to the working directory
            "backbone_config: {depths: [2, 2, 2, 2]}\n"
            "method_config: {temperature: 0.2}\n"
            "learning_rate: 0.5\nknn_k: [20]\n"
        ),
    )
    assert load_recipe(recipe) == {
        "backbone_config": {"model_type": "resnet", "depths": [2, 2, 2, 2], "cifar_stem": True},
        "method_config": {"temperature": 0.2, "num_negatives": 256},
        "image_size": 32,
        "learning_rate": 0.5,
        "knn_k": [20],  # lists are replaced, not merged
    }


def test_a_mapping_of_another_model_type_replaces_the_base_s(tmp_path):
    write(tmp_path / "base.yaml", "backbone_config: {model_type: r3d, hidden_sizes: [8, 16], depths: [1, 1]}\n")
    recipe = write(tmp_path / "run.yaml", "base: base.yaml\nbackbone_config: {model_type: c3d, fc_dim: 32}\n")
    assert load_recipe(recipe) == {"backbone_config": {"model_type": "c3d", "fc_dim": 32}}


def test_bases_nest_and_later_bases_override_earlier_ones(tmp_path):
    write(tmp_path / "a.yaml", "image_size: 32\nlearning_rate: 0.1\n")
    write(tmp_path / "sub" / "b.yaml", "base: ../a.yaml\nlearning_rate: 0.2\nseed: 1\n")
    write(tmp_path / "c.yaml", "seed: 2\n")
    recipe = write(tmp_path / "run.yaml", "base: [sub/b.yaml, c.yaml]\nmomentum: 0.5\n")
    assert load_recipe(recipe) == {"image_size": 32, "learning_rate": 0.2, "seed": 2, "momentum": 0.5}


def test_the_merged_recipe_is_what_parse_args_sees(tmp_path):
    write(tmp_path / "base.yaml", f"dataset_name: {REPO / 'data' / 'cifar10-sample'}\nimage_size: 32\n")
    recipe = write(tmp_path / "run.yaml", f"base: base.yaml\noutput_dir: {tmp_path / 'out'}\n")
    model_args, data_args, training_args = parse_args([str(recipe), "--image_size", "16"])
    assert data_args.dataset_name.endswith("cifar10-sample") and data_args.image_size == 16


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"run.yaml": "base: missing.yaml\n"}, r"run.yaml: base 'missing.yaml' does not exist"),
        (
            {"run.yaml": "base: a.yaml\n", "a.yaml": "base: run.yaml\n"},
            r"a.yaml: base 'run.yaml' makes a cycle \(run.yaml -> a.yaml -> run.yaml\)",
        ),
        ({"run.yaml": "base: run.yaml\n"}, r"run.yaml: base 'run.yaml' makes a cycle"),
        ({"run.yaml": "base: {a: 1}\n"}, r"run.yaml: base must be a recipe path or a list of them"),
        ({"run.yaml": "base: a.yaml\n", "a.yaml": "learning_rat: 0.1\n"}, r"unknown field 'learning_rat' in .*a.yaml"),
        ({"run.yaml": "image_size: 32\nseed: 1\nimage_size: 64\n"}, r"run.yaml: 'image_size' is set twice \(line 3\)"),
        (
            {"run.yaml": "base: a.yaml\n", "a.yaml": "method_config:\n  temperature: 0.1\n  temperature: 0.2\n"},
            r"a.yaml: 'temperature' is set twice \(line 3\)",
        ),
        ({"run.yaml": "image_size: [32\n"}, r"run.yaml is not valid YAML"),
    ],
)
def test_bad_recipe_files_fail_with_one_line_naming_file_and_key(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(tmp_path / "run.yaml")
    assert "\n" not in str(error.value)


def test_epoch_valued_method_settings_become_steps():
    model_args, _, _ = parse_args(
        [
            "--dataset_name",
            "x",
            "--output_dir",
            "y",
            "--method",
            "swav",
            "--method_config",
            '{"queue_start_epochs": 50, "freeze_prototypes_epochs": 0.5, "temperature": 0.1}',
        ]
    )
    fields = PRETRAINING_CLASSES["swav"].config_class.__dataclass_fields__
    assert model_args.method_config_in_steps(fields, steps_per_epoch=192) == {
        "queue_start_step": 9600,
        "freeze_prototypes_steps": 96,
        "temperature": 0.1,
    }
    # a config field that is itself in epochs stays as it is
    model_args, _, _ = parse_args(
        ["--dataset_name", "x", "--output_dir", "y", "--method_config", '{"instance_recognition_epochs": 10}']
    )
    fields = PRETRAINING_CLASSES["local_aggregation"].config_class.__dataclass_fields__
    assert model_args.method_config_in_steps(fields, 192) == {"instance_recognition_epochs": 10}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--method_config", '{"queue_start_epochs": 50, "queue_start_step": 9600}'],
            "method_config sets both queue_start_epochs and queue_start_step",
        ),
        (["--save_steps", "100", "--save_epochs", "2"], "save_steps=100 and save_epochs=2.0 both set"),
        (["--save_epochs", "-1"], "save_epochs must be >= 0"),
    ],
)
def test_step_and_epoch_forms_of_one_setting_are_refused(argv, message):
    with pytest.raises(RecipeError, match=message):
        parse_args(["--dataset_name", "x", "--output_dir", "y", *argv])


def test_a_negative_epoch_count_is_named():
    model_args, _, _ = parse_args(
        ["--dataset_name", "x", "--output_dir", "y", "--method_config", '{"queue_start_epochs": -1}']
    )
    with pytest.raises(ValueError, match="method_config.queue_start_epochs must be a number of epochs >= 0"):
        model_args.method_config_in_steps({"queue_start_step"}, 10)


def test_save_epochs_replaces_the_default_save_steps():
    *_, training_args = parse_args(["--dataset_name", "x", "--output_dir", "y"])
    assert (training_args.save_steps, training_args.save_epochs) == (500, 0.0)
    *_, training_args = parse_args(["--dataset_name", "x", "--output_dir", "y", "--save_epochs", "5"])
    assert (training_args.save_steps, training_args.save_epochs) == (None, 5.0)


def test_base_recipes_are_not_runnable_recipes():
    """The runnable recipes are training_args/*.yaml; the bases under training_args/base/ are not among them, and
    every shipped file (bases too) loads."""
    runnable = {path.name for path in (REPO / "training_args").glob("*.yaml")}
    bases = sorted((REPO / "training_args" / "base").glob("*.yaml"))
    assert bases and not runnable & {path.name for path in bases}
    for path in bases:
        assert "output_dir" not in load_recipe(path) and "method" not in load_recipe(path)


def test_the_loop_converts_epochs_with_its_own_steps_per_epoch(tiny_recipe):
    """5,000 sample images at batch 500 on one process without workers: 10 steps per epoch, so SwAV's queue starts
    at step 20 and the prototypes are frozen for 5 steps; a checkpoint every epoch lands on steps 10 and 20."""
    from hf_ssl.training import Trainer

    recipe = tiny_recipe(
        method="swav",
        label_column=None,
        per_device_train_batch_size=500,
        max_steps=20,
        save_steps=None,
        save_epochs=1,
        method_config={
            "projection_hidden_dim": 32,
            "projection_dim": 16,
            "num_prototypes": 12,
            "queue_size": 1000,
            "queue_start_epochs": 2,
            "freeze_prototypes_epochs": 0.5,
        },
    )
    trainer = Trainer(*parse_args([str(recipe)]))
    assert trainer.run.steps_per_epoch == 10
    config = trainer.run.unwrapped_model.config
    assert (config.queue_start_step, config.freeze_prototypes_steps) == (20, 5)
    trainer.train()
    assert sorted(p.name for p in trainer.output_dir.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
