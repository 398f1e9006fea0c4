"""Building a run from its recipe: the accelerator, the training stream, the model, its optimizer and schedule.

`build_run` does everything that happens before the first step and can fail on a bad recipe, so a wrong field
stops the run at start with one line naming it.
"""

import dataclasses
import datetime
import math
import os
import pathlib
from dataclasses import dataclass

import datasets
import psutil
import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.tracking import get_available_trackers
from accelerate.utils import ProjectConfiguration, parse_flag_from_env, set_seed
from transformers import AutoModelForPreTraining, BaseImageProcessor

from ..data import (
    BatchStream,
    ClipViewTransform,
    MultiViewTransform,
    ViewAugmentation,
    is_video_dataset,
    load_stream,
    make_image_processor,
)
from ..data.pairs import select_pair_kinds
from ..data.stream import steps_per_epoch, with_stable_ids
from ..models import PRETRAINING_CLASSES
from ..preflight import check_batch_size, check_modality, check_run
from ..run_layout import LOGS_FOLDER
from .arguments import DataArguments, ModelArguments, SSLTrainingArguments
from .fast_path import resolve_channels_last
from .optim import create_optimizer, create_scheduler
from .pretrained import load_backbone_weights, pretrained_backbone_config


def build_model(model_args: ModelArguments, num_examples: int, steps_per_epoch: int) -> torch.nn.Module:
    """The method's ForPreTraining model, from scratch, from `model_name_or_path` or with the backbone weights of
    `backbone_name_or_path` (`pretrained.load_backbone_weights`); epoch-valued hyper-parameters
    are converted to steps at `steps_per_epoch`. The method is known (`preflight.check_run`)."""
    model_class = PRETRAINING_CLASSES[model_args.method]
    config_class = model_class.config_class
    known = set(config_class.__dataclass_fields__)
    if model_class.requires_labels:  # transformers' `num_labels` (a property setting id2label): the classes it predicts
        known.add("num_labels")
    method_config = model_args.method_config_in_steps(known, steps_per_epoch)
    if model_args.model_name_or_path:
        return AutoModelForPreTraining.from_pretrained(
            model_args.model_name_or_path, num_examples=num_examples, **method_config
        )
    for key in method_config:
        if key not in known or key in ("backbone_config", "num_examples"):
            raise ValueError(f"method_config.{key} is not a hyper-parameter of {config_class.__name__}")
    backbone_config = model_args.backbone_config or None
    if model_args.backbone_name_or_path and backbone_config is None:
        backbone_config = pretrained_backbone_config(model_args.backbone_name_or_path)
    model = model_class(config_class(backbone_config=backbone_config, num_examples=num_examples, **method_config))
    if model_args.backbone_name_or_path:
        load_backbone_weights(model.base_model.backbone, model_args.backbone_name_or_path)
        model._after_init()  # momentum encoders start as copies of the pretrained backbone
    return model


def set_cpu_threads(args: SSLTrainingArguments, accelerator: Accelerator) -> None:
    """Give a CPU run every core by default, and say how many threads each process uses.

    Before accelerate 1.16, `accelerate launch --cpu` without `--num_processes` started the script with
    OMP_NUM_THREADS=1 (it raised the count only when num_processes >= 1), so a training step used one core of
    several; 1.16 gives every physical core. A thread count the user chose (`cpu_threads`, or OMP_NUM_THREADS
    other than accelerate's old 1) is kept.
    """
    if accelerator.device.type != "cpu":
        return
    threads = args.cpu_threads
    launched_by_accelerate = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    if not threads and os.environ.get("OMP_NUM_THREADS") == "1" and launched_by_accelerate:
        cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
        local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)), 1)
        threads = max(cores // local_processes, 1)
    if threads:
        torch.set_num_threads(threads)
    accelerator.print(f"using {torch.get_num_threads()} CPU threads per process")


def make_accelerator(args: SSLTrainingArguments) -> Accelerator:
    """The run's Accelerator: the loop feeds each process its own stream, methods keep their buffers equal.

    Precision the recipe leaves unset (`mixed_precision: null`) is Accelerate's: `accelerate launch
    --mixed_precision` or `accelerate config`. FSDP and DeepSpeed are refused: the methods copy and compare whole
    parameters and buffers (momentum encoders, memory banks, the processes' agreement check), and Accelerate's
    FSDP does not run on CPU processes. A tracker named in `report_to` whose package is missing is an error
    (Accelerate would drop it silently).
    """
    for flag, backend in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if parse_flag_from_env(flag):
            raise ValueError(
                f"{backend} is not supported: hf_ssl trains with DDP (`accelerate launch --multi_gpu`) or on one "
                "process; launch without --use_fsdp / --use_deepspeed"
            )
    installed = {str(tracker) for tracker in get_available_trackers()}
    missing = [name for name in args.report_to if name != "all" and name not in installed]
    if missing:
        raise ValueError(f"report_to {missing[0]!r}: its package is not installed (pip install {missing[0]})")
    return Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to or None,
        # trackers that write files (TensorBoard) log into output_dir/runs, as transformers' Trainer does
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=str(pathlib.Path(args.output_dir) / LOGS_FOLDER)
        ),
        # The loop feeds each process its own stream; Accelerate must not re-shard or wrap the loader.
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
        # Memory banks are kept identical by the method itself; re-broadcasting them every step would cost a
        # bank-sized copy per step.
        kwargs_handlers=[
            DistributedDataParallelKwargs(broadcast_buffers=False),
            # k-means and the kNN run on the main process alone (it alone holds the features): the others wait
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=args.ddp_timeout)),
        ],
    )


def make_view_transform(
    data_args: DataArguments, args: SSLTrainingArguments, num_views: int, video: bool, labels: bool = False
) -> ClipViewTransform | MultiViewTransform:
    """The training views of one example: `num_views` augmented crops of an image, or clips of a video; with
    `labels`, batches carry the examples' `label_column` (a supervised method trains on it)."""
    augmentation = ViewAugmentation(**data_args.augmentation_kwargs())
    label_column = data_args.label_column if labels else None
    if video:
        if data_args.augment_on_device:
            raise ValueError("augment_on_device is not supported for video datasets: set it to false")
        if data_args.num_small_crops:
            raise ValueError("num_small_crops (multi-crop) is not supported for video datasets: set it to 0")
        if data_args.view_columns:
            raise ValueError("view_columns (views from image columns) is not supported for video datasets: set null")
        # rho clips of each video are its positives (Feichtenhofer et al., 2021)
        return ClipViewTransform(
            augmentation,
            num_views=num_views,
            video_column=data_args.video_column,
            label_column=label_column,
            num_frames=data_args.num_frames,
            frame_stride=data_args.frame_stride,
            max_distance=data_args.max_clip_distance,
            num_clips=data_args.num_clips,
        )
    return MultiViewTransform(
        augmentation,
        num_views=num_views,
        image_column=data_args.image_column,
        label_column=label_column,
        augment_on_device=data_args.augment_on_device,
        num_small_crops=data_args.num_small_crops,
        # multi-crop's small crops: the global views' augmentation at their own size and scale
        small_augmentation=dataclasses.replace(
            augmentation, size=data_args.small_crop_size, scale=tuple(data_args.small_crop_scale)
        ),
        view_columns=data_args.view_columns,  # a pair dataset: view v from column v
        view_id_columns=data_args.view_id_columns,
    )


@dataclass
class Run:
    """Everything a training run is made of, built and (model, optimizer) prepared by Accelerate."""

    model_args: ModelArguments
    data_args: DataArguments
    args: SSLTrainingArguments
    accelerator: Accelerator
    train_data: datasets.IterableDataset  # with stable example ids
    num_examples: int
    video: bool
    steps_per_epoch: int
    total_steps: int
    model: torch.nn.Module  # as prepared (DDP-wrapped on several processes)
    image_processor: BaseImageProcessor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    transform: ClipViewTransform | MultiViewTransform
    stream: BatchStream

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The method's ForPreTraining model, without DDP or other wrappers."""
        return self.accelerator.unwrap_model(self.model)


def build_run(model_args: ModelArguments, data_args: DataArguments, args: SSLTrainingArguments) -> Run:
    """Accelerator, data, model, optimizer, schedule, transforms and stream of one recipe.

    Seeds once for the model's initialisation (the same on every process), then seed + process index: from here
    on each process draws its own randomness (NCE noise rows, jigsaw permutations, patch offsets, dropout).
    Accelerate's checkpoints hold each process's RNG state, so a resume replays the same draws.
    """
    acc = make_accelerator(args)
    args.mixed_precision = acc.mixed_precision  # the precision that runs, into the saved recipe and the card
    set_seed(args.seed)  # the same on every process: model initialisation, queues, ...
    set_cpu_threads(args, acc)
    # the main process first: `datasets` writes its cache (dataset scripts, metadata) on the first load
    with acc.main_process_first():
        check_run(model_args, data_args, args)  # metadata only: a bad recipe fails here, before any data is read
        train_data = load_stream(data_args.dataset_name, data_args.train_split, data_args.dataset_config_name)
        if data_args.pair_kinds:
            train_data = select_pair_kinds(train_data, data_args.pair_kinds)
        train_data, num_examples = with_stable_ids(train_data)
    check_batch_size(
        num_examples,
        args.per_device_train_batch_size,
        acc.num_processes,
        args.dataloader_num_workers,
        data_args.dataset_name,
        data_args.train_split,
    )
    per_epoch = steps_per_epoch(
        num_examples,
        args.per_device_train_batch_size * args.gradient_accumulation_steps,
        acc.num_processes,
        args.dataloader_num_workers,
    )
    total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    model = build_model(model_args, num_examples, per_epoch)
    if data_args.num_small_crops and not model.accepts_small_crops:
        raise ValueError(
            f"num_small_crops={data_args.num_small_crops}: multi-crop is SwAV's, method={model_args.method!r} "
            "does not take small crops; set num_small_crops to 0"
        )
    if args.sync_batchnorm and acc.num_processes > 1:
        if acc.device.type == "cpu":  # torch's SyncBatchNorm refuses CPU tensors, deep inside the first forward
            raise ValueError("sync_batchnorm needs accelerators: torch's SyncBatchNorm does not run on CPU")
        # BatchNorm statistics over the global batch (the contrastive methods' recipes use it on many GPUs)
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, total_steps, per_epoch)
    video = is_video_dataset(train_data, data_args.video_column)
    check_modality(model, video, data_args.dataset_name)
    transform = make_view_transform(data_args, args, model.num_views, video, labels=model.requires_labels)
    # the 2-D convolutions' faster layout (oneDNN, cuDNN) where measured faster; inputs follow. What ran is saved.
    backbone = model.config.backbone_config.model_type
    args.channels_last = str(resolve_channels_last(args.channels_last, backbone, video)).lower()
    if args.channels_last == "true":
        model = model.to(memory_format=torch.channels_last)
    stream = BatchStream(
        train_data,
        args.per_device_train_batch_size,
        transform,
        rank=acc.process_index,
        world_size=acc.num_processes,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        shuffle_buffer=data_args.shuffle_buffer,
        # epochs of every worker and process end on the same optimizer step (re-clustering happens between)
        batches_per_epoch=max(1, per_epoch * args.gradient_accumulation_steps // max(args.dataloader_num_workers, 1)),
    )
    model, optimizer = acc.prepare(model, optimizer)
    set_seed(args.seed, device_specific=True)
    return Run(
        model_args,
        data_args,
        args,
        acc,
        train_data,
        num_examples,
        video,
        per_epoch,
        total_steps,
        model,
        make_image_processor(data_args.image_size),
        optimizer,
        scheduler,
        transform,
        stream,
    )
