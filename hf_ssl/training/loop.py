"""The Accelerate training loop shared by every method.

    accelerate launch train.py training_args/<recipe>.yaml [--field value ...]

One process or many (DDP): each process streams its own part of the data, the method's forward returns the
loss (and does its own cross-process work, e.g. memory-bank updates with gathered embeddings). Checkpoints are
written to a temporary folder and renamed, so a crash never leaves a half-written one; resuming restores model,
optimizer, schedule, RNG, the method's training state (memory bank, ...) and the data position, and continues
the same loss trajectory.
"""

import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import time
from dataclasses import asdict

import psutil
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModelForPreTraining

from ..data import (
    BatchStream,
    ClipAveragedFeatures,
    ClipViewTransform,
    MultiViewTransform,
    ViewAugmentation,
    is_video_dataset,
    load_stream,
    make_eval_transform,
    make_image_processor,
)
from ..data.stream import steps_per_epoch, with_stable_ids
from ..evaluation import PixelFeatures, extract_features, weighted_knn_accuracy
from ..hub.push import push_to_hub
from ..models import PRETRAINING_CLASSES
from ..run_layout import (
    BUFFERS_FILE,
    HISTORY_FILE,
    RECIPE_FILE,
    TRAINER_STATE,
    TRAINING_RESULTS_FILE,
    checkpoint_dir,
    checkpoints,
)
from .arguments import DataArguments, ModelArguments, SSLTrainingArguments
from .epoch_hooks import epoch_hook
from .optim import create_optimizer, create_scheduler

logger = logging.getLogger(__name__)


def build_model(model_args: ModelArguments, num_examples: int) -> torch.nn.Module:
    """The method's ForPreTraining model, from scratch or from `model_name_or_path`."""
    if model_args.method not in PRETRAINING_CLASSES:
        raise ValueError(f"method={model_args.method!r} is not known; use one of {sorted(PRETRAINING_CLASSES)}")
    model_class = PRETRAINING_CLASSES[model_args.method]
    if model_args.model_name_or_path:
        return AutoModelForPreTraining.from_pretrained(
            model_args.model_name_or_path, num_examples=num_examples, **model_args.method_config
        )
    config_class = model_class.config_class
    known = set(config_class.__dataclass_fields__)
    for key in model_args.method_config:
        if key not in known or key in ("backbone_config", "num_examples"):
            raise ValueError(f"method_config.{key} is not a hyper-parameter of {config_class.__name__}")
    config = config_class(
        backbone_config=model_args.backbone_config or None, num_examples=num_examples, **model_args.method_config
    )
    return model_class(config)


def training_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The method's training state: the non-persistent buffers (memory bank, normaliser, queues, labels)."""
    buffers = {}
    for module_name, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            buffers[f"{module_name}.{name}".lstrip(".")] = getattr(module, name)
    return buffers


def statistics_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    """The floating-point persistent buffers: BatchNorm running statistics (also a momentum encoder's)."""
    return [
        buffer
        for module in model.modules()
        for name, buffer in module._buffers.items()
        if buffer is not None and buffer.is_floating_point() and name not in module._non_persistent_buffers_set
    ]


@torch.no_grad()
def average_statistics_buffers(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Make every process hold the mean of the processes' BatchNorm running statistics.

    DDP runs with broadcast_buffers=False (re-broadcasting memory banks every step would cost a bank-sized copy
    per step), so each process's running mean/var follow its own shard. Every eval-mode feature pass and every
    save therefore averages them first: features and the saved model use the statistics of all the data.
    """
    if accelerator.num_processes == 1:
        return
    buffers = statistics_buffers(model)
    if buffers:
        flat = torch.cat([b.detach().double().flatten() for b in buffers])
        torch.distributed.all_reduce(flat)
        flat /= accelerator.num_processes
        for buffer, mean in zip(buffers, flat.split([b.numel() for b in buffers])):
            buffer.copy_(mean.view_as(buffer))


def check_processes_agree(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Raise if any process holds different parameters or buffers (BatchNorm statistics, memory bank, queues,
    labels, ...) than the others.

    DDP keeps parameters equal, the methods keep their training state equal by construction and the loop
    averages the BatchNorm statistics before a save; this guards the checkpoint against a silent divergence (a
    method that forgot to gather, a non-deterministic kernel).
    """
    if accelerator.num_processes == 1:
        return
    named = [(f"parameter {n}", p.detach()) for n, p in model.named_parameters()]
    named += [(f"buffer {n}", b) for n, b in model.named_buffers()]
    digest = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for _, t in named])
    gathered = accelerator.gather(digest[None].to(accelerator.device)).cpu()
    differs = (gathered != gathered[:1]).any(dim=0).any(dim=1)
    if differs.any():
        first = named[int(differs.nonzero()[0])][0]
        raise RuntimeError(
            f"processes disagree on {int(differs.sum())} model tensors (first: {first}); refusing to checkpoint"
        )


def set_cpu_threads(args: SSLTrainingArguments, accelerator: Accelerator) -> None:
    """Give a CPU run every core by default.

    `accelerate launch --cpu` without `--num_processes` starts the script with OMP_NUM_THREADS=1 (accelerate only
    raises it when num_processes >= 1), so a training step used one core of several. A thread count the user
    chose (`cpu_threads`, or OMP_NUM_THREADS other than accelerate's 1) is kept.
    """
    if accelerator.device.type != "cpu":
        return
    threads = args.cpu_threads
    launched_by_accelerate = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    if not threads and os.environ.get("OMP_NUM_THREADS") == "1" and launched_by_accelerate:
        cores = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
        local_processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)), 1)
        threads = max(cores // local_processes, 1)
    if threads and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        accelerator.print(f"using {threads} CPU threads per process")


def _resolve_checkpoint(args: SSLTrainingArguments) -> pathlib.Path | None:
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = checkpoints(pathlib.Path(args.output_dir))
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint='latest' but {args.output_dir} holds no checkpoint")
        return found[-1]
    path = pathlib.Path(args.resume_from_checkpoint)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={path} is not a checkpoint folder (no {TRAINER_STATE})")
    return path


class Trainer:
    """Runs pre-training for one recipe; `train()` returns the final results dict."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: SSLTrainingArguments):
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.output_dir = pathlib.Path(args.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=None if args.report_to == "none" else args.report_to,
            project_dir=str(self.output_dir),
            # The loop feeds each process its own stream; Accelerate must not re-shard or wrap the loader.
            dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
            # Memory banks are kept identical by the method itself; re-broadcasting them every step would cost a
            # bank-sized copy per step.
            kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        )
        set_seed(args.seed)  # the same on every process: model initialisation, queues, ...
        acc = self.accelerator
        set_cpu_threads(args, acc)
        # the main process first: `datasets` writes its cache (dataset scripts, metadata) on the first load
        with acc.main_process_first():
            train_data = load_stream(data_args.dataset_name, data_args.train_split, data_args.dataset_config_name)
            self.train_data, self.num_examples = with_stable_ids(train_data)
        self.steps_per_epoch = steps_per_epoch(
            self.num_examples, args.per_device_train_batch_size * args.gradient_accumulation_steps,
            acc.num_processes, args.dataloader_num_workers,
        )
        self.total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * self.steps_per_epoch)
        self.model = build_model(model_args, self.num_examples)
        if data_args.num_small_crops and not self.model.accepts_small_crops:
            raise ValueError(
                f"num_small_crops={data_args.num_small_crops}: multi-crop is SwAV's, method={model_args.method!r} "
                "does not take small crops; set num_small_crops to 0"
            )
        if args.sync_batchnorm and acc.num_processes > 1:
            if acc.device.type == "cpu":  # torch's SyncBatchNorm refuses CPU tensors, deep inside the first forward
                raise ValueError("sync_batchnorm needs accelerators: torch's SyncBatchNorm does not run on CPU")
            # BatchNorm statistics over the global batch (the contrastive methods' recipes use it on many GPUs)
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.hook = epoch_hook(model_args.method)
        self.image_processor = make_image_processor(data_args.image_size)
        self.optimizer = create_optimizer(self.model, args)
        self.scheduler = create_scheduler(self.optimizer, args, self.total_steps, self.steps_per_epoch)
        augmentation = ViewAugmentation(**data_args.augmentation_kwargs())
        if is_video_dataset(self.train_data, data_args.video_column):
            if data_args.augment_on_device:
                raise ValueError("augment_on_device is not supported for video datasets: set it to false")
            if data_args.num_small_crops:
                raise ValueError("num_small_crops (multi-crop) is not supported for video datasets: set it to 0")
            if args.channels_last:
                raise ValueError("channels_last is for image models (2-D convolutions): set it to false for video")
            # rho clips of each video are its positives (Feichtenhofer et al., 2021)
            self.transform = ClipViewTransform(
                augmentation,
                num_views=self.model.num_views,
                video_column=data_args.video_column,
                frames_per_clip=data_args.num_frames,
                frame_stride=data_args.frame_stride,
                max_distance=data_args.max_clip_distance,
                num_clips=data_args.clips_per_video,
            )
        else:
            if args.channels_last:  # the 2-D convolutions' faster layout (oneDNN, cuDNN); inputs follow the weights
                self.model = self.model.to(memory_format=torch.channels_last)
            self.transform = MultiViewTransform(
                augmentation,
                num_views=self.model.num_views,
                image_column=data_args.image_column,
                augment_on_device=data_args.augment_on_device,
                num_small_crops=data_args.num_small_crops,
                # multi-crop's small crops: the global views' augmentation at their own size and scale
                small_augmentation=dataclasses.replace(
                    augmentation, size=data_args.small_crop_size, scale=tuple(data_args.small_crop_scale)
                ),
            )
        self.stream = BatchStream(
            self.train_data,
            args.per_device_train_batch_size,
            self.transform,
            rank=acc.process_index,
            world_size=acc.num_processes,
            num_workers=args.dataloader_num_workers,
            seed=args.seed,
            shuffle_buffer=data_args.shuffle_buffer,
            # epochs of every worker and process end on the same optimizer step (re-clustering happens between)
            batches_per_epoch=max(
                1, self.steps_per_epoch * args.gradient_accumulation_steps // max(args.dataloader_num_workers, 1)
            ),
        )
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        # From here on each process draws its own randomness (NCE noise rows, jigsaw permutations, patch offsets,
        # dropout): seed + process index. Accelerate's checkpoints hold each process's RNG state, so a resume
        # replays the same draws.
        set_seed(args.seed, device_specific=True)
        self.global_step = 0
        self.hook_epoch = -1  # the last epoch whose start hook has run
        self.history: list[dict] = []
        self.results: dict = {}  # baselines measured before training (random init), kept across resumes
        self._eval_data = None

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The method's ForPreTraining model, without DDP or other wrappers."""
        return self.accelerator.unwrap_model(self.model)

    def reset_optimizer_state(self, parameters) -> None:
        """Forget the optimizer's state (momentum, ...) of re-initialised parameters."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        for parameter in parameters:
            optimizer.state.pop(parameter, None)

    # -- evaluation --
    def features(self, model: torch.nn.Module, dataset, tag: str, max_samples: int | None = None):
        """(embeddings, labels or -1, ids) of every example of `dataset` (eval preprocessing), in id order, on every
        process: each process reads its part and the results are gathered. A video's embedding is the mean of its
        `eval_num_clips` clips' embeddings."""
        data_args = self.data_args
        average_statistics_buffers(self.accelerator, self.model)
        transform = make_eval_transform(
            dataset, self.image_processor, image_column=data_args.image_column, video_column=data_args.video_column,
            label_column=data_args.label_column, num_clips=data_args.eval_num_clips,
            frames_per_clip=data_args.num_frames, frame_stride=data_args.frame_stride,
        )
        return extract_features(
            ClipAveragedFeatures(model), dataset, transform, accelerator=self.accelerator,
            batch_size=self.args.per_device_eval_batch_size, num_workers=self.args.dataloader_num_workers,
            max_samples=max_samples, description=tag, progress=not self.args.disable_tqdm,
        )

    def evaluate(self, tag: str = "knn", features_model: torch.nn.Module | None = None) -> dict[str, float]:
        """Weighted kNN top-1/top-5 of the method's embedding (or of `features_model`'s): bank = eval_bank_split,
        queries = eval_split."""
        args, data_args = self.args, self.data_args
        if data_args.label_column is None:
            return {}
        if self._eval_data is None:
            name, config = data_args.eval_dataset_name, data_args.dataset_config_name
            with self.accelerator.main_process_first():
                self._eval_data = [
                    # the bank is usually the training split: reuse its ids instead of a second counting pass
                    self.train_data
                    if (name, split) == (data_args.dataset_name, data_args.train_split)
                    else with_stable_ids(load_stream(name, split, config))[0]
                    for split in (data_args.eval_bank_split, data_args.eval_split)
                ]
        if features_model is None:
            features_model = self.unwrapped_model.base_model
        bank, bank_labels, _ = self.features(
            features_model, self._eval_data[0], f"{tag}: bank features", data_args.max_eval_bank_samples
        )
        queries, query_labels, _ = self.features(features_model, self._eval_data[1], f"{tag}: query features")
        return weighted_knn_accuracy(bank, bank_labels, queries, query_labels, args.knn_k, args.knn_temperature)

    # -- checkpoints --
    def save_checkpoint(self) -> pathlib.Path:
        """Write checkpoint-<step> atomically: into a temporary folder, then one rename."""
        acc = self.accelerator
        final = checkpoint_dir(self.output_dir, self.global_step)
        tmp = checkpoint_dir(self.output_dir, self.global_step, temporary=True)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        average_statistics_buffers(acc, self.model)
        check_processes_agree(acc, acc.unwrap_model(self.model))
        acc.save_state(str(tmp), safe_serialization=True)
        # every process writes its own RNG state into tmp: all must be done before the main process renames it
        # (under load a slower process found its folder already gone)
        acc.wait_for_everyone()
        if acc.is_main_process:
            buffers = {k: v.detach().cpu().contiguous() for k, v in training_buffers(acc.unwrap_model(self.model)).items()}
            save_file(buffers, str(tmp / BUFFERS_FILE))
            state = {
                "global_step": self.global_step,
                "scheduler": self.scheduler.state_dict(),
                "stream": self.stream.state_dict(),
                "history": self.history,
                "results": self.results,
                "num_examples": self.num_examples,
                "hook_epoch": self.hook_epoch,
            }
            (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            if self.args.save_total_limit:
                for old in checkpoints(self.output_dir)[: -self.args.save_total_limit]:
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: pathlib.Path) -> None:
        acc = self.accelerator
        state = json.loads((path / TRAINER_STATE).read_text())
        if state["num_examples"] != self.num_examples:
            raise ValueError(
                f"checkpoint {path} was trained on {state['num_examples']} examples, this dataset has "
                f"{self.num_examples}: the memory bank / labels would not line up"
            )
        acc.load_state(str(path))
        buffers = load_file(str(path / BUFFERS_FILE))
        for name, tensor in training_buffers(acc.unwrap_model(self.model)).items():
            tensor.copy_(buffers[name])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["stream"])
        self.global_step, self.history, self.results = state["global_step"], state["history"], state["results"]
        self.hook_epoch = state["hook_epoch"]

    # -- the loop --
    def start_epoch(self, epoch: int) -> None:
        """The method's between-epochs work (once per epoch, also across a resume) and the epoch's sampling."""
        acc = self.accelerator
        if epoch > self.hook_epoch:
            metrics = self.hook.on_epoch_start(self, epoch)
            self.hook_epoch = epoch
            if metrics:
                self.history.append({"step": self.global_step, "epoch": epoch, **metrics})
                acc.log(metrics, step=self.global_step)
                acc.print(f"epoch {epoch}: {_fmt(metrics)}")
        self.stream.sample_weights = self.hook.sample_weights(self.unwrapped_model)

    def train(self) -> dict:
        acc, args = self.accelerator, self.args
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        config = self.recipe()
        if acc.is_main_process:
            # the resolved recipe (overrides applied): it reproduces the run and feeds the model card
            (self.output_dir / RECIPE_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        if acc.log_with:
            acc.init_trackers("tensorboard", config={k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()})
        checkpoint = _resolve_checkpoint(args)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
            acc.print(f"resumed from {checkpoint} at step {self.global_step}")
        elif args.eval_random_init:
            self.results["random_init"] = self.evaluate(tag="random init")
            acc.print(f"random init: {_fmt(self.results['random_init'])}")

        acc.print(
            f"{self.model_args.method}: {self.num_examples} examples, {acc.num_processes} process(es), "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps"
        )
        loader = torch.utils.data.DataLoader(
            self.stream,
            batch_size=None,
            num_workers=args.dataloader_num_workers,
            pin_memory=acc.device.type == "cuda",
            # Its own generator: creating the loader must not move the global RNG, or a resumed run would
            # diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(args.seed),
        )
        progress = tqdm(
            total=self.total_steps, initial=self.global_step, desc="pre-training",
            disable=args.disable_tqdm or not acc.is_local_main_process,
        )
        self.model.train()
        eval_every = round(args.eval_epochs * self.steps_per_epoch) if args.eval_epochs else 0
        # the loss is summed on the device and read (a sync) only when logged
        running_loss, running_count, started = torch.zeros((), dtype=torch.float64, device=acc.device), 0, time.time()
        batches, loader_epoch = None, None
        while self.global_step < self.total_steps:
            epoch = self.global_step // self.steps_per_epoch
            if epoch != loader_epoch:
                self.start_epoch(epoch)
                if batches is None or self.hook.resamples:
                    batches = iter(loader)  # new workers, which sample this epoch with its weights
                loader_epoch = epoch
            batch = next(batches)
            self.stream.record(batch)
            pixel_values = batch["pixel_values"].to(acc.device, non_blocking=True)
            # multi-crop's small crops, when the recipe asks for them
            small = {k: batch[k].to(acc.device, non_blocking=True) for k in ("small_pixel_values",) if k in batch}
            if "augmentation_seed" in batch:
                pixel_values = self.transform.augment(pixel_values, batch["augmentation_seed"])
                small = {k: self.transform.augment(v, batch["augmentation_seed"], small=True) for k, v in small.items()}
            method = self.unwrapped_model
            method.set_training_progress(self.global_step, self.total_steps)
            with acc.accumulate(self.model):
                out = self.model(pixel_values=pixel_values, ids=batch["ids"].to(acc.device), **small)
                acc.backward(out.loss)
                if acc.sync_gradients:
                    for parameter in method.parameters_without_update():
                        parameter.grad = None  # in the graph for DDP, but not moved by this step
                    if args.max_grad_norm:
                        acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            running_loss += out.loss.detach().float()
            running_count += 1
            if not acc.sync_gradients:
                continue
            method.after_optimizer_step()  # momentum encoders: once per optimizer step, not per micro-batch
            self.scheduler.step()
            self.global_step += 1
            progress.update(1)
            if self.global_step % args.logging_steps == 0 or self.global_step == self.total_steps:
                loss = acc.reduce(running_loss / running_count, "mean").item()
                record = {
                    "step": self.global_step,
                    "epoch": round(self.global_step / self.steps_per_epoch, 3),
                    "loss": loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "images_per_s": running_count * batch["ids"].shape[0] * acc.num_processes / (time.time() - started),
                }
                self.history.append(record)
                acc.log({k: v for k, v in record.items() if k != "step"}, step=self.global_step)
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.4g}")
                running_loss, running_count, started = torch.zeros_like(running_loss), 0, time.time()
            if eval_every and self.global_step % eval_every == 0 and self.global_step < self.total_steps:
                metrics = self.evaluate(tag=f"epoch {self.global_step / self.steps_per_epoch:.1f}")
                self.history.append({"step": self.global_step, **metrics})
                acc.log(metrics, step=self.global_step)
                acc.print(f"step {self.global_step}: {_fmt(metrics)}")
            if args.save_steps and self.global_step % args.save_steps == 0:
                self.save_checkpoint()
        progress.close()
        results = {}
        video = is_video_dataset(self.train_data, self.data_args.video_column)
        if args.eval_pixel_baseline and self.data_args.label_column is not None and not video:
            # the same kNN on raw pixels at the eval size: the floor that learned features have to beat (images
            # only: a video bank's raw clips would not fit in memory)
            results["pixels"] = self.evaluate(tag="pixels", features_model=PixelFeatures(self.image_processor))
        results = {**results, **self.results, "trained": self.evaluate(tag="final")}
        results["corrupt_samples_skipped"] = self.stream.skipped.count
        if self.stream.skipped.count:
            results["corrupt_samples_examples"] = self.stream.skipped.examples
        self.save_final(results)
        # trackers only: the process group stays for the caller (several runs in one process, the Python API);
        # `hf-ssl train` ends it when the run returns
        for tracker in acc.trackers:
            tracker.finish()
        return results

    def recipe(self) -> dict:
        """Every field of the three argument dataclasses, as a recipe YAML would hold them."""
        return {**asdict(self.model_args), **asdict(self.data_args), **asdict(self.args)}

    def save_final(self, results: dict) -> None:
        """save_pretrained of the model + image processor, and the results/history JSON, into output_dir."""
        acc = self.accelerator
        acc.wait_for_everyone()
        average_statistics_buffers(acc, self.model)
        check_processes_agree(acc, acc.unwrap_model(self.model))
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            model.save_pretrained(self.output_dir)
            self.image_processor.save_pretrained(self.output_dir)
            (self.output_dir / TRAINING_RESULTS_FILE).write_text(json.dumps(results, indent=1))
            (self.output_dir / HISTORY_FILE).write_text(json.dumps(self.history, indent=1))
            acc.print(f"skipped corrupt samples: {self.stream.skipped.report()}")
            for tag, metrics in results.items():
                if isinstance(metrics, dict) and metrics:
                    acc.print(f"{tag:>12}: {_fmt(metrics)}")
            if self.args.push_to_hub:
                commit = push_to_hub(self.output_dir, self.args.hub_model_id, private=self.args.hub_private_repo)
                acc.print(f"pushed to {self.args.hub_model_id} at revision {commit.oid}")
        acc.wait_for_everyone()


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def train(model_args: ModelArguments, data_args: DataArguments, args: SSLTrainingArguments) -> dict:
    """Pre-train with one recipe; returns {("pixels": ..., "random_init": ...,) "trained": kNN metrics}."""
    return Trainer(model_args, data_args, args).train()
