"""Tables of run results: loading sweep files, filtering, statistics, tables.

A sweep writes one JSON file per finished run under `DIR/runs/`.
`load_runs` reads them and `run_table` flattens each run into one row of
final and initial metrics. `kept_runs` keeps the runs that trained well
enough, and `ols` and `nc3_on_nc0` fit NC3 against log10(NC0).

The table functions rebuild the tables of the study (the ICLR 2026
submission on optimizers and neural collapse that introduced NC0): final
metrics with their change since initialisation (its Tables 1 and 2), the
best setting per optimizer (Table 4) and the regression fits (Table 5).
They return (header, rows) of raw values, and `write_table` writes them as
Markdown for people and as CSV for machines.
"""

from collections.abc import Iterable, Mapping, Sequence
import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from absl import logging
import numpy as np
from scipy import stats

from ncjax import results

RUN_FORMAT = 1
REQUIRED_RUN_KEYS = ("format", "run_id", "config", "history")
RUN_COLUMNS = ("run_id", "preset", "kind", "min_train_accuracy", "status", "diverged_at_step")
CONFIG_COLUMNS = (
    "model", "dataset", "optimizer", "learning_rate", "momentum", "weight_decay",
    "coupled_weight_decay", "seed", "epochs", "width",
)
INITIAL_PREFIX = "initial_"
CHANGE_SUFFIX = "_change_percent"
# The study keeps the runs that reach 99% training accuracy.
DEFAULT_MIN_TRAIN_ACCURACY = 0.99
OPTIMIZER_ORDER = ("sgd", "sgdw", "adam", "adamw", "signum", "signumw", "adam_adamw")
CONFIDENCE_LEVEL = 0.95
# Short names for the group labels of `nc3_on_nc0`, as the study writes them.
GROUP_LABELS = {"learning_rate": "lr", "weight_decay": "wd"}

Row = Mapping[str, Any]
Table = tuple[list[str], list[list[Any]]]


def mean_and_std_by(
    rows: Iterable[Mapping[str, Any]],
    group_keys: Sequence[str],
    metrics: Sequence[str],
) -> dict[tuple, dict[str, tuple[float, float, int]]]:
    """Group rows by `group_keys` and return (mean, std, count) per metric.

    The std is the sample standard deviation (ddof 1), and 0 for a group of
    one. Missing and non-finite values are left out of their metric, so a
    count can be smaller than the group.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in group_keys), []).append(row)

    summary = {}
    for group, members in sorted(groups.items()):
        by_metric = {}
        for metric in metrics:
            values = np.asarray(
                [row[metric] for row in members
                 if row.get(metric) is not None and math.isfinite(row[metric])],
                dtype=np.float64,
            )
            if values.size == 0:
                by_metric[metric] = (math.nan, math.nan, 0)
                continue
            std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            by_metric[metric] = (float(values.mean()), std, int(values.size))
        summary[group] = by_metric
    return summary


# Reading run files.


def load_runs(results_dir: str | os.PathLike) -> list[dict]:
    """Read every run file `results_dir/runs/*.json`, sorted by run_id.

    Files whose names start with "." are temporary files of an atomic write
    and are skipped.

    Raises:
        ValueError: if `runs/` is missing, or a file is not valid JSON, is not
            a JSON object, lacks one of format, run_id, config and history,
            has another format than `RUN_FORMAT`, or repeats a run_id. The
            message names the file.
    """
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        raise ValueError(
            f"{runs_dir}: folder not found. Pass the sweep's results directory, "
            "which contains runs/<run_id>.json"
        )

    runs = []
    files_by_id: dict[str, Path] = {}
    for path in sorted(runs_dir.glob("*.json")):
        if path.name.startswith("."):
            continue
        run = _read_run_file(path)
        run_id = run["run_id"]
        if run_id in files_by_id:
            raise ValueError(f"{path}: run_id {run_id!r} is also in {files_by_id[run_id]}")
        files_by_id[run_id] = path
        runs.append(run)
    return sorted(runs, key=lambda run: run["run_id"])


def _read_run_file(path: Path) -> dict:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: invalid JSON: {error}") from error
    if not isinstance(run, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(run).__name__}")

    missing = [key for key in REQUIRED_RUN_KEYS if key not in run]
    if missing:
        raise ValueError(
            f"{path}: missing key {', '.join(missing)} "
            f"(a run file needs {', '.join(REQUIRED_RUN_KEYS)})"
        )
    if run["format"] != RUN_FORMAT:
        raise ValueError(
            f"{path}: unsupported format {run['format']!r}, expected format {RUN_FORMAT}"
        )
    if not isinstance(run["run_id"], str):
        raise ValueError(f"{path}: run_id must be a string, found {run['run_id']!r}")
    if not isinstance(run["config"], dict):
        found = type(run["config"]).__name__
        raise ValueError(f"{path}: config must be a JSON object, found {found}")
    if not isinstance(run["history"], list) or not all(
        isinstance(entry, dict) for entry in run["history"]
    ):
        raise ValueError(f"{path}: history must be a list of JSON objects")
    return run


def run_table(runs: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Flatten each run into one row, ready for `pandas.DataFrame(rows)`.

    A row contains the run's fields `RUN_COLUMNS`, the config fields
    `CONFIG_COLUMNS` (None where the config lacks one, as `epochs` for the
    UFM), every scalar of the last history row (the final state) under its
    own name, and every scalar of the first history row (the initialisation)
    as `initial_<name>`. Lists such as singular values are left out, and
    non-finite numbers become None. A run with an empty history has no
    metric columns.
    """
    rows = []
    for run in runs:
        row: dict[str, Any] = {key: run.get(key) for key in RUN_COLUMNS}
        config = run.get("config") or {}
        row.update({key: config.get(key) for key in CONFIG_COLUMNS})

        history = run.get("history") or []
        if history:
            row.update(_scalars(history[-1]))
            row.update({INITIAL_PREFIX + name: value
                        for name, value in _scalars(history[0]).items()})
        rows.append(row)
    return rows


def _scalars(history_row: Mapping[str, Any]) -> dict[str, Any]:
    scalars = {}
    for name, value in history_row.items():
        if value is None:
            scalars[name] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[name] = value if math.isfinite(value) else None
    return scalars


def _finite_number(value: Any) -> float | None:
    """Return `value` as a float, or None when it is missing or not finite."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# Filtering and grouping.


def kept_runs(rows: Iterable[Row], min_train_accuracy: float | None = None) -> list[Row]:
    """Keep completed runs whose final train_accuracy is at least the threshold.

    The threshold is `min_train_accuracy` when given, else each row's own
    `min_train_accuracy` (the sweep preset's), else
    `DEFAULT_MIN_TRAIN_ACCURACY`. The comparison is a plain `>=` with no
    tolerance, so an accuracy of exactly 1.0 passes a threshold of 1.0 and
    0.98999 fails 0.99. Diverged runs and runs without a finite final
    train_accuracy are dropped.
    """
    if min_train_accuracy is not None and not 0.0 <= min_train_accuracy <= 1.0:
        raise ValueError(f"min_train_accuracy must be in [0, 1], got {min_train_accuracy}")

    kept = []
    for row in rows:
        threshold = min_train_accuracy
        if threshold is None:
            threshold = row.get("min_train_accuracy")
        if threshold is None:
            threshold = DEFAULT_MIN_TRAIN_ACCURACY
        accuracy = _finite_number(row.get("train_accuracy"))
        if row.get("status") == "completed" and accuracy is not None and accuracy >= threshold:
            kept.append(row)
    return kept


def optimizer_sort_key(name: str) -> tuple[int, str]:
    """Sort key: the study's optimizers in `OPTIMIZER_ORDER`, then others alphabetically."""
    if name in OPTIMIZER_ORDER:
        return (OPTIMIZER_ORDER.index(name), "")
    return (len(OPTIMIZER_ORDER), str(name))


def by_optimizer_and_decay(
    rows: Iterable[Row],
    metrics: Sequence[str],
    decay_field: str = "weight_decay",
) -> dict[str, dict[float, dict[str, tuple[float, float, int]]]]:
    """Return {optimizer: {decay: {metric: (mean, std, count)}}} over `rows`.

    The statistics are those of `mean_and_std_by`: sample std (ddof 1), 0
    for one run, and missing or non-finite values left out. Optimizers come
    in `OPTIMIZER_ORDER` and decays in increasing order. `decay_field` is
    the total decay by default. For adam_adamw runs that share the total
    decay and differ in its coupled part, pass "coupled_weight_decay", or
    they are pooled into one group.
    """
    grouped = mean_and_std_by(rows, ("optimizer", decay_field), metrics)
    nested: dict[str, dict[float, dict[str, tuple[float, float, int]]]] = {}
    for optimizer in sorted({optimizer for optimizer, _ in grouped}, key=optimizer_sort_key):
        nested[optimizer] = {decay: values for (name, decay), values in grouped.items()
                             if name == optimizer}
    return nested


# Regression of NC3 on NC0.


@dataclasses.dataclass(frozen=True)
class Regression:
    """Least-squares fit of y = intercept + slope * x + noise, with its statistics.

    With n points, x_c = x - mean(x), S_xx = sum(x_c^2), residuals r and
    SSE = sum(r^2), the residual variance is s^2 = SSE / (n - 2). Then
    `slope_stderr` = sqrt(s^2 / S_xx), `intercept_stderr` =
    sqrt(s^2 (1/n + mean(x)^2 / S_xx)), `t_value` = slope / slope_stderr,
    `p_value` = 2 P(T > |t|) for Student's T with n - 2 degrees of freedom,
    the slope's confidence interval runs from slope - q * slope_stderr to
    slope + q * slope_stderr with q the (1 + CONFIDENCE_LEVEL) / 2 quantile
    of T, `r_squared` = 1 - SSE / SST,
    `adjusted_r_squared` = 1 - (1 - R^2)(n - 1)/(n - 2), and
    `f_statistic` = t^2.
    """

    n: int
    slope: float
    intercept: float
    slope_stderr: float
    intercept_stderr: float
    t_value: float
    p_value: float
    slope_ci_low: float
    slope_ci_high: float
    r_squared: float
    adjusted_r_squared: float
    f_statistic: float


def ols(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Regression:
    """Fit y on x by ordinary least squares with an intercept, in float64.

    The formulas are those of `Regression`. A perfect fit (SSE = 0) gives a
    zero standard error, an infinite t value and F statistic, p = 0 and a
    confidence interval of width 0. A constant y gives R^2 = NaN and, with
    slope 0, NaN for t, p and F.

    Raises:
        ValueError: if x and y are not 1-D of the same length, contain
            non-finite values, have fewer than 3 points, or x is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}"
        )
    n = x.size
    if n < 3:
        raise ValueError(f"a regression with intercept needs at least 3 points, got {n}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite. Drop the runs with missing or infinite values")
    # Compare with x[0] rather than testing S_xx == 0: the mean of equal
    # values can differ from them in the last bit, which leaves S_xx > 0.
    if np.all(x == x[0]):
        raise ValueError(f"x is constant (every value is {x[0]}), so the slope is undefined")

    x_mean = float(x.mean())
    y_mean = float(y.mean())
    x_centred = x - x_mean
    y_centred = y - y_mean
    sxx = float(x_centred @ x_centred)
    sst = float(y_centred @ y_centred)
    slope = float(x_centred @ y_centred) / sxx
    intercept = y_mean - slope * x_mean
    residuals = y - (intercept + slope * x)
    sse = float(residuals @ residuals)

    degrees_of_freedom = n - 2
    residual_variance = sse / degrees_of_freedom
    slope_stderr = math.sqrt(residual_variance / sxx)
    intercept_stderr = math.sqrt(residual_variance * (1.0 / n + x_mean**2 / sxx))
    if slope_stderr > 0.0:
        t_value = slope / slope_stderr
    elif slope != 0.0:
        t_value = math.copysign(math.inf, slope)
    else:
        t_value = math.nan
    p_value = float(2.0 * stats.t.sf(abs(t_value), degrees_of_freedom))
    quantile = float(stats.t.ppf((1.0 + CONFIDENCE_LEVEL) / 2.0, degrees_of_freedom))

    r_squared = 1.0 - sse / sst if sst > 0.0 else math.nan
    adjusted_r_squared = 1.0 - (1.0 - r_squared) * (n - 1) / degrees_of_freedom
    return Regression(
        n=n,
        slope=slope,
        intercept=intercept,
        slope_stderr=slope_stderr,
        intercept_stderr=intercept_stderr,
        t_value=t_value,
        p_value=p_value,
        slope_ci_low=slope - quantile * slope_stderr,
        slope_ci_high=slope + quantile * slope_stderr,
        r_squared=r_squared,
        adjusted_r_squared=adjusted_r_squared,
        f_statistic=t_value**2,
    )


def nc3_on_nc0(
    rows: Iterable[Row], group_by: str | None = "learning_rate"
) -> list[tuple[str, Regression]]:
    """Regress final NC3 on log10(final NC0), per value of `group_by` and over all rows.

    Returns (label, fit) pairs: one per value of `group_by` in increasing
    order, labelled like "lr=0.001", then the fit over every row, labelled
    "all". This is the shape of the study's Table 5. `group_by=None` gives
    only "all". The caller chooses the rows, and the study fits the converged
    ResNet9 runs on FashionMNIST of every optimizer together.

    NC0 enters as log10 because the study's slope of about 0.16 only makes
    sense per decade of NC0. NC3 stays within 0 to 2 while NC0 spans 1e-5 to
    1e3, and the study's Figure 2 draws NC0 on a log axis. This is our
    reading, because the study does not state the transform.

    Rows without a positive finite nc0 or a finite nc3 are left out, and so
    are rows without a `group_by` value from the per-group fits. A group
    that `ols` rejects (fewer than 3 rows, or one NC0 value) is skipped with
    a warning in the log.
    """
    points = []
    for row in rows:
        nc0 = _finite_number(row.get("nc0"))
        nc3 = _finite_number(row.get("nc3"))
        if nc0 is not None and nc0 > 0.0 and nc3 is not None:
            group = row.get(group_by) if group_by is not None else None
            points.append((group, math.log10(nc0), nc3))

    labelled_points: list[tuple[str, list[tuple[float, float]]]] = []
    if group_by is not None:
        short_name = GROUP_LABELS.get(group_by, group_by)
        for group in sorted({group for group, _, _ in points if group is not None}):
            value = f"{group:g}" if isinstance(group, float) else str(group)
            label = f"{short_name}={value}"
            labelled_points.append(
                (label, [(x, y) for member, x, y in points if member == group])
            )
    labelled_points.append(("all", [(x, y) for _, x, y in points]))

    fits = []
    for label, group_points in labelled_points:
        try:
            fit = ols([x for x, _ in group_points], [y for _, y in group_points])
        except ValueError as error:
            logging.warning("Skipped the NC3-on-NC0 fit for %s: %s", label, error)
            continue
        fits.append((label, fit))
    return fits


# Tables of the study.


def percent_change(initial: Any, final: Any) -> float | None:
    """Return 100 (final - initial) / initial, or None if either is missing or initial is 0."""
    initial = _finite_number(initial)
    final = _finite_number(final)
    if initial is None or final is None or initial == 0.0:
        return None
    return 100.0 * (final - initial) / initial


def _by_optimizer(rows: Iterable[Row]) -> list[Row]:
    """Sort rows stably into `OPTIMIZER_ORDER`."""
    return sorted(rows, key=lambda row: optimizer_sort_key(row.get("optimizer")))


def final_metrics_table(
    rows: Iterable[Row], metrics: Sequence[str] = ("nc0", "nc1", "nc2", "nc3")
) -> Table:
    """Build the study's Table 1 and 2: final metrics and their change since initialisation.

    One table row per given run, ordered by optimizer. The columns are
    optimizer, then for each metric its final value and
    `<metric>_change_percent` = 100 (final - initial) / initial, None when
    the initial value is 0 or missing. The caller chooses the runs, for
    Table 2 those of `best_runs`.
    """
    header = ["optimizer"]
    for metric in metrics:
        header += [metric, metric + CHANGE_SUFFIX]
    table_rows = []
    for row in _by_optimizer(rows):
        cells = [row.get("optimizer")]
        for metric in metrics:
            final = _finite_number(row.get(metric))
            cells += [final, percent_change(row.get(INITIAL_PREFIX + metric), final)]
        table_rows.append(cells)
    return header, table_rows


def best_runs(
    rows: Iterable[Row], metric: str = "nc3", min_train_accuracy: float | None = None
) -> list[Row]:
    """Pick, per optimizer, the kept run with the smallest final `metric`.

    Runs are kept as by `kept_runs`, and runs without a finite `metric` are
    ignored. A tie goes to the smaller run_id. The result is ordered by
    optimizer. The study picks its Table 2 runs, and so its Table 4
    settings, this way with metric "nc3", within one model and dataset,
    so filter `rows` to one of each first.
    """
    best: dict[str, Row] = {}
    for row in kept_runs(rows, min_train_accuracy):
        value = _finite_number(row.get(metric))
        if value is None:
            continue
        optimizer = row.get("optimizer")
        current = best.get(optimizer)
        if current is None or (value, row["run_id"]) < (current[metric], current["run_id"]):
            best[optimizer] = row
    return [best[optimizer] for optimizer in sorted(best, key=optimizer_sort_key)]


def hyperparameter_table(rows: Iterable[Row]) -> Table:
    """Build the study's Table 4: optimizer, learning rate, momentum and weight decay per run.

    A coupled_weight_decay column is added when any row has one (the
    adam_adamw mix). Rows are ordered by optimizer.
    """
    rows = _by_optimizer(rows)
    header = ["optimizer", "learning_rate", "momentum", "weight_decay"]
    if any(row.get("coupled_weight_decay") is not None for row in rows):
        header.append("coupled_weight_decay")
    return header, [[row.get(column) for column in header] for row in rows]


REGRESSION_COLUMNS = (
    "n", "slope", "slope_stderr", "t_value", "p_value", "slope_ci_low",
    "slope_ci_high", "r_squared", "adjusted_r_squared", "f_statistic",
)


def regression_table(fits: Iterable[tuple[str, Regression]]) -> Table:
    """Build the study's Table 5 from `nc3_on_nc0`: one row per fit.

    The columns are experiment (the fit's label), then the `Regression`
    fields n, slope, its standard error, t value, p value, the bounds of its
    95% confidence interval, R^2, adjusted R^2 and F statistic.
    """
    header = ["experiment", *REGRESSION_COLUMNS]
    table_rows = [[label, *(getattr(fit, column) for column in REGRESSION_COLUMNS)]
                  for label, fit in fits]
    return header, table_rows


# Markdown and CSV.


def format_number(value: Any) -> str:
    """Format one cell: 4 significant digits for floats, "" for None, str otherwise."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_interval(low: Any, high: Any) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def _format_r_squared(r_squared: Any, adjusted_r_squared: Any) -> str:
    return f"{format_number(r_squared)} / {format_number(adjusted_r_squared)}"


def _format_with_change(value: Any, change: float | None) -> str:
    if change is None:
        return format_number(value)
    return f"{format_number(value)} ({change:+.1f}%)"


# Column pairs that one Markdown cell shows together: (first, second) ->
# (merged header, function of the two raw values).
_MARKDOWN_PAIRS = {
    ("slope_ci_low", "slope_ci_high"): ("slope 95% CI", _format_interval),
    ("r_squared", "adjusted_r_squared"): ("R^2 / adjusted R^2", _format_r_squared),
}


def display_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[str], list[list[str]]]:
    """Turn a table of raw values into text cells for people.

    A column `name` followed by `name_change_percent` becomes one cell such
    as "0.29 (-63.0%)". The slope's confidence bounds become "[low, high]"
    and R^2 with adjusted R^2 becomes "R^2 / adjusted". Other cells are
    formatted by `format_number`.
    """
    # Each entry: (displayed header, first raw column, number of raw columns,
    # function of those raw values).
    layout = []
    index = 0
    while index < len(header):
        name = header[index]
        following = header[index + 1] if index + 1 < len(header) else None
        if following == name + CHANGE_SUFFIX:
            layout.append((name, index, 2, _format_with_change))
        elif (name, following) in _MARKDOWN_PAIRS:
            merged_name, format_pair = _MARKDOWN_PAIRS[(name, following)]
            layout.append((merged_name, index, 2, format_pair))
        else:
            layout.append((name, index, 1, format_number))
        index += layout[-1][2]

    display_header = [name for name, _, _, _ in layout]
    display_rows = [
        [format_cell(*row[start:start + width]) for _, start, width, format_cell in layout]
        for row in rows
    ]
    return display_header, display_rows


def format_markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format a Markdown table: the header, a separator line, one line per row.

    Cells are formatted by `format_number`, and "|" inside a cell is escaped.
    """
    def line(cells: Iterable[Any]) -> str:
        escaped = (format_number(cell).replace("|", "\\|") for cell in cells)
        return "| " + " | ".join(escaped) + " |\n"

    separator = "| " + " | ".join("---" for _ in header) + " |\n"
    return line(header) + separator + "".join(line(row) for row in rows)


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    # csv writes floats with repr, so they read back exactly.
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    return buffer.getvalue()


def write_csv(rows: Sequence[Row], path: str | os.PathLike) -> None:
    """Write dict rows as CSV atomically, with one column per key.

    The columns are the union of the rows' keys in the order they first
    appear. None and a missing key both become an empty cell.
    """
    header = list(dict.fromkeys(key for row in rows for key in row))
    text = _csv_text(header, ([row.get(key) for key in header] for row in rows))
    results.write_text_atomic(path, text)


def write_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], path_stem: str | os.PathLike
) -> tuple[Path, Path]:
    """Write a table as `<path_stem>.md` for people and `<path_stem>.csv` for machines.

    The Markdown cells come from `display_table`, and the CSV keeps the raw
    values. Both files are written atomically. Returns the two paths.
    """
    path_stem = Path(path_stem)
    markdown_path = path_stem.with_name(path_stem.name + ".md")
    csv_path = path_stem.with_name(path_stem.name + ".csv")
    results.write_text_atomic(markdown_path, format_markdown_table(*display_table(header, rows)))
    results.write_text_atomic(csv_path, _csv_text(header, rows))
    return markdown_path, csv_path
