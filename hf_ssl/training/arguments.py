"""Training arguments: three dataclasses parsed by `HfArgumentParser` from a YAML recipe plus `--field value`
command-line overrides. Every value is checked when parsed; errors name the field.

A recipe may build on base recipes (`load_recipe`): `base: base/resnet18_cifar10.yaml` (or a list of them) at its
top level, resolved relative to the including file, recursively. The including file's keys override the base's;
mappings (`backbone_config`, `method_config`) are merged key by key, except that a mapping naming another
`model_type` than the base's replaces it whole (another architecture's fields would not apply); every other value
(lists included) is replaced whole. Bases live under training_args/base/, where the `training_args/*.yaml` of runnable recipes does not reach.
A key set twice in one mapping of a file is an error (YAML loaders silently keep the last).

Step-valued settings have an epoch-valued form, converted with the run's optimizer steps per epoch (which depend
on the data, the batch, the processes and the workers, so a step count computed by hand means another epoch once
any of them changes): `save_epochs` for `save_steps`, and in `method_config` `<name>_epochs` for a method's
`<name>_step` / `<name>_steps` hyper-parameter (SwAV's `queue_start_epochs`, `freeze_prototypes_epochs`). Giving
both forms of one setting is an error.
"""

import dataclasses
import difflib
import json
import pathlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import yaml
from transformers import HfArgumentParser, PreTrainedConfig

from ..data.pairs import check_pair_kinds
from ..evaluation.results import KNN_K, KNN_TEMPERATURE
from ..models.configuration_ssl import BACKBONE_CONFIG_CLASSES
from ..models.registry import METHODS
from .fast_path import CHANNELS_LAST_CHOICES

# Backbone config keys hf_ssl reads besides the config class's own fields (see `modeling_ssl.build_backbone`).
BACKBONE_EXTRA_FIELDS = {"resnet": ("cifar_stem", "zero_init_residual")}


def _json_field(value: dict | str | None, name: str) -> dict:
    """A dict given in YAML, or as a JSON string on the command line."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} must be a mapping (YAML) or a JSON object string, got {value!r}: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {type(value).__name__}")
    return value


def check_backbone_config(config: dict) -> None:
    """Every key of a `backbone_config` mapping is a field of its `model_type`'s config class (transformers
    configs keep unknown keys as attributes nobody reads: `depthz: [1, 1]` would train the default depth)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    config_class = BACKBONE_CONFIG_CLASSES.get(model_type)
    if config_class is None and model_type in CONFIG_MAPPING:  # the lazy mapping's .get() finds nothing
        config_class = CONFIG_MAPPING[model_type]
    if config_class is None:  # a missing or unknown model_type is named when the config is built
        return
    known = {
        *config_class.__dataclass_fields__,
        *config_class.attribute_map,
        *BACKBONE_EXTRA_FIELDS.get(model_type, ()),
    }
    for key in config:
        if key not in known:
            own = sorted(known - set(PreTrainedConfig.__dataclass_fields__) - {"model_type"})
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"backbone_config.{key} is not a field of {config_class.__name__} ({model_type}): {hint}its fields are "
                f"{own}"
            )


@dataclass
class ModelArguments:
    """Which method, on which backbone, with which hyper-parameters."""

    method: str = field(
        default="instance_recognition", metadata={"help": f"Self-supervised method: one of {', '.join(METHODS)}."}
    )
    backbone_config: dict | str | None = field(
        default=None,
        metadata={"help": "Backbone config: {model_type: resnet|alexnet|vgg|c3d|r3d|<transformers type>, ...}."},
    )
    method_config: dict | str | None = field(
        default=None, metadata={"help": "Method hyper-parameters (fields of the method's config class)."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue this hf_ssl checkpoint of the same method (local dir or Hub id), heads and all."},
    )
    backbone_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start the backbone from these weights: any transformers vision / video model or an hf_ssl "
            "checkpoint of any method (its backbone only); its architecture when backbone_config is not given."
        },
    )

    def __post_init__(self):
        self.backbone_config = _json_field(self.backbone_config, "backbone_config")
        self.method_config = _json_field(self.method_config, "method_config")
        check_backbone_config(self.backbone_config)
        if self.model_name_or_path and self.backbone_name_or_path:
            raise ValueError(
                "model_name_or_path (continue a checkpoint of this method) and backbone_name_or_path (start from "
                "another model's backbone) exclude each other: give one"
            )
        for key in self.method_config:
            stem = key.removesuffix("_epochs")
            for steps_key in (f"{stem}_step", f"{stem}_steps"):
                if key != stem and steps_key in self.method_config:
                    raise ValueError(f"method_config sets both {key} and {steps_key}: give one of them")

    def method_config_in_steps(self, config_fields: Collection[str], steps_per_epoch: int) -> dict:
        """`method_config` with each `<name>_epochs` converted to the config's step-valued `<name>_step(s)` at
        `steps_per_epoch` optimizer steps per epoch (rounded). Keys the config has under their own name (Local
        Aggregation's `instance_recognition_epochs`) and keys it has no step form of pass unchanged."""
        converted = {}
        for key, value in self.method_config.items():
            stem = key.removesuffix("_epochs")
            steps_key = next((k for k in (f"{stem}_step", f"{stem}_steps") if k in config_fields), None)
            if key == stem or key in config_fields or steps_key is None:
                converted[key] = value
            elif isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"method_config.{key} must be a number of epochs >= 0, got {value!r}")
            else:
                converted[steps_key] = round(value * steps_per_epoch)
        return converted


@dataclass
class DataArguments:
    """The streamed training data, the labelled data kNN evaluation reads, and the augmentation."""

    dataset_name: str = field(default=None, metadata={"help": "Hub id or local path for load_dataset(streaming)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    train_split: str = field(default="train", metadata={"help": "Split to pre-train on."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images (datasets.Image)."})
    view_columns: list[str] | None = field(
        default=None, metadata={"help": "One image column per view (a pair dataset: [image_a, image_b]); null: none."}
    )
    view_id_columns: list[str] | None = field(
        default=None, metadata={"help": "An id column per view (a pair dataset's [patch_a, patch_b]); null: none."}
    )
    pair_kinds: list[str] | None = field(
        default=None, metadata={"help": "Pair dataset: train on rows whose `kind` is one of these; null: all rows."}
    )
    label_column: str | None = field(default="label", metadata={"help": "Labels for evaluation; null if none."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "kNN data; defaults to dataset_name."})
    eval_bank_split: str = field(default="train", metadata={"help": "Split whose features form the kNN bank."})
    eval_split: str = field(default="test", metadata={"help": "Split whose images are classified by kNN."})
    max_eval_bank_samples: int | None = field(default=None, metadata={"help": "Cap on kNN bank size."})
    image_size: int = field(
        default=224,
        metadata={
            "help": "Side of the eval preprocessing, in pixels, and of the training views unless train_crop_size."
        },
    )
    train_crop_size: int | None = field(
        default=None,
        metadata={
            "help": "Side of the training views (the random resized crops), in pixels; null: image_size. Training "
            "below the test size is cheaper and can score higher (Touvron et al. 2019, FixRes)."
        },
    )
    crop_min_scale: float = field(default=0.2, metadata={"help": "Random-resized-crop area fraction, lower bound."})
    crop_max_scale: float = field(
        default=1.0, metadata={"help": "Random-resized-crop area fraction, upper bound (SlowFast's video SSL: 0.766)."}
    )
    color_jitter: float = field(default=0.4, metadata={"help": "Brightness, contrast and saturation jitter."})
    color_jitter_hue: float | None = field(
        default=None, metadata={"help": "Hue jitter in [0, 0.5]; null: min(0.5, color_jitter / 4)."}
    )
    color_jitter_p: float = field(
        default=0.8, metadata={"help": "Probability of the colour jitter (SimCLR / MoCo v2: 0.8; NPID: 1, always)."}
    )
    grayscale_p: float = field(default=0.2, metadata={"help": "Probability of converting a view to grayscale."})
    blur_p: float = field(default=0.0, metadata={"help": "Probability of a Gaussian blur of a view."})
    hflip_p: float = field(default=0.5, metadata={"help": "Horizontal flip probability (NPID's CIFAR code: 0)."})
    shuffle_buffer: int = field(
        default=10_000, metadata={"help": "Examples in the streaming shuffle buffer (0: no shuffling)."}
    )
    augment_on_device: bool = field(
        default=False, metadata={"help": "Workers decode + crop; colour/blur/flip run batched on the accelerator."}
    )
    num_small_crops: int = field(
        default=0, metadata={"help": "Multi-crop (SwAV): small crops per image besides the global views (0: none)."}
    )
    small_crop_size: int = field(default=96, metadata={"help": "Multi-crop: side of the small crops (SwAV: 96)."})
    small_crop_scale: list[float] = field(
        default_factory=lambda: [0.05, 0.14], metadata={"help": "Multi-crop: area range of the small crops."}
    )
    video_column: str = field(default="video", metadata={"help": "A dataset with this Video column trains on clips."})
    num_frames: int = field(default=8, metadata={"help": "Video: frames per clip (T)."})
    frame_stride: int = field(default=2, metadata={"help": "Video: a clip takes every frame_stride-th frame."})
    max_clip_distance: int | None = field(
        default=None, metadata={"help": "Video: clips of one video start at most this many frames apart (null: any)."}
    )
    num_clips: int | None = field(
        default=None,
        metadata={"help": "Video: distinct clips (rho) the views come from; null: one per view, 1: views of one clip."},
    )
    eval_num_clips: int = field(default=4, metadata={"help": "Video kNN: clips per video, features averaged."})

    def __post_init__(self):
        if not self.dataset_name:
            raise ValueError("dataset_name is required (a Hub id or a local folder / parquet path)")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        if self.train_crop_size is not None and self.train_crop_size < 8:
            raise ValueError(f"train_crop_size must be >= 8 or null, got {self.train_crop_size}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if not self.crop_min_scale <= self.crop_max_scale <= 1:
            raise ValueError(
                f"crop_max_scale must be in [crop_min_scale={self.crop_min_scale}, 1], got {self.crop_max_scale}"
            )
        if self.color_jitter_hue is not None and not 0 <= self.color_jitter_hue <= 0.5:
            raise ValueError(f"color_jitter_hue must be in [0, 0.5] or null, got {self.color_jitter_hue}")
        for name in ("grayscale_p", "blur_p", "color_jitter_p", "hflip_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.num_small_crops < 0:
            raise ValueError(f"num_small_crops must be >= 0, got {self.num_small_crops}")
        if self.small_crop_size < 8:
            raise ValueError(f"small_crop_size must be >= 8, got {self.small_crop_size}")
        if len(self.small_crop_scale) != 2 or not 0 < self.small_crop_scale[0] <= self.small_crop_scale[1] <= 1:
            raise ValueError(
                f"small_crop_scale must be [min, max] with 0 < min <= max <= 1, got {self.small_crop_scale}"
            )
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {self.color_jitter}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.max_eval_bank_samples is not None and self.max_eval_bank_samples < 1:
            raise ValueError(f"max_eval_bank_samples must be >= 1 or null, got {self.max_eval_bank_samples}")
        if self.num_clips is not None and self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1 or null, got {self.num_clips}")
        for name in ("num_frames", "frame_stride", "eval_num_clips"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_clip_distance is not None and self.max_clip_distance < 0:
            raise ValueError(f"max_clip_distance must be >= 0 or null, got {self.max_clip_distance}")
        if self.pair_kinds is not None:
            check_pair_kinds(self.pair_kinds)
        self.eval_dataset_name = self.eval_dataset_name or self.dataset_name

    def augmentation_kwargs(self) -> dict:
        """The `ViewAugmentation` arguments of this data configuration (images and video clips alike)."""
        hue = min(0.5, self.color_jitter / 4) if self.color_jitter_hue is None else self.color_jitter_hue
        return {
            "size": self.train_crop_size or self.image_size,
            "scale": (self.crop_min_scale, self.crop_max_scale),
            "hflip_p": self.hflip_p,
            "jitter": (self.color_jitter,) * 3 + (hue,),
            "jitter_p": self.color_jitter_p,
            "grayscale_p": self.grayscale_p,
            "blur_p": self.blur_p,
        }


OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULERS = ("cosine", "constant", "step")
# accelerate's trackers (`accelerate.utils.LoggerType`), "all" of those installed, or "none"
REPORT_TO = ("all", "aim", "clearml", "comet_ml", "dvclive", "mlflow", "swanlab", "tensorboard", "trackio", "wandb")


@dataclass
class SSLTrainingArguments:
    """The loop: optimisation, schedule, precision, logging, checkpoints, evaluation. Field names follow
    transformers' TrainingArguments where the meaning is the same."""

    output_dir: str = field(default=None, metadata={"help": "Where checkpoints, the final model and results go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run output_dir holds (its checkpoints, model, results and card are removed at "
            "start); without it (or resume_from_checkpoint) a folder holding a run is refused."
        },
    )
    seed: int = field(default=42, metadata={"help": "Random seed (model initialisation, augmentation, shuffling)."})
    per_device_train_batch_size: int = field(default=256, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(
        default=256, metadata={"help": "Feature-extraction batch size per process."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    num_train_epochs: float = field(
        default=200.0, metadata={"help": "Passes over the training split (unless max_steps)."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs if > 0."})
    optim: str = field(default="sgd", metadata={"help": f"One of {OPTIMIZERS}."})
    learning_rate: float = field(default=0.03, metadata={"help": "Peak learning rate (after warm-up)."})
    momentum: float = field(default=0.9, metadata={"help": "SGD / LARS momentum."})
    weight_decay: float = field(
        default=1e-4, metadata={"help": "Weight decay (not on biases and normalisation weights)."}
    )
    lars_trust_coefficient: float = field(default=0.001, metadata={"help": "LARS trust coefficient (optim lars)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 (optim adamw)."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (optim adamw)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": f"One of {SCHEDULERS}."})
    lr_decay_epochs: list[float] = field(
        default_factory=list, metadata={"help": "Epochs where the 'step' schedule multiplies the lr by 0.1."}
    )
    warmup_epochs: float = field(default=0.0, metadata={"help": "Linear learning-rate warm-up, in epochs."})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm to this; null: no clipping."}
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no | fp16 | bf16. Unset: what `accelerate launch --mixed_precision` or `accelerate config` "
            "says (no when neither does)."
        },
    )
    sync_batchnorm: bool = field(
        default=False, metadata={"help": "BatchNorm statistics over all processes (torch SyncBatchNorm)."}
    )
    channels_last: str = field(
        default="auto",
        metadata={
            "help": "auto | true | false: the model in channels-last memory format (faster 2-D convolutions). auto: "
            "on for the backbones measured faster that way (ResNet, AlexNet: bench/fast_path.py), off for others "
            "(VGG, ViT) and for video; the saved training_args.yaml records what ran."
        },
    )
    dataloader_num_workers: int = field(
        default=2, metadata={"help": "DataLoader worker processes decoding and augmenting per process."}
    )
    cpu_threads: int = field(
        default=0,
        metadata={
            "help": "Threads of a CPU process (torch.set_num_threads). 0 = automatic: OMP_NUM_THREADS when set, "
            "except the default of 1 that accelerate before 1.16 set under `accelerate launch --cpu`, which "
            "becomes every core of the machine shared among its processes."
        },
    )
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Seconds a process waits in a collective before the run fails (as in transformers' "
            "TrainingArguments): the others wait this long while the main process clusters or runs the kNN."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N optimizer steps."})
    save_steps: int | None = field(
        default=None, metadata={"help": "Checkpoint every N optimizer steps (0 = never); 500 unless save_epochs."}
    )
    save_epochs: float = field(default=0.0, metadata={"help": "Checkpoint every N epochs instead of save_steps."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept in output_dir (the newest); null: all."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )
    eval_epochs: float = field(default=0.0, metadata={"help": "kNN evaluation every N epochs (0 = at the end only)."})
    knn_k: list[int] = field(
        default_factory=lambda: list(KNN_K), metadata={"help": "k of the weighted kNN evaluation (one or more)."}
    )
    knn_temperature: float = field(default=KNN_TEMPERATURE, metadata={"help": "Temperature of the weighted kNN."})
    eval_random_init: bool = field(
        default=False, metadata={"help": "Also evaluate the randomly initialised model, as a baseline."}
    )
    eval_pixel_baseline: bool = field(
        default=True,
        metadata={
            "help": "At the end, the same kNN on raw pixels (mean-centred per image), as a baseline; images only."
        },
    )
    report_to: None | str | list[str] = field(
        default="tensorboard",
        metadata={
            "help": f"Trackers to log to (Accelerate's, as in transformers' TrainingArguments): one or a list, or "
            f"comma-separated, of {', '.join(REPORT_TO[1:])}; 'all' for every one installed, 'none' for none."
        },
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    # the token comes from HF_TOKEN / `hf auth login`, never from a field: the recipe is published with the model
    push_to_hub: bool = field(default=False, metadata={"help": "Push the final model, card and results to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The repo to push to (namespace/name)."})
    hub_private_repo: bool | None = field(
        default=None, metadata={"help": "Create the Hub repo private; null: the Hub's default."}
    )
    license: str | None = field(
        default=None,
        metadata={"help": "The model's licence in its card (a Hub licence id); default: the pre-training data card's."},
    )

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if self.save_epochs and self.save_steps is not None:
            raise ValueError(f"save_steps={self.save_steps} and save_epochs={self.save_epochs} both set: give one")
        if self.save_steps is None and not self.save_epochs:
            self.save_steps = 500
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (namespace/name of the repo to push to)")
        positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        for name in positive + ("logging_steps", "ddp_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        non_negative = ("weight_decay", "warmup_epochs", "eval_epochs", "save_steps", "save_epochs")
        for name in non_negative + ("dataloader_num_workers", "cpu_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(f"num_train_epochs must be > 0 when max_steps is not set, got {self.num_train_epochs}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if isinstance(self.channels_last, bool):  # a recipe's YAML true / false
            self.channels_last = str(self.channels_last)
        self.channels_last = self.channels_last.lower()
        checks = [
            ("channels_last", self.channels_last, CHANNELS_LAST_CHOICES),
            ("optim", self.optim, OPTIMIZERS),
            ("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS),
            ("mixed_precision", self.mixed_precision, (None, "no", "fp16", "bf16")),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.report_to = _tracker_names(self.report_to)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        if not self.knn_k or min(self.knn_k) < 1:
            raise ValueError(f"knn_k must be a non-empty list of positive integers, got {self.knn_k}")
        if not self.knn_temperature > 0:
            raise ValueError(f"knn_temperature must be > 0, got {self.knn_temperature}")
        if self.lr_scheduler_type == "step" and not self.lr_decay_epochs:
            raise ValueError("lr_decay_epochs must list at least one epoch for lr_scheduler_type='step'")


def _tracker_names(report_to: None | str | list[str]) -> list[str]:
    """`report_to` as a list of tracker names (empty for "none"), each checked against REPORT_TO."""
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to or [])
    names = [name.strip() for name in names if name.strip() not in ("", "none")]
    for name in names:
        if name not in REPORT_TO:
            close = difflib.get_close_matches(name, REPORT_TO, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"report_to {name!r} is not a tracker: use {', '.join(REPORT_TO)} or none{hint}")
    return names


ARGUMENT_CLASSES = (ModelArguments, DataArguments, SSLTrainingArguments)


class RecipeError(ValueError):
    """A recipe or command line that cannot be used; the message says which field and why."""


BASE_KEY = "base"


class _DuplicateKey(Exception):
    """A key set twice in one YAML mapping."""


class _RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key set twice in one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(f"{key!r} is set twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """PyYAML's several-line message as one line: where (line, column) and what, and where its context began."""
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "syntax error"
    context = ""
    if err.context and err.problem and err.context_mark is not None:
        context = f" ({err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1})"
    return f"{where}{problem}{context}"


def _read_recipe_file(path: pathlib.Path) -> dict[str, Any]:
    """One recipe file as a mapping, its keys checked against the argument fields; errors name the file."""
    try:
        recipe = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
    except _DuplicateKey as err:
        raise RecipeError(f"recipe {path}: {err}") from None
    except yaml.MarkedYAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of field: value")
    known = {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)} | {BASE_KEY}
    for key in recipe:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"unknown field {key!r} in {path}{hint}")
    return recipe


def _merge(base: dict, override: dict) -> dict:
    """`override` over `base`: mappings of the same `model_type` merged key by key (recursively), any other value
    replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        same_type = both_mappings and value.get("model_type", merged[key].get("model_type")) == merged[key].get(
            "model_type"
        )
        merged[key] = _merge(merged[key], value) if same_type else value
    return merged


def load_recipe(path: str | pathlib.Path, _including: tuple[pathlib.Path, ...] = ()) -> dict[str, Any]:
    """The recipe at `path` with its base recipes merged in (see the module docstring). Raises RecipeError naming
    the file and key for a missing file or base, an include cycle, a duplicate key or an unknown field."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    recipe = _read_recipe_file(path)
    bases = recipe.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(base, str) for base in bases):
        raise RecipeError(f"recipe {path}: {BASE_KEY} must be a recipe path or a list of them, got {bases!r}")
    merged: dict[str, Any] = {}
    including = (*_including, path.resolve())
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise RecipeError(f"recipe {path}: {BASE_KEY} {base!r} does not exist ({base_path})")
        if base_path.resolve() in including:
            chain = " -> ".join(p.name for p in (*including, base_path))
            raise RecipeError(f"recipe {path}: {BASE_KEY} {base!r} makes a cycle ({chain})")
        merged = _merge(merged, load_recipe(base_path, including))
    return _merge(merged, recipe)


def parse_args(argv: list[str]) -> tuple[ModelArguments, DataArguments, SSLTrainingArguments]:
    """`[recipe.yaml] [--field value ...]` -> the three argument dataclasses. Raises RecipeError."""
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.allow_abbrev = False  # a misspelt --learning_rat must fail, not silently set learning_rate
    recipe: dict[str, Any] = {}
    if argv and argv[0].endswith((".yaml", ".yml")):
        recipe, argv = load_recipe(argv[0]), argv[1:]
        # dict fields travel through argparse defaults as JSON, exactly as a command-line override would
        recipe = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in recipe.items()}
        parser.set_defaults(**recipe)
    try:
        model_args, data_args, training_args, rest = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True
        )
    except ValueError as err:
        raise RecipeError(str(err)) from None
    except SystemExit:
        raise RecipeError(f"could not parse the command line {argv}") from None
    if rest:
        raise RecipeError(f"unknown command-line arguments {rest}")
    return model_args, data_args, training_args
