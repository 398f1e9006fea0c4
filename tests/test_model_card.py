"""Model cards rendered from real (tiny) training output folders: Hub metadata, model-index, plots, templates."""

import dataclasses
import json
import pathlib
import re
import shutil

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from hf_ssl.evaluation import knn_scores
from hf_ssl.evaluation.results import EvaluationResults, Score
from hf_ssl.evaluation.suite import EvaluationArguments, evaluate_checkpoint
from hf_ssl.hub import public_name, render_method_section, render_model_card
from hf_ssl.hub.card import METRIC_TYPES, TEMPLATES_DIR
from hf_ssl.hub.plots import knn_curve, layer_probe_bars
from hf_ssl.models import PRETRAINING_CLASSES
from hf_ssl.run_layout import EVALUATION_RESULTS_FILE as RESULTS_FILE
from hf_ssl.training import parse_args, train

from .conftest import TINY_BACKBONE, TINY_R3D, VIDEO_SAMPLE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO_ID = "someone/ir-tiny"


def _train(root: pathlib.Path, data: pathlib.Path, **overrides) -> pathlib.Path:
    """A real tiny run on `data` (400 training images: 12 steps per epoch at batch 32); returns its output_dir."""
    recipe = {
        "method": "instance_recognition",
        "backbone_config": TINY_BACKBONE,
        "method_config": {"embedding_dim": 16, "num_negatives": 256, "temperature": 0.1},
        "dataset_name": str(data),
        "image_size": 16,
        "shuffle_buffer": 200,
        "output_dir": str(root / "out"),
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 200,
        "max_steps": 6,
        "learning_rate": 0.05,
        "warmup_epochs": 0.05,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "save_steps": 0,
        "knn_k": [20, 200],
        "report_to": "none",
        "disable_tqdm": True,
    }
    recipe.update(overrides)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train(*parse_args([str(path)]))
    return pathlib.Path(recipe["output_dir"])


@pytest.fixture(scope="module")
def ir_run(tmp_path_factory, small_sample) -> pathlib.Path:
    """Instance Recognition: kNN at step 3 (eval_epochs 0.25) and at the end, random-init baseline."""
    return _train(tmp_path_factory.mktemp("ir"), small_sample, eval_epochs=0.25, eval_random_init=True)


@pytest.fixture(scope="module")
def dc_run(tmp_path_factory, small_sample) -> pathlib.Path:
    """DeepCluster over two epochs: clusterings at steps 0 and 12, so both NMI curves have data."""
    return _train(
        tmp_path_factory.mktemp("dc"),
        small_sample,
        method="deep_cluster",
        max_steps=13,
        method_config={"num_clusters": 10, "pca_dim": 8},
    )


KNN_MEASUREMENTS = [(20, "top1_accuracy"), (20, "top5_accuracy"), (200, "top1_accuracy"), (200, "top5_accuracy")]


def _scores(pretraining: str) -> list[Score]:
    """13 scores of the model, and the suite's raw-pixel baseline beside its 4 kNN scores."""
    knn = [
        Score("knn", pretraining, "test", metric, value, k=k)
        for (k, metric), value in zip(KNN_MEASUREMENTS, [31.25, 77.5, 29.75, 80.125])
    ]
    pixels = [
        Score("knn", pretraining, "test", metric, value, k=k, baseline="pixels")
        for (k, metric), value in zip(KNN_MEASUREMENTS, [36.5, 81.0, 35.25, 82.5])
    ]
    return (
        knn
        + pixels
        + [
            Score("linear", pretraining, "test", "top1_accuracy", 35.5),
            Score("linear", pretraining, "test", "top5_accuracy", 84.0),
            Score("layers", pretraining, "test", "top1_accuracy", 24.5, layer="stage1"),
            Score("layers", pretraining, "test", "top1_accuracy", 33.0, layer="stage2"),
            Score("nmi", pretraining, "test", "nmi", 0.1234),
            Score("nmi", pretraining, "test", "ami", 0.0987),
            Score("nmi", pretraining, "test", "ari", 0.0456),
            Score("transfer", "uoft-cs/cifar100", "test", "top1_accuracy", 12.5),
            Score("transfer", "tanganke/stl10", "test", "top1_accuracy", 14.0),
        ]
    )


@pytest.fixture(scope="module")
def evaluated(ir_run, tmp_path_factory) -> tuple[pathlib.Path, EvaluationResults, ModelCard]:
    """A copy of the IR run with an evaluation suite's results (and a token planted in recipe and settings)."""
    out = tmp_path_factory.mktemp("evaluated") / "ir-tiny"
    shutil.copytree(ir_run, out)
    recipe = yaml.safe_load((out / "training_args.yaml").read_text())
    (out / "training_args.yaml").write_text(yaml.safe_dump({**recipe, "hub_token": "hf_PLANTEDSECRET"}))
    results = EvaluationResults(
        model=str(out),
        method="instance_recognition",
        pretraining_dataset=recipe["dataset_name"],
        settings={"model": str(out), "batch_size": 200, "knn_temperature": 0.07, "hub_token": "hf_PLANTEDSECRET"},
        scores=_scores(recipe["dataset_name"]),
    )
    results.save(out / RESULTS_FILE)
    return out, results, render_model_card(out, repo_id=REPO_ID)


def _metadata(readme: pathlib.Path) -> dict:
    _, header, _ = readme.read_text().split("---\n", 2)
    return yaml.safe_load(header)


def _plot_links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\((plots/[^)]+)\)", text)


def test_card_parses_back_with_one_eval_result_per_score(evaluated):
    out, results, rendered = evaluated
    card = ModelCard.load(out / "README.md")
    assert card.text == rendered.text
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-feature-extraction"
    assert data.license == "unknown"  # neither the recipe nor the sample's card names one
    assert "The licence is unknown: the recipe sets no `license`" in card.text
    assert {"self-supervised", "instance_recognition", "resnet"} <= set(data.tags)
    assert data.model_name == "ir-tiny"
    assert data.datasets is None  # the pre-training data is a local folder, not a Hub dataset

    # the model's own scores only: a baseline in model-index would read as this model's accuracy
    model_scores = [s for s in results.scores if s.baseline is None]
    assert len(results.scores) == 17 and len(data.eval_results) == len(model_scores) == 13
    assert not any("raw pixels" in r.metric_name for r in data.eval_results)
    # Score.name is unique per dataset and split (transfer probes on two datasets share a name, as the
    # model-index allows: they sit in different dataset entries)
    by_name = {(r.dataset_type, r.dataset_split, r.metric_name): r for r in data.eval_results}
    assert len(by_name) == len(model_scores)
    saved = json.loads((out / RESULTS_FILE).read_text())["scores"]
    for score, raw in zip(results.scores, saved):
        if score.baseline is not None:
            continue
        result = by_name[public_name(score.dataset), score.split, score.name]
        assert result.metric_value == raw["value"]
        assert result.dataset_type == result.dataset_name == public_name(raw["dataset"])
        assert result.dataset_split == raw["split"]
        assert result.task_type == "image-classification"
        assert result.metric_type == METRIC_TYPES[raw["metric"]]
        expected_args = {"protocol": raw["protocol"], "k": raw["k"], "layer": raw["layer"]}
        assert result.metric_args == {k: v for k, v in expected_args.items() if v is not None}
    local = pathlib.Path(results.pretraining_dataset).name  # a local folder is named by its last component
    assert by_name[local, "test", "kNN top-5 (k=200)"].metric_value == 80.125
    layer = by_name[local, "test", "linear probe top-1 (stage2)"]
    assert layer.metric_args == {"protocol": "layers", "layer": "stage2"}
    assert by_name[local, "test", "k-means ARI"].metric_type == "adjusted_rand_index"
    assert by_name["tanganke/stl10", "test", "transfer linear probe top-1"].metric_value == 14.0
    # the machine's paths stay out of the card
    assert str(pathlib.Path(results.pretraining_dataset).parent) not in card.content


def test_model_index_round_trips_through_huggingface_hub(evaluated):
    out, results, card = evaluated
    model_index = _metadata(out / "README.md")["model-index"]
    name, eval_results = model_index_to_eval_results(model_index)
    assert name == "ir-tiny"
    assert eval_results == card.data.eval_results
    assert eval_results_to_model_index(name, eval_results) == model_index
    # one results entry per dataset/split, each metric with the spec's required fields
    groups = model_index[0]["results"]
    model_scores = [s for s in results.scores if s.baseline is None]
    assert sorted((g["dataset"]["type"], g["dataset"]["split"]) for g in groups) == sorted(
        {(public_name(s.dataset), s.split) for s in model_scores}
    )
    for group in groups:
        assert group["task"]["type"] == "image-classification"
        assert group["dataset"]["name"] == group["dataset"]["type"]
        assert all({"type", "value", "name"} <= set(metric) for metric in group["metrics"])
    assert sum(len(g["metrics"]) for g in groups) == len(model_scores)


def test_results_table_lists_every_score(evaluated, small_sample):
    _, results, card = evaluated
    local = small_sample.name
    # one row per score of the model, the raw-pixel baseline in its own column beside the kNN scores, and the
    # training loop's random-init kNN beside them (the same measurement: neither bank was capped)
    rows = [line for line in card.text.splitlines() if line.startswith("| ") and line.count("|") == 9]
    assert len(rows) == len([s for s in results.scores if s.baseline is None]) + 1  # + the header
    assert rows[0] == "| protocol | dataset | split | features | metric | value | raw pixels | random init |"
    training = EvaluationResults.load(evaluated[0] / "eval_results.json")
    random_init = training.get(protocol="knn", k=200, metric="top5_accuracy", baseline="random_init").value
    assert (
        f"| weighted kNN (k=200) | {local} | test | embedding | top-5 accuracy (%) | 80.12 | 82.50 | {random_init:.2f} |"
        in card.text
    )
    assert f"| weighted kNN (k=20) | {local} | test | embedding | top-1 accuracy (%) | 31.25 | 36.50 |" in card.text
    assert f"| linear probe per layer | {local} | test | stage1 | top-1 accuracy (%) | 24.50 | — | — |" in card.text
    # linear probes name what they read: the pooled backbone features, not the method's embedding
    assert f"| linear probe | {local} | test | pooled features | top-1 accuracy (%) | 35.50 | — | — |" in card.text
    assert f"| k-means | {local} | test | embedding | normalized mutual information | 0.1234 | — | — |" in card.text
    assert (
        "| transfer linear probe | tanganke/stl10 | test | pooled features | top-1 accuracy (%) | 14.00 |" in card.text
    )
    assert "- raw pixels: each image's pixels at the evaluation size in place of features" in card.text
    assert "- random init: the same network at random initialisation" in card.text
    assert "measured by the evaluation suite" in card.text
    assert "- `knn_temperature`: 0.07" in card.text
    assert "- `model`: ir-tiny" in card.text


def test_no_token_reaches_the_card(evaluated):
    out, _, card = evaluated
    text = (out / "README.md").read_text()
    assert "PLANTEDSECRET" not in text and "token" not in text.lower()


def test_hyperparameter_table_shows_what_matters_for_the_method(evaluated, ir_run, small_sample):
    _, _, card = evaluated
    recipe = yaml.safe_load((ir_run / "training_args.yaml").read_text())
    assert recipe["learning_rate"] == 0.05 and recipe["per_device_train_batch_size"] == 32
    rows = re.findall(r"^\| `([\w.]+)` \| (.*) \|$", card.text, flags=re.MULTILINE)
    # the method's own fields as config.json resolved them (its defaults included), then the key training fields
    assert [key for key, _ in rows[:4]] == [
        "method_config.embedding_dim",
        "method_config.num_negatives",
        "method_config.temperature",
        "method_config.bank_momentum",
    ]
    assert dict(rows)["method_config.bank_momentum"] == "0.5"  # not in the recipe: the config's default
    assert {"learning_rate", "per_device_train_batch_size", "optim", "weight_decay", "lr_scheduler_type"} <= set(
        dict(rows)
    )
    assert {"crop_min_scale", "image_size", "max_steps", "warmup_epochs", "momentum"} <= set(dict(rows))
    assert len(rows) < 20 < len(recipe)  # not every field of the recipe (61 of them)
    assert "| `learning_rate` | 0.05 |" in card.text
    assert f"| `dataset_name` | {small_sample.name} |" in card.text
    for left_out in ("cpu_threads", "num_frames", "num_train_epochs", "lr_decay_epochs", "small_crop_size", "seed"):
        assert f"| `{left_out}` |" not in card.text  # machine settings, or not used by this run
    assert "| `output_dir` |" not in card.text and "| `hub_model_id` |" not in card.text
    assert "the full recipe, every\nfield resolved, is `training_args.yaml`" in card.text


def test_plots_exist_are_pngs_and_are_linked(evaluated):
    out, _, card = evaluated
    history = json.loads((out / "training_history.json").read_text())
    assert any(e.get("step") == 3 and "scores" in e for e in history)  # the periodic kNN the plot draws
    links = _plot_links(card.text)
    assert links == ["plots/loss.png", "plots/knn_top1.png", "plots/layer_probe_top1.png"]
    assert card.text.index("plots/knn_top1.png") < card.text.index("## Evaluation")
    assert card.text.index("plots/layer_probe_top1.png") > card.text.index("## Evaluation")
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["knn_top1.png", "layer_probe_top1.png", "loss.png"]
    for link in links:
        assert (out / link).read_bytes()[:8] == PNG_MAGIC
        assert (out / link).stat().st_size > 5_000  # a drawn figure, not an empty canvas


def test_knn_plot_draws_the_baselines_of_each_k(ir_run, tmp_path):
    history = json.loads((ir_run / "training_history.json").read_text())
    scores = EvaluationResults.load(ir_run / "eval_results.json").scores
    trained = [s for s in scores if s.baseline is None]
    assert {s.baseline for s in scores} == {None, "pixels", "random_init"}
    plain = knn_curve(history, trained, tmp_path / "plain.png").read_bytes()
    drawn = knn_curve(history, scores, tmp_path / "baselines.png").read_bytes()
    other_k = Score("knn", "x", "test", "top1_accuracy", 50.0, k=7, baseline="pixels")
    unmatched = knn_curve(history, [*trained, other_k], tmp_path / "other-k.png")
    assert drawn != plain  # horizontal lines at the baselines' values
    assert unmatched.read_bytes() == plain  # a baseline is drawn only beside the curve of its own k


def test_method_section_and_citation(evaluated):
    _, _, card = evaluated
    assert "## Method: Instance Recognition" in card.text
    assert "16-d L2-normalised embedding" in card.text  # the run's config, not the paper's default 128
    assert "256 negatives" in card.text
    assert "Unsupervised Feature Learning via Non-Parametric Instance" in card.text
    assert "```bibtex\n@inproceedings{wu2018unsupervised," in card.text
    assert 'AutoModel.from_pretrained("someone/ir-tiny", trust_remote_code=True)' in card.text
    assert 'pipeline("image-feature-extraction", model="someone/ir-tiny", trust_remote_code=True)' in card.text
    assert 'AutoImageProcessor.from_pretrained("someone/ir-tiny")' in card.text
    assert "outputs.pooler_output  # (1, hidden_size) pooled backbone features, what linear probes read" in card.text
    assert "{{" not in card.text and "{%" not in card.text


@pytest.mark.parametrize("method", sorted(PRETRAINING_CLASSES))
def test_every_method_has_a_section_file(method):
    config = PRETRAINING_CLASSES[method].config_class().to_dict()
    section = render_method_section(method, config)
    assert (TEMPLATES_DIR / "methods" / f"{method}.md").is_file()
    assert section["title"] and section["title"] != method
    assert re.fullmatch(r"@inproceedings\{\w+,\n(.|\n)*\n\}", section["citation"])
    keys = (
        "num_clusters",
        "embedding_dim",
        "projection_dim",
        "num_permutations",
        "counting_dim",
        "head_hidden_dim",
        "classifier_dropout",
    )
    key = next(k for k in keys if k in config)
    assert str(config[key]) in section["about"]  # the section quotes the run's own hyper-parameters
    assert "{{" not in section["about"]


def test_deep_cluster_card_has_the_nmi_plot(dc_run):
    history = json.loads((dc_run / "training_history.json").read_text())
    assert [e["epoch"] for e in history if "nmi_true_labels" in e] == [0, 1]
    assert [e["epoch"] for e in history if "nmi_previous_epoch" in e] == [1]
    card = render_model_card(dc_run)
    assert "plots/nmi.png" in _plot_links(card.text)
    assert (dc_run / "plots" / "nmi.png").read_bytes()[:8] == PNG_MAGIC
    assert "## Method: DeepCluster" in card.text and "k = 10 gives every image a pseudo-label" in card.text
    assert "@inproceedings{caron2018deep," in card.text
    assert "layer_probe_top1.png" not in card.text
    assert {"deep_cluster", "resnet"} <= set(ModelCard.load(dc_run / "README.md").data.tags)


def test_without_evaluation_results_the_training_knn_is_reported(ir_run):
    card = render_model_card(ir_run)
    training = EvaluationResults.load(ir_run / "eval_results.json")
    assert not (ir_run / RESULTS_FILE).exists()
    assert "This run has no `evaluation_results.json`" in card.text
    results = {r.metric_name: r for r in ModelCard.load(ir_run / "README.md").data.eval_results}
    assert sorted(results) == ["kNN top-1 (k=20)", "kNN top-1 (k=200)", "kNN top-5 (k=20)", "kNN top-5 (k=200)"]
    for k, metric in [(200, "top1_accuracy"), (20, "top5_accuracy")]:
        trained = training.get(protocol="knn", k=k, metric=metric)
        assert results[trained.name].metric_value == trained.value
        assert results[trained.name].dataset_split == "test" and results[trained.name].metric_args["k"] == k
        assert f"{trained.value:.2f} |" in card.text
    # the loop's baselines: the same measurements as the model's scores
    for baseline in ("pixels", "random_init"):
        measured = [(s.k, s.metric) for s in training.scores if s.baseline == baseline]
        assert measured == [(s.k, s.metric) for s in training.scores if s.baseline is None]
    trained, pixels, random_init = (
        f"{training.get(protocol='knn', k=200, metric='top1_accuracy', baseline=b).value:.2f}"
        for b in (None, "pixels", "random_init")
    )
    # the monitor table and the results table put both baselines next to the trained value
    assert f"| kNN top-1 (k=200) | {pixels} | {random_init} | {trained} |" in card.text
    assert f"| top-1 accuracy (%) | {trained} | {pixels} | {random_init} |" in card.text
    assert _plot_links(card.text) == ["plots/loss.png", "plots/knn_top1.png"]
    assert ModelCard.load(ir_run / "README.md").data.model_name == ir_run.name


def test_unknown_method_renders_a_generic_section(ir_run, tmp_path):
    out = tmp_path / "new-method"
    shutil.copytree(ir_run, out, ignore=shutil.ignore_patterns("README.md", "plots"))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "model_type": "my_new_method"}))
    recipe = yaml.safe_load((out / "training_args.yaml").read_text())
    recipe.update(method="my_new_method", dataset_name="uoft-cs/cifar10")
    (out / "training_args.yaml").write_text(yaml.safe_dump(recipe))
    card = render_model_card(out, repo_id="someone/new")
    assert "## Method: my_new_method" in card.text
    assert "do not\ndescribe yet" in card.text
    assert "No citation is recorded for `my_new_method`." in card.text
    loaded = ModelCard.load(out / "README.md")
    assert "my_new_method" in loaded.data.tags
    assert loaded.data.datasets == ["uoft-cs/cifar10"]  # a Hub dataset id goes into the metadata


def test_rerendering_drops_plots_whose_data_is_gone(evaluated, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(evaluated[0], out)
    (out / RESULTS_FILE).unlink()
    card = render_model_card(out)
    assert not (out / "plots" / "layer_probe_top1.png").exists()
    assert "layer_probe_top1.png" not in card.text


def test_missing_templates_fail_with_a_clear_error(ir_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="pass template_dir="):
        render_model_card(ir_run, template_dir=tmp_path)


# -- what the card says must be true: runnable code, one number per measurement, the data's licence and Hub id --


def _run_how_to_use(card: ModelCard, repo_id: str, checkpoint: pathlib.Path, workdir: pathlib.Path, monkeypatch):
    """Execute the card's "How to use" code with the Hub id pointing at the local checkpoint; returns its names."""
    section = card.text.split("## How to use", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    monkeypatch.chdir(workdir)
    namespace: dict = {}
    exec(compile(code.replace(f'"{repo_id}"', repr(str(checkpoint))), "how_to_use", "exec"), namespace)
    return namespace


def test_image_card_how_to_use_runs(ir_run, tmp_path, monkeypatch):
    from PIL import Image

    card = render_model_card(ir_run, repo_id=REPO_ID)
    Image.new("RGB", (40, 30), (120, 30, 200)).save(tmp_path / "image.jpg")
    names = _run_how_to_use(card, REPO_ID, ir_run, tmp_path, monkeypatch)
    assert names["outputs"].pooler_output.shape == (1, 16) and names["outputs"].embeddings.shape == (1, 16)
    assert len(names["features"][0]) == 16


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> pathlib.Path:
    """Instance Recognition on the shipped video sample: a 3D ResNet on 4-frame clips of 32 px, 2 steps."""
    return _train(
        tmp_path_factory.mktemp("video"),
        VIDEO_SAMPLE,
        backbone_config=TINY_R3D,
        method_config={"embedding_dim": 16, "num_negatives": 0, "temperature": 0.1},
        eval_split="validation",
        image_size=32,
        num_frames=4,
        frame_stride=2,
        eval_num_clips=1,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        max_steps=2,
        knn_k=[5],
    )


def test_video_card_how_to_use_runs_and_a_video_processor_is_saved(video_run, tmp_path, monkeypatch):
    out = video_run
    image_processor = json.loads((out / "preprocessor_config.json").read_text())
    video_processor = json.loads((out / "video_preprocessor_config.json").read_text())
    assert video_processor["video_processor_type"] == "VideoMAEVideoProcessor"  # what AutoVideoProcessor loads
    assert video_processor["num_frames"] == 4 and video_processor["do_sample_frames"] is False
    for key in ("size", "crop_size", "image_mean", "image_std", "resample", "rescale_factor", "do_center_crop"):
        assert video_processor[key] == image_processor[key], key  # each frame as the image processor does it

    card = render_model_card(out, repo_id="someone/r3d-tiny")
    assert "image-feature-extraction" not in card.text  # neither the image pipeline nor its metadata
    assert "video" in ModelCard.load(out / "README.md").data.tags
    shutil.copy(sorted((VIDEO_SAMPLE / "validation").glob("*/*.mp4"))[0], tmp_path / "video.mp4")
    names = _run_how_to_use(card, "someone/r3d-tiny", out, tmp_path, monkeypatch)
    assert names["pixel_values"].shape == (1, 4, 3, 32, 32)
    assert names["outputs"].pooler_output.shape == (1, 16) and names["outputs"].embeddings.shape == (1, 16)
    # moving-imagenette's card says `license: other`: the model's licence comes from there, said so
    assert ModelCard.load(out / "README.md").data.license == "other"
    assert "The licence is the pre-training dataset's" in card.text


def test_a_capped_training_bank_is_explained_beside_the_suites_knn(evaluated, tmp_path):
    out = tmp_path / "capped"
    shutil.copytree(evaluated[0], out)
    same = render_model_card(out)
    assert "| metric | raw pixels | random init | trained |" not in same.text  # the suite's kNN only, once
    training = EvaluationResults.load(out / "eval_results.json")
    training.settings["max_eval_bank_samples"] = 300
    training.save(out / "eval_results.json")
    capped = render_model_card(out)
    assert "| metric | raw pixels | random init | trained |" in capped.text
    assert "These are not the model's results: the training loop's bank was the first 300 `train` images" in (
        capped.text.replace("\n", " ")
    )
    # the random-init baseline is of the capped bank: it stays in the monitor table, not beside the suite's kNN
    assert "| protocol | dataset | split | features | metric | value | raw pixels |\n" in capped.text
    assert len(ModelCard.load(out / "README.md").data.eval_results) == 13


def test_licence_and_hub_dataset_id_come_from_the_recipe_and_the_datas_card(evaluated, tmp_path):
    out = tmp_path / "named"
    shutil.copytree(evaluated[0], out)
    # a local copy of CIFAR-10 whose card names the Hub dataset it copies, and its licence
    copy = tmp_path / "data" / "cifar10"
    copy.mkdir(parents=True)
    (copy / "README.md").write_text("---\nlicense: mit\nhub_id: uoft-cs/cifar10\n---\n# CIFAR-10\n")
    recipe = yaml.safe_load((out / "training_args.yaml").read_text())
    (out / "training_args.yaml").write_text(
        yaml.safe_dump({**recipe, "dataset_name": str(copy), "eval_dataset_name": str(copy)})
    )
    results = EvaluationResults.load(out / RESULTS_FILE)
    results.settings["dataset_name"] = str(copy)
    results.scores = [
        dataclasses.replace(s, dataset="cifar10") if s.protocol != "transfer" else s for s in results.scores
    ]
    results.save(out / RESULTS_FILE)
    render_model_card(out)
    data = ModelCard.load(out / "README.md").data
    assert data.license == "mit" and data.datasets == ["uoft-cs/cifar10"]
    types = {r.dataset_type for r in data.eval_results}
    assert types == {"uoft-cs/cifar10", "uoft-cs/cifar100", "tanganke/stl10"}
    # the recipe's own licence wins
    (out / "training_args.yaml").write_text(
        yaml.safe_dump({**recipe, "dataset_name": str(copy), "license": "apache-2.0"})
    )
    card = render_model_card(out)
    assert card.data.license == "apache-2.0" and "The licence is" not in card.text


@pytest.mark.parametrize("num_classes, top5", [(4, False), (5, False), (6, True)])
def test_top5_only_with_more_than_5_classes(num_classes, top5):
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(60, 8)).astype("float32"), rng.normal(size=(20, 8)).astype("float32")
    labels = np.arange(60) % num_classes
    scores = knn_scores(bank, labels, queries, labels[:20], "d", "test", [5])
    assert [s.metric for s in scores] == ["top1_accuracy"] + (["top5_accuracy"] if top5 else [])


def test_the_suites_random_init_baseline_stands_beside_every_score_and_in_the_layer_plot(
    ir_run, small_sample, tmp_path
):
    out = tmp_path / "baselines"
    shutil.copytree(ir_run, out)
    (out / "eval_results.json").unlink()  # the suite's own random-init scores, not the training loop's
    args = EvaluationArguments(
        model=str(out),
        dataset_name=str(small_sample),
        protocols="knn,layers",
        probe_epochs=1,
        knn_k=[20],
        random_init_baseline=True,
        num_workers=0,
        disable_tqdm=True,
    )
    results = evaluate_checkpoint(args)
    model = [(s.protocol, s.metric, s.layer, s.k) for s in results.scores if s.baseline is None]
    random_init = [(s.protocol, s.metric, s.layer, s.k) for s in results.scores if s.baseline == "random_init"]
    assert random_init == model  # every score of the model has its random-init counterpart
    card = render_model_card(out)
    assert "| protocol | dataset | split | features | metric | value | raw pixels | random init |" in card.text
    stage2 = results.get(protocol="layers", layer="stage2", metric="top1_accuracy", baseline="random_init").value
    row = next(line for line in card.text.splitlines() if "| stage2 | top-1 accuracy (%) |" in line)
    assert row.endswith(f"| — | {stage2:.2f} |")  # no raw pixels for a layer probe; random init beside it
    assert "was not measured for this run" not in card.text
    assert len(ModelCard.load(out / "README.md").data.eval_results) == len(model)  # baselines stay out
    plain = layer_probe_bars([s for s in results.scores if s.baseline is None], tmp_path / "plain.png")
    assert (out / "plots" / "layer_probe_top1.png").read_bytes() != plain.read_bytes()  # the baseline is drawn


def test_the_saved_video_processor_loads_with_auto_video_processor(video_run):
    pytest.importorskip("torchvision", reason="transformers' video processors need torchvision")
    from PIL import Image
    from transformers import AutoImageProcessor, AutoVideoProcessor

    clip = [Image.new("RGB", (48, 36), (40 * i, 100, 200 - 40 * i)) for i in range(4)]
    video = AutoVideoProcessor.from_pretrained(video_run)(videos=[clip], return_tensors="pt")["pixel_values"]
    frames = AutoImageProcessor.from_pretrained(video_run)(images=clip, return_tensors="pt")["pixel_values"]
    assert video.shape == (1, *frames.shape)
    assert (video[0] - frames).abs().max() < 0.05  # torchvision's resize in place of PIL's
