"""Pre-training from Python: what `hf-ssl train` does, with the trained model handed back.

    import hf_ssl

    # a shipped recipe by name (or a YAML file, or a dict of its fields), fields overridden as keywords
    output = hf_ssl.pretrain("quickstart", dataset_name="data/cifar10-sample", output_dir="outputs/mine", max_steps=50)
    # or the three argument dataclasses, as `hf-ssl train` parses them
    output = hf_ssl.pretrain(model_args=ModelArguments(...), data_args=DataArguments(...), training_args=...)
    output.model, output.results.format(), output.output_dir

`dataset_name` (and `eval_dataset_name`) may also be an in-memory `datasets` object: a `Dataset` or
`IterableDataset` is the training split (`train_split`), a `DatasetDict` / `IterableDatasetDict` maps split names to
splits (the kNN evaluation reads `eval_bank_split` and `eval_split` from it). The run records it as
`in-memory:<info.dataset_name>`.
"""

import contextlib
import copy
import dataclasses
import difflib
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import datasets
from transformers import BaseImageProcessor, HfArgumentParser, PreTrainedModel

from .data.stream import in_memory_dataset
from .evaluation.results import EvaluationResults
from .resources import resolve_recipe
from .training.arguments import (
    ARGUMENT_CLASSES,
    DataArguments,
    ModelArguments,
    RecipeError,
    SSLTrainingArguments,
    load_recipe,
)
from .training.loop import Trainer

InMemoryDataset = datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict
IN_MEMORY_TYPES = (datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict, datasets.IterableDatasetDict)


@dataclass
class PretrainingOutput:
    """What a pre-training run made: also saved in `output_dir` (`from_pretrained` loads it from there)."""

    model: PreTrainedModel  # the method's ForPreTraining model, trained, in eval mode; `.base_model` gives features
    image_processor: BaseImageProcessor
    results: EvaluationResults  # the end-of-training kNN and its baselines (eval_results.json)
    output_dir: pathlib.Path


def recipe_arguments(
    recipe: str | os.PathLike | Mapping[str, Any], **overrides: Any
) -> tuple[ModelArguments, DataArguments, SSLTrainingArguments]:
    """The three argument dataclasses of a recipe: a shipped recipe's name, a YAML file (with its `base:` includes)
    or a mapping of fields; `overrides` replace fields as `--field value` does on the command line. Raises
    RecipeError naming an unknown field, ValueError naming a bad value."""
    fields = dict(load_recipe(resolve_recipe(recipe)) if isinstance(recipe, str | os.PathLike) else recipe)
    fields.update(overrides)
    known = {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)}
    for key in fields:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise RecipeError(f"unknown field {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    fields = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in fields.items()}
    return HfArgumentParser(ARGUMENT_CLASSES).parse_dict(fields)


def _as_splits(data: InMemoryDataset, train_split: str) -> dict[str, datasets.Dataset | datasets.IterableDataset]:
    return dict(data) if isinstance(data, dict) else {train_split: data}


def pretrain(
    recipe: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    model_args: ModelArguments | None = None,
    data_args: DataArguments | None = None,
    training_args: SSLTrainingArguments | None = None,
    **overrides: Any,
) -> PretrainingOutput:
    """Pre-train with a recipe (a shipped recipe's name, a YAML file or a mapping of fields, with `overrides`) or
    with the three argument dataclasses; returns the trained model and its results (see the module docstring)."""
    given = (model_args, data_args, training_args)
    if recipe is not None:
        if any(a is not None for a in given):
            raise ValueError("give either a recipe (with keyword overrides) or the three argument dataclasses")
        model_args, data_args, training_args = recipe_arguments(recipe, **overrides)
    elif any(a is None for a in given) or overrides:
        raise ValueError("without a recipe, give all three of model_args, data_args and training_args (no overrides)")
    # copies: the run records its names for in-memory data and plain strings for paths, the caller's objects stay
    model_args, data_args, training_args = (copy.copy(a) for a in (model_args, data_args, training_args))
    training_args.output_dir = os.fspath(training_args.output_dir)
    with contextlib.ExitStack() as served:
        for attribute in ("dataset_name", "eval_dataset_name"):
            data = getattr(data_args, attribute)
            if isinstance(data, IN_MEMORY_TYPES):
                splits = _as_splits(data, data_args.train_split)
                needed = [data_args.train_split] if attribute == "dataset_name" else []
                if data_args.label_column is not None and data is data_args.eval_dataset_name:
                    needed += [data_args.eval_bank_split, data_args.eval_split]
                if missing := [split for split in needed if split not in splits]:
                    raise ValueError(
                        f"{attribute}: the in-memory dataset has no split {missing[0]!r} (its splits: {list(splits)}); "
                        "give a DatasetDict with the training and kNN splits, or label_column=None for no kNN"
                    )
                name = served.enter_context(in_memory_dataset(splits))
                for same in ("dataset_name", "eval_dataset_name"):  # eval_dataset_name defaults to the same object
                    if getattr(data_args, same) is data:
                        setattr(data_args, same, name)
            elif isinstance(data, os.PathLike):
                setattr(data_args, attribute, os.fspath(data))
        trainer = Trainer(model_args, data_args, training_args)
        results = trainer.train()
    model = trainer.run.unwrapped_model.eval()
    return PretrainingOutput(model, trainer.run.image_processor, results, trainer.output_dir)


__all__ = ["PretrainingOutput", "pretrain", "recipe_arguments"]
