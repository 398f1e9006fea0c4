"""Checks of a run's and an evaluation's inputs before any work (loading weights aside): where the dataset and the
checkpoint are, the splits, the columns, the size, image or video, the checkpoint's method, the Hub token.

Each failure is one `ValueError` naming the field, folder, split or column and what to set instead. The checks
read metadata only (split names, `features`, configs), never the data, so a mistake is found in seconds rather
than after a featurising pass or inside a DataLoader worker.
"""

import pathlib
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import datasets
from huggingface_hub import constants, get_token, is_offline_mode
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .data.pairs import KIND_COLUMN, check_pair_columns
from .data.stream import IN_MEMORY_PREFIX, load_stream, split_names

if TYPE_CHECKING:  # the argument classes import the modules that call these checks
    from .training.arguments import DataArguments, ModelArguments, SSLTrainingArguments

# How long a Hub that cannot be reached may delay the error (huggingface_hub's retries take ~25 s).
HUB_PROBE_TIMEOUT_S = 3.0


def _hub_unreachable() -> str | None:
    """Why the Hub cannot be used now (offline mode, or no connection to its endpoint), or None when it can."""
    if is_offline_mode():
        return "the Hub is offline (HF_HUB_OFFLINE is set)"
    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached: {err}"
    return None


def check_location(name: str, field: str) -> None:
    """`name` (the value of `field`) is an existing local path, or a Hub id while the Hub can be reached."""
    if pathlib.Path(name).exists() or name.startswith(IN_MEMORY_PREFIX):
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(f"{field}={name!r}: no such local folder or file, and not a Hub id (namespace/name)") from None
    reason = _hub_unreachable()
    if reason is not None:
        raise ValueError(f"{field}={name!r}: no local folder {name} and {reason}")


def check_splits(name: str, config_name: str | None, splits: dict[str, str]) -> None:
    """Dataset `name` has every split of `splits` ({field: split name})."""
    try:
        available = split_names(name, config_name)
    except (FileNotFoundError, ConnectionError) as err:
        raise ValueError(f"dataset {name!r} cannot be read: {' '.join(str(err).split())}") from None
    for field, split in splits.items():
        if split not in available:
            raise ValueError(f"dataset {name!r} has no split {split!r} ({field}); its splits are {available}")


def _typed_columns(features: datasets.Features, feature_type: type) -> list[str]:
    return [column for column, feature in features.items() if isinstance(feature, feature_type)]


def check_columns(
    dataset: datasets.IterableDataset,
    name: str,
    split: str,
    *,
    image_column: str,
    video_column: str,
    label_column: str | None = None,
) -> bool:
    """The split has the column the model reads (`video_column` when it is a Video column, else `image_column`)
    and `label_column` unless None. Returns whether it is a video dataset. Datasets whose features are unknown
    before reading (some generators) pass: the first batch names a missing column then."""
    features = dataset.features
    if features is None:
        return False
    video = isinstance(features.get(video_column), datasets.Video)
    where = f"dataset {name!r} split {split!r}"
    if not video and image_column not in features:
        images, videos = _typed_columns(features, datasets.Image), _typed_columns(features, datasets.Video)
        hint = (
            f"set image_column to {images[0]!r}"
            if images
            else f"set video_column to {videos[0]!r}"
            if videos
            else "set image_column (or video_column) to the column holding the images (or videos)"
        )
        raise ValueError(
            f"image_column={image_column!r}: {where} has no such column; its columns are {list(features)}: {hint}"
        )
    if label_column is not None and label_column not in features:
        raise ValueError(
            f"label_column={label_column!r}: {where} has no such column; its columns are {list(features)}: set "
            "label_column to the one holding the classes (null for none)"
        )
    return video


def check_dataset(
    name: str,
    config_name: str | None,
    splits: dict[str, str],
    *,
    image_column: str,
    video_column: str,
    label_column: str | None = None,
    field: str = "dataset_name",
) -> bool:
    """Location, splits and columns of one dataset (see the checks above); returns whether it holds videos."""
    check_location(name, field)
    check_splits(name, config_name, splits)
    videos = {
        check_columns(
            load_stream(name, split, config_name),
            name,
            split,
            image_column=image_column,
            video_column=video_column,
            label_column=label_column,
        )
        for split in dict.fromkeys(splits.values())
    }
    return True in videos


def check_batch_size(num_examples: int, batch_size: int, processes: int, workers: int, name: str, split: str) -> None:
    """Every process x DataLoader worker gets at least one full batch of training examples per epoch."""
    parts = processes * max(workers, 1)
    if num_examples // parts < batch_size:
        raise ValueError(
            f"per_device_train_batch_size={batch_size} is larger than the {num_examples // parts} example(s) each of "
            f"{processes} process(es) x {max(workers, 1)} dataloader worker(s) gets from the {num_examples} of dataset "
            f"{name!r} split {split!r}: lower the batch size or dataloader_num_workers"
        )


def check_modality(model, video: bool, name: str, field: str = "dataset_name") -> None:
    """The model's backbone (a method's, or a plain transformers model) takes the dataset's kind of input (images
    or video clips), as its `input_modalities` say."""
    backbone = getattr(model.base_model, "backbone", model.base_model)
    modalities = getattr(backbone, "input_modalities", ())
    modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
    kind = "video" if video else "image"
    if modalities and kind not in modalities:
        backbone = backbone.config.model_type
        raise ValueError(
            f"{field}={name!r} holds {kind}s but the model's {backbone!r} backbone takes {' / '.join(modalities)} "
            f"input: evaluate or train it on a {' / '.join(modalities)} dataset, or use a backbone for {kind}s"
        )


def check_checkpoint_method(model_name_or_path: str, method: str, method_model_type: str) -> None:
    """A checkpoint continued for training is of the method asked for."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(model_name_or_path).model_type
    if model_type != method_model_type:
        raise ValueError(
            f"model_name_or_path={model_name_or_path!r} is a {model_type!r} checkpoint but method={method!r}: set "
            f"method to {model_type!r} to continue it, or drop model_name_or_path to train {method!r} from scratch"
        )


def check_hub_token(field: str = "push_to_hub") -> None:
    """A Hugging Face token is configured where huggingface_hub looks for one."""
    if get_token() is None:
        raise ValueError(f"{field} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")


def check_run(model_args: "ModelArguments", data_args: "DataArguments", args: "SSLTrainingArguments") -> None:
    """What a training recipe reads, checked before loading any data: the Hub token when pushing, the checkpoint
    to continue and its method, the training split and column, and the kNN evaluation's splits and columns."""
    from .models import PRETRAINING_CLASSES

    if args.push_to_hub:
        check_hub_token()
    if model_args.method not in PRETRAINING_CLASSES:
        raise ValueError(f"method={model_args.method!r} is not known; use one of {sorted(PRETRAINING_CLASSES)}")
    if model_args.model_name_or_path:
        check_location(model_args.model_name_or_path, "model_name_or_path")
        method_type = PRETRAINING_CLASSES[model_args.method].config_class.model_type
        check_checkpoint_method(model_args.model_name_or_path, model_args.method, method_type)
    if model_args.backbone_name_or_path:
        check_location(model_args.backbone_name_or_path, "backbone_name_or_path")
    columns = {"image_column": data_args.image_column, "video_column": data_args.video_column}
    if data_args.view_columns or data_args.view_id_columns or data_args.pair_kinds:  # a pair dataset's columns
        check_location(data_args.dataset_name, "dataset_name")
        check_splits(data_args.dataset_name, data_args.dataset_config_name, {"train_split": data_args.train_split})
        pair_columns = {
            "view_columns": data_args.view_columns or [],
            "view_id_columns": data_args.view_id_columns or [],
            "pair_kinds": [KIND_COLUMN] if data_args.pair_kinds else [],
        }
        train_data = load_stream(data_args.dataset_name, data_args.train_split, data_args.dataset_config_name)
        where = f"dataset {data_args.dataset_name!r} split {data_args.train_split!r}"
        check_pair_columns(train_data.features, pair_columns, where)
    train_columns = dict(columns, image_column=(data_args.view_columns or [data_args.image_column])[0])
    requires_labels = PRETRAINING_CLASSES[model_args.method].requires_labels
    if requires_labels and data_args.label_column is None:
        raise ValueError(
            f"method={model_args.method!r} trains on labels: set label_column to the dataset's class column"
        )
    train_labels = data_args.label_column if requires_labels else None  # a supervised method reads it in training
    check_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        {"train_split": data_args.train_split},
        label_column=train_labels,
        **train_columns,
    )
    if data_args.label_column is not None:  # the kNN evaluation's data
        check_dataset(
            data_args.eval_dataset_name,
            data_args.dataset_config_name,
            {"eval_bank_split": data_args.eval_bank_split, "eval_split": data_args.eval_split},
            label_column=data_args.label_column,
            field="eval_dataset_name",
            **columns,
        )
