"""Plots for model cards, drawn from a run's `training_history.json` and evaluation scores.

Figures are drawn on matplotlib's Agg canvas through the object-oriented API (no pyplot), so no display is needed
and the caller's global matplotlib backend is left alone. Every plot function returns the written path, or None
when the run has no data for that plot (and then writes nothing).
"""

import pathlib
from collections.abc import Iterable
from typing import NamedTuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..evaluation.results import BASELINE_LABELS, BASELINES, Score

_DPI = 120


class Plot(NamedTuple):
    """A drawn plot: its title, its file, and the card section it belongs to ("training" or "evaluation")."""

    title: str
    path: pathlib.Path
    section: str


def _new_axes(xlabel: str, ylabel: str, title: str):
    figure = Figure(figsize=(6, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    return figure, axes


def _save(figure: Figure, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=_DPI)
    return path


def _steps_per_epoch(history: list[dict]) -> float | None:
    """Optimizer steps per epoch, read back from the history's (step, epoch) pairs; None if it holds none.

    The entry with the largest epoch is used: step-log epochs are rounded to 3 decimals, so the ratio is most
    precise far from step 0.
    """
    timed = [e for e in history if e.get("epoch") and "step" in e]
    if not timed:
        return None
    last = max(timed, key=lambda e: e["epoch"])
    return last["step"] / last["epoch"]


def loss_curve(history: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    """Training loss against optimizer step."""
    points = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    if not points:
        return None
    figure, axes = _new_axes("optimizer step", "loss", "Training loss")
    axes.plot(*zip(*points), marker="." if len(points) < 50 else None)
    return _save(figure, path)


# line styles of the baselines drawn across the kNN plot, in the order given
_BASELINE_STYLES = ("--", ":", "-.")


def _top1(scores: Iterable[Score]) -> list[Score]:
    return [s for s in scores if s.protocol == "knn" and s.metric == "top1_accuracy"]


def knn_curve(history: list[dict], final: list[Score], path: pathlib.Path) -> pathlib.Path | None:
    """Weighted kNN top-1 during training (one line per k): the history's kNN records, ending with the training
    loop's end-of-training scores `final`, whose baselines (raw pixels, random init) are drawn as horizontal lines
    in the colour of their k.

    Periodic kNN entries carry a step (and maybe an epoch); epochs are recovered from the history's step/epoch
    ratio. Without any epoch information the x axis is the optimizer step.
    """
    per_epoch = _steps_per_epoch(history)
    last_step = max((e["step"] for e in history if "step" in e), default=None)

    def x_of(entry: dict) -> float:
        if "epoch" in entry or per_epoch is None:
            return entry.get("epoch", entry["step"])
        return entry["step"] / per_epoch

    curves: dict[int, list[tuple[float, float]]] = {}
    records = [(e, [Score(**s) for s in e["scores"]]) for e in history if "scores" in e and "step" in e]
    if last_step is not None:
        records.append(({"step": last_step}, final))
    for entry, scores in records:
        for score in _top1(scores):
            if score.baseline is None:
                curves.setdefault(score.k, []).append((x_of(entry), score.value))
    if not curves:
        return None
    xlabel = "epoch" if per_epoch is not None else "optimizer step"
    figure, axes = _new_axes(xlabel, "top-1 accuracy (%)", "Weighted kNN top-1 during training")
    baselines = [s for s in _top1(final) if s.baseline is not None]
    for k, points in sorted(curves.items()):
        (line,) = axes.plot(*zip(*sorted(points)), marker="o", label=f"k={k}")
        for baseline, style in zip(BASELINES, _BASELINE_STYLES):
            for score in (s for s in baselines if s.baseline == baseline and s.k == k):
                label = f"{BASELINE_LABELS[baseline]}, k={k}"
                axes.axhline(score.value, color=line.get_color(), linestyle=style, label=label)
    axes.legend(fontsize=8)
    return _save(figure, path)


def nmi_curve(history: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    """DeepCluster's per-epoch NMI: clusters vs the true labels, and vs the previous epoch's clusters."""
    lines = {
        "nmi_true_labels": "NMI(clusters, true labels)",
        "nmi_previous_epoch": "NMI(clusters, previous epoch's clusters)",
    }
    curves = {key: [(e["epoch"], e[key]) for e in history if key in e and "epoch" in e] for key in lines}
    if not any(curves.values()):
        return None
    figure, axes = _new_axes("epoch", "NMI", "Clustering NMI per epoch")
    for key, points in curves.items():
        if points:
            axes.plot(*zip(*points), marker="o", label=lines[key])
    axes.set_ylim(0, 1)
    axes.legend()
    return _save(figure, path)


def layer_probe_bars(scores: Iterable[Score], path: pathlib.Path) -> pathlib.Path | None:
    """Per-layer linear-probe top-1 (protocol "layers") as bars, one group of bars per dataset/split; a baseline of
    the same layer (e.g. the network at random initialisation) as a black line across its bar."""
    measured = [s for s in scores if s.protocol == "layers" and s.metric == "top1_accuracy" and s.layer]
    layer_scores = [s for s in measured if s.baseline is None]
    if not layer_scores:
        return None
    layers = list(dict.fromkeys(s.layer for s in layer_scores))  # network order, as the evaluation wrote them
    groups = list(dict.fromkeys((s.dataset, s.split) for s in layer_scores))
    figure, axes = _new_axes("layer", "top-1 accuracy (%)", "Linear probe top-1 per layer")
    width = 0.8 / len(groups)
    for i, (dataset, split) in enumerate(groups):
        values = {s.layer: s.value for s in layer_scores if (s.dataset, s.split) == (dataset, split)}
        # {layer: x} of this group's bars
        positions = {
            layer: j + (i - (len(groups) - 1) / 2) * width for j, layer in enumerate(layers) if layer in values
        }
        bars = axes.bar(
            list(positions.values()),
            [values[layer] for layer in positions],
            width,
            label=f"{pathlib.PurePath(dataset).name} ({split})",
        )
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
        for baseline, style in zip(BASELINES, _BASELINE_STYLES):
            marked = [
                (positions[s.layer], s.value)
                for s in measured
                if s.baseline == baseline and (s.dataset, s.split) == (dataset, split) and s.layer in positions
            ]
            if marked:
                label = BASELINE_LABELS[baseline] + (f" ({pathlib.PurePath(dataset).name})" if len(groups) > 1 else "")
                x, y = zip(*marked)
                lines = {"xmin": [v - width / 2 for v in x], "xmax": [v + width / 2 for v in x]}
                axes.hlines(y, **lines, colors="black", linestyles=style, linewidth=2, zorder=3, label=label)
    axes.set_xticks(range(len(layers)), layers)
    axes.set_ylim(0, 1.25 * max(s.value for s in measured))  # headroom: the legend must not cover bar labels
    axes.legend(loc="upper left", ncols=max(1, len(groups)))
    return _save(figure, path)


def make_plots(
    history: list[dict], scores: list[Score], training_scores: list[Score], plots_dir: pathlib.Path
) -> list[Plot]:
    """Draw every plot the run has data for into `plots_dir`; returns them in display order: the history's curves
    ending with the training loop's kNN `training_scores`, the per-layer bars of `scores`.

    A plot without data is not drawn, and a file left by an earlier rendering of it is removed, so the folder
    holds exactly the plots the card links to.
    """
    plots_dir = pathlib.Path(plots_dir)
    specs = [
        ("Training loss", "training", "loss.png", lambda p: loss_curve(history, p)),
        (
            "Weighted kNN top-1 during training",
            "training",
            "knn_top1.png",
            lambda p: knn_curve(history, training_scores, p),
        ),
        ("Clustering NMI per epoch (DeepCluster)", "training", "nmi.png", lambda p: nmi_curve(history, p)),
        ("Linear probe top-1 per layer", "evaluation", "layer_probe_top1.png", lambda p: layer_probe_bars(scores, p)),
    ]
    made = []
    for title, section, name, draw in specs:
        path = draw(plots_dir / name)
        if path is None:
            (plots_dir / name).unlink(missing_ok=True)
        else:
            made.append(Plot(title, path, section))
    return made


__all__ = ["Plot", "knn_curve", "layer_probe_bars", "loss_curve", "make_plots", "nmi_curve"]
