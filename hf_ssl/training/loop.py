"""The Accelerate training loop shared by every method.

    accelerate launch train.py training_args/<recipe>.yaml [--field value ...]

One process or many (DDP): each process streams its own part of the data, the method's forward returns the
loss (and does its own cross-process work, e.g. memory-bank updates with gathered embeddings). `run.build_run`
builds what a recipe describes, `checkpoints` saves and restores it; this module steps it, runs the method's
epoch hook, evaluates and writes the results. A resumed run continues the same loss trajectory.
"""

import functools
import json
import logging
import pathlib
import time
import uuid
from dataclasses import asdict

import torch
import yaml
from tqdm.auto import tqdm

from ..data import load_stream
from ..data.stream import with_stable_ids
from ..data.video_processing import save_video_processor
from ..distributed import run_on_main
from ..evaluation import PixelFeatures, frozen_features, knn_scores
from ..evaluation.results import EvaluationResults, Score, dataset_display_name
from ..hub.push import push_to_hub
from ..run_layout import HISTORY_FILE, RECIPE_FILE, TRACKER_PROJECT, TRAINING_RESULTS_FILE, weights_fingerprint
from .arguments import DataArguments, ModelArguments, SSLTrainingArguments
from .checkpoints import (
    average_statistics_buffers,
    check_output_dir,
    check_processes_agree,
    clear_previous_run,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .epoch_hooks import EpochContext, epoch_hook
from .run import build_run

logger = logging.getLogger(__name__)


class Trainer:
    """Runs pre-training for one recipe; `train()` returns the end-of-training kNN scores."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: SSLTrainingArguments):
        check_output_dir(args)  # before the data is read: a folder holding a run is refused at once
        self.run = build_run(model_args, data_args, args)
        self.output_dir = pathlib.Path(args.output_dir)
        self.run_id = uuid.uuid4().hex  # its checkpoints' id (a resume continues the checkpoint's): rotation's scope
        self.hook = epoch_hook(model_args.method)
        self.global_step = 0
        self.hook_epoch = -1  # the last epoch whose start hook has run
        self.history: list[dict] = []
        self.baselines: list[Score] = []  # measured before training (random init), kept across resumes
        self._eval_data = None

    # -- evaluation --
    def features(self, model: torch.nn.Module, dataset, tag: str, max_samples: int | None = None):
        """(embeddings, labels or -1, ids) of every example of `dataset` (eval preprocessing), in id order, on the main
        process; None on the others: each process reads its part and the parts are gathered to the main process. A
        video's embedding is the mean of its `eval_num_clips` clips' embeddings."""
        run, data_args = self.run, self.run.data_args
        average_statistics_buffers(run.accelerator, run.model)
        return frozen_features(
            model,
            dataset,
            run.image_processor,
            run.accelerator,
            run.args.per_device_eval_batch_size,
            image_column=data_args.image_column,
            video_column=data_args.video_column,
            label_column=data_args.label_column,
            num_clips=data_args.eval_num_clips,
            num_frames=data_args.num_frames,
            frame_stride=data_args.frame_stride,
            num_workers=run.args.dataloader_num_workers,
            max_samples=max_samples,
            description=tag,
            progress=not run.args.disable_tqdm,
            skipped=run.stream.skipped,  # one count of the run's corrupt samples, over training and every feature pass
        )

    def evaluate(
        self, tag: str = "knn", features_model: torch.nn.Module | None = None, baseline: str | None = None
    ) -> list[Score]:
        """Weighted kNN top-1/top-5 of the method's embedding (or of `features_model`'s, the scores of `baseline`):
        bank = eval_bank_split, queries = eval_split."""
        run, data_args = self.run, self.run.data_args
        if data_args.label_column is None:
            return []
        if self._eval_data is None:
            name, config = data_args.eval_dataset_name, data_args.dataset_config_name
            with run.accelerator.main_process_first():
                self._eval_data = [
                    # the bank is usually the training split: reuse its ids instead of a second counting pass
                    run.train_data
                    if (name, split) == (data_args.dataset_name, data_args.train_split)
                    else with_stable_ids(load_stream(name, split, config))[0]
                    for split in (data_args.eval_bank_split, data_args.eval_split)
                ]
        if features_model is None:
            features_model = run.unwrapped_model.base_model
        bank = self.features(
            features_model, self._eval_data[0], f"{tag}: bank features", data_args.max_eval_bank_samples
        )
        queries = self.features(features_model, self._eval_data[1], f"{tag}: query features")
        return run_on_main(  # the main process holds the features: it runs the kNN, every process gets the scores
            lambda: knn_scores(
                *bank[:2],
                *queries[:2],
                dataset_display_name(data_args.eval_dataset_name),
                data_args.eval_split,
                run.args.knn_k,
                run.args.knn_temperature,
                baseline,
            )
        )

    # -- the loop --
    def log(self, metrics: dict[str, float], **where) -> None:
        """One history record (`where`: its step, epoch) and the trackers' entry at the current step."""
        self.history.append({"step": self.global_step, **where, **metrics})
        self.run.accelerator.log({**where, **metrics}, step=self.global_step)

    def start_epoch(self, epoch: int) -> bool:
        """The method's between-epochs work, once per epoch (also across a resume), applied as its plan says.
        True when the epoch's sampling changed: the data workers must restart to sample it."""
        run = self.run
        if epoch <= self.hook_epoch:
            return False
        context = EpochContext(
            model=run.unwrapped_model,
            train_features=functools.partial(self.features, dataset=run.train_data, tag=f"epoch {epoch}: features"),
            seed=run.args.seed,
            epoch=epoch,
        )
        plan = self.hook.on_epoch_start(context)
        self.hook_epoch = epoch
        optimizer = getattr(run.optimizer, "optimizer", run.optimizer)  # Accelerate's wrapper holds the state
        for parameter in plan.reset_parameters:  # re-initialised: forget their momentum, ...
            optimizer.state.pop(parameter, None)
        if plan.metrics:
            self.log(plan.metrics, epoch=epoch)
            run.accelerator.print(f"epoch {epoch}: {_fmt(plan.metrics)}")
        if plan.sample_weights is None and run.stream.sample_weights is None:
            return False
        run.stream.sample_weights = plan.sample_weights
        return True

    def step(self, batch: dict) -> torch.Tensor:
        """Forward and backward of one micro-batch, and the optimizer step when gradients are accumulated."""
        run, acc = self.run, self.run.accelerator
        pixel_values = batch["pixel_values"].to(acc.device, non_blocking=True)
        # multi-crop's small crops, when the recipe asks for them
        small = {k: batch[k].to(acc.device, non_blocking=True) for k in ("small_pixel_values",) if k in batch}
        # the classes, for a method that trains on them (`requires_labels`: the transform collates them only then)
        labels = {"labels": batch["labels"].to(acc.device)} if "labels" in batch else {}
        if "augmentation_seed" in batch:
            pixel_values = run.transform.augment(pixel_values, batch["augmentation_seed"])
            small = {k: run.transform.augment(v, batch["augmentation_seed"], small=True) for k, v in small.items()}
        method = run.unwrapped_model
        method.set_training_progress(self.global_step, run.total_steps)
        with acc.accumulate(run.model):
            # an id per view (a pair dataset's patch ids), when the data names them
            view_ids = {k: batch[k].to(acc.device) for k in ("view_ids",) if k in batch}
            out = run.model(pixel_values=pixel_values, ids=batch["ids"].to(acc.device), **small, **labels, **view_ids)
            acc.backward(out.loss)
            if acc.sync_gradients:
                for parameter in method.parameters_without_update():
                    parameter.grad = None  # in the graph for DDP, but not moved by this step
                if run.args.max_grad_norm:
                    acc.clip_grad_norm_(run.model.parameters(), run.args.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            method.after_optimizer_step()  # momentum encoders: once per optimizer step, not per micro-batch
            run.scheduler.step()
            self.global_step += 1
        return out.loss.detach().float()

    def begin(self) -> None:
        """Resume (or measure the random-init baseline), then write the resolved recipe and start the trackers.

        The checkpoint is resolved and loaded before anything is written: a start that fails leaves output_dir as
        it was. With overwrite_output_dir the previous run's files are removed here, once every check passed."""
        run, acc, args = self.run, self.run.accelerator, self.run.args
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, self.output_dir)
        if checkpoint is not None:
            state = load_checkpoint(run, checkpoint)
        # every process has checked the folder before the main one changes it
        acc.wait_for_everyone()
        config = self.recipe()
        if acc.is_main_process:
            for path in clear_previous_run(args, checkpoint):
                logger.info("overwrite_output_dir: removed %s of the previous run", path)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # the resolved recipe (overrides applied): it reproduces the run and feeds the model card
            (self.output_dir / RECIPE_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        acc.wait_for_everyone()
        if acc.log_with:
            scalars = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
            # one project for every hf_ssl run; the run is named after its output folder (wandb, mlflow, ...)
            acc.init_trackers(TRACKER_PROJECT, config=scalars, init_kwargs={"wandb": {"name": self.output_dir.name}})
        if checkpoint is not None:
            self.global_step, self.history = state["global_step"], state["history"]
            self.baselines = [Score(**s) for s in state["baselines"]]
            self.hook_epoch = state["hook_epoch"]
            self.run_id = state.get("run_id", self.run_id)
            acc.print(f"resumed from {checkpoint} at step {self.global_step}")
        elif args.eval_random_init:
            self.baselines = self.evaluate(tag="random init", baseline="random_init")
            acc.print(f"random init: {_fmt_scores(self.baselines)}")
        acc.print(
            f"{run.model_args.method}: {run.num_examples} examples, {acc.num_processes} process(es), "
            f"{run.steps_per_epoch} steps/epoch, {run.total_steps} steps"
        )

    def train(self) -> dict:
        run, acc, args = self.run, self.run.accelerator, self.run.args
        self.begin()
        loader = torch.utils.data.DataLoader(
            run.stream,
            batch_size=None,
            num_workers=args.dataloader_num_workers,
            pin_memory=acc.device.type == "cuda",
            # Its own generator: creating the loader must not move the global RNG, or a resumed run would
            # diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(args.seed),
        )
        progress = tqdm(
            total=run.total_steps,
            initial=self.global_step,
            desc="pre-training",
            disable=args.disable_tqdm or not acc.is_local_main_process,
        )
        run.model.train()
        eval_every = round(args.eval_epochs * run.steps_per_epoch) if args.eval_epochs else 0
        save_every = max(1, round(args.save_epochs * run.steps_per_epoch)) if args.save_epochs else args.save_steps
        # the loss is summed on the device and read (a sync) only when logged
        running_loss, running_count, started = torch.zeros((), dtype=torch.float64, device=acc.device), 0, time.time()
        batches, loader_epoch = None, None
        while self.global_step < run.total_steps:
            epoch = self.global_step // run.steps_per_epoch
            if epoch != loader_epoch:
                if self.start_epoch(epoch) or batches is None:
                    batches = iter(loader)  # new workers, which sample this epoch with its weights
                loader_epoch = epoch
            batch = next(batches)
            run.stream.record(batch)
            running_loss += self.step(batch)
            running_count += 1
            if not acc.sync_gradients:
                continue
            progress.update(1)
            if self.global_step % args.logging_steps == 0 or self.global_step == run.total_steps:
                loss = acc.reduce(running_loss / running_count, "mean").item()
                images = running_count * batch["ids"].shape[0] * acc.num_processes
                record = {
                    "loss": loss,
                    "lr": run.scheduler.get_last_lr()[0],
                    "images_per_s": images / (time.time() - started),
                }
                self.log(record, epoch=round(self.global_step / run.steps_per_epoch, 3))
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.4g}")
                running_loss, running_count, started = torch.zeros_like(running_loss), 0, time.time()
            if eval_every and self.global_step % eval_every == 0 and self.global_step < run.total_steps:
                scores = self.evaluate(tag=f"epoch {self.global_step / run.steps_per_epoch:.1f}")
                self.history.append({"step": self.global_step, "scores": [asdict(s) for s in scores]})
                acc.log({s.name: s.value for s in scores}, step=self.global_step)
                acc.print(f"step {self.global_step}: {_fmt_scores(scores)}")
            if save_every and self.global_step % save_every == 0:
                baselines = [asdict(s) for s in self.baselines]
                state = {
                    "run_id": self.run_id,
                    "history": self.history,
                    "baselines": baselines,
                    "hook_epoch": self.hook_epoch,
                }
                save_checkpoint(run, self.global_step, state)
        progress.close()
        results = self.final_results()
        self.save_final(results)
        # trackers only: the process group stays for the caller (several runs in one process, the Python API);
        # `hf-ssl train` ends it when the run returns
        for tracker in acc.trackers:
            tracker.finish()
        return results

    def final_results(self) -> EvaluationResults:
        """The end-of-training kNN beside its baselines, and the corrupt samples the stream skipped."""
        run = self.run
        scores = self.evaluate(tag="final")
        if run.args.eval_pixel_baseline and run.data_args.label_column is not None and not run.video:
            # the same kNN on raw pixels at the eval size: the floor that learned features have to beat (images
            # only: a video bank's raw clips would not fit in memory)
            pixels = PixelFeatures(run.image_processor)
            scores += self.evaluate(tag="pixels", features_model=pixels, baseline="pixels")
        data_args, args = run.data_args, run.args
        settings = {
            "eval_bank_split": data_args.eval_bank_split,
            "max_eval_bank_samples": data_args.max_eval_bank_samples,
            "knn_k": args.knn_k,
            "knn_temperature": args.knn_temperature,
        }
        return EvaluationResults(
            model=self.output_dir.name,
            method=run.model_args.method,
            pretraining_dataset=dataset_display_name(data_args.dataset_name),
            settings=settings,
            scores=scores + self.baselines,
            corrupt_samples_skipped=len(run.stream.skipped.samples),
            corrupt_samples_examples=run.stream.skipped.examples,
        )

    def recipe(self) -> dict:
        """Every field of the three argument dataclasses, as a recipe YAML would hold them."""
        return {**asdict(self.run.model_args), **asdict(self.run.data_args), **asdict(self.run.args)}

    def save_final(self, results: EvaluationResults) -> None:
        """save_pretrained of the model + image processor (+ video processor for clips), and the results/history JSON, into output_dir."""
        run, acc = self.run, self.run.accelerator
        acc.wait_for_everyone()
        average_statistics_buffers(acc, run.model)
        check_processes_agree(acc, run.unwrapped_model)
        if acc.is_main_process:
            run.unwrapped_model.save_pretrained(self.output_dir)
            run.image_processor.save_pretrained(self.output_dir)
            if run.video:  # the same preprocessing for clips, for `AutoVideoProcessor`
                save_video_processor(run.image_processor, run.data_args.num_frames, self.output_dir)
            results.weights_sha256 = weights_fingerprint(self.output_dir)  # the weights these scores measured
            results.save(self.output_dir / TRAINING_RESULTS_FILE)
            (self.output_dir / HISTORY_FILE).write_text(json.dumps(self.history, indent=1))
            acc.print(f"skipped corrupt samples: {run.stream.skipped.report()}")
            if results.scores:
                acc.print(results.format())
            if run.args.push_to_hub:
                commit = push_to_hub(self.output_dir, run.args.hub_model_id, private=run.args.hub_private_repo)
                acc.print(f"pushed to {run.args.hub_model_id} at revision {commit.oid}")
        acc.wait_for_everyone()


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def _fmt_scores(scores: list[Score]) -> str:
    return ", ".join(f"{s.name} {s.value:.2f}" for s in scores)


def train(model_args: ModelArguments, data_args: DataArguments, args: SSLTrainingArguments) -> EvaluationResults:
    """Pre-train with one recipe; returns the end-of-training kNN scores (the model's, and its baselines' with
    `baseline` set: raw pixels, random init), as written to eval_results.json."""
    return Trainer(model_args, data_args, args).train()
