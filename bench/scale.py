"""Costs that should not grow with the dataset, on a synthetic stream with the shape of ImageNet-1k.

Writes once (cached under --cache-dir, outside the repository) parquet datasets in the Hub export layout that
`datasets.load_dataset(folder, streaming=True)` reads like any hf_ssl dataset: a `train` split of tiny real JPEGs
(8x8, PIL, quality 75) with 1,000 ClassLabel labels, at 10k, 100k and 1,281,167 rows (ImageNet-1k's train size),
and a 1,000-row `validation` split for the end-of-run kNN. Every size keeps ImageNet's shard size (1,281,167 /
1,024 = about 1,251 rows per shard): 8 shards at 10k, 80 at 100k, 1,024 at 1.28M. So the datasets grow the way a
real one does, by more files of the same size, and the ratio 1.28M / 10k measures everything that grows with the
dataset, per-file costs (listing, parquet footers) included; 8 and 80 shards also divide over 2 processes x 2
workers, as 1,024 does.

Then measures, for each size and 1 / 2 CPU processes x 2 DataLoader workers (`accelerate launch`, gloo):
- time to first step: from launching `accelerate launch` to the end of the first optimizer step, a real run of
  `train.py` (SimCLR, tests/conftest.py's tiny ResNet, 8 px views, batch 32, shuffle buffer 1,000, 2 steps,
  checkpoint at step 1; this file is the launched script: it times `Trainer.step` and calls `hf_ssl.cli.main`);
- resume: from launching a run that resumes a mid-epoch checkpoint to the end of its first step. The checkpoint
  is the step-1 one with its data position moved to --resume-fraction of the epoch (default half: 156 steps at
  10k rows, 20,018 at 1.28M on one process; training there for real would take hours on a CPU), so a resume
  replays (or skips) as much of the stream as after a real half epoch; --resume-fraction 0 resumes step 1;
- peak memory per process: the high-water mark of each training process's RSS (`ru_maxrss`, DataLoader workers
  not included) over the whole run: the main process's, and in parentheses the largest of the others (a fix that
  gathers features to the main process only shows there); the run ends with hf_ssl's kNN evaluation, whose
  bank is --eval-bank-samples train rows (default 1,000; 0: the whole split, so a feature pass over every row
  and the features gathered as the library gathers them: that is where memory grows with the dataset);
and, in this process:
- one DeepCluster re-clustering: `hf_ssl.clustering.kmeans_across_processes` with k=10,000 on 1,281,167 x 256
  features (a mixture of Gaussians), with --kmeans-iterations Lloyd iterations (default 1) and extrapolated to
  DeepCluster's 20 from the time per search: a run makes one search of all points per iteration plus the final
  assignment, so 20 iterations take about T x 21 / (iterations + 1);
- one kNN evaluation: `hf_ssl.evaluation.knn.knn_scores` with a 1,281,167 x 256 bank, 1,000 classes, 10,000
  queries, hf_ssl's default k (200 and 20).

Each launch is stopped after --timeout seconds and reported as "> <timeout>". Each run also prints when its
processes had imported hf_ssl, built the run (`build_run`: counting the data) and begun (`Trainer.begin`: loading
the checkpoint); the last invocation's run folders and logs stay in <cache-dir>/runs. Commands (from the
repository root):

    python bench/scale.py                                     # everything (writes the data the first time)
    python bench/scale.py --rows 10000,100000 --skip-kmeans --skip-knn      # the 10k / 100k training rows only
    python bench/scale.py --rows 1281167 --processes 2 --skip-kmeans --skip-knn --timeout 900
    python bench/scale.py --skip-train --kmeans-iterations 2  # clustering and kNN only
    python bench/scale.py --skip-kmeans --skip-knn --skip-resume --eval-bank-samples 0  # RSS, whole-split bank
    python bench/scale.py --write-only                        # write (or check) the cached datasets, nothing else

Writing the 1.28M set takes a few minutes on 2 cores (a pool of --write-processes processes, one shard per task);
it then lives in --cache-dir (default ~/.cache/hf_ssl/bench_scale) and is reused.
"""

import argparse
import io
import json
import multiprocessing
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

IMAGENET_TRAIN_ROWS = 1_281_167
IMAGENET_TRAIN_SHARDS = 1024
NUM_LABELS = 1000
VALIDATION_ROWS = 1000
IMAGE_SIDE = 8
ROW_GROUP_ROWS = 256  # small row groups, as the Hub's parquet export of image datasets has
LAYOUT_VERSION = 1  # in the folder name: a change of layout writes new folders
COMPLETE = "COMPLETE"  # written last: a folder without it is an interrupted write and is written again
DEEPCLUSTER_ITERATIONS = 20  # hf_ssl's DeepClusterConfig.kmeans_iterations
BATCH_SIZE = 32  # per process
PROBE_ENV = "HF_SSL_SCALE_PROBE"  # the folder the launched training processes write their timings into
REPO = pathlib.Path(__file__).resolve().parents[1]
# tests/conftest.py's TINY_BACKBONE: a ResNet of ~5k parameters
TINY_BACKBONE = {
    "model_type": "resnet",
    "layer_type": "basic",
    "depths": [1, 1],
    "hidden_sizes": [8, 16],
    "embedding_size": 8,
    "cifar_stem": True,
}


# -- the synthetic dataset --
def shard_count(rows: int) -> int:
    """Shards of a train split of `rows` rows at ImageNet-1k's shard size (1,024 shards for 1,281,167 rows)."""
    return max(1, round(rows * IMAGENET_TRAIN_SHARDS / IMAGENET_TRAIN_ROWS))


def _features():
    import datasets

    names = [f"class_{i:03d}" for i in range(NUM_LABELS)]
    return datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return buffer.getvalue()


def _write_shard(task: tuple[str, str, int, int, int, int]) -> int:
    """Write rows [start, stop) of a split as one parquet shard: random 8x8 RGB JPEGs and labels, seeded by the
    split's first row (the same rows in every size that holds them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, split, index, num_shards, start, stop = task
    rng = np.random.default_rng((start, split == "validation"))
    pixels = rng.integers(0, 256, size=(stop - start, IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_LABELS, size=stop - start)
    images = [{"bytes": _jpeg(p), "path": None} for p in pixels]
    table = pa.Table.from_pydict({"image": images, "label": labels}, schema=_features().arrow_schema)
    target = pathlib.Path(path) / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
    pq.write_table(table, target, row_group_size=ROW_GROUP_ROWS)
    return stop - start


def _card(rows: int, shards: int) -> str:
    """README.md: the configs (split -> files) and dataset_info (features) `datasets` reads from a folder."""
    names = "\n".join(f"          '{i}': class_{i:03d}" for i in range(NUM_LABELS))
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
dataset_info:
  features:
  - name: image
    dtype: image
  - name: label
    dtype:
      class_label:
        names:
{names}
---
# Synthetic ImageNet-1k-shaped stream (hf_ssl bench/scale.py)

{rows:,} train rows in {shards:,} parquet shards and {VALIDATION_ROWS:,} validation rows, {NUM_LABELS} labels,
each image a random {IMAGE_SIDE}x{IMAGE_SIDE} JPEG. For measuring costs, not quality.
"""


def write_dataset(cache_dir: pathlib.Path, rows: int, processes: int) -> pathlib.Path:
    """The cached dataset of `rows` train rows, written first if it is not complete."""
    folder = cache_dir / f"imagenet-shape-{rows}-v{LAYOUT_VERSION}"
    if (folder / COMPLETE).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "data").mkdir(parents=True)
    shards = shard_count(rows)
    bounds = [round(i * rows / shards) for i in range(shards + 1)]
    tasks = [(str(folder), "train", i, shards, bounds[i], bounds[i + 1]) for i in range(shards)]
    tasks.append((str(folder), "validation", 0, 1, 0, VALIDATION_ROWS))
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_shard, tasks, chunksize=4))
    (folder / "README.md").write_text(_card(rows, shards))
    (folder / COMPLETE).write_text(f"{written} rows\n")
    size = sum(f.stat().st_size for f in (folder / "data").iterdir()) / 2**20
    print(
        f"wrote {folder}: {rows:,} train rows in {shards} shards + {VALIDATION_ROWS} validation rows, "
        f"{size:.0f} MiB, {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return folder


# -- training runs: launch -> first optimizer step --
def probe_train(train_args: list[str]) -> int:
    """What `accelerate launch` starts: train.py's `hf_ssl.cli.main(["train", ...])`, with `Trainer.step` timed.

    Writes `<probe>/rank<r>.json` at the end of this process's first optimizer step (wall-clock time, step, RSS
    high-water mark) and at exit (the RSS high-water mark of the whole run), with the times this process had
    imported hf_ssl, had built the run (`build_run`: counting the data, the model) and had begun (`Trainer.begin`: loading the
    checkpoint)."""
    import atexit

    from hf_ssl.cli import main
    from hf_ssl.training import loop

    probe = pathlib.Path(os.environ[PROBE_ENV])
    rank = int(os.environ.get("RANK", 0))
    record: dict = {"rank": rank, "imported": time.time()}

    def save() -> None:
        record["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (probe / f"rank{rank}.json").write_text(json.dumps(record))

    original, build_run, begin = loop.Trainer.step, loop.build_run, loop.Trainer.begin

    def timed_build_run(*args, **kwargs):
        run = build_run(*args, **kwargs)
        record["built"] = time.time()  # data counted, model, optimizer and stream built
        return run

    def timed_begin(self):
        begin(self)
        record["begun"] = time.time()  # checkpoint loaded (on resume), output folder written

    def step(self, batch):
        before = self.global_step
        loss = original(self, batch)
        if "first_step_time" not in record and self.global_step > before:
            record.update(first_step_time=time.time(), first_step=self.global_step)
            record["first_step_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            save()
        return loss

    loop.Trainer.step, loop.build_run, loop.Trainer.begin = step, timed_build_run, timed_begin
    atexit.register(save)
    return main(["train", *train_args])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(train_args: list[str], processes: int, timeout: float, log: pathlib.Path) -> dict | None:
    """Run `accelerate launch` of this file's probe with `processes` CPU processes; None on timeout or failure.
    Returns seconds from launch to the first step (the last process's), the step, the largest RSS peak, and the
    seconds from launch to each phase (the last process's): imported, built, begun."""
    probe = pathlib.Path(tempfile.mkdtemp(prefix="probe-", dir=log.parent))
    env = {
        **os.environ,
        PROBE_ENV: str(probe),
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(_free_port())]
    command += [__file__, "probe-train", *train_args]
    started = time.time()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher, its processes and their DataLoader workers
            process.wait()
            return None
    records = [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]
    if code != 0 or len(records) != processes or any("first_step_time" not in r for r in records):
        print(f"  run failed (exit {code}), log: {log}", flush=True)
        return None
    phases = {name: max(r[name] for r in records) - started for name in ("imported", "built", "begun")}
    return {
        "seconds": max(r["first_step_time"] for r in records) - started,
        "phases": phases,
        "step": records[0]["first_step"],
        "rss_mib": [r["max_rss_mib"] for r in records],  # by rank
    }


def training_args(dataset: pathlib.Path, output_dir: pathlib.Path, args: argparse.Namespace, **settings) -> list[str]:
    """The launched runs' command line: the tiny SimCLR on `dataset`, a kNN at the end with a bank of
    --eval-bank-samples train rows (all of them: 0) and the 1,000 validation rows as queries."""
    settings = {
        "method": "simclr",
        "backbone_config": json.dumps(TINY_BACKBONE),
        "method_config": json.dumps({"projection_hidden_dim": 16, "projection_dim": 8}),
        "dataset_name": str(dataset),
        "eval_split": "validation",
        "image_size": args.image_size,
        "per_device_train_batch_size": BATCH_SIZE,
        "per_device_eval_batch_size": 256,
        "shuffle_buffer": 1000,
        "dataloader_num_workers": 2,
        "cpu_threads": 1,
        "max_eval_bank_samples": args.eval_bank_samples or None,
        "eval_pixel_baseline": False,
        "knn_k": 20,
        "lr_scheduler_type": "constant",
        "warmup_epochs": 0,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(output_dir),
        **settings,
    }
    return [item for key, value in settings.items() if value is not None for item in (f"--{key}", str(value))]


def move_checkpoint(checkpoint: pathlib.Path, fraction: float, rows: int, processes: int, batch: int) -> int:
    """Copy `checkpoint` (a step-1 checkpoint) to one whose data position is `fraction` of the way through epoch 0:
    every DataLoader worker role of a process has consumed that share of its rows in full batches, and the step
    (one batch per optimizer step, round robin over the workers) follows. The model, optimizer and RNG stay those
    of step 1: a resume from it replays the stream to that position as it would after a real half epoch.
    Returns the new checkpoint's step."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    stream = state["stream"]
    workers = stream["num_workers"]
    batches = int(fraction * rows / (processes * workers)) // batch  # per role
    step = batches * workers
    if step <= 1:
        return 1
    stream["positions"] = {str(role): [0, batches * batch, batches] for role in range(workers)}
    stream["batches"] = step
    state["global_step"] = step
    state["scheduler"].update(last_epoch=step, _step_count=step + 1)
    moved = checkpoint.with_name(f"checkpoint-{step}")
    shutil.copytree(checkpoint, moved)
    (moved / "trainer_state.json").write_text(json.dumps(state, indent=1))
    return step


def measure_training(
    dataset: pathlib.Path, rows: int, processes: int, args: argparse.Namespace, work: pathlib.Path
) -> dict:
    """Time to first step and resume time (None: timed out or failed) and the RSS peak of one size and process count."""
    output_dir = work / f"{dataset.name}-p{processes}"
    first = launch(
        training_args(dataset, output_dir, args, max_steps=2, save_steps=1),
        processes,
        args.timeout,
        work / f"{output_dir.name}-first.log",
    )
    resumed, step = None, 1
    if first is not None and not args.skip_resume and (output_dir / "checkpoint-1").is_dir():
        step = move_checkpoint(output_dir / "checkpoint-1", args.resume_fraction, rows, processes, BATCH_SIZE)
        resumed = launch(
            training_args(
                dataset,
                output_dir,
                args,
                max_steps=step + 1,
                save_steps=0,
                resume_from_checkpoint=output_dir / f"checkpoint-{step}",
            ),
            processes,
            args.timeout,
            work / f"{output_dir.name}-resume.log",
        )
    if resumed is not None and resumed["step"] != step + 1:
        print(f"  resume started at step {resumed['step'] - 1}, not at the checkpoint's {step}", flush=True)
    runs = [r["rss_mib"] for r in (first, resumed) if r is not None]
    by_rank = [max(peaks) for peaks in zip(*runs)]  # each rank's peak over the runs
    for name, run in (("first step", first), (f"resume from step {step}", resumed)):
        if run is not None:
            phases = ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in run["phases"].items())
            print(
                f"  {dataset.name}, {processes} process(es), {name}: {phases}, step {run['seconds']:.1f} s", flush=True
            )
    # the main process's, then the largest of the others'
    result: dict = {"rss": (by_rank[0], *([max(by_rank[1:])] if processes > 1 else [])) if runs else None}
    for name, run in (("first", first), ("resume", resumed)):
        # the whole launch, and the part after the imports: what hf_ssl does before the step
        result[name] = None if run is None else (run["seconds"], run["seconds"] - run["phases"]["imported"])
    return result


# -- clustering and kNN at ImageNet size --
def mixture_features(rows: int, dim: int, seed: int = 0, components: int = 1000) -> np.ndarray:
    """L2-normalised float32 rows from a mixture of Gaussians (structure for k-means to find), made in blocks so
    that no float64 copy of the whole array exists."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, dim)).astype(np.float32)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 65536):
        block = out[start : start + 65536]
        component = rng.integers(components, size=len(block))
        block[:] = centres[component] + 0.5 * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return out


def measure_kmeans(features: np.ndarray, k: int, iterations: int) -> tuple[float, float]:
    """Seconds of `kmeans_across_processes` with `iterations` Lloyd iterations, and extrapolated to DeepCluster's."""
    from hf_ssl.clustering import kmeans_across_processes

    start = time.perf_counter()
    _, empty = kmeans_across_processes(features, [k], seed=0, niter=iterations)
    seconds = time.perf_counter() - start
    print(f"  k-means k={k}, {iterations} iteration(s): {seconds:.1f} s, {empty[0]} empty cluster(s) refilled")
    return seconds, seconds * (DEEPCLUSTER_ITERATIONS + 1) / (iterations + 1)


def measure_knn(features: np.ndarray, num_queries: int) -> float:
    from hf_ssl.evaluation.knn import knn_scores

    rng = np.random.default_rng(1)
    labels = rng.integers(NUM_LABELS, size=len(features))
    queries = features[rng.choice(len(features), num_queries, replace=False)]
    start = time.perf_counter()
    knn_scores(features, labels, queries, labels[:num_queries], "synthetic", "validation")
    return time.perf_counter() - start


# -- the table --
def _pair(values: tuple[float, ...], spec: str, unit: str = "") -> str:
    """`a (b)`: a measure and, in parentheses, its second view (after the imports; the other processes)."""
    first, *rest = (f"{v:{spec}}{unit}" for v in values)
    return first + "".join(f" ({r})" for r in rest)


def _seconds(value: tuple[float, float] | None, timeout: float) -> str:
    """A launch's seconds (after the imports in parentheses), or the timeout it exceeded."""
    return f"> {timeout:.0f}" if value is None else _pair(value, ".1f")


def _ratio(numerator: tuple[float, ...] | None, denominator: tuple[float, ...] | None) -> str:
    if numerator is None or denominator is None:
        return "n/a"
    return _pair(tuple(n / d for n, d in zip(numerator, denominator)), ".2f", "x")


def print_table(results: dict, sizes: list[int], processes: list[int], timeout: float, parts: tuple[str, ...]) -> None:
    """The issue's table: a row per size, a column per process count and part, and the ratio of the largest size
    to the smallest."""
    columns = [(p, what) for p in processes for what in parts]
    header = {"first": "first step s", "resume": "resume s", "rss": "RSS MiB/proc"}
    print("\n| rows | shards | " + " | ".join(f"{p}p: {header[w]}" for p, w in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for rows in sizes:
        cells = []
        for p, what in columns:
            value = results.get((rows, p), {}).get(what)
            if what == "rss":
                cells.append("n/a" if value is None else _pair(value, ".0f"))
            else:
                cells.append(_seconds(value, timeout))
        print(f"| {rows:,} | {shard_count(rows)} | " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        cells = [_ratio(results.get((large, p), {}).get(w), results.get((small, p), {}).get(w)) for p, w in columns]
        print(f"| ratio {large:,} / {small:,} | | " + " | ".join(cells) + " |")
    print(
        "seconds from `accelerate launch` to the end of the step (in parentheses: from hf_ssl imported); resume: "
        "from a checkpoint at --resume-fraction of the epoch; RSS: the peak of the main process (of the others)"
    )
    print("goal: ratios of first step and resume <= 1.5x; RSS per process O(bank + batch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=f"10000,100000,{IMAGENET_TRAIN_ROWS}", help="train sizes, comma-separated")
    parser.add_argument("--processes", default="1,2", help="training processes per run (x 2 workers each)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a launch is stopped")
    parser.add_argument(
        "--resume-fraction",
        type=float,
        default=0.5,
        help="the resumed checkpoint's data position, as a fraction of the epoch (0: the real step-1 checkpoint)",
    )
    parser.add_argument(
        "--eval-bank-samples",
        type=int,
        default=1000,
        help="train rows in the end-of-run kNN bank; 0: all (a feature pass over the whole split, for the RSS)",
    )
    parser.add_argument("--image-size", type=int, default=8, help="side of the training views")
    parser.add_argument("--cache-dir", type=pathlib.Path, default=pathlib.Path.home() / ".cache/hf_ssl/bench_scale")
    parser.add_argument("--write-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write-only", action="store_true", help="write the datasets, measure nothing")
    parser.add_argument("--skip-train", action="store_true", help="no training runs")
    parser.add_argument("--skip-resume", action="store_true", help="no resumed runs")
    parser.add_argument("--skip-kmeans", action="store_true", help="no k-means at k=10,000 on 1.28M x 256")
    parser.add_argument("--skip-knn", action="store_true", help="no kNN with a 1.28M bank")
    parser.add_argument("--kmeans-k", type=int, default=10_000)
    parser.add_argument("--kmeans-iterations", type=int, default=1, help="measured; extrapolated to 20")
    parser.add_argument("--feature-rows", type=int, default=IMAGENET_TRAIN_ROWS)
    parser.add_argument("--feature-dim", type=int, default=256)
    parser.add_argument("--knn-queries", type=int, default=10_000)
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    processes = [int(p) for p in args.processes.split(",")]
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    if not args.skip_train or args.write_only:
        folders = {rows: write_dataset(args.cache_dir, rows, args.write_processes) for rows in sizes}
        if not args.write_only:
            work = args.cache_dir / "runs"  # the last invocation's runs and logs, kept for reading
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            print(f"training runs (logs in {work})", flush=True)
            for rows in sizes:
                for p in processes:
                    results[rows, p] = r = measure_training(folders[rows], rows, p, args, work)
                    resume = "" if args.skip_resume else f"resume {_seconds(r['resume'], args.timeout)} s, "
                    print(
                        f"  {rows:,} rows, {p} process(es) x 2 workers: first step "
                        f"{_seconds(r['first'], args.timeout)} s, {resume}RSS {_pair(r['rss'], '.0f') if r['rss'] else 'n/a'} MiB",
                        flush=True,
                    )
            parts = ("first", "rss") if args.skip_resume else ("first", "resume", "rss")
            print_table(results, sizes, processes, args.timeout, parts)
    if args.write_only or (args.skip_kmeans and args.skip_knn):
        return
    start = time.perf_counter()
    features = mixture_features(args.feature_rows, args.feature_dim)
    print(f"\n{args.feature_rows:,} x {args.feature_dim} features made in {time.perf_counter() - start:.0f} s")
    if not args.skip_kmeans:
        measured, full = measure_kmeans(features, args.kmeans_k, args.kmeans_iterations)
        print(
            f"DeepCluster re-clustering, k={args.kmeans_k:,} on {args.feature_rows:,} x {args.feature_dim}: "
            f"{measured:.0f} s for {args.kmeans_iterations} iteration(s) -> about {full:.0f} s "
            f"({full / 60:.1f} min) for {DEEPCLUSTER_ITERATIONS} (x {DEEPCLUSTER_ITERATIONS + 1} / "
            f"{args.kmeans_iterations + 1} searches)"
        )
    if not args.skip_knn:
        seconds = measure_knn(features, args.knn_queries)
        print(
            f"kNN evaluation, {args.feature_rows:,} x {args.feature_dim} bank, {args.knn_queries:,} queries, "
            f"k=200 and 20: {seconds:.0f} s"
        )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe-train":
        sys.exit(probe_train(sys.argv[2:]))
    main()
