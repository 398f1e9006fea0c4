"""The files of a run's output folder, named in one place.

Training writes them, evaluation and the model card read them, `hf-ssl push` publishes some and keeps the rest
local. Standard library only: the hub side imports this without the training stack.

    output_dir/
        config.json, model.safetensors, preprocessor_config.json, *.py   save_pretrained (+ remote code)
        training_args.yaml           the resolved recipe                  (RECIPE_FILE)
        eval_results.json            the loop's kNN scores                (TRAINING_RESULTS_FILE)
        training_history.json        step logs, epoch metrics, kNN scores (HISTORY_FILE)
        evaluation_results.json      `hf-ssl evaluate`'s scores           (EVALUATION_RESULTS_FILE)
        README.md, plots/*.png       the model card                       (CARD_FILE, PLOTS_FOLDER)
        checkpoint-<step>/           Accelerate state + TRAINER_STATE + BUFFERS_FILE
        runs/hf_ssl/                 TensorBoard logs                     (LOGS_FOLDER, TRACKER_PROJECT)
"""

import hashlib
import json
import pathlib

RECIPE_FILE = "training_args.yaml"
TRAINING_RESULTS_FILE = "eval_results.json"
HISTORY_FILE = "training_history.json"
EVALUATION_RESULTS_FILE = "evaluation_results.json"
CARD_FILE = "README.md"
PLOTS_FOLDER = "plots"
CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-"  # a checkpoint being written; renamed to its final name when complete
TRAINER_STATE = "trainer_state.json"
BUFFERS_FILE = "training_buffers.safetensors"
LOGS_FOLDER = "runs"
TRACKER_PROJECT = "hf_ssl"  # the project name trackers (wandb, mlflow, TensorBoard's sub-folder) log the run under

# What a pushed run holds: safetensors weights, config, processor, the remote-code files that let
# trust_remote_code load it without hf_ssl, the card and its plots, the recipe, the training curves and results.
PUBLISHED_FILES = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "*.py",
    CARD_FILE,
    f"{PLOTS_FOLDER}/*.png",
    RECIPE_FILE,
    HISTORY_FILE,
    TRAINING_RESULTS_FILE,
    EVALUATION_RESULTS_FILE,
]
# Training state is not part of the model: checkpoints (optimizer, memory bank) and logs stay local.
PRIVATE_FILES = [f"{CHECKPOINT_PREFIX}*/**", f"{TEMPORARY_PREFIX}*/**", f"{LOGS_FOLDER}/**", BUFFERS_FILE]


def checkpoint_dir(output_dir: pathlib.Path, step: int, temporary: bool = False) -> pathlib.Path:
    """`output_dir/checkpoint-<step>`, or the temporary folder it is written into."""
    return output_dir / f"{TEMPORARY_PREFIX if temporary else ''}{CHECKPOINT_PREFIX}{step}"


def checkpoints(output_dir: pathlib.Path) -> list[pathlib.Path]:
    """The complete checkpoints in `output_dir`, oldest (lowest step) first."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


# The remote-code files save_pretrained copies next to the weights: hf_ssl's own model modules.
REMOTE_CODE_FILES = frozenset(p.name for p in (pathlib.Path(__file__).parent / "models").glob("*.py"))
# Every file or folder a training run, `hf-ssl evaluate` or `hf-ssl card` writes into output_dir (globs).
RUN_ARTEFACTS = [
    *(p for p in PUBLISHED_FILES if p != "*.py"),
    *sorted(REMOTE_CODE_FILES),
    PLOTS_FOLDER,
    LOGS_FOLDER,
    f"{CHECKPOINT_PREFIX}*",
    f"{TEMPORARY_PREFIX}*",
]
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


def run_artefacts(output_dir: pathlib.Path) -> list[pathlib.Path]:
    """What a previous run left in `output_dir` (files and folders), sorted; [] for a missing or foreign folder."""
    return sorted({p for pattern in RUN_ARTEFACTS for p in output_dir.glob(pattern)})


def weights_fingerprint(folder: pathlib.Path) -> str | None:
    """sha256 of the model weights in `folder` (model.safetensors, or its shards in index order), None if there are
    none: results carry it so that a card uses only the scores measured on these very weights."""
    if (folder / WEIGHTS_FILE).is_file():
        return file_sha256(folder / WEIGHTS_FILE)
    if not (folder / WEIGHTS_INDEX_FILE).is_file():
        return None
    shards = sorted(set(json.loads((folder / WEIGHTS_INDEX_FILE).read_text())["weight_map"].values()))
    return hashlib.sha256("".join(file_sha256(folder / name) for name in shards).encode()).hexdigest()


def file_sha256(path: pathlib.Path) -> str:
    """The sha256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
