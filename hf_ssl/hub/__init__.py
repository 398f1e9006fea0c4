"""The Hugging Face Hub side of a run: model cards (metadata, results as `model-index`, plots) from an output
folder."""

from .card import (
    public_name,
    public_recipe,
    public_settings,
    render_method_section,
    render_model_card,
    score_to_eval_result,
)
from .plots import make_plots

__all__ = [
    "make_plots",
    "public_name",
    "public_recipe",
    "public_settings",
    "render_method_section",
    "render_model_card",
    "score_to_eval_result",
]
