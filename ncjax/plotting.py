"""Figures made from run histories (the rows of `metrics.jsonl`)."""

from collections.abc import Mapping, Sequence
import math
import os
from pathlib import Path
import tempfile
from typing import Any

# Figure objects without pyplot: no global state, and no GUI backend is
# selected, so importing ncjax leaves a notebook's backend alone.
from matplotlib.figure import Figure

METRIC_LABELS = {
    "nc0": r"NC0 $\|W^\top \mathbf{1}\|_2$",
    "nc1": r"NC1 $\mathrm{tr}(S_W S_B^+)/K$",
    "nc2": "NC2 (class means to ETF)",
    "nc3": "NC3 (W to class means)",
}


def plot_metrics_over_training(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3"),
    title: str | None = None,
) -> Path:
    """Plot each metric against the epoch, one line per run, on log y axes.

    `histories` maps a run name (the legend label) to its evaluation rows.
    Missing or non-positive values are left out of a line. The PNG is saved
    through a temporary file and a rename. Returns the path written.
    """
    fig = Figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        for name, rows in histories.items():
            points = [
                (row["epoch"], row[metric])
                for row in rows
                if row.get(metric) is not None and row[metric] > 0
            ]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker=".", label=name)
        _style_axis(axis, metric, xlabel="epoch")
    return _finish(fig, axes, title, path)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save `fig` as a PNG through a temporary file and a rename; return the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        fig.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def plot_metrics_against_decay(
    summaries: Mapping[str, Mapping[float, Mapping[str, tuple[float, float]]]],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("nc0", "nc3", "nc1", "nc2"),
    title: str | None = None,
) -> Path:
    """Plot the mean of each metric against weight decay with a band of one std.

    `summaries` maps a line label (an optimizer) to {decay: {metric: (mean,
    std)}}. The x axis is symmetric-log, so decay 0 stays visible next to
    small positive values. The y axes are logarithmic, so the lower edge of a
    band is kept above zero at a thousandth of the mean.
    """
    fig = Figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    positive_decays = sorted(
        decay for by_decay in summaries.values() for decay in by_decay if decay > 0
    )
    linthresh = positive_decays[0] if positive_decays else 1.0
    for axis, metric in zip(axes, metrics):
        for label, by_decay in summaries.items():
            points = sorted(
                (decay, *values[metric])
                for decay, values in by_decay.items()
                if metric in values and math.isfinite(values[metric][0])
            )
            if not points:
                continue
            decays, means, stds = zip(*points)
            (line,) = axis.plot(decays, means, marker="o", label=label)
            lower = [max(mean - std, mean * 1e-3) for mean, std in zip(means, stds)]
            upper = [mean + std for mean, std in zip(means, stds)]
            axis.fill_between(decays, lower, upper, color=line.get_color(), alpha=0.2)
        axis.set_xscale("symlog", linthresh=linthresh)
        _style_axis(axis, metric, xlabel="weight decay")
    return _finish(fig, axes, title, path)


def _style_axis(axis, metric: str, *, xlabel: str) -> None:
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_title(METRIC_LABELS.get(metric, metric))
    axis.grid(True, which="both", alpha=0.3)


def _finish(fig: Figure, axes, title: str | None, path) -> Path:
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
