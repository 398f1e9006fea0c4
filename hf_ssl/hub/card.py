"""Model cards rendered from a training output folder.

`render_model_card(output_dir)` reads what a run leaves behind (`config.json`, the recipe, the history, the
training loop's kNN scores and, when the evaluation suite ran, its scores; names in `hf_ssl.run_layout`), draws the
plots into `output_dir/plots/` and writes `output_dir/README.md`: Hub metadata whose `model-index` lists
every evaluation score of the model, and a body rendered from the Jinja templates in `model_cards/`.

Baselines (kNN on raw pixels, the network at random initialisation) stand beside the model's scores in the card's
tables and kNN plot, but stay out of `model-index`: its entries are claims about this model, and a leaderboard
reading them would list a baseline's accuracy as the model's.

What the card says about the data comes from the data's own card (its `README.md` metadata; for a Hub id, the copy
in the local Hub cache; nothing is downloaded): the licence (unless the recipe sets `license`), and for a local
folder the Hub dataset it is a copy of (`hub_id: uoft-cs/cifar10` in the folder's card), which `model-index` then
names instead of the folder.
"""

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, try_to_load_from_cache
from huggingface_hub.repocard import metadata_load

from ..evaluation.results import (
    BASELINE_LABELS,
    BASELINES,
    METRICS,
    PROTOCOLS,
    EvaluationResults,
    Score,
)
from ..models import METHODS
from ..models.configuration_ssl import SSLConfig
from ..resources import templates_dir
from ..run_layout import (
    CARD_FILE,
    EVALUATION_RESULTS_FILE,
    HISTORY_FILE,
    PLOTS_FOLDER,
    RECIPE_FILE,
    TRAINING_RESULTS_FILE,
    weights_fingerprint,
)
from .card_file import save_rendered_card
from .plots import make_plots

VIDEO_BACKBONES = ("r3d", "c3d", "videomae", "timesformer", "vivit")
# model_cards/ of the checkout, or the copy an installed wheel carries; `template_dir=` points elsewhere
TEMPLATES_DIR = templates_dir()
CARD_TEMPLATE = "modelcard_template.md"
METHODS_FOLDER = "methods"  # one section file per method: methods/<config.model_type>.md
GENERIC_METHOD = "generic"

# model-index metric ids: "accuracy" is the Hub's id for top-1; the others have no Hub metric, so they get
# descriptive snake_case ids.
METRIC_TYPES = {
    "top1_accuracy": "accuracy",
    "top5_accuracy": "top_5_accuracy",
    "nmi": "normalized_mutual_information",
    "ami": "adjusted_mutual_information",
    "ari": "adjusted_rand_index",
    "map": "mean_average_precision",  # retrieval: a fraction, as the Oxford/Paris papers report it
    "box_map": "mean_average_precision",  # COCO detection: in %, as COCO reports it
    "miou": "mean_iou",
}
PERCENT_METRICS = {"top1_accuracy", "top5_accuracy", "box_map", "miou"}
# Recipe fields about the machine a run happened on or where it is published, not how the model was trained.
RUN_LOCAL_KEYS = {
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "disable_tqdm",
    "report_to",
    "push_to_hub",
}
PUBLISHING_PREFIX = "hub_"
# The training fields the card's table shows beside the method's own hyper-parameters (the rest of the recipe stays
# in training_args.yaml); `_training_rows` leaves out those the run's settings make meaningless.
TRAINING_FIELDS = (
    "dataset_name",
    "image_size",
    "train_crop_size",
    "crop_min_scale",
    "crop_max_scale",
    "num_small_crops",
    "small_crop_size",
    "num_frames",
    "frame_stride",
    "num_clips",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "optim",
    "learning_rate",
    "momentum",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_epochs",
    "lr_decay_epochs",
)
VIDEO_FIELDS = {"num_frames", "frame_stride", "num_clips"}
# The licence when neither the recipe nor the pre-training data's card names one (a Hub licence id).
UNKNOWN_LICENSE = "unknown"


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


def dataset_card_metadata(name_or_path: str) -> dict:
    """The metadata of a dataset's card: a local folder's `README.md` front matter (with the licence of the
    `dataset_info.json` that `save_to_disk` writes, if the card names none), or for a Hub id the card in the local
    Hub cache (a streamed Hub dataset leaves it there); {} when there is none at hand. Nothing is downloaded."""
    path = pathlib.Path(name_or_path)
    if path.is_dir():
        readme = path / "README.md"
        metadata = (metadata_load(readme) if readme.is_file() else None) or {}
        info = _read_json(path / "dataset_info.json", {})
        return {"license": info["license"], **metadata} if info.get("license") else metadata
    if _is_hub_id(name_or_path):
        cached = try_to_load_from_cache(name_or_path, "README.md", repo_type="dataset")
        if isinstance(cached, str):
            return metadata_load(cached) or {}
    return {}


def dataset_hub_id(source: str) -> str | None:
    """The Hub id of a dataset given as a Hub id or a local folder (its card's `hub_id`); None when it has none."""
    hub_id = source if _is_hub_id(source) else dataset_card_metadata(source).get("hub_id")
    return hub_id if isinstance(hub_id, str) and _is_hub_id(hub_id) else None


def dataset_hub_ids(sources: list[str]) -> dict[str, str]:
    """{name a result or the card shows for a dataset: its Hub id} for the datasets a run names (`sources`, paths or
    Hub ids as given to training and evaluation): a Hub id names itself, a local folder the Hub dataset its card
    says it copies (`hub_id`), else its folder name (`public_name`)."""
    ids = {}
    for source in dict.fromkeys(s for s in sources if s):
        resolved = dataset_hub_id(source) or public_name(source)
        shown = {source, public_name(source)}
        if not _is_hub_id(source):  # results name a local dataset by its last path component, wherever it was
            shown.add(pathlib.PurePath(source).name)
        for name in shown:
            ids.setdefault(name, resolved)
    return ids


def _license(recipe: dict) -> tuple[str, str | None]:
    """(the model's licence, a note saying where it comes from when the recipe does not set it)."""
    if recipe.get("license"):
        return recipe["license"], None
    dataset = recipe.get("dataset_name")
    shown = public_name(dataset) if dataset else "the pre-training data"
    license = dataset_card_metadata(dataset).get("license") if dataset else None
    if isinstance(license, list):
        license = license[0] if len(license) == 1 else None
    if license:
        return license, (
            f"The licence is the pre-training dataset's (`{shown}`'s card says `{license}`); the recipe's `license` "
            "field sets another."
        )
    return UNKNOWN_LICENSE, (
        f"The licence is unknown: the recipe sets no `license` and `{shown}`'s card names none. Check the terms of "
        "the pre-training data before using this model, and set `license` in the recipe."
    )


def _method_rows(method: str, config: dict, recipe: dict) -> list[tuple[str, Any]]:
    """The method's own hyper-parameters as the run resolved them (config.json): the fields its config class adds
    to `SSLConfig` (not `num_examples`, which the loop sets from the data); for a method hf_ssl does not know, the
    recipe's `method_config`."""
    row = METHODS.get(method)
    if row is None:
        return _flatten(recipe.get("method_config") or {}, "method_config.")
    shared = {f.name for f in dataclasses.fields(SSLConfig)} | {"num_examples"}
    own = [f.name for f in dataclasses.fields(row.config_class) if f.name not in shared and f.name in config]
    return [(f"method_config.{name}", config[name]) for name in own]


def _training_rows(recipe: dict, video: bool) -> list[tuple[str, Any]]:
    """The key training fields of the recipe (`TRAINING_FIELDS`), without those that do not apply to this run."""
    skip = set() if video else set(VIDEO_FIELDS)
    if not recipe.get("num_small_crops"):
        skip |= {"num_small_crops", "small_crop_size"}
    if recipe.get("train_crop_size") is None:
        skip.add("train_crop_size")
    skip.add("num_train_epochs" if (recipe.get("max_steps") or -1) > 0 else "max_steps")
    if recipe.get("optim") == "adamw":
        skip.add("momentum")
    if recipe.get("lr_scheduler_type") != "step":
        skip.add("lr_decay_epochs")
    return [(key, recipe[key]) for key in TRAINING_FIELDS if key in recipe and key not in skip]


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


def score_to_eval_result(score: Score, dataset_ids: dict[str, str] | None = None) -> EvalResult:
    """One `Score` as one model-index entry: its protocol's task (`Protocol.task_type`), the score's dataset (its Hub
    id from `dataset_ids` when known, see `dataset_hub_ids`) and split, metric id from `METRIC_TYPES`, `Score.name`
    as the metric name, and the protocol (+ k / layer) as the metric's args."""
    dataset = (dataset_ids or {}).get(score.dataset) or public_name(score.dataset)
    args = {"protocol": score.protocol, "k": score.k, "layer": score.layer}
    protocol = PROTOCOLS[score.protocol]
    return EvalResult(
        task_type=protocol.task_type,
        task_name=protocol.task_name,
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
    """What a score measured, whoever it measured: baselines match the model's score of the same measurement (a
    local dataset named by path or by folder name alike)."""
    return score.protocol, public_name(score.dataset), score.split, score.metric, score.layer, score.k


def _features(score: Score, has_embedding: bool) -> str:
    """What a score's protocol read: the linear probes the pooled backbone features (per-layer probes their layer),
    kNN and k-means the method's embedding, which is the pooled features for a method without one."""
    if score.layer:
        return score.layer
    if score.protocol == "retrieval":
        return "R-MAC of the last feature map"
    if score.protocol in ("knn", "nmi") and has_embedding:
        return "embedding"
    return "pooled features"


def _result_rows(
    scores: list[Score], has_embedding: bool, dataset_ids: dict[str, str], baseline_scores: list[Score] = ()
) -> tuple[list[str], list[dict]]:
    """(baseline columns, rows): one row per score of the model, with the value of each baseline measured the same
    way (same protocol, data, k, layer and metric) in that baseline's column ("—" where none was); baselines come
    from `scores` and `baseline_scores` (the training loop's, when it measured the same thing)."""
    # the suite's own baselines win over the training loop's of the same measurement (later keys win)
    measured = [s for s in [*baseline_scores, *scores] if s.baseline is not None]
    columns = [b for b in BASELINES if any(s.baseline == b for s in measured)]
    baselines = {(_measurement(s), s.baseline): s for s in measured}
    rows = []
    for score in scores:
        if score.baseline is not None:
            continue
        protocol = PROTOCOLS[score.protocol].label
        rows.append(
            {
                "protocol": f"{protocol} (k={score.k})" if score.k else protocol,
                "dataset": dataset_ids.get(score.dataset) or public_name(score.dataset),
                "split": score.split,
                "features": _features(score, has_embedding),
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


def _same_knn(training: EvaluationResults, evaluation: EvaluationResults) -> bool | None:
    """Whether the training loop's kNN measured what the evaluation suite's kNN measured (same dataset, splits and
    k, neither bank nor query set capped): then the card shows the suite's once. None when they share no (dataset,
    split, k); False when they do but a capped bank or query set (or another bank split) makes the numbers differ."""
    knn = [
        {(public_name(s.dataset), s.split, s.k) for s in results.scores if s.protocol == "knn" and s.baseline is None}
        for results in (training, evaluation)
    ]
    if not knn[0] & knn[1]:
        return None
    suite = evaluation.settings
    return (
        training.settings.get("max_eval_bank_samples") is None
        and suite.get("max_train_samples") is None
        and suite.get("max_eval_samples") is None
        and training.settings.get("eval_bank_split", "train") == suite.get("train_split", "train")
    )


def _knn_caps(training: EvaluationResults, evaluation: EvaluationResults) -> str:
    """Why the training loop's kNN and the suite's differ, in words: each one's bank (and the suite's queries)."""

    def bank(cap: int | None, split: str) -> str:
        return f"the first {cap} `{split}` images" if cap else f"every `{split}` image"

    loop, suite = training.settings, evaluation.settings
    queries = suite.get("max_eval_samples")
    return (
        f"the training loop's bank was {bank(loop.get('max_eval_bank_samples'), loop.get('eval_bank_split', 'train'))}"
        f", the evaluation suite's {bank(suite.get('max_train_samples'), suite.get('train_split', 'train'))}"
        + (f" (with the first {queries} queries)" if queries else "")
    )


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
    # only the results measured on the weights beside the card (the others are named in a warning)
    weights = weights_fingerprint(output_dir)
    training = EvaluationResults.load_matching(output_dir / TRAINING_RESULTS_FILE, weights)
    training_scores = training.scores if training is not None else []
    processor = _read_json(output_dir / "preprocessor_config.json", {})

    evaluation = EvaluationResults.load_matching(output_dir / EVALUATION_RESULTS_FILE, weights)
    if evaluation is not None:
        scores, results_source = evaluation.scores, "evaluation"
    else:
        scores, results_source = training_scores, "training"

    method = config.get("model_type") or recipe.get("method") or "unknown"
    backbone = (config.get("backbone_config") or {}).get("model_type") or "unknown"
    # 3D backbones read clips: the card speaks of videos (the backbone config's model_type tells)
    video = backbone in VIDEO_BACKBONES
    model_id = repo_id or output_dir.resolve().name
    model_name = model_id.split("/")[-1]
    pretraining_dataset = recipe.get("dataset_name")
    shown_recipe = public_recipe(recipe)
    settings = evaluation.settings if evaluation is not None else {}
    dataset_ids = dataset_hub_ids(
        [recipe.get("dataset_name"), recipe.get("eval_dataset_name")]
        + [settings.get("dataset_name"), settings.get("transfer_dataset_name")]
    )
    license, license_note = _license(recipe)

    # one kNN per (dataset, split, k): the training loop's end-of-training kNN beside the suite's only when it
    # measured something else (a capped bank), said so; its random-init baseline joins the suite's table when the
    # measurements are the same
    same_knn = _same_knn(training, evaluation) if training is not None and evaluation is not None else None
    knn_monitor = [] if same_knn else _knn_monitor(training_scores)
    plots = make_plots(history, scores, training_scores, output_dir / PLOTS_FOLDER)
    model_scores = [s for s in scores if s.baseline is None]  # model-index: the model's own scores only
    has_embedding = bool(config.get("embedding_dim"))
    baseline_columns, results = _result_rows(scores, has_embedding, dataset_ids, training_scores if same_knn else ())
    steps, epochs = _training_span(history)
    section = render_method_section(method, config, shown_recipe, template_dir)
    hub_dataset = dataset_hub_id(pretraining_dataset) if pretraining_dataset else None

    card_data = ModelCardData(
        library_name="transformers",
        # the Hub has no video feature-extraction pipeline: a video model names none rather than the image one
        pipeline_tag=None if video else "image-feature-extraction",
        license=license,
        tags=["hf_ssl", "self-supervised", method, backbone] + (["video"] if video else []),
        datasets=[hub_dataset] if hub_dataset else None,
        # model_name only names the model-index; without results it would be a stray metadata key
        model_name=model_name if model_scores else None,
        eval_results=[score_to_eval_result(s, dataset_ids) for s in model_scores] or None,
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
        backbone_settings=config.get("backbone_config") or {},  # its fields, for the backbone's own paragraph (C3D)
        embedding_dim=config.get("embedding_dim"),
        image_size=(processor.get("crop_size") or {}).get("height"),
        pretraining_dataset=hub_dataset or (public_name(pretraining_dataset) if pretraining_dataset else None),
        num_examples=config.get("num_examples"),
        examples="videos" if video else "images",
        # a clip as in pre-training: num_frames frames, every frame_stride-th (the recipe's defaults if unset)
        num_frames=recipe.get("num_frames", 8),
        frame_stride=recipe.get("frame_stride", 2),
        eval_num_clips=recipe.get("eval_num_clips", 4),
        license=license,
        license_note=license_note,
        steps=steps,
        epochs=epochs,
        hyperparameters=[
            (key, _cell(dataset_ids.get(recipe.get(key), value) if key == "dataset_name" else value))
            for key, value in [*_method_rows(method, config, recipe), *_training_rows(shown_recipe, video)]
        ],
        results=results,
        baseline_columns=baseline_columns,
        baselines={label: BASELINES[b] for b, label in BASELINE_LABELS.items() if label in baseline_columns},
        results_source=results_source,
        protocols={s.protocol: PROTOCOLS[s.protocol].description for s in scores},
        evaluation_settings=[(k, _cell(v)) for k, v in _flatten(public_settings(evaluation.settings))]
        if evaluation is not None
        else [],
        eval_split=recipe.get("eval_split"),
        eval_bank_split=recipe.get("eval_bank_split"),
        knn_monitor=knn_monitor,
        random_init_measured=any(s.baseline == "random_init" for s in [*scores, *training_scores]),
        knn_caps=_knn_caps(training, evaluation) if same_knn is False else None,
        plots=[
            {"title": plot.title, "path": plot.path.relative_to(output_dir).as_posix(), "section": plot.section}
            for plot in plots
        ],
    )
    save_rendered_card(card, output_dir / CARD_FILE)
    return card
