"""Figures of the study, drawn from run histories and from flat run tables.

Two kinds of input feed the figures. History rows are the evaluations of one
run (the rows of `metrics.jsonl`, or the "history" of a run record). Flat run
rows are one dict per run, with keys such as `optimizer`, `learning_rate`,
`momentum`, `weight_decay`, `coupled_weight_decay`, `seed` and the final
metrics (`nc0`, `nc3`, `test_accuracy`, ...). A figure function draws every
row it is given, so the caller filters the rows first (one model and one
dataset, runs above the accuracy threshold).

Each study figure function builds and returns a `Figure`, so that callers and
tests can read the drawn data back. Given `path`, it also saves the figure as
a PNG through `save_figure`. All figures follow these rules:

- An optimizer has the same colour in every figure (`OPTIMIZER_COLORS`).
- A missing, null or non-finite value is left out, and so is a value that is
  not positive on a log axis.
- A mean takes every finite value of its group, and its point is left out
  only when the mean itself cannot be drawn.
- A panel with nothing to draw shows "no runs" in its middle.
"""

from collections.abc import Iterable, Mapping, Sequence
import itertools
import math
import numbers
import os
from pathlib import Path
import tempfile
from typing import Any

import matplotlib
from matplotlib.colors import LogNorm
# Figure objects without pyplot: no global state, and no GUI backend is
# selected, so importing ncjax leaves a notebook's backend alone.
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator
import numpy as np

from ncjax import analysis

METRIC_LABELS = {
    "nc0": r"NC0 $\|W^\top \mathbf{1}\|_2$",
    "nc1": r"NC1 $\mathrm{tr}(S_W S_B^+)/K$",
    "nc2": "NC2 (class means to ETF)",
    "nc3": "NC3 (W to class means)",
    "nc4": "NC4 (agreement with nearest class mean)",
    "train_accuracy": "train accuracy",
    "test_accuracy": "test accuracy",
}

# Optimizers with coupled weight decay get cool colours and those with
# decoupled decay warm ones, all from matplotlib's default tab10 cycle.
OPTIMIZER_COLORS = {
    "sgd": "tab:blue",
    "sgdw": "tab:orange",
    "adam": "tab:green",
    "adamw": "tab:red",
    "signum": "tab:purple",
    "signumw": "tab:brown",
    "adam_adamw": "tab:pink",
}

OPTIMIZER_LABELS = {
    "sgd": "SGD",
    "sgdw": "SGDW",
    "adam": "Adam",
    "adamw": "AdamW",
    "signum": "Signum",
    "signumw": "SignumW",
    "adam_adamw": "Adam-AdamW",
}

# Colours for names outside OPTIMIZER_COLORS: the tab10 colours no optimizer
# uses, then one shade of each tab20b hue.
_SPARE_COLORS = ("tab:gray", "tab:olive", "tab:cyan") + tuple(
    matplotlib.colormaps["tab20b"].colors[index] for index in (0, 4, 8, 12, 16, 2, 6, 10, 14, 18)
)


def metrics_over_training(
    histories: Mapping[str, Any],
    *,
    metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3"),
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw each metric against the epoch, one line per run, on log y axes.

    `histories` maps a run name (the legend label) to its history rows or to
    its run record. A run named after an optimizer gets that optimizer's
    colour.
    """
    fig = Figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colors = _colors(histories)
    for axis, metric in zip(axes, metrics):
        for name, history in histories.items():
            points = [
                (epoch, value)
                for row in _history_rows(history)
                if (epoch := _number(_epoch(row))) is not None
                and _plottable(value := _number(row.get(metric)), log=True)
            ]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker=".", color=colors[name], label=name)
        _style_axis(axis, metric, xlabel="epoch")
        _mark_if_empty(axis)
    _legend(axes[0], axes)
    return _finish_figure(fig, title, path)


def plot_metrics_over_training(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    *,
    metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3"),
    title: str | None = None,
) -> Path:
    """Plot each metric against the epoch, one line per run, on log y axes.

    `histories` maps a run name (the legend label) to its evaluation rows.
    Missing, non-finite or non-positive values are left out of a line. The PNG
    is saved through a temporary file and a rename. Returns the path written.
    """
    metrics_over_training(histories, metrics=metrics, title=title, path=path)
    return Path(path)


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
    colors = _colors(summaries)
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
            (line,) = axis.plot(decays, means, marker="o", color=colors[label], label=label)
            lower = [max(mean - std, mean * 1e-3) for mean, std in zip(means, stds)]
            upper = [mean + std for mean, std in zip(means, stds)]
            axis.fill_between(decays, lower, upper, color=line.get_color(), alpha=0.2)
        axis.set_xscale("symlog", linthresh=linthresh)
        _style_axis(axis, metric, xlabel="weight decay")
    axes[0].legend(fontsize="small")
    _finish_figure(fig, title, path)
    return Path(path)


def decay_comparison(
    rows: Iterable[Mapping[str, Any]],
    optimizers: Sequence[str] | Sequence[Sequence[str]] = ("adam", "adamw"),
    metrics: Sequence[str] = ("nc0", "nc3"),
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw each metric against weight decay, mean and one-std band per optimizer.

    Each (optimizer, decay) point is the mean over the runs at that decay
    (every learning rate, momentum and seed given), and the band spans the
    mean plus and minus the sample std (ddof 1, zero for a single run).

    `optimizers` is one group of optimizers drawn together, such as
    ("adam", "adamw"), or a sequence of groups such as
    (("signum", "signumw"), ("sgd", "sgdw")). Each group gets one row of
    panels, and each metric one column. The y axes are logarithmic, and a band
    that reaches zero runs to the bottom of its panel. The x axes are
    symmetric-log, linear below the smallest positive decay of the panel, so
    that decay 0 sits one decade to the left of it.
    """
    rows = list(rows)
    groups = _optimizer_groups(optimizers)
    fig = Figure(figsize=(4.2 * len(metrics), 3.4 * len(groups)))
    axes = fig.subplots(len(groups), len(metrics), squeeze=False)
    colors = _colors(name for group in groups for name in group)
    for group, axes_row in zip(groups, axes):
        for axis, metric in zip(axes_row, metrics):
            decays = []
            for optimizer in group:
                chosen = [row for row in rows if row.get("optimizer") == optimizer]
                points = _mean_band(chosen, "weight_decay", metric, log=True)
                if points is None:
                    continue
                x, mean, std = points
                _draw_mean_band(axis, x, mean, std, colors[optimizer], _optimizer_label(optimizer))
                decays.extend(x)
            _set_decay_scale(axis, decays)
            _style_axis(axis, metric, xlabel="weight decay")
            _mark_if_empty(axis)
        _legend(axes_row[0], axes_row)
    return _finish_figure(fig, title, path)


def metric_against_nc0(
    rows: Iterable[Mapping[str, Any]],
    metric: str = "nc3",
    fits: Mapping[float, tuple[float, float]] | None = None,
    *,
    log_y: bool = False,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Scatter a metric against NC0, one panel per learning rate, coloured by optimizer.

    The x axis (NC0) is logarithmic, and so is the y axis when `log_y` is set.
    `fits` maps a learning rate to the (slope, intercept) of a fit
    y = intercept + slope * log10(NC0), drawn as a dashed line over the NC0
    range of that panel's points. Learning rates match a key of `fits` to a
    relative tolerance of 1e-9.
    """
    rows = list(rows)
    learning_rates = sorted(_distinct_numbers(rows, "learning_rate"))
    panels = learning_rates or [None]
    fig = Figure(figsize=(3.8 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
    colors = _colors(_optimizers_in(rows))
    for axis, learning_rate in zip(axes, panels):
        chosen = [row for row in rows
                  if learning_rate is not None and _number(row.get("learning_rate")) == learning_rate]
        nc0_values = _scatter_by_optimizer(axis, chosen, "nc0", metric, colors, log_y=log_y)
        fit = _find_fit(fits, learning_rate)
        if fit is not None and nc0_values:
            slope, intercept = fit
            # Two points draw the straight line of a linear y axis, and 50
            # follow the curve it becomes on a log y axis.
            x = np.geomspace(min(nc0_values), max(nc0_values), 50 if log_y else 2)
            axis.plot(x, intercept + slope * np.log10(x), color="black", linestyle="--",
                      linewidth=1, label="fit")
            axis.text(0.97, 0.03, rf"$y = {intercept:.3g} + {slope:.3g}\,\log_{{10}}$ NC0",
                      transform=axis.transAxes, ha="right", va="bottom", fontsize="small")
        axis.set_xscale("log")
        if log_y:
            axis.set_yscale("log")
        if learning_rate is not None:
            axis.set_title(f"lr = {learning_rate:g}")
        axis.set_xlabel(METRIC_LABELS["nc0"])
        axis.grid(True, which="both", alpha=0.3)
        _mark_if_empty(axis)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    _legend(axes[-1], axes)
    return _finish_figure(fig, title, path)


def momentum_decay_heatmaps(
    rows: Iterable[Mapping[str, Any]],
    optimizer: str = "sgd",
    metrics: Sequence[str] = ("nc0", "nc2", "nc3"),
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw one heatmap per metric of its mean over momentum and weight decay.

    Only the rows of `optimizer` are used. A cell is the mean over every run
    with that momentum and decay (all learning rates and seeds), printed in
    the cell. Momentum grows upwards and decay to the right, and the colour
    scale of each panel is logarithmic. A cell without runs, or whose mean is
    not positive, stays blank.
    """
    chosen = [row for row in rows if row.get("optimizer") == optimizer]
    momenta = sorted(_distinct_numbers(chosen, "momentum"))
    decays = sorted(_distinct_numbers(chosen, "weight_decay"))
    fig = Figure(figsize=(4.6 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        axis.set_title(METRIC_LABELS.get(metric, metric))
        cells = np.full((len(momenta), len(decays)), np.nan)
        for (momentum, decay), (mean, _) in _mean_and_std(
                chosen, ("momentum", "weight_decay"), metric).items():
            if mean > 0:
                cells[momenta.index(momentum), decays.index(decay)] = mean
        if not np.isfinite(cells).any():
            _mark_if_empty(axis)
            continue
        _draw_heatmap(fig, axis, cells)
        axis.set_xticks(range(len(decays)), labels=[_short_number(decay) for decay in decays])
        axis.set_yticks(range(len(momenta)), labels=[_short_number(momentum) for momentum in momenta])
        axis.set_xlabel("weight decay")
        axis.set_ylabel("momentum")
    if title is None:
        title = _optimizer_label(optimizer)
    return _finish_figure(fig, title, path)


def singular_values_over_training(
    histories: Mapping[str, Any],
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw the singular values of W and of M against the epoch, one panel each.

    `histories` maps an optimizer to its history rows or to its run record.
    Per optimizer, a dotted line follows the smallest singular value and a
    solid line the mean of the others, on log y axes. M contains the centred
    class means, so its rank is at most K - 1 and its K-th singular value is
    zero up to rounding. For M the K-th value is therefore dropped, and the
    smallest is the (K-1)-th. A row whose list has a null value is left
    out, because its smallest value is then unknown.
    """
    fig = Figure(figsize=(9.0, 3.8))
    axes = fig.subplots(1, 2, squeeze=False)[0]
    colors = _colors(histories)
    for axis, matrix in zip(axes, ("W", "M")):
        for optimizer, history in histories.items():
            smallest, others = _smallest_and_mean_of_others(
                _history_rows(history), f"singular_values_{matrix}",
                drop_smallest=matrix == "M")
            if others:
                axis.plot(*zip(*others), color=colors[optimizer], linestyle="-",
                          label=_optimizer_label(optimizer))
            if smallest:
                axis.plot(*zip(*smallest), color=colors[optimizer], linestyle=":",
                          label=f"_{optimizer} smallest")
        axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_title(f"singular values of {matrix}")
        axis.grid(True, which="both", alpha=0.3)
        _mark_if_empty(axis)
    _legend(axes[0], axes, extra={
        "smallest": Line2D([], [], color="gray", linestyle=":"),
        "mean of the others": Line2D([], [], color="gray"),
    })
    return _finish_figure(fig, title, path)


def coupled_share(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3", "test_accuracy"),
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw each metric against the coupled part of the decay of the Adam-AdamW mix.

    The x axis is `coupled_weight_decay`, linear from 0 (AdamW) to the total
    `weight_decay` (Adam). A point is the mean over the runs at that coupled
    decay (the seeds), and the band spans one sample std (ddof 1). Rows
    without a coupled decay are left out, and runs with different totals get
    separate lines. The y axes are logarithmic except for accuracies and NC4,
    which are shares in [0, 1].
    """
    rows = [row for row in rows if _number(row.get("coupled_weight_decay")) is not None]
    totals = sorted(_distinct_numbers(rows, "weight_decay"))
    colors = dict(zip(totals, itertools.chain([OPTIMIZER_COLORS["adam_adamw"]],
                                              itertools.cycle(_SPARE_COLORS))))
    fig = Figure(figsize=(3.8 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics):
        log = not _is_share(metric)
        for total in totals:
            chosen = [row for row in rows if _number(row.get("weight_decay")) == total]
            points = _mean_band(chosen, "coupled_weight_decay", metric, log=log)
            if points is not None:
                _draw_mean_band(axis, *points, colors[total], f"total decay {_short_number(total)}")
        if log:
            axis.set_yscale("log")
        axis.set_xlabel("coupled weight decay (0: AdamW)")
        axis.set_title(METRIC_LABELS.get(metric, metric))
        axis.grid(True, which="both", alpha=0.3)
        _mark_if_empty(axis)
    _legend(axes[0], axes)
    return _finish_figure(fig, title, path)


def nc4_against_metrics(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3"),
    *,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Scatter NC4 against each metric, one panel per metric, coloured by optimizer.

    The x axes are logarithmic and the y axes (NC4, a share in [0, 1]) linear.
    """
    rows = list(rows)
    fig = Figure(figsize=(3.8 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    colors = _colors(_optimizers_in(rows))
    for axis, metric in zip(axes, metrics):
        _scatter_by_optimizer(axis, rows, metric, "nc4", colors, log_y=False)
        axis.set_xscale("log")
        axis.set_xlabel(METRIC_LABELS.get(metric, metric))
        axis.grid(True, which="both", alpha=0.3)
        _mark_if_empty(axis)
    axes[0].set_ylabel(METRIC_LABELS["nc4"])
    _legend(axes[-1], axes)
    return _finish_figure(fig, title, path)


def _number(value: Any) -> float | None:
    """Return `value` as a float if it is a finite real number, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plottable(value: float | None, *, log: bool) -> bool:
    return value is not None and (value > 0 or not log)


def _is_share(metric: str) -> bool:
    return metric.endswith("accuracy") or metric == "nc4"


def _epoch(row: Mapping[str, Any]) -> Any:
    # Rows of the unconstrained feature model count steps, with `epoch` equal to `step`.
    return row["epoch"] if "epoch" in row else row.get("step")


def _history_rows(history: Any) -> Sequence[Mapping[str, Any]]:
    """Return the rows of a run record's "history", or `history` if it is rows already."""
    if isinstance(history, Mapping):
        return history.get("history") or []
    return history


def _optimizer_label(name: str) -> str:
    return OPTIMIZER_LABELS.get(name, name)


def _optimizer_groups(optimizers) -> list[tuple[str, ...]]:
    if isinstance(optimizers, str):
        return [(optimizers,)]
    if all(isinstance(name, str) for name in optimizers):
        return [tuple(optimizers)]
    return [(group,) if isinstance(group, str) else tuple(group) for group in optimizers]


def _optimizers_in(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Return the optimizer names of `rows`, known ones in the order of OPTIMIZER_COLORS."""
    names = {row.get("optimizer") for row in rows}
    known = [name for name in OPTIMIZER_COLORS if name in names]
    return known + sorted(name for name in names if isinstance(name, str) and name not in known)


def _colors(names: Iterable[str]) -> dict[str, Any]:
    """Map each name to its optimizer colour, or to the next spare colour if it has none."""
    spare = itertools.cycle(_SPARE_COLORS)
    colors = {}
    for name in names:
        if name not in colors:
            colors[name] = OPTIMIZER_COLORS.get(name) or next(spare)
    return colors


def _distinct_numbers(rows: Iterable[Mapping[str, Any]], key: str) -> set[float]:
    return {value for row in rows if (value := _number(row.get(key))) is not None}


def _mean_and_std(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str], metric: str,
) -> dict[tuple, tuple[float, float]]:
    """Return {group: (mean, std)} of `metric` over the rows of each group of `keys`.

    The std is the sample std (ddof 1), zero for a single value. Rows where a
    key is not a finite number are left out, and so are groups without a
    finite value of the metric.
    """
    usable = [row for row in rows if all(_number(row.get(key)) is not None for key in keys)]
    summary = analysis.mean_and_std_by(usable, keys, (metric,))
    return {
        group: (mean, std)
        for group, by_metric in summary.items()
        for mean, std, count in [by_metric[metric]]
        if count > 0
    }


def _mean_band(rows, key: str, metric: str, *, log: bool):
    """Return sorted arrays (x, mean, std) of `metric` grouped by `key`, or None if empty."""
    points = sorted(
        (x, mean, std)
        for (x,), (mean, std) in _mean_and_std(rows, (key,), metric).items()
        if _plottable(mean, log=log)
    )
    if not points:
        return None
    return tuple(np.asarray(column, dtype=np.float64) for column in zip(*points))


def _draw_mean_band(axis, x, mean, std, color, label: str) -> None:
    axis.plot(x, mean, marker="o", markersize=4, color=color, label=label)
    axis.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _scatter_by_optimizer(axis, rows, x_key: str, y_key: str, colors, *, log_y: bool) -> list[float]:
    """Scatter (x_key, y_key) of `rows`, one collection per optimizer, and return the x drawn.

    Only positive x values are drawn, because the x axis is logarithmic.
    """
    drawn = []
    for optimizer in _optimizers_in(rows):
        points = [
            (x, y)
            for row in rows
            if row.get("optimizer") == optimizer
            and _plottable(x := _number(row.get(x_key)), log=True)
            and _plottable(y := _number(row.get(y_key)), log=log_y)
        ]
        if not points:
            continue
        x, y = zip(*points)
        axis.scatter(x, y, s=16, color=colors[optimizer], alpha=0.8, linewidths=0,
                     label=_optimizer_label(optimizer))
        drawn.extend(x)
    return drawn


def _find_fit(fits, learning_rate: float | None) -> tuple[float, float] | None:
    if not fits or learning_rate is None:
        return None
    for key, fit in fits.items():
        if math.isclose(float(key), learning_rate, rel_tol=1e-9):
            return fit
    return None


def _draw_heatmap(fig: Figure, axis, cells: np.ndarray) -> None:
    """Draw `cells` (NaN where empty) on a log colour scale and print each value."""
    low, high = np.nanmin(cells), np.nanmax(cells)
    if low == high:
        # A log scale needs a range, so a single value sits in the middle of one.
        low, high = low / 2, high * 2
    norm = LogNorm(vmin=low, vmax=high)
    image = axis.imshow(cells, origin="lower", norm=norm, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=axis)
    for (row, column), value in np.ndenumerate(cells):
        if math.isfinite(value):
            # viridis is dark at its low end, so low values get white text.
            axis.text(column, row, _short_number(value), ha="center", va="center", fontsize="small",
                      color="white" if norm(value) < 0.5 else "black")


def _short_number(value: float) -> str:
    """Format `value` to two significant digits, as 5e-4 where that is shorter than 0.0005."""
    plain = f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    scientific = f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return scientific if len(scientific) < len(plain) else plain


def _smallest_and_mean_of_others(rows, key: str, *, drop_smallest: bool = False):
    """Return [(epoch, smallest)] and [(epoch, mean of the others)] of the lists under `key`.

    With `drop_smallest`, the smallest value of each list is removed first.
    """
    smallest, others = [], []
    for row in rows:
        epoch = _number(_epoch(row))
        values = row.get(key)
        if epoch is None or not isinstance(values, Sequence) or not values:
            continue
        values = [_number(value) for value in values]
        if any(value is None for value in values):
            continue
        values.sort()
        if drop_smallest:
            values = values[1:]
        if not values:
            continue
        if values[0] > 0:
            smallest.append((epoch, values[0]))
        if len(values) > 1:
            mean_of_others = float(np.mean(values[1:]))
            if mean_of_others > 0:
                others.append((epoch, mean_of_others))
    return smallest, others


def _set_decay_scale(axis, decays: Sequence[float]) -> None:
    """Set a symmetric-log x axis, linear below the smallest positive decay.

    The ticks are 0 and the powers of ten above that decay, because the
    default ones put 0 on top of a tick inside the linear part.
    """
    positive = [decay for decay in decays if decay > 0]
    if not positive:
        axis.set_xscale("symlog", linthresh=1.0)
        return
    linthresh = min(positive)
    axis.set_xscale("symlog", linthresh=linthresh)
    exponents = range(math.ceil(math.log10(linthresh)), math.floor(math.log10(max(positive))) + 1)
    if exponents:
        axis.set_xticks([0.0] + [10.0**exponent for exponent in exponents])
    else:
        # Decays within one decade have no power of ten between them, so the
        # smallest and the largest become the ticks, which the default
        # formatter leaves unlabelled.
        ticks = sorted({0.0, linthresh, max(positive)})
        axis.set_xticks(ticks, labels=[_short_number(tick) for tick in ticks])
    axis.xaxis.set_minor_locator(NullLocator())


def _mark_if_empty(axis) -> None:
    """Write "no runs" in the middle of `axis` if nothing was drawn on it."""
    if not (axis.lines or axis.collections or axis.images):
        axis.text(0.5, 0.5, "no runs", transform=axis.transAxes, ha="center", va="center",
                  color="gray")


def _legend(axis, axes, extra: Mapping[str, Any] | None = None) -> None:
    """Draw on `axis` one legend with each label found on `axes` once.

    The handles of `extra` ({label: handle}) follow, if anything was drawn.
    """
    by_label = {}
    for panel in axes:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            by_label.setdefault(label, handle)
    if by_label:
        by_label.update(extra or {})
        axis.legend(list(by_label.values()), list(by_label), fontsize="small")


def _style_axis(axis, metric: str, *, xlabel: str) -> None:
    axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_title(METRIC_LABELS.get(metric, metric))
    axis.grid(True, which="both", alpha=0.3)


def _finish_figure(fig: Figure, title: str | None, path: str | os.PathLike | None) -> Figure:
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig
