"""Quality parity with lightly: SimCLR, MoCo v2, BYOL and SwAV trained with hf_ssl and with lightly on the same
CIFAR-10 images, budget and settings, then scored by the same weighted kNN on frozen pooled backbone features.

    PYTHONPATH=. python bench/peer_quality.py                      # CPU budget, 3 seeds, ~2 h on 2 quiet cores
    PYTHONPATH=. python bench/peer_quality.py --device cuda        # lightly's CIFAR-10 benchmark settings
    PYTHONPATH=. python bench/peer_quality.py --methods simclr --images 1000 --epochs 1 --seeds 0   # smoke test

Prints, per method and k (200 and 20), hf_ssl's and lightly's kNN top-1 as mean +- standard deviation over the
seeds, the difference of the means with its standard error, the per-seed values, both mean wall times and
training images/s, then the baselines on the same protocol (each side's network at random initialisation, mean +-
std over seeds, and the raw pixels), then the goal per method at k=200: the difference of the mean accuracies
(hf_ssl - lightly) with its 95% interval (Student's t), and whether the interval resolves it (excludes 0). It
writes every run to <output-dir>/results.json. Several seeds because at this budget one seed is not enough to rank
two libraries: MoCo's kNN top-1 moved by 2.6 points between hf_ssl's seeds 0 and 1.

Default budgets. CPU: 12,500 images (the first two train shards) x 4 epochs, batch 128, standard stem, 2 threads, 2
data workers: 384 steps per run, and the method settings of BUDGET_METHOD_CONFIG (`--method-config budget`): MoCo
with a queue of 256 keys and tau 0.2, BYOL with target momentum 0.999 -> 1, SwAV with 300 prototypes and no queue.
With the recipes' own (`--method-config recipe`) MoCo, BYOL and SwAV end at or below their random initialisation on
both sides in 384 steps, which ranks nothing. Measured wall time per run on 2 quiet cores (hf_ssl / lightly): MoCo
2.9 / 3.8 min, SwAV 3.9 / 5.1, BYOL 6.5 / 7.4 (mean of seeds 0-7, some beside lighter work); the default 3 seeds of
the four methods take about 2 h. The known SimCLR point (8 epochs on 12,500 images, standard stem) was 37.7
(hf_ssl) vs 38.1 (lightly) at k=200. cuda: all 50,000 images x 10 epochs, batch 512, CIFAR stem, 8 threads, 8
workers (hf_ssl with augment_on_device); not yet measured on a GPU: raise --epochs to what the device time allows
(lightly's benchmark trains 200 / 800).

How each side runs (one after another, never concurrently):
- hf_ssl: the real training loop, `python train.py training_args/<method>_resnet18_cifar10.yaml --overrides`, in
  this environment; its end-of-training evaluation is `hf_ssl.evaluation.knn_scores`.
- lightly: `bench/peer_lightly_train.py` run by the peer python (torch + torchvision + lightly in a separate venv:
  `--peer-python`, default $HF_SSL_PEER_PYTHON or ../peer/bin/python; ../shared/peer/README.md builds one). It
  never imports hf_ssl; it exports the pooled backbone features of the bank and query images as .npz, and this
  script scores them with the same `knn_scores` (bank = the train images used, queries = the 10,000
  CIFAR-10 test images, k = 200 and 20, tau = 0.07, cosine similarity).
Wall time is each side's whole run (start-up, training, feature extraction of bank and queries).

Settings, identical on both sides (the recipe's value unless the budget overrides it):
- data: the first `--images` CIFAR-10 train images of ../shared/data/cifar10 (file order), rewritten as 8 parquet
  shards in <output-dir>/data, test split linked; both sides read these files, decode every image every epoch.
- steps: hf_ssl's steps_per_epoch (full batches, split over data workers; lightly's drop_last gives the same or
  up to workers-1 more per epoch, so the lightly side gets hf_ssl's count), epochs x that in total.
- backbone: ResNet-18 (basic blocks [2,2,2,2], widths 64-512), pooled 512-d features. hf_ssl: transformers'
  ResNetModel; lightly: torchvision's resnet18 without fc. `--stem standard` (7x7/2 conv + 3x3/2 max-pool, the
  CPU default: 16x fewer FLOPs at 32 px) or `cifar` (3x3/1 conv, no max-pool: the recipes' cifar_stem, the cuda
  default) on both sides. Initialisation is each library's own (transformers' ResNet vs torchvision's), with
  the recipe's `zero_init_residual` on both (SimCLR's: each residual block's last BatchNorm scale starts at 0,
  official SimCLR's; lightly's side builds torchvision's resnet18(zero_init_residual=True)).
- heads, from the recipe's method_config (changed as above by `--method-config budget`): SimCLR projector
  512-2048-128, MoCo 512-2048-128, BYOL projector 512-4096-256 and predictor 256-4096-256, SwAV projector
  512-2048-128 + 3000 prototypes. BatchNorm after every hidden layer (not in MoCo v2: lightly's MoCoProjectionHead
  has none; nor has hf_ssl's MoCo v2 projector, `projection_batchnorm: false`). SimCLR's projector also has
  BatchNorm on its 128-d output and no bias before a BatchNorm on both sides (the official code's; lightly's
  SimCLRProjectionHead). Difference of lightly's standard heads: SwaVPrototypes has a bias.
- loss (the recipes' values; the CPU budget's changes above): SimCLR NT-Xent tau 0.5 (both: 2N-2 negatives per
  anchor, both directions). MoCo tau 0.1, key momentum 0.99 constant, queue 4096 of keys; lightly's standard form
  (its MoCo example) is one direction (query of view 0, key of view 1), hf_ssl's MoCo v2 default is the same
  asymmetric loss. BYOL target momentum 0.99 -> 1 (cosine over steps); loss 2 - 2cos summed over the two directions
  (official BYOL, hf_ssl's recipe) on both sides: lightly's side takes 2 x (-cos(p0, z1) - cos(p1, z0)), not its
  example's 0.5 x, whose gradient is 1/4 (see LOSSES; each run records its loss form). SimCLR's recipe crops area
  0.08-1 (the SimCLR paper's CIFAR setting). SwAV tau 0.1, Sinkhorn eps 0.05 x 3 iterations, 3000 prototypes
  normalised every step, queue 3840 per view, queue used from / prototypes frozen until the recipe's fraction of
  training (50/200 epochs, 2/200 epochs) scaled to the budget; two 32 px views, no multi-crop (SwaVTransform with
  one crop size). BatchNorm batches: lightly's examples encode each view in a forward of its own; hf_ssl follows
  each method's official code (`per_view_batchnorm`): BYOL per view (the same on both sides), SimCLR and SwAV all
  views in one batch (official SimCLR's tf.concat, SwAV's crops of one size), MoCo one view per encoder. Momentum
  encoders: lightly's update_momentum moves parameters only (BN statistics of the target
  are its own), hf_ssl's copies BN buffers.
- augmentation (hf_ssl's recipe values; lightly's SimCLRTransform / MoCoV2Transform / BYOLTransform /
  SwaVTransform with every default overridden): RandomResizedCrop 32 px, scale (the recipe's crop_min_scale, 1), ratio (3/4, 4/3);
  horizontal flip 0.5; colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8; grayscale 0.2; blur 0 (off); no
  solarisation (BYOLView2Transform's default 0.2 set to 0); ImageNet mean/std. hf_ssl: kornia on tensors,
  lightly: torchvision on PIL images (same parameters and crop geometry, different implementations: PIL rounds
  every colour step to 8 bits).
- evaluation preprocessing: none but ImageNet normalisation (32 px images, no resize or crop) on both sides.
- optimizer (`--optimizer recipe`, the CPU default): the recipe's optimizer, momentum and weight decay (SimCLR LARS
  wd 1e-6, MoCo SGD wd 5e-4, BYOL LARS wd 1e-5, SwAV LARS wd 1e-6; momentum 0.9; trust 0.001), lr scaled linearly
  from the recipe's batch to the budget's batch. Biases and norm parameters (1-D) get no weight decay and no LARS
  scaling on both sides (lightly's LARS excludes parameters with weight decay 0 from its trust ratio; its ratio
  divides by ||g|| + wd ||w||, hf_ssl's by ||g + wd w||). `--optimizer benchmark` (the cuda default) is lightly's
  CIFAR-10 benchmark optimizer instead: SGD lr 0.06 x batch/128, momentum 0.9, wd 5e-4, no warm-up (SwAV: AdamW lr
  1e-3 x batch/128, wd 1e-6). For MoCo it differs from the recipe in the lr alone, 4x the recipe's 0.06 per 512: at
  the CPU budget the recipe's lr leaves MoCo below its random initialisation on both sides (the baselines line shows
  it).
- schedule: linear warm-up over the recipe's warm-up fraction of training (10/200 epochs; none for MoCo), then
  cosine to 0, per step (lightly: cosine_warmup_schedule in a LambdaLR).
- threads: torch.set_num_threads(--threads) on lightly's side, OMP_NUM_THREADS / MKL_NUM_THREADS on hf_ssl's;
  `--workers` data-loading processes on each side; the same seed on each side, for each of `--seeds`.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from hf_ssl.data.stream import steps_per_epoch
from hf_ssl.evaluation import knn_scores
from hf_ssl.evaluation.results import EvaluationResults
from hf_ssl.training import parse_args
from hf_ssl.training.arguments import load_recipe

ROOT = pathlib.Path(__file__).resolve().parent.parent
METHODS = ("simclr", "moco", "byol", "swav")
KNN_K = [200, 20]
KNN_TEMPERATURE = 0.07
# the baselines hf_ssl's run measures on the same protocol (the lightly side: random init of its own network)
BASELINES = ("random_init", "pixels")
CIFAR10_TRAIN_SIZE = 50_000
# The default budget of each device (any of them can be overridden on the command line).
PROFILES = {
    "cpu": dict(
        images=12_500,
        epochs=4,
        batch_size=128,
        stem="standard",
        threads=2,
        workers=2,
        optimizer="recipe",
        method_config="budget",
    ),
    "cuda": dict(
        images=50_000,
        epochs=10,
        batch_size=512,
        stem="cifar",
        threads=8,
        workers=8,
        optimizer="benchmark",
        method_config="recipe",
    ),
}
# Method settings that `--method-config budget` (the CPU default) changes from the recipes, on both sides alike.
# In 384 steps the recipes' values leave MoCo, BYOL and SwAV at or below their random initialisation on both
# sides, so their rows would compare untrained networks. Chosen on hf_ssl's side alone (seed 0, kNN top-1 at k=200,
# from its random init of 30.66), before any lightly run with them:
BUDGET_METHOD_CONFIG = {
    # the recipe's queue of 4,096 keys (32 batches of a fast-changing encoder) with tau 0.1: 27.6; tau 0.2: 28.3;
    # then queue 512: 33.5 (lr 4x: 31.9), queue 256: 34.3; key momentum 0.9 instead of 0.99: 25.2
    "moco": {"queue_size": 256, "temperature": 0.2},
    # target momentum from 0.99 (the recipe): 31.3; 0.9: 28.4; 0.996: 31.7; 0.999: 32.9. A nearly fixed random
    # target learns fastest here (BYOL paper, sec. 3: predicting a random network's features already learns)
    "byol": {"base_momentum": 0.999},
    # 3000 prototypes and a queue of 3840 (the recipe): 31.4; 300 prototypes: 30.8, without the queue: 32.0
    # (2x the lr: 30.5); 100 prototypes: 29.1, without the queue 31.9. SwAV barely leaves its init with any of these
    "swav": {"num_prototypes": 300, "queue_size": 0},
}
# Each method's loss, the same value and gradient on both sides (recorded with every run; lightly's side computes it
# from lightly's criteria). BYOL: lightly's example takes 0.5 x the two directions' -cos, 1/4 of official BYOL's
# gradient; its side is scaled to the official sum, which hf_ssl's recipe uses, because the scale is not a detail:
# biases and norm parameters are outside LARS's trust ratio, so their step grows with it (4x).
LOSSES = {
    "simclr": "NT-Xent: cross-entropy over the 2N-1 others, mean over the 2N anchors",
    "moco": "InfoNCE: query of view 0 vs key of view 1 and the queue, mean over the N queries",
    "byol": "2 - 2 cos(prediction, target), mean over examples, summed over the two directions (official BYOL)",
    "swav": "swapped prediction: cross-entropy of each view's codes with the other's scores, mean over the views",
}


def default_peer_python() -> pathlib.Path:
    return pathlib.Path(os.environ.get("HF_SSL_PEER_PYTHON", ROOT.parent / "peer" / "bin" / "python"))


def subset_dataset(source: pathlib.Path, images: int, folder: pathlib.Path) -> pathlib.Path:
    """A parquet dataset folder with the first `images` train images of `source` (8 shards) and its test split."""
    data = folder / "data"
    if folder.exists():
        shutil.rmtree(folder)
    data.mkdir(parents=True)
    shutil.copy(source / "README.md", folder / "README.md")
    test = sorted((source / "data").glob("test-*.parquet"))
    train = sorted((source / "data").glob("train-*.parquet"))
    for file in test:
        (data / file.name).symlink_to(file.resolve())
    rows = 0
    tables = []
    for file in train:
        if rows >= images:
            break
        table = pq.read_table(file)
        tables.append(table.slice(0, images - rows))
        rows += tables[-1].num_rows
    if rows < images:
        raise ValueError(f"--images {images}: {source} has only {rows} train images")
    table = pa.concat_tables(tables)
    shards = 8
    for i in range(shards):
        start, stop = i * rows // shards, (i + 1) * rows // shards
        pq.write_table(table.slice(start, stop - start), data / f"train-{i:05d}-of-{shards:05d}.parquet")
    return folder


def settings(method: str, args: argparse.Namespace, data: pathlib.Path, seed: int) -> dict:
    """Every setting of one method's run, shared by both sides (see the module docstring)."""
    recipe = load_recipe(ROOT / "training_args" / f"{method}_resnet18_cifar10.yaml")
    spe = steps_per_epoch(args.images, args.batch_size, 1, args.workers)
    total = round(args.epochs * spe)
    method_config = dict(recipe["method_config"])
    if method == "swav":  # queue start and prototype freezing: the same fraction of training as in the recipe
        for epochs_key, steps_key in (
            ("queue_start_epochs", "queue_start_step"),
            ("freeze_prototypes_epochs", "freeze_prototypes_steps"),
        ):
            method_config[steps_key] = round(method_config.pop(epochs_key, 0) / recipe["num_train_epochs"] * total)
    if args.method_config == "budget":
        method_config.update(BUDGET_METHOD_CONFIG.get(method, {}))
    scale = args.batch_size / recipe["per_device_train_batch_size"]
    optimizer = dict(
        optim=recipe["optim"],
        learning_rate=recipe["learning_rate"] * scale,
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        warmup_epochs=recipe["warmup_epochs"] / recipe["num_train_epochs"] * args.epochs,
    )
    # lightly's CIFAR-10 benchmark (docs/getting_started/benchmarks/cifar10_benchmark.py)
    if args.optimizer == "benchmark":
        if method == "swav":
            optimizer = dict(
                optim="adamw",
                learning_rate=1e-3 * args.batch_size / 128,
                momentum=0.9,
                weight_decay=1e-6,
                warmup_epochs=0.0,
            )
        else:
            optimizer = dict(
                optim="sgd",
                learning_rate=0.06 * args.batch_size / 128,
                momentum=0.9,
                weight_decay=5e-4,
                warmup_epochs=0.0,
            )
    # the augmentation exactly as the loop builds it from the recipe (hf_ssl's DataArguments)
    view = parse_args([str(ROOT / "training_args" / f"{method}_resnet18_cifar10.yaml")])[1].augmentation_kwargs()
    if view["scale"][1] != 1.0:
        raise ValueError(f"{method}: lightly's transforms take no crop_max_scale; the recipe sets {view['scale'][1]}")
    return dict(
        method=method,
        method_config=method_config,
        loss=LOSSES[method],
        num_views=method_config.get("num_views", 2),
        data=str(data),
        images=args.images,
        epochs=args.epochs,
        steps_per_epoch=spe,
        total_steps=total,
        batch_size=args.batch_size,
        eval_batch_size=512,
        stem=args.stem,
        # each residual block's last BatchNorm scale starts at 0 on both sides when the recipe says so (official
        # SimCLR's init; torchvision's resnet18(zero_init_residual=True) on lightly's side)
        zero_init_residual=bool(recipe["backbone_config"].get("zero_init_residual", False)),
        image_size=recipe["image_size"],
        crop_min_scale=view["scale"][0],
        hflip_p=view["hflip_p"],
        jitter_p=view["jitter_p"],
        jitter=list(view["jitter"]),
        grayscale_p=view["grayscale_p"],
        blur_p=view["blur_p"],
        threads=args.threads,
        workers=args.workers,
        seed=seed,
        device=args.device,
        **optimizer,
    )


def environment(cfg: dict) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(cfg["threads"]),
        "MKL_NUM_THREADS": str(cfg["threads"]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    if cfg["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def hf_ssl_command(cfg: dict, output_dir: pathlib.Path) -> list[str]:
    """`train.py <the method's recipe> --field value ...`: the recipe overridden to the shared settings (without
    the interpreter, so a driver can run the loop its own way)."""
    method = cfg["method"]
    recipe = load_recipe(ROOT / "training_args" / f"{method}_resnet18_cifar10.yaml")
    backbone = {
        **recipe["backbone_config"],
        "cifar_stem": cfg["stem"] == "cifar",
        "zero_init_residual": cfg["zero_init_residual"],
    }
    overrides = {
        "dataset_name": cfg["data"],
        "output_dir": str(output_dir),
        # reached only without a finished score (`once`): an interrupted run of this bench, which saves no
        # checkpoint to resume from, is replaced (hf_ssl refuses to overwrite a run folder unless told to)
        "overwrite_output_dir": "true",
        "num_train_epochs": cfg["epochs"],
        "per_device_train_batch_size": cfg["batch_size"],
        "per_device_eval_batch_size": cfg["eval_batch_size"],
        "optim": cfg["optim"],
        "learning_rate": cfg["learning_rate"],
        "momentum": cfg["momentum"],
        "weight_decay": cfg["weight_decay"],
        "warmup_epochs": cfg["warmup_epochs"],
        "lr_scheduler_type": "cosine",
        "backbone_config": json.dumps(backbone),
        "method_config": json.dumps(cfg["method_config"]),
        "dataloader_num_workers": cfg["workers"],
        "seed": cfg["seed"],
        "eval_epochs": 0,
        "save_steps": 0,
        "report_to": "none",
        "disable_tqdm": "true",
        "logging_steps": 10,
        "knn_temperature": KNN_TEMPERATURE,
        "eval_random_init": "true",  # the random-init baseline, before training (raw pixels: at the end, by default)
        "augment_on_device": str(cfg["device"] == "cuda").lower(),
    }
    command = [str(ROOT / "train.py"), str(ROOT / "training_args" / f"{method}_resnet18_cifar10.yaml")]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return command + ["--knn_k", *map(str, KNN_K)]


def run_hf_ssl(cfg: dict, output_dir: pathlib.Path) -> dict:
    """The real training loop with the recipe overridden to the shared settings; its final kNN evaluation."""
    command = [sys.executable, *hf_ssl_command(cfg, output_dir)]
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT, env={**environment(cfg), "PYTHONPATH": str(ROOT)})
    wall = time.time() - started
    results = EvaluationResults.load(output_dir / "eval_results.json")
    history = json.loads((output_dir / "training_history.json").read_text())
    rates = [r["images_per_s"] for r in history if "images_per_s" in r]

    def top1(baseline: str | None = None) -> dict[int, float]:
        return {k: results.get(protocol="knn", k=k, metric="top1_accuracy", baseline=baseline).value for k in KNN_K}

    baselines = {name: top1(name) for name in BASELINES}
    return {**top1(), **baselines, "wall_s": wall, "images_per_s": float(np.mean(rates))}


def run_lightly(cfg: dict, peer_python: pathlib.Path, output_dir: pathlib.Path) -> dict:
    """bench/peer_lightly_train.py in the peer environment; its exported features scored with hf_ssl's kNN."""
    output_dir.mkdir(parents=True, exist_ok=True)
    features = output_dir / "features.npz"
    command = [
        str(peer_python),
        str(ROOT / "bench" / "peer_lightly_train.py"),
        "--config",
        json.dumps(cfg),
        "--output",
        str(features),
    ]
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT, env=environment(cfg))
    wall = time.time() - started
    f = np.load(features)

    def top1(prefix: str = "") -> dict[int, float]:
        bank, queries = f[f"{prefix}bank"], f[f"{prefix}queries"]
        scores = knn_scores(
            bank, f["bank_labels"], queries, f["query_labels"], "cifar10", "test", KNN_K, KNN_TEMPERATURE
        )
        return {s.k: s.value for s in scores if s.metric == "top1_accuracy"}

    return {
        **top1(),
        "random_init": top1("init_"),
        "wall_s": wall,
        "images_per_s": float(f["train_images"] / f["train_seconds"]),
    }


def once(run, cfg: dict, output_dir: pathlib.Path, *args) -> dict:
    """`run(cfg, *args, output_dir)`, or the score a finished earlier run with the same settings left in
    output_dir/score.json: an interrupted bench resumes where it stopped."""
    marker = output_dir / "score.json"
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved["settings"] == cfg:
            return _int_keys(saved["score"])
    score = run(cfg, *args, output_dir)
    marker.write_text(json.dumps({"settings": cfg, "score": score}))
    return score


def _int_keys(score: dict) -> dict:
    """A score read back from JSON: its k keys (top level and in the baselines' dicts) as ints again."""
    return {int(k) if k.isdigit() else k: _int_keys(v) if isinstance(v, dict) else v for k, v in score.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _stderr_of_difference(std_a: float, std_b: float, runs: int) -> float:
    """Standard error of the difference of two means over `runs` seeds each."""
    return float(np.sqrt((std_a**2 + std_b**2) / runs))


def table(rows: list[dict], seeds: list[int]) -> str:
    """One line per method and k: mean +- std over seeds of each side, the difference of the means +- its standard
    error, and the per-seed values (hf_ssl / lightly)."""
    head = (
        f"{'method':<7} {'k':>4} {'hf_ssl':>13} {'lightly':>13} {'diff':>12}   {'per seed (hf_ssl/lightly)':<28}"
        f" {'hf_ssl wall':>11} {'lightly wall':>12} {'hf_ssl img/s':>12} {'lightly img/s':>13}"
    )
    lines = [head, "-" * len(head)]
    for method in dict.fromkeys(row["method"] for row in rows):
        runs = [row for row in rows if row["method"] == method]
        for i, k in enumerate(KNN_K):
            hf, peer = ([run[side][k] for run in runs] for side in ("hf_ssl", "lightly"))
            (hf_mean, hf_std), (peer_mean, peer_std) = _mean_std(hf), _mean_std(peer)
            stderr = _stderr_of_difference(hf_std, peer_std, len(runs))
            per_seed = " ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(hf, peer))
            timing = ""
            if i == 0:
                wall = [np.mean([run[side]["wall_s"] for run in runs]) / 60 for side in ("hf_ssl", "lightly")]
                rate = [np.mean([run[side]["images_per_s"] for run in runs]) for side in ("hf_ssl", "lightly")]
                timing = f" {wall[0]:>9.1f} m {wall[1]:>10.1f} m {rate[0]:>12.0f} {rate[1]:>13.0f}"
            lines.append(
                f"{method if i == 0 else '':<7} {k:>4} {hf_mean:>6.2f} +-{hf_std:>4.2f} {peer_mean:>6.2f} +-{peer_std:>4.2f} "
                f"{hf_mean - peer_mean:>+6.2f} +-{stderr:>3.1f}   {per_seed:<28}{timing}".rstrip()
            )
    lines.append(f"seeds {','.join(map(str, seeds))}; diff = hf_ssl - lightly, +- its standard error over seeds")
    return "\n".join(lines + baseline_lines(rows) + verdict_lines(rows))


def baseline_lines(rows: list[dict]) -> list[str]:
    """The baselines on the same protocol: each method's network at random initialisation on each side (mean +- std
    over seeds; each library initialises its own ResNet-18), the gain of training over it (trained - random init of
    the same run: how far each side moved from where it started; the difference of the mean gains +- its standard
    error) and the raw pixels (mean-centred per image; the same images on both sides)."""
    lines = ["", "baselines, same kNN: random init, gain over it (trained - random init, same run), raw pixels"]
    for method in dict.fromkeys(row["method"] for row in rows):
        runs = [row for row in rows if row["method"] == method and "random_init" in row["lightly"]]
        for k in KNN_K if runs else []:
            init = [[run[side]["random_init"][k] for run in runs] for side in ("hf_ssl", "lightly")]
            gain = [[run[side][k] - run[side]["random_init"][k] for run in runs] for side in ("hf_ssl", "lightly")]
            (hf, peer), (hf_gain, peer_gain) = (map(_mean_std, pair) for pair in (init, gain))
            stderr = _stderr_of_difference(hf_gain[1], peer_gain[1], len(runs))
            lines.append(
                f"{method:<7} {k:>4} random init: hf_ssl {hf[0]:>6.2f} +-{hf[1]:>4.2f}, lightly {peer[0]:>6.2f} "
                f"+-{peer[1]:>4.2f}; gain: hf_ssl {hf_gain[0]:>+6.2f} +-{hf_gain[1]:>4.2f}, lightly "
                f"{peer_gain[0]:>+6.2f} +-{peer_gain[1]:>4.2f}, diff {hf_gain[0] - peer_gain[0]:>+6.2f} +-{stderr:>4.2f}"
            )
    pixels = [row["hf_ssl"]["pixels"] for row in rows if "pixels" in row["hf_ssl"]]
    if pixels:
        lines.append("raw pixels: " + ", ".join(f"k={k} {pixels[0][k]:.2f}" for k in KNN_K))
    return lines


def _interval(hf: list[float], peer: list[float]) -> tuple[float, float, float]:
    """The difference of the means (hf - peer) and its 95% interval: Student's t with the seeds' pooled degrees of
    freedom (2n - 2), wider than a normal one at the few seeds a CPU budget affords."""
    (hf_mean, hf_std), (peer_mean, peer_std) = _mean_std(hf), _mean_std(peer)
    diff = hf_mean - peer_mean
    half = stats.t.ppf(0.975, 2 * len(hf) - 2) * _stderr_of_difference(hf_std, peer_std, len(hf))
    return diff, diff - half, diff + half


def verdict_lines(rows: list[dict]) -> list[str]:
    """The goal, hf_ssl's kNN top-1 at least lightly's at equal epochs, per method at k = KNN_K[0]: the difference of
    the mean accuracies with its 95% interval and what it says (resolved only where it excludes 0). Not the gain over
    init: both libraries' random inits score the same in expectation (48 seeds each: 28.84 vs 28.83), and a run's
    trained score does not rise with its init's across seeds, so subtracting the init adds its noise (and its
    luck) instead of removing them."""
    k = KNN_K[0]
    lines = ["", f"goal hf_ssl >= lightly, kNN top-1 at k={k}: hf_ssl - lightly, mean [95% interval]"]
    for method in dict.fromkeys(row["method"] for row in rows):
        runs = [row for row in rows if row["method"] == method]
        hf, peer = ([run[side][k] for run in runs] for side in ("hf_ssl", "lightly"))
        if len(runs) < 2:
            lines.append(f"{method:<7} {np.mean(hf) - np.mean(peer):+.2f}: one seed, no interval")
            continue
        diff, low, high = _interval(hf, peer)
        if low > 0:
            verdict = "hf_ssl above lightly"
        elif high < 0:
            verdict = "hf_ssl below lightly"
        else:
            side = ">=" if diff >= 0 else "<"
            verdict = f"hf_ssl {side} lightly by the mean, not resolved (the interval holds 0)"
        lines.append(f"{method:<7} {diff:+.2f} [{low:+.2f}, {high:+.2f}] over {len(runs)} seeds: {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--device", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--images", type=int, help="train images (bank = these); default per device")
    parser.add_argument("--epochs", type=float, help="default per device")
    parser.add_argument("--batch-size", type=int, help="default per device")
    parser.add_argument("--stem", choices=("standard", "cifar"), help="ResNet stem on both sides; default per device")
    parser.add_argument(
        "--optimizer",
        choices=("recipe", "benchmark"),
        help="the recipe's optimizer, lr scaled to the batch (cpu default), or lightly's CIFAR-10 benchmark's (cuda)",
    )
    parser.add_argument(
        "--method-config",
        choices=("recipe", "budget"),
        help="the recipes' method settings, or BUDGET_METHOD_CONFIG's changes to them (cpu default: see there)",
    )
    parser.add_argument("--threads", type=int, help="torch threads of each side; default per device")
    parser.add_argument("--workers", type=int, help="data-loading processes of each side; default per device")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each runs both sides")
    parser.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument(
        "--peer-python",
        type=pathlib.Path,
        default=default_peer_python(),
        help="python of a venv with lightly + torchvision (default $HF_SSL_PEER_PYTHON or ../peer)",
    )
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "outputs" / "peer_quality")
    args = parser.parse_args()
    for key, value in PROFILES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ValueError(f"--seeds {args.seeds!r}: use comma-separated integers, e.g. 0,1,2")
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"--methods {args.methods!r}: use a comma-separated subset of {METHODS}")
    if not 0 < args.images <= CIFAR10_TRAIN_SIZE:
        raise ValueError(f"--images must be in [1, {CIFAR10_TRAIN_SIZE}], got {args.images}")
    if not args.peer_python.exists():
        sys.exit(
            f"--peer-python {args.peer_python} does not exist: build a venv with lightly and torchvision as "
            f"../shared/peer/README.md describes, then pass its bin/python (or set HF_SSL_PEER_PYTHON)"
        )
    if not (args.data / "data").is_dir():
        sys.exit(f"--data {args.data}: no CIFAR-10 parquet folder there (../shared/data/cifar10)")

    data = subset_dataset(args.data, args.images, args.output_dir / "data")
    print(
        f"{args.images} images, {args.epochs} epochs, batch {args.batch_size}, {args.stem} stem, "
        f"{args.threads} threads, {args.workers} workers, {args.optimizer} optimizer, "
        f"{args.method_config} method settings, {args.device}",
        flush=True,
    )
    rows = []
    for method in methods:
        for seed in seeds:
            cfg = settings(method, args, data, seed)
            print(f"== {method}, seed {seed}: {json.dumps(cfg)}", flush=True)
            hf = once(run_hf_ssl, cfg, args.output_dir / f"seed{seed}" / f"hf_ssl_{method}")
            print(f"hf_ssl {method} seed {seed}: {hf}", flush=True)
            peer = once(run_lightly, cfg, args.output_dir / f"seed{seed}" / f"lightly_{method}", args.peer_python)
            print(f"lightly {method} seed {seed}: {peer}", flush=True)
            rows.append({"method": method, "seed": seed, "settings": cfg, "hf_ssl": hf, "lightly": peer})
            (args.output_dir / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nweighted kNN top-1 (%), tau {KNN_TEMPERATURE}, bank = {args.images} train images, queries = test\n")
    print(table(rows, seeds))


if __name__ == "__main__":
    main()
