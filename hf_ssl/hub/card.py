"""Model cards rendered from a training output folder.

`render_model_card(output_dir)` reads what a run leaves behind (`config.json`, the recipe, the history, the
training loop's kNN scores and, when the evaluation suite ran, its scores; names in `hf_ssl.run_layout`), draws the
plots into `output_dir/plots/` and writes `output_dir/README.md`: Hub metadata whose `model-index` lists
every evaluation score of the model, and a body rendered from the Jinja templates in `model_cards/`.

Baselines (kNN on raw pixels, the network at random initialisation) stand beside the model's scores in the card's
tables and kNN plot, but stay out of `model-index`: its entries are claims about this model, and a leaderboard
reading them would list a baseline's accuracy as the model's.
"""

import json
import os
import pathlib
import re
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.results import (
    BASELINE_LABELS,
    BASELINES,
    METRICS,
    PROTOCOLS,
    EvaluationResults,
    Score,
)
from ..models import METHODS
from ..resources import templates_dir
from ..run_layout import (
    CARD_FILE,
    EVALUATION_RESULTS_FILE,
    HISTORY_FILE,
    PLOTS_FOLDER,
    RECIPE_FILE,
    TRAINING_RESULTS_FILE,
)
from .plots import make_plots

VIDEO_BACKBONES = ("r3d", "c3d", "videomae", "timesformer", "vivit")
# model_cards/ of the checkout, or the copy an installed wheel carries; `template_dir=` points elsewhere
TEMPLATES_DIR = templates_dir()
CARD_TEMPLATE = "modelcard_template.md"
METHODS_FOLDER = "methods"  # one section file per method: methods/<config.model_type>.md
GENERIC_METHOD = "generic"

TASK_TYPE = "image-classification"
# model-index metric ids: "accuracy" is the Hub's id for top-1; the others have no Hub metric, so they get
# descriptive snake_case ids.
METRIC_TYPES = {
    "top1_accuracy": "accuracy",
    "top5_accuracy": "top_5_accuracy",
    "nmi": "normalized_mutual_information",
    "ami": "adjusted_mutual_information",
    "ari": "adjusted_rand_index",
}
PERCENT_METRICS = {"top1_accuracy", "top5_accuracy"}
# Recipe fields about the machine a run happened on or where it is published, not how the model was trained.
RUN_LOCAL_KEYS = {"output_dir", "resume_from_checkpoint", "disable_tqdm", "report_to", "push_to_hub"}
PUBLISHING_PREFIX = "hub_"


def public_name(name: str) -> str:
    """A dataset or model as the card names it: a Hub id (or any plain value) unchanged, a local path by its last
    component only.

    The card is published; the machine's directory layout means nothing on the Hub and is not its business.
    """
    if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return pathlib.PurePath(name).name or name
    return name


def _is_hub_id(name: str) -> bool:
    return public_name(name) == name and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None


def _without_secrets(value: Any) -> Any:
    """Drop every key containing 'token', at any depth: a card must never carry credentials."""
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if "token" not in str(k).lower()}
    return value


def public_settings(settings: dict) -> dict:
    """Settings as the card shows them: no secrets, local paths (datasets, checkpoints) by their last component."""
    return {
        key: public_name(value) if isinstance(value, str) else value
        for key, value in _without_secrets(settings).items()
    }


def public_recipe(recipe: dict) -> dict:
    """The recipe as the card shows it: `public_settings` without run-local and publishing fields."""
    return {
        key: value
        for key, value in public_settings(recipe).items()
        if key not in RUN_LOCAL_KEYS and not key.startswith(PUBLISHING_PREFIX)
    }


def _flatten(recipe: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in recipe.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _cell(value: Any) -> str:
    """A value as YAML would spell it, safe inside a markdown table cell."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def score_to_eval_result(score: Score) -> EvalResult:
    """One `Score` as one model-index entry: task image-classification, the score's dataset and split, metric id
    from `METRIC_TYPES`, `Score.name` as the metric name, and the protocol (+ k / layer) as the metric's args."""
    dataset = public_name(score.dataset)
    args = {"protocol": score.protocol, "k": score.k, "layer": score.layer}
    return EvalResult(
        task_type=TASK_TYPE,
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=score.split,
        metric_type=METRIC_TYPES[score.metric],
        metric_name=score.name,
        metric_value=float(score.value),
        metric_args={k: v for k, v in args.items() if v is not None},
    )


def _read_json(path: pathlib.Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def _read_yaml(path: pathlib.Path) -> dict:
    return (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}


def _value(score: Score | None) -> str:
    if score is None:
        return "—"
    return f"{score.value:.2f}" if score.metric in PERCENT_METRICS else f"{score.value:.4f}"


def _measurement(score: Score) -> tuple:
    """What a score measured, whoever it measured: baselines match the model's score of the same measurement."""
    return score.protocol, score.dataset, score.split, score.metric, score.layer, score.k


def _result_rows(scores: list[Score]) -> tuple[list[str], list[dict]]:
    """(baseline columns, rows): one row per score of the model, with the value of each baseline measured the same
    way (same protocol, data, k, layer and metric) in that baseline's column ("—" where none was)."""
    columns = [b for b in BASELINES if any(s.baseline == b for s in scores)]
    baselines = {(_measurement(s), s.baseline): s for s in scores if s.baseline is not None}
    rows = []
    for score in scores:
        if score.baseline is not None:
            continue
        protocol = PROTOCOLS[score.protocol].label
        rows.append(
            {
                "protocol": f"{protocol} (k={score.k})" if score.k else protocol,
                "dataset": public_name(score.dataset),
                "split": score.split,
                "layer": score.layer or "embedding",
                "metric": METRICS[score.metric],
                "value": _value(score),
                "baselines": [_value(baselines.get((_measurement(score), b))) for b in columns],
            }
        )
    return [BASELINE_LABELS[b] for b in columns], rows


def _knn_monitor(training_scores: list[Score]) -> list[dict[str, str]]:
    """Rows of the training loop's end-of-training kNN next to its baselines (raw pixels, random initialisation)."""
    baselines = {(_measurement(s), s.baseline): s for s in training_scores if s.baseline is not None}
    return [
        {
            "metric": score.name,
            **{b: _value(baselines.get((_measurement(score), b))) for b in BASELINES},
            "trained": _value(score),
        }
        for score in training_scores
        if score.protocol == "knn" and score.baseline is None
    ]


def render_method_section(
    method: str, config: dict, recipe: dict | None = None, template_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """The method's section of the card: `methods/<method>.md` (else `methods/generic.md`) rendered with the
    run's `config` (config.json) and `recipe`, as its blocks {"title", "about", "citation"} (empty if absent)."""
    template_dir = pathlib.Path(template_dir) if template_dir is not None else TEMPLATES_DIR
    context = {"config": config, "recipe": recipe or {}, "method": method}
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir), trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )
    # the method name comes from config.json: only a row of the method table names a template file
    row = METHODS.get(method)
    known = row is not None and (template_dir / METHODS_FOLDER / row.card_template).is_file()
    section = row.card_template if known else f"{GENERIC_METHOD}.md"
    template = environment.get_template(f"{METHODS_FOLDER}/{section}")
    blocks = {}
    for name in ("title", "about", "citation"):
        render = template.blocks.get(name)
        blocks[name] = "".join(render(template.new_context(context))).strip() if render else ""
    return blocks


def _training_span(history: list[dict]) -> tuple[int | None, float | None]:
    """(optimizer steps, epochs) of the run, from its last step-log entry."""
    logged = [e for e in history if "loss" in e and "step" in e]
    if not logged:
        return None, None
    last = max(logged, key=lambda e: e["step"])
    return last["step"], last.get("epoch")


def render_model_card(
    output_dir: str | os.PathLike,
    repo_id: str | None = None,
    template_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """Write `README.md` (the Hub model card) and its plots (`plots/*.png`) into a training output folder.

    Args:
        output_dir: a folder written by `hf_ssl.training.train` (`config.json` at least).
        repo_id: the Hub repository the card is for (`user/name`); used in the code examples and as the model's
            name in `model-index`. Defaults to the folder's name.
        template_dir: where `modelcard_template.md` and `methods/` are; defaults to the repository's
            `model_cards/` (the checkout's, or the installed wheel's copy).

    Returns:
        The rendered `huggingface_hub.ModelCard` (also saved as `output_dir/README.md`).
    """
    output_dir = pathlib.Path(output_dir)
    template_dir = pathlib.Path(template_dir) if template_dir is not None else TEMPLATES_DIR
    if not (template_dir / CARD_TEMPLATE).is_file():
        raise FileNotFoundError(
            f"no model card template at {template_dir / CARD_TEMPLATE}: pass template_dir= a folder holding "
            f"{CARD_TEMPLATE} and {METHODS_FOLDER}/"
        )
    if not (output_dir / "config.json").is_file():
        raise FileNotFoundError(f"{output_dir} has no config.json: not a training output folder")
    config = json.loads((output_dir / "config.json").read_text())
    recipe = _read_yaml(output_dir / RECIPE_FILE)
    history = _read_json(output_dir / HISTORY_FILE, [])
    training_file = output_dir / TRAINING_RESULTS_FILE
    training_scores = EvaluationResults.load(training_file).scores if training_file.is_file() else []
    processor = _read_json(output_dir / "preprocessor_config.json", {})

    evaluation_file = output_dir / EVALUATION_RESULTS_FILE
    evaluation = EvaluationResults.load(evaluation_file) if evaluation_file.is_file() else None
    if evaluation is not None:
        scores, results_source = evaluation.scores, "evaluation"
    else:
        scores, results_source = training_scores, "training"

    method = config.get("model_type") or recipe.get("method") or "unknown"
    backbone = (config.get("backbone_config") or {}).get("model_type") or "unknown"
    model_id = repo_id or output_dir.resolve().name
    model_name = model_id.split("/")[-1]
    pretraining_dataset = recipe.get("dataset_name")
    shown_recipe = public_recipe(recipe)

    plots = make_plots(history, scores, training_scores, output_dir / PLOTS_FOLDER)
    model_scores = [s for s in scores if s.baseline is None]  # model-index: the model's own scores only
    baseline_columns, results = _result_rows(scores)
    steps, epochs = _training_span(history)
    section = render_method_section(method, config, shown_recipe, template_dir)

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        license="apache-2.0",
        tags=["hf_ssl", "self-supervised", method, backbone],
        datasets=[pretraining_dataset] if pretraining_dataset and _is_hub_id(pretraining_dataset) else None,
        # model_name only names the model-index; without results it would be a stray metadata key
        model_name=model_name if model_scores else None,
        eval_results=[score_to_eval_result(s) for s in model_scores] or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_dir / CARD_TEMPLATE),
        model_id=model_id,
        model_title=model_name,
        method=method,
        method_title=section["title"] or method,
        method_about=section["about"],
        method_citation=section["citation"],
        backbone=backbone,
        backbone_config=json.dumps(shown_recipe.get("backbone_config") or {"model_type": backbone}),
        embedding_dim=config.get("embedding_dim"),
        image_size=(processor.get("crop_size") or {}).get("height"),
        pretraining_dataset=public_name(pretraining_dataset) if pretraining_dataset else None,
        num_examples=config.get("num_examples"),
        # 3D backbones read clips: the card speaks of videos (the backbone config's model_type tells)
        examples=("videos" if (config.get("backbone_config") or {}).get("model_type") in VIDEO_BACKBONES else "images"),
        steps=steps,
        epochs=epochs,
        hyperparameters=[(key, _cell(value)) for key, value in _flatten(shown_recipe)],
        results=results,
        baseline_columns=baseline_columns,
        baselines={BASELINE_LABELS[s.baseline]: BASELINES[s.baseline] for s in scores if s.baseline},
        results_source=results_source,
        protocols={s.protocol: PROTOCOLS[s.protocol].description for s in scores},
        evaluation_settings=[(k, _cell(v)) for k, v in _flatten(public_settings(evaluation.settings))]
        if evaluation is not None
        else [],
        eval_split=recipe.get("eval_split"),
        eval_bank_split=recipe.get("eval_bank_split"),
        knn_monitor=_knn_monitor(training_scores),
        plots=[
            {"title": plot.title, "path": plot.path.relative_to(output_dir).as_posix(), "section": plot.section}
            for plot in plots
        ],
    )
    card.save(output_dir / CARD_FILE)
    return card
