"""Tests for loading run results, the NC3-on-NC0 regression and the study's tables."""

import csv
import dataclasses
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from ncjax import analysis
from ncjax import results


def test_mean_and_std_by_groups():
    rows = [
        {"optimizer": "adam", "weight_decay": 0.0, "nc0": 1.0},
        {"optimizer": "adam", "weight_decay": 0.0, "nc0": 3.0},
        {"optimizer": "adam", "weight_decay": 0.1, "nc0": 5.0},
        {"optimizer": "adamw", "weight_decay": 0.1, "nc0": None},
        {"optimizer": "adamw", "weight_decay": 0.1, "nc0": float("nan")},
    ]
    summary = analysis.mean_and_std_by(rows, ("optimizer", "weight_decay"), ("nc0",))
    assert list(summary) == [("adam", 0.0), ("adam", 0.1), ("adamw", 0.1)]
    mean, std, count = summary[("adam", 0.0)]["nc0"]
    assert mean == 2.0
    np.testing.assert_allclose(std, np.std([1.0, 3.0], ddof=1), rtol=1e-15)
    assert count == 2
    assert summary[("adam", 0.1)]["nc0"] == (5.0, 0.0, 1)
    mean, std, count = summary[("adamw", 0.1)]["nc0"]
    assert math.isnan(mean)
    assert count == 0


# ols


def noisy_line(slope, noise, seed=0, n=300):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5.0, 3.0, size=n)
    y = 0.7 + slope * x + noise * rng.normal(size=n)
    return x, y


# (slope, noise): a clear trend (tiny p), and a weak one (p of order 0.1).
NOISY_CASES = [(0.16, 0.3), (0.02, 1.0)]


@pytest.mark.parametrize("slope, noise", NOISY_CASES)
def test_ols_matches_linregress(slope, noise):
    x, y = noisy_line(slope, noise)
    fit = analysis.ols(x, y)
    reference = stats.linregress(x, y)
    assert fit.n == 300
    np.testing.assert_allclose(fit.slope, reference.slope, rtol=1e-10)
    np.testing.assert_allclose(fit.intercept, reference.intercept, rtol=1e-10)
    np.testing.assert_allclose(fit.slope_stderr, reference.stderr, rtol=1e-10)
    np.testing.assert_allclose(fit.intercept_stderr, reference.intercept_stderr, rtol=1e-10)
    np.testing.assert_allclose(fit.p_value, reference.pvalue, rtol=1e-10)
    np.testing.assert_allclose(fit.r_squared, reference.rvalue**2, rtol=1e-10)


def test_ols_cases_cover_small_and_large_p():
    p_values = [analysis.ols(*noisy_line(slope, noise)).p_value for slope, noise in NOISY_CASES]
    assert p_values[0] < 1e-20
    assert 1e-3 < p_values[1] < 0.9


@pytest.mark.parametrize("slope, noise", NOISY_CASES)
def test_ols_matches_statsmodels(slope, noise):
    sm = pytest.importorskip("statsmodels.api")
    x, y = noisy_line(slope, noise)
    fit = analysis.ols(x, y)
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    np.testing.assert_allclose(fit.intercept, reference.params[0], rtol=1e-10)
    np.testing.assert_allclose(fit.slope, reference.params[1], rtol=1e-10)
    np.testing.assert_allclose(fit.intercept_stderr, reference.bse[0], rtol=1e-10)
    np.testing.assert_allclose(fit.slope_stderr, reference.bse[1], rtol=1e-10)
    np.testing.assert_allclose(fit.t_value, reference.tvalues[1], rtol=1e-10)
    np.testing.assert_allclose(fit.p_value, reference.pvalues[1], rtol=1e-10)
    ci_low, ci_high = reference.conf_int(0.05)[1]
    np.testing.assert_allclose(fit.slope_ci_low, ci_low, rtol=1e-10)
    np.testing.assert_allclose(fit.slope_ci_high, ci_high, rtol=1e-10)
    np.testing.assert_allclose(fit.r_squared, reference.rsquared, rtol=1e-10)
    np.testing.assert_allclose(fit.adjusted_r_squared, reference.rsquared_adj, rtol=1e-10)
    np.testing.assert_allclose(fit.f_statistic, reference.fvalue, rtol=1e-10)


@pytest.mark.parametrize("slope", [2.0, -0.5])
def test_ols_exact_line(slope):
    # Small integers and a dyadic slope keep every step exact in float64.
    x = np.arange(10.0)
    y = 3.0 + slope * x
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = analysis.ols(x, y)
    assert fit.slope == slope
    assert fit.intercept == 3.0
    assert fit.slope_stderr == 0.0
    assert fit.t_value == math.copysign(math.inf, slope)
    assert fit.p_value == 0.0
    assert fit.slope_ci_low == slope
    assert fit.slope_ci_high == slope
    assert fit.r_squared == 1.0
    assert fit.adjusted_r_squared == 1.0
    assert fit.f_statistic == math.inf


def test_ols_constant_y_gives_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = analysis.ols([1.0, 2.0, 4.0], [5.0, 5.0, 5.0])
    assert fit.slope == 0.0
    assert fit.intercept == 5.0
    assert math.isnan(fit.t_value)
    assert math.isnan(fit.p_value)
    assert math.isnan(fit.r_squared)


@pytest.mark.parametrize("x, y, message", [
    ([1.0, 2.0], [1.0, 2.0], "at least 3 points, got 2"),
    ([0.1, 0.1, 0.1, 0.1], [1.0, 2.0, 3.0, 4.0], "x is constant"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
    ([1.0, 2.0, math.nan], [1.0, 2.0, 3.0], "finite"),
    ([1.0, 2.0, 3.0], [1.0, math.inf, 3.0], "finite"),
])
def test_ols_rejects_invalid_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        analysis.ols(x, y)


# nc3_on_nc0


LEARNING_RATES = (0.001, 0.005, 0.01, 0.0679)


def regression_rows(seed=0, per_group=40):
    """Rows whose NC3 is linear in log10(NC0) plus noise, per learning rate."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, learning_rate in enumerate(LEARNING_RATES):
        for _ in range(per_group):
            nc0 = float(10.0 ** rng.uniform(-5.0, 3.0))
            nc3 = 0.6 + 0.05 * index + 0.16 * math.log10(nc0) + 0.1 * rng.normal()
            rows.append({"learning_rate": learning_rate, "nc0": nc0, "nc3": nc3})
    return rows


UNUSABLE_ROWS = [
    {"learning_rate": 0.001, "nc0": 0.0, "nc3": 0.5},
    {"learning_rate": 0.001, "nc0": -1.0, "nc3": 0.5},
    {"learning_rate": 0.005, "nc0": None, "nc3": 0.5},
    {"learning_rate": 0.01, "nc0": math.nan, "nc3": 0.5},
    {"learning_rate": 0.01, "nc0": math.inf, "nc3": 0.5},
    {"learning_rate": 0.0679, "nc0": 1.0, "nc3": None},
    {"learning_rate": 0.0679, "nc0": 1.0},
]


def assert_same_fit(actual, expected):
    np.testing.assert_allclose(
        dataclasses.astuple(actual), dataclasses.astuple(expected), rtol=1e-12
    )


def test_nc3_on_nc0_per_group_and_overall():
    rows = regression_rows()
    mixed = [row for pair in zip(rows, UNUSABLE_ROWS * 40) for row in pair]
    fits = analysis.nc3_on_nc0(mixed)

    labels = [label for label, _ in fits]
    assert labels == ["lr=0.001", "lr=0.005", "lr=0.01", "lr=0.0679", "all"]
    for learning_rate, (_, fit) in zip(LEARNING_RATES, fits):
        group = [row for row in rows if row["learning_rate"] == learning_rate]
        x = np.log10([row["nc0"] for row in group])
        y = np.array([row["nc3"] for row in group])
        assert fit.n == 40
        assert_same_fit(fit, analysis.ols(x, y))
    overall = fits[-1][1]
    assert overall.n == 160
    assert_same_fit(
        overall,
        analysis.ols(np.log10([row["nc0"] for row in rows]), [row["nc3"] for row in rows]),
    )


def test_nc3_on_nc0_recovers_slope():
    fits = dict(analysis.nc3_on_nc0(regression_rows(per_group=400)))
    for label, fit in fits.items():
        # 400 points with noise 0.1 over 8 decades: the slope's SE is about 0.002.
        assert abs(fit.slope - 0.16) < 0.01, label


def test_nc3_on_nc0_without_groups():
    rows = regression_rows()
    fits = analysis.nc3_on_nc0(rows, group_by=None)
    assert [label for label, _ in fits] == ["all"]
    assert fits[0][1].n == len(rows)


def test_nc3_on_nc0_skips_small_group():
    rows = regression_rows() + [
        {"learning_rate": 0.5, "nc0": 1.0, "nc3": 0.5},
        {"learning_rate": 0.5, "nc0": 2.0, "nc3": 0.6},
    ]
    labels = [label for label, _ in analysis.nc3_on_nc0(rows)]
    assert "lr=0.5" not in labels
    assert labels[-1] == "all"


# load_runs and run_table


def history_row(epoch, nc0, nc3, train_accuracy, ufm=False):
    nc1 = None if nc3 is None else 2.0 * nc3
    row = {
        "epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / (epoch + 1),
        "train_accuracy": train_accuracy, "nc0": nc0, "nc1": nc1, "nc2": 0.5, "nc3": nc3, "singular_values_W": [3.0, 2.0, 1.0],
        "singular_values_M": [2.0, 1.0, 0.5], "time_s": 0.25,
    }
    if ufm:
        row["step"] = epoch
    else:
        row.update({"test_loss": 1.5, "test_accuracy": 0.75, "nc4": 0.875})
    return row


def network_run(run_id, optimizer="adamw", weight_decay=5.0, status="completed", history=None):
    return {
        "format": 1,
        "run_id": run_id,
        "preset": "cpu",
        "kind": "network",
        "min_train_accuracy": 0.99,
        "config": {
            "model": "mlp", "dataset": "mnist", "optimizer": optimizer,
            "learning_rate": 0.005, "momentum": 0.95, "weight_decay": weight_decay,
            "coupled_weight_decay": None, "seed": 0, "epochs": 60, "batch_size": 128,
            "width": 1.0, "samples_per_class": 50,
        },
        "status": status,
        "diverged_at_step": None,
        "history": history or [history_row(0, 1.25, 0.75, 0.125), history_row(60, 0.5, 0.25, 1.0)],
        "elapsed_s": 12.5,
    }


def ufm_run(run_id):
    return {
        "format": 1,
        "run_id": run_id,
        "preset": "ufm",
        "kind": "ufm",
        "min_train_accuracy": 1.0,
        "config": {
            "model": "ufm", "dataset": "ufm", "optimizer": "sgd", "learning_rate": 0.5,
            "momentum": 0.9, "weight_decay": 0.005, "seed": 1, "dim": 512,
            "num_classes": 10, "samples_per_class": 100, "steps": 2000,
        },
        "status": "completed",
        "diverged_at_step": None,
        "history": [history_row(0, 3.0, 1.0, 0.25, ufm=True),
                    history_row(2000, 0.001, 0.0625, 1.0, ufm=True)],
        "elapsed_s": 3.0,
    }


def diverged_run(run_id):
    run = network_run(run_id, optimizer="sgd", weight_decay=0.05, status="diverged",
                      history=[history_row(0, 1.0, 0.5, 0.125), history_row(10, None, None, 0.5)])
    run["diverged_at_step"] = 120
    run["history"][-1]["test_loss"] = None
    return run


def write_results(directory, runs):
    for name, run in runs.items():
        results.write_json(directory / "runs" / f"{name}.json", run)
    results.write_json(directory / "sweep.json", {"preset": "cpu"})
    return directory


def example_results(directory):
    """Three runs whose file names sort in another order than their run_ids."""
    return write_results(directory, {
        "c": network_run("cpu-mlp-mnist-adamw-s0"),
        "a": diverged_run("cpu-mlp-mnist-sgd-s0"),
        "b": ufm_run("ufm-sgd-s1"),
    })


def test_load_runs_sorted_by_run_id(tmp_path):
    directory = example_results(tmp_path)
    (directory / "runs" / ".partial.json").write_text("{truncated", encoding="utf-8")
    runs = analysis.load_runs(directory)
    assert [run["run_id"] for run in runs] == [
        "cpu-mlp-mnist-adamw-s0", "cpu-mlp-mnist-sgd-s0", "ufm-sgd-s1",
    ]


def test_load_runs_empty_folder(tmp_path):
    (tmp_path / "runs").mkdir()
    assert analysis.load_runs(tmp_path) == []


def test_load_runs_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="runs: folder not found"):
        analysis.load_runs(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object, found list"),
    ('{"format": 1, "run_id": "x", "config": {}}', "missing key history"),
    ('{"run_id": "x", "history": []}', "missing key format, config"),
    ('{"format": 2, "run_id": "x", "config": {}, "history": []}', "unsupported format 2"),
    ('{"format": 1, "run_id": "x", "config": [], "history": []}', "config must be a JSON object"),
    ('{"format": 1, "run_id": "x", "config": {}, "history": [1]}', "history must be a list"),
])
def test_load_runs_rejects_invalid_file(tmp_path, text, message):
    example_results(tmp_path)
    (tmp_path / "runs" / "broken.json").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as raised:
        analysis.load_runs(tmp_path)
    assert "broken.json" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_load_runs_rejects_repeated_run_id(tmp_path):
    write_results(tmp_path, {"a": network_run("same"), "b": network_run("same")})
    with pytest.raises(ValueError, match="run_id 'same' is also in"):
        analysis.load_runs(tmp_path)


def test_run_table_completed_network_run(tmp_path):
    row = analysis.run_table(analysis.load_runs(example_results(tmp_path)))[0]
    expected = {
        "run_id": "cpu-mlp-mnist-adamw-s0", "preset": "cpu", "kind": "network",
        "min_train_accuracy": 0.99, "status": "completed", "diverged_at_step": None,
        "model": "mlp", "dataset": "mnist", "optimizer": "adamw", "learning_rate": 0.005,
        "momentum": 0.95, "weight_decay": 5.0, "coupled_weight_decay": None, "seed": 0,
        "epochs": 60, "width": 1.0,
        "epoch": 60, "step": 600, "train_loss": 1.0 / 61, "train_accuracy": 1.0,
        "nc0": 0.5, "nc1": 0.5, "nc2": 0.5, "nc3": 0.25, "time_s": 0.25,
        "test_loss": 1.5, "test_accuracy": 0.75, "nc4": 0.875,
        "initial_epoch": 0, "initial_step": 0, "initial_train_loss": 1.0,
        "initial_train_accuracy": 0.125, "initial_nc0": 1.25, "initial_nc1": 1.5,
        "initial_nc2": 0.5, "initial_nc3": 0.75, "initial_time_s": 0.25,
        "initial_test_loss": 1.5, "initial_test_accuracy": 0.75, "initial_nc4": 0.875,
    }
    assert row == expected


def test_run_table_diverged_and_ufm_runs(tmp_path):
    _, diverged, ufm = analysis.run_table(analysis.load_runs(example_results(tmp_path)))
    assert diverged["status"] == "diverged"
    assert diverged["diverged_at_step"] == 120
    assert diverged["nc0"] is None
    assert diverged["nc3"] is None
    assert diverged["test_loss"] is None
    assert diverged["train_accuracy"] == 0.5
    assert diverged["initial_nc0"] == 1.0

    assert ufm["kind"] == "ufm"
    assert ufm["epochs"] is None
    assert ufm["width"] is None
    assert ufm["step"] == 2000
    assert ufm["nc0"] == 0.001
    assert "test_accuracy" not in ufm
    assert "singular_values_W" not in ufm
    assert "initial_singular_values_M" not in ufm


def test_run_table_empty_history_and_non_finite():
    empty = network_run("empty")
    empty["history"] = []
    nan_run = network_run("nan")
    nan_run["history"][-1]["nc0"] = math.nan
    empty_row, nan_row = analysis.run_table([empty, nan_run])
    assert "nc0" not in empty_row
    assert empty_row["optimizer"] == "adamw"
    assert nan_row["nc0"] is None


def test_run_table_pandas_round_trip(tmp_path):
    pandas = pytest.importorskip("pandas")
    rows = analysis.run_table(analysis.load_runs(example_results(tmp_path)))
    frame = pandas.DataFrame(rows)
    assert len(frame) == 3
    assert list(frame["run_id"]) == [row["run_id"] for row in rows]
    np.testing.assert_array_equal(frame["initial_nc0"].to_numpy(), [1.25, 1.0, 3.0])
    assert frame["nc0"].iloc[0] == 0.5
    assert pandas.isna(frame["nc0"].iloc[1])
    assert pandas.isna(frame["test_accuracy"].iloc[2])
    assert frame.to_dict("records")[0]["nc3"] == 0.25


def test_write_csv_reads_back(tmp_path):
    rows = analysis.run_table(analysis.load_runs(example_results(tmp_path)))
    path = tmp_path / "out" / "runs.csv"
    analysis.write_csv(rows, path)
    with open(path, newline="", encoding="utf-8") as stream:
        read = list(csv.DictReader(stream))
    assert len(read) == 3
    assert read[0]["run_id"] == "cpu-mlp-mnist-adamw-s0"
    assert float(read[0]["train_loss"]) == 1.0 / 61
    assert read[1]["nc0"] == ""
    assert read[2]["test_accuracy"] == ""
    assert read[2]["epochs"] == ""
    assert [name for name in path.parent.iterdir()] == [path]


# kept_runs and grouping


def accuracy_row(run_id, train_accuracy, status="completed", **fields):
    return {"run_id": run_id, "status": status, "train_accuracy": train_accuracy, **fields}


def test_kept_runs_thresholds():
    rows = [
        accuracy_row("exact", 0.99),
        accuracy_row("perfect", 1.0),
        accuracy_row("below", 0.989),
        accuracy_row("diverged", 1.0, status="diverged"),
        accuracy_row("missing", None),
        accuracy_row("nan", math.nan),
        accuracy_row("ufm-perfect", 1.0, min_train_accuracy=1.0),
        accuracy_row("ufm-almost", 0.9999, min_train_accuracy=1.0),
        accuracy_row("vit", 0.6, min_train_accuracy=0.5),
    ]
    kept = [row["run_id"] for row in analysis.kept_runs(rows)]
    assert kept == ["exact", "perfect", "ufm-perfect", "vit"]


def test_kept_runs_explicit_threshold():
    rows = [accuracy_row("a", 0.6, min_train_accuracy=0.5), accuracy_row("b", 1.0)]
    assert [row["run_id"] for row in analysis.kept_runs(rows, 1.0)] == ["b"]
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got 99"):
        analysis.kept_runs(rows, 99)


def test_by_optimizer_and_decay_nesting():
    rows = [
        {"optimizer": "adamw", "weight_decay": 5.0, "coupled_weight_decay": None, "nc0": 8.0},
        {"optimizer": "adam", "weight_decay": 0.05, "coupled_weight_decay": None, "nc0": 1.0},
        {"optimizer": "adam", "weight_decay": 0.05, "coupled_weight_decay": None, "nc0": 3.0},
        {"optimizer": "adam", "weight_decay": 0.0, "coupled_weight_decay": None, "nc0": 4.0},
        {"optimizer": "sgd", "weight_decay": 0.05, "coupled_weight_decay": None, "nc0": 0.5},
    ]
    nested = analysis.by_optimizer_and_decay(rows, ("nc0",))
    assert list(nested) == ["sgd", "adam", "adamw"]
    assert list(nested["adam"]) == [0.0, 0.05]
    mean, std, count = nested["adam"][0.05]["nc0"]
    assert mean == 2.0
    np.testing.assert_allclose(std, math.sqrt(2.0), rtol=1e-15)
    assert count == 2
    assert nested["adamw"][5.0]["nc0"] == (8.0, 0.0, 1)


def test_by_optimizer_and_decay_coupled_part():
    rows = [
        {"optimizer": "adam_adamw", "weight_decay": 5e-4, "coupled_weight_decay": coupled,
         "nc0": nc0}
        for coupled, nc0 in ((1e-4, 2.0), (0.0, 6.0))
    ]
    assert list(analysis.by_optimizer_and_decay(rows, ("nc0",))["adam_adamw"]) == [5e-4]
    nested = analysis.by_optimizer_and_decay(rows, ("nc0",), decay_field="coupled_weight_decay")
    assert list(nested["adam_adamw"]) == [0.0, 1e-4]
    assert nested["adam_adamw"][1e-4]["nc0"] == (2.0, 0.0, 1)


def test_optimizer_sort_key_order():
    names = ["zeta", "adam_adamw", "signumw", "adamw", "lion", "sgd", "signum", "adam", "sgdw"]
    assert sorted(names, key=analysis.optimizer_sort_key) == [
        "sgd", "sgdw", "adam", "adamw", "signum", "signumw", "adam_adamw", "lion", "zeta",
    ]


# Tables


def metrics_row(run_id, optimizer, final, initial, train_accuracy=1.0, status="completed"):
    row = {"run_id": run_id, "optimizer": optimizer, "status": status,
           "train_accuracy": train_accuracy, "min_train_accuracy": 0.99,
           "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.05,
           "coupled_weight_decay": None}
    for metric, value in final.items():
        row[metric] = value
    for metric, value in initial.items():
        row[analysis.INITIAL_PREFIX + metric] = value
    return row


def test_percent_change_values():
    assert analysis.percent_change(2.0, 0.5) == -75.0
    assert analysis.percent_change(4.0, 5.0) == 25.0
    np.testing.assert_allclose(analysis.percent_change(0.8, 0.29), -63.75, rtol=1e-14)
    assert analysis.percent_change(0.0, 1.0) is None
    assert analysis.percent_change(None, 1.0) is None
    assert analysis.percent_change(1.0, None) is None
    assert analysis.percent_change(math.nan, 1.0) is None


def test_final_metrics_table_values():
    rows = [
        metrics_row("r1", "adamw", {"nc0": 5.0, "nc3": 0.29}, {"nc0": 4.0, "nc3": 0.8}),
        metrics_row("r2", "sgd", {"nc0": 0.5, "nc3": None}, {"nc0": 2.0, "nc3": 0.0}),
        metrics_row("r3", "sgdw", {"nc0": 1.0, "nc3": 0.5}, {"nc3": 0.0}),
    ]
    header, table = analysis.final_metrics_table(rows, metrics=("nc0", "nc3"))
    assert header == ["optimizer", "nc0", "nc0_change_percent", "nc3", "nc3_change_percent"]
    assert [line[0] for line in table] == ["sgd", "sgdw", "adamw"]
    assert table[0] == ["sgd", 0.5, -75.0, None, None]
    assert table[1] == ["sgdw", 1.0, None, 0.5, None]
    assert table[2][:3] == ["adamw", 5.0, 25.0]
    assert table[2][3] == 0.29
    np.testing.assert_allclose(table[2][4], -63.75, rtol=1e-14)


def test_best_runs_smallest_nc3_among_kept():
    rows = [
        metrics_row("sgd-a", "sgd", {"nc3": 0.3}, {}),
        metrics_row("sgd-b", "sgd", {"nc3": 0.1}, {}),
        metrics_row("sgd-low-accuracy", "sgd", {"nc3": 0.01}, {}, train_accuracy=0.9),
        metrics_row("sgd-diverged", "sgd", {"nc3": 0.001}, {}, status="diverged"),
        metrics_row("sgd-missing", "sgd", {"nc3": None}, {}),
        metrics_row("adam-b", "adam", {"nc3": 0.2}, {}),
        metrics_row("adam-a", "adam", {"nc3": 0.2}, {}),
        metrics_row("adam-c", "adam", {"nc3": 0.25}, {}),
        metrics_row("signum-low-accuracy", "signum", {"nc3": 0.05}, {}, train_accuracy=0.5),
    ]
    best = analysis.best_runs(rows)
    assert [row["run_id"] for row in best] == ["sgd-b", "adam-a"]
    assert [row["run_id"] for row in analysis.best_runs(rows, min_train_accuracy=0.5)] == [
        "sgd-low-accuracy", "adam-a", "signum-low-accuracy",
    ]


def test_hyperparameter_table_columns():
    rows = [metrics_row("r1", "adam", {}, {}), metrics_row("r2", "sgd", {}, {})]
    header, table = analysis.hyperparameter_table(rows)
    assert header == ["optimizer", "learning_rate", "momentum", "weight_decay"]
    assert table == [["sgd", 0.01, 0.9, 0.05], ["adam", 0.01, 0.9, 0.05]]

    mixed = rows + [dict(metrics_row("r3", "adam_adamw", {}, {}), coupled_weight_decay=2e-4)]
    header, table = analysis.hyperparameter_table(mixed)
    assert header[-1] == "coupled_weight_decay"
    assert table[-1] == ["adam_adamw", 0.01, 0.9, 0.05, 2e-4]
    assert table[0][-1] is None


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def test_write_final_metrics_table(tmp_path):
    rows = [
        metrics_row("r1", "adamw", {"nc0": 5.0, "nc3": 0.29}, {"nc0": 4.0, "nc3": 0.8}),
        metrics_row("r2", "sgd", {"nc0": 0.5, "nc3": None}, {"nc0": 2.0, "nc3": 0.0}),
    ]
    header, table = analysis.final_metrics_table(rows, metrics=("nc0", "nc3"))
    markdown_path, csv_path = analysis.write_table(header, table, tmp_path / "table1")
    assert markdown_path == tmp_path / "table1.md"
    assert csv_path == tmp_path / "table1.csv"

    lines = markdown_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 + len(table)
    assert lines[0] == "| optimizer | nc0 | nc3 |"
    assert lines[2] == "| sgd | 0.5 (-75.0%) |  |"
    assert lines[3] == "| adamw | 5 (+25.0%) | 0.29 (-63.8%) |"

    read = read_csv(csv_path)
    assert read[0] == header
    assert read[1] == ["sgd", "0.5", "-75.0", "", ""]
    assert read[2][0] == "adamw"
    assert [float(cell) for cell in read[2][1:]] == table[1][1:]


def test_write_regression_table(tmp_path):
    fits = [("lr=0.001", analysis.ols(*noisy_line(0.16, 0.3))),
            ("all", analysis.ols(*noisy_line(0.02, 1.0, seed=1)))]
    header, table = analysis.regression_table(fits)
    assert header == [
        "experiment", "n", "slope", "slope_stderr", "t_value", "p_value", "slope_ci_low",
        "slope_ci_high", "r_squared", "adjusted_r_squared", "f_statistic",
    ]
    assert table[0][0] == "lr=0.001"
    assert table[0][1] == 300
    assert table[0][2] == fits[0][1].slope
    assert table[1][-1] == fits[1][1].f_statistic

    markdown_path, csv_path = analysis.write_table(header, table, tmp_path / "tables" / "table5")
    read = read_csv(csv_path)
    assert read[0] == header
    for read_row, row in zip(read[1:], table):
        assert read_row[0] == row[0]
        assert int(read_row[1]) == row[1]
        assert [float(cell) for cell in read_row[2:]] == row[2:]

    lines = markdown_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 + len(table)
    assert lines[0] == (
        "| experiment | n | slope | slope_stderr | t_value | p_value | slope 95% CI "
        "| R^2 / adjusted R^2 | f_statistic |"
    )
    fit = fits[0][1]
    interval = f"[{fit.slope_ci_low:.4g}, {fit.slope_ci_high:.4g}]"
    assert f"| {interval} | {fit.r_squared:.4g} / {fit.adjusted_r_squared:.4g} |" in lines[2]


def test_format_markdown_table_cells():
    text = analysis.format_markdown_table(["name", "value"], [["a|b", None], ["c", 1234.5678]])
    assert text == "| name | value |\n| --- | --- |\n| a\\|b |  |\n| c | 1235 |\n"
