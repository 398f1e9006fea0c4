"""Run by tests/test_multiprocess.py (as `-m tests.multiprocess_methods`) under 2 real processes (gloo): every
method, image and video, trains a few steps through the real loop and writes, per process, a digest of every
parameter and buffer and the state of the global RNG once the run is built. Not a test module itself (no `test_`
prefix)."""

import json
import os
import sys
from pathlib import Path

import torch
import yaml

from hf_ssl.training import parse_args
from hf_ssl.training.loop import Trainer

from .conftest import TINY_BACKBONE, TINY_R3D

HEADS = {"projection_hidden_dim": 16, "projection_dim": 8}
# each method with the settings that once broke several processes: frozen SwAV prototypes (with multi-crop's small
# crops on images, DATA below), a task at weight 0 (the README's RotNet)
METHODS = {
    "instance_recognition": {"embedding_dim": 8, "num_negatives": 32},
    "deep_cluster": {"num_clusters": 4, "pca_dim": 4, "kmeans_iterations": 2},
    "local_aggregation": {
        "embedding_dim": 8,
        "num_negatives": 0,
        "instance_recognition_epochs": 0,
        "num_clusters": 4,
        "num_clusterings": 2,
        "background_neighbors": 16,
        "kmeans_iterations": 2,
    },
    "moco": {**HEADS, "queue_size": 32},
    "simclr": HEADS,
    "byol": {**HEADS, "prediction_hidden_dim": 16},
    "simsiam": {**HEADS, "projection_layers": 2, "prediction_hidden_dim": 4},
    "swav": {**HEADS, "num_prototypes": 6, "freeze_prototypes_steps": 2},
    "jigsaw": {"num_permutations": 6, "tile_feature_dim": 8, "classifier_hidden_dim": 16},
    "counting": {"counting_dim": 8},
    "multi_task": {"head_hidden_dim": 16, "task_weights": {"rotation": 1}},
    "supervised": {"num_labels": 10},
    "transitive_invariance": {"embedding_dim": 8, "num_negatives": 2},
}
VIDEO_METHODS = ("moco", "simclr", "byol", "swav")
DATA = {"swav": {"num_small_crops": 2, "small_crop_size": 8}}  # image runs only: video refuses multi-crop


def pair_dataset(images: Path, out: Path) -> Path:
    """Transitive Invariance's data: pairs of the sample's images (image i with image i + 1 of a shard), 2 shards."""
    import datasets
    import pyarrow.parquet as pq

    features = datasets.Features(
        image_a=datasets.Image(), image_b=datasets.Image(), patch_a=datasets.Value("int64"),
        patch_b=datasets.Value("int64"), kind=datasets.Value("string"),
    )  # fmt: skip
    (out / "train").mkdir(parents=True, exist_ok=True)
    for shard, source in enumerate(sorted((images / "data").glob("train-*.parquet"))[:2]):
        rows = pq.read_table(source).slice(0, 33).to_pydict()  # images as {"bytes", "path"}, never decoded here
        ids = [100 * shard + i for i in range(33)]
        pairs = {
            "image_a": rows["image"][:-1], "image_b": rows["image"][1:], "patch_a": ids[:-1], "patch_b": ids[1:],
            "kind": ["intra"] * 32,
        }  # fmt: skip
        datasets.Dataset.from_dict(pairs, features=features).to_parquet(
            out / "train" / f"train-{shard:05d}-of-00002.parquet"
        )
    return out


def recipe(method: str, video: bool, data: Path, out: Path) -> dict:
    pretext = method in ("jigsaw", "counting", "multi_task")
    if method == "transitive_invariance":  # a pair dataset: a pair's two images are its views
        pairs = {"view_columns": ["image_a", "image_b"], "view_id_columns": ["patch_a", "patch_b"]}
        return {**recipe("simclr", video, data, out), "method": method, "method_config": METHODS[method], **pairs}
    if method == "supervised":  # trains on the classes
        return {
            **recipe("simclr", video, data, out),
            "method": method,
            "method_config": METHODS[method],
            "label_column": "label",
        }
    return {
        "method": method,
        "backbone_config": TINY_R3D if video else TINY_BACKBONE,
        "method_config": METHODS[method],
        "dataset_name": str(data),
        "label_column": None,  # no kNN at the end: the digests are the result
        "image_size": 32 if pretext else 16,
        "num_frames": 2,
        "shuffle_buffer": 16,
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 16,
        "max_steps": 3,
        "save_steps": 3,
        "learning_rate": 0.05,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        **({} if video else DATA.get(method, {})),
    }


def digest(model: torch.nn.Module) -> dict[str, list[float]]:
    tensors = {f"parameter {n}": p for n, p in model.named_parameters()}
    tensors |= {f"buffer {n}": b for n, b in model.named_buffers()}
    return {name: [t.double().sum().item(), t.double().square().sum().item()] for name, t in tensors.items()}


def main(images: str, videos: str, out: str) -> None:
    results = {}
    runs = [(m, False) for m in METHODS] + [(m, True) for m in VIDEO_METHODS]
    for method, video in runs:
        name = f"{method}-video" if video else method
        path = Path(out) / name
        path.mkdir(parents=True, exist_ok=True)
        # one file per process: both write at once
        recipe_file = path / f"recipe-{os.environ['RANK']}.yaml"
        data = Path(videos if video else images)
        if method == "transitive_invariance":  # each process writes the same pairs to its own folder
            data = pair_dataset(data, path / f"pairs-{os.environ['RANK']}")
        recipe_file.write_text(yaml.safe_dump(recipe(method, video, data, path / "run")))
        trainer = Trainer(*parse_args([str(recipe_file)]))
        rng = torch.get_rng_state().double().sum().item() + torch.rand(()).item()
        trainer.train()
        results[name] = {"rng": rng, "digest": digest(trainer.run.unwrapped_model)}
        trainer.run.accelerator.print(f"{name}: done")
    rank = trainer.run.accelerator.process_index
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
