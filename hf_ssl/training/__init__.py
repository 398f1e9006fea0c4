"""The Accelerate pre-training loop and its arguments."""

from .arguments import DataArguments, ModelArguments, RecipeError, SSLTrainingArguments, parse_args
from .loop import Trainer, train

__all__ = ["DataArguments", "ModelArguments", "RecipeError", "SSLTrainingArguments", "parse_args", "Trainer", "train"]
