"""Tests for the study figures: the drawn data is read back from each Figure."""

import math

from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure
import numpy as np
import pytest

from ncjax import plotting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _line(axis, label):
    (line,) = [line for line in axis.get_lines() if line.get_label() == label]
    return line


def _lines_of_color(axis, color, linestyle):
    return [line for line in axis.get_lines()
            if to_rgba(line.get_color()) == to_rgba(color) and line.get_linestyle() == linestyle]


def _scatter(axis, label):
    (collection,) = [c for c in axis.collections if c.get_label() == label]
    return collection


def _band(axis, color):
    """Return {x: (lower, upper)} of the fill_between band drawn in `color`."""
    (band,) = [c for c in axis.collections
               if np.allclose(c.get_facecolor()[0][:3], to_rgba(color)[:3])]
    vertices = band.get_paths()[0].vertices
    edges = {}
    for x in np.unique(vertices[:, 0]):
        ys = np.unique(vertices[np.isclose(vertices[:, 0], x), 1])
        edges[float(x)] = (ys.min(), ys.max())
    return edges


def _texts(axis):
    return [text.get_text() for text in axis.texts]


def _sample_std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# NC0 values per decay. The extra rows of _decay_rows (None, NaN, another
# optimizer) must not change the means.
ADAM_NC0 = {0.0: [1.0, 3.0], 0.01: [0.2, 0.4, 0.9], 0.1: [0.05]}
ADAMW_NC0 = {0.0: [2.0, 2.5], 0.01: [4.0, 6.0], 1.0: [8.0, 9.0]}


def _decay_rows():
    rows = []
    for optimizer, by_decay in (("adam", ADAM_NC0), ("adamw", ADAMW_NC0)):
        for decay, values in by_decay.items():
            for seed, value in enumerate(values):
                rows.append({"optimizer": optimizer, "weight_decay": decay, "seed": seed,
                             "learning_rate": 0.001, "momentum": 0.9,
                             "nc0": value, "nc3": value / 10})
    rows += [
        {"optimizer": "adam", "weight_decay": 0.01, "nc0": None, "nc3": 0.1},
        {"optimizer": "adam", "weight_decay": 0.01, "nc0": math.nan, "nc3": 0.1},
        {"optimizer": "adam", "weight_decay": 0.01, "nc3": 0.1},
        {"optimizer": "adam", "weight_decay": 0.5, "nc0": None, "nc3": None},
        {"optimizer": "adam", "weight_decay": 0.2, "nc0": 0.0, "nc3": 0.0},
        {"optimizer": "adam", "weight_decay": None, "nc0": 5.0, "nc3": 0.5},
        {"optimizer": "sgd", "weight_decay": 0.01, "nc0": 100.0, "nc3": 1.0},
    ]
    return rows


def test_decay_comparison_lines_are_means():
    fig = plotting.decay_comparison(_decay_rows())
    nc0_axis, nc3_axis = fig.axes
    line = _line(nc0_axis, "Adam")
    expected_decays = sorted(ADAM_NC0)
    np.testing.assert_array_equal(line.get_xdata(), expected_decays)
    np.testing.assert_allclose(
        line.get_ydata(), [np.mean(ADAM_NC0[decay]) for decay in expected_decays], rtol=1e-12)
    assert 0.0 in line.get_xdata()
    assert to_rgba(line.get_color()) == to_rgba(plotting.OPTIMIZER_COLORS["adam"])
    adamw = _line(nc3_axis, "AdamW")
    np.testing.assert_allclose(
        adamw.get_ydata(), [np.mean(ADAMW_NC0[decay]) / 10 for decay in sorted(ADAMW_NC0)],
        rtol=1e-12)


def test_decay_comparison_band_one_std():
    fig = plotting.decay_comparison(_decay_rows())
    band = _band(fig.axes[0], plotting.OPTIMIZER_COLORS["adam"])
    assert sorted(band) == sorted(ADAM_NC0)
    for decay, values in ADAM_NC0.items():
        mean, std = np.mean(values), _sample_std(values)
        np.testing.assert_allclose(band[decay], (mean - std, mean + std), rtol=1e-12)


def test_decay_comparison_skips_missing_and_zero():
    fig = plotting.decay_comparison(_decay_rows())
    x = _line(fig.axes[0], "Adam").get_xdata()
    assert 0.5 not in x  # only None
    assert 0.2 not in x  # mean 0 on a log axis
    assert {line.get_label() for line in fig.axes[0].get_lines()} == {"Adam", "AdamW"}


def test_decay_comparison_axis_scales():
    fig = plotting.decay_comparison(_decay_rows())
    for axis in fig.axes:
        assert axis.get_xscale() == "symlog"
        assert axis.get_yscale() == "log"
        assert axis.xaxis.get_transform().linthresh == pytest.approx(0.01)
        assert 0.0 in axis.get_xticks()


def test_decay_comparison_ticks_within_one_decade():
    rows = [{"optimizer": "adam", "weight_decay": decay, "nc0": 1.0, "nc3": 0.3}
            for decay in (0.0, 0.2, 0.5)]
    axis = plotting.decay_comparison(rows).axes[0]
    np.testing.assert_array_equal(axis.get_xticks(), [0.0, 0.2, 0.5])
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0", "0.2", "0.5"]


def test_decay_comparison_groups_are_rows():
    rows = [
        {"optimizer": optimizer, "weight_decay": decay, "nc0": 1.0 + decay, "nc3": 0.5}
        for optimizer in ("signum", "signumw", "sgd", "sgdw")
        for decay in (0.0, 0.05)
    ]
    fig = plotting.decay_comparison(
        rows, optimizers=(("signum", "signumw"), ("sgd", "sgdw")), metrics=("nc0", "nc3", "nc1"))
    axes = np.asarray(fig.axes).reshape(2, 3)
    for axis in axes[0, :2]:
        assert [line.get_label() for line in axis.get_lines()] == ["Signum", "SignumW"]
    for axis in axes[1, :2]:
        assert [line.get_label() for line in axis.get_lines()] == ["SGD", "SGDW"]
    assert "no runs" in _texts(axes[0, 2])
    assert "no runs" in _texts(axes[1, 2])
    for name in ("sgd", "sgdw"):
        line = _line(axes[1, 0], plotting.OPTIMIZER_LABELS[name])
        assert to_rgba(line.get_color()) == to_rgba(plotting.OPTIMIZER_COLORS[name])


SCATTER_ROWS = [
    {"optimizer": "adam", "learning_rate": 0.001, "nc0": 0.01, "nc3": 0.2, "nc1": 0.05},
    {"optimizer": "adam", "learning_rate": 0.001, "nc0": 0.1, "nc3": 0.3, "nc1": 0.0},
    {"optimizer": "adamw", "learning_rate": 0.001, "nc0": 5.0, "nc3": 0.7, "nc1": 0.2},
    {"optimizer": "adam", "learning_rate": 0.01, "nc0": 0.5, "nc3": 0.4, "nc1": 0.1},
    {"optimizer": "adamw", "learning_rate": 0.01, "nc0": 8.0, "nc3": 0.9, "nc1": 0.3},
    # Skipped: NC0 zero, null or missing, NC3 non-finite, no learning rate.
    {"optimizer": "adam", "learning_rate": 0.001, "nc0": 0.0, "nc3": 0.1, "nc1": 0.1},
    {"optimizer": "adam", "learning_rate": 0.001, "nc0": None, "nc3": 0.1, "nc1": 0.1},
    {"optimizer": "adam", "learning_rate": 0.001, "nc3": 0.1, "nc1": 0.1},
    {"optimizer": "adam", "learning_rate": 0.001, "nc0": 0.3, "nc3": math.inf, "nc1": 0.1},
    {"optimizer": "adam", "learning_rate": None, "nc0": 0.3, "nc3": 0.1, "nc1": 0.1},
]


def test_metric_against_nc0_panels():
    fig = plotting.metric_against_nc0(SCATTER_ROWS)
    assert [axis.get_title() for axis in fig.axes] == ["lr = 0.001", "lr = 0.01"]
    first, second = fig.axes
    np.testing.assert_array_equal(_scatter(first, "Adam").get_offsets(), [[0.01, 0.2], [0.1, 0.3]])
    np.testing.assert_array_equal(_scatter(first, "AdamW").get_offsets(), [[5.0, 0.7]])
    np.testing.assert_array_equal(_scatter(second, "Adam").get_offsets(), [[0.5, 0.4]])
    for axis in fig.axes:
        assert axis.get_xscale() == "log"
        assert axis.get_yscale() == "linear"


def test_metric_against_nc0_colors():
    fig = plotting.metric_against_nc0(SCATTER_ROWS)
    for name in ("adam", "adamw"):
        collection = _scatter(fig.axes[0], plotting.OPTIMIZER_LABELS[name])
        np.testing.assert_allclose(collection.get_facecolor()[0][:3],
                                   to_rgba(plotting.OPTIMIZER_COLORS[name])[:3])


def test_metric_against_nc0_fit_line():
    slope, intercept = 0.16, 0.45
    # The key differs from the rows' 0.001 in the last digits and must still match.
    fits = {0.001 * (1 + 1e-12): (slope, intercept)}
    fig = plotting.metric_against_nc0(SCATTER_ROWS, fits=fits)
    first, second = fig.axes
    fit = _line(first, "fit")
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    np.testing.assert_allclose(y, intercept + slope * np.log10(x), rtol=1e-12)
    assert x.min() == pytest.approx(0.01, rel=1e-12)
    assert x.max() == pytest.approx(5.0, rel=1e-12)
    assert len(second.get_lines()) == 0


def test_metric_against_nc0_log_y_skips_zero():
    fig = plotting.metric_against_nc0(SCATTER_ROWS, metric="nc1", log_y=True,
                                      fits={0.001: (0.1, 0.2)})
    first = fig.axes[0]
    assert first.get_yscale() == "log"
    # NC1 0 is skipped on the log axis; the row whose NC3 is infinite has a valid NC1.
    np.testing.assert_array_equal(_scatter(first, "Adam").get_offsets(),
                                  [[0.01, 0.05], [0.3, 0.1]])
    fit = _line(first, "fit")
    np.testing.assert_allclose(fit.get_ydata(), 0.2 + 0.1 * np.log10(fit.get_xdata()), rtol=1e-12)


# (momentum, decay) -> NC0 values of SGD runs over learning rates and seeds.
SGD_CELLS = {
    (0.0, 0.0): [1.0, 2.0, 4.0],
    (0.0, 5e-4): [0.5],
    (0.9, 5e-4): [0.01, 0.03],
    (0.9, 5e-3): [0.001, 0.002],
}


def _heatmap_rows():
    rows = []
    for (momentum, decay), values in SGD_CELLS.items():
        for index, value in enumerate(values):
            rows.append({"optimizer": "sgd", "momentum": momentum, "weight_decay": decay,
                         "learning_rate": (0.001, 0.01, 0.0679)[index], "seed": 0,
                         "nc0": value, "nc2": None, "nc3": value / 2})
    rows += [
        {"optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "nc0": 7.0, "nc3": 7.0},
        {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "nc0": None, "nc3": math.nan},
        # A mean of 0 has no place on a log colour scale, so its cell stays blank.
        {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 5e-3, "nc0": 0.0, "nc3": 0.0},
    ]
    return rows


def test_heatmap_cells_are_means():
    fig = plotting.momentum_decay_heatmaps(_heatmap_rows())
    nc0_axis = fig.axes[0]
    (image,) = nc0_axis.images
    cells = np.ma.filled(image.get_array().astype(np.float64), np.nan)
    momenta, decays = [0.0, 0.9], [0.0, 5e-4, 5e-3]
    expected = np.full((2, 3), np.nan)
    for (momentum, decay), values in SGD_CELLS.items():
        expected[momenta.index(momentum), decays.index(decay)] = np.mean(values)
    np.testing.assert_allclose(cells, expected, rtol=1e-12)
    assert isinstance(image.norm, LogNorm)
    assert [label.get_text() for label in nc0_axis.get_xticklabels()] == ["0", "5e-4", "5e-3"]
    assert [label.get_text() for label in nc0_axis.get_yticklabels()] == ["0", "0.9"]


def test_heatmap_prints_filled_cells():
    fig = plotting.momentum_decay_heatmaps(_heatmap_rows())
    texts = fig.axes[0].texts
    assert len(texts) == len(SGD_CELLS)
    by_position = {text.get_position(): text.get_text() for text in texts}
    assert by_position[(0, 0)] == "2.3"  # mean of 1, 2 and 4
    assert by_position[(2, 1)] == "0.0015"
    assert by_position[(1, 0)] == "0.5"
    assert (2, 0) not in by_position


def test_heatmap_empty_metric_says_no_runs():
    fig = plotting.momentum_decay_heatmaps(_heatmap_rows())
    nc2_axis = [axis for axis in fig.axes if axis.get_title().startswith("NC2")][0]
    assert len(nc2_axis.images) == 0
    assert _texts(nc2_axis) == ["no runs"]


def _singular_value_history(scale):
    return [
        {"epoch": 0, "singular_values_W": [3.0 * scale, 2.0 * scale, 1.0 * scale],
         "singular_values_M": [4.0, 2.0, 1e-3]},
        {"epoch": 10, "singular_values_W": [6.0 * scale, 1.0 * scale, 0.5 * scale],
         "singular_values_M": [5.0, None, 1e-3]},
        {"epoch": 20, "singular_values_W": [9.0 * scale, 5.0 * scale, 0.0],
         "singular_values_M": [6.0, 3.0, 2e-3]},
        {"epoch": 30, "singular_values_W": None},
    ]


def test_singular_values_min_and_mean():
    histories = {"adam": _singular_value_history(1.0),
                 "adamw": {"run_id": "x", "history": _singular_value_history(2.0)}}
    fig = plotting.singular_values_over_training(histories)
    w_axis, m_axis = fig.axes
    color = plotting.OPTIMIZER_COLORS["adam"]
    (solid,) = _lines_of_color(w_axis, color, "-")
    (dotted,) = _lines_of_color(w_axis, color, ":")
    np.testing.assert_array_equal(solid.get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(solid.get_ydata(), [2.5, 3.5, 7.0], rtol=1e-12)
    # The smallest value 0 of epoch 20 cannot be drawn on the log axis.
    np.testing.assert_array_equal(dotted.get_xdata(), [0, 10])
    np.testing.assert_allclose(dotted.get_ydata(), [1.0, 0.5], rtol=1e-12)
    (adamw_solid,) = _lines_of_color(w_axis, plotting.OPTIMIZER_COLORS["adamw"], "-")
    np.testing.assert_allclose(adamw_solid.get_ydata(), [5.0, 7.0, 14.0], rtol=1e-12)
    assert w_axis.get_yscale() == "log"


def test_singular_values_skip_row_with_null():
    fig = plotting.singular_values_over_training({"sgd": _singular_value_history(1.0)})
    m_axis = fig.axes[1]
    color = plotting.OPTIMIZER_COLORS["sgd"]
    (solid,) = _lines_of_color(m_axis, color, "-")
    (dotted,) = _lines_of_color(m_axis, color, ":")
    # For M the smallest (K-th) value is dropped: centred means have rank K - 1.
    np.testing.assert_array_equal(solid.get_xdata(), [0, 20])
    np.testing.assert_allclose(solid.get_ydata(), [4.0, 6.0], rtol=1e-12)
    np.testing.assert_allclose(dotted.get_ydata(), [2.0, 3.0], rtol=1e-12)


# coupled decay -> NC0 over seeds, total decay 5e-4.
MIX_NC0 = {0.0: [3.0, 4.0, 5.0], 2e-4: [1.0, 1.5], 5e-4: [0.1, 0.2, 0.6]}


def _mix_rows():
    rows = []
    for coupled, values in MIX_NC0.items():
        for seed, value in enumerate(values):
            rows.append({"optimizer": "adam_adamw", "weight_decay": 5e-4,
                         "coupled_weight_decay": coupled, "seed": seed,
                         "nc0": value, "test_accuracy": 0.9 + seed / 100})
    rows += [
        {"optimizer": "adam_adamw", "weight_decay": 1e-3, "coupled_weight_decay": 0.0,
         "seed": 0, "nc0": 9.0, "test_accuracy": 0.5},
        {"optimizer": "adam", "weight_decay": 5e-4, "coupled_weight_decay": None,
         "seed": 0, "nc0": 50.0, "test_accuracy": 0.1},
    ]
    return rows


def test_coupled_share_means_over_seeds():
    fig = plotting.coupled_share(_mix_rows(), metrics=("nc0", "test_accuracy"))
    nc0_axis, accuracy_axis = fig.axes
    line = _line(nc0_axis, "total decay 5e-4")
    np.testing.assert_array_equal(line.get_xdata(), sorted(MIX_NC0))
    np.testing.assert_allclose(
        line.get_ydata(), [np.mean(MIX_NC0[c]) for c in sorted(MIX_NC0)], rtol=1e-12)
    assert to_rgba(line.get_color()) == to_rgba(plotting.OPTIMIZER_COLORS["adam_adamw"])
    band = _band(nc0_axis, plotting.OPTIMIZER_COLORS["adam_adamw"])
    for coupled, values in MIX_NC0.items():
        mean, std = np.mean(values), _sample_std(values)
        np.testing.assert_allclose(band[coupled], (mean - std, mean + std), rtol=1e-12)
    other_total = _line(nc0_axis, "total decay 1e-3")
    np.testing.assert_array_equal(other_total.get_ydata(), [9.0])
    assert nc0_axis.get_yscale() == "log"
    assert accuracy_axis.get_yscale() == "linear"
    np.testing.assert_allclose(_line(accuracy_axis, "total decay 5e-4").get_ydata(),
                               [0.91, 0.905, 0.91], rtol=1e-12)


NC4_ROWS = [
    {"optimizer": "sgd", "nc0": 0.01, "nc1": 0.1, "nc4": 0.99},
    {"optimizer": "sgd", "nc0": 0.02, "nc1": None, "nc4": 0.98},
    {"optimizer": "sgdw", "nc0": 2.0, "nc1": 0.5, "nc4": 0.97},
    {"optimizer": "sgdw", "nc0": 0.0, "nc1": 0.4, "nc4": 0.96},
    {"optimizer": "sgdw", "nc0": 3.0, "nc1": 0.4, "nc4": None},
    {"optimizer": "adam", "nc0": 3.0, "nc1": 0.4},
]


def test_nc4_against_metrics_offsets():
    fig = plotting.nc4_against_metrics(NC4_ROWS, metrics=("nc0", "nc1"))
    nc0_axis, nc1_axis = fig.axes
    np.testing.assert_array_equal(_scatter(nc0_axis, "SGD").get_offsets(),
                                  [[0.01, 0.99], [0.02, 0.98]])
    np.testing.assert_array_equal(_scatter(nc0_axis, "SGDW").get_offsets(), [[2.0, 0.97]])
    np.testing.assert_array_equal(_scatter(nc1_axis, "SGD").get_offsets(), [[0.1, 0.99]])
    np.testing.assert_array_equal(_scatter(nc1_axis, "SGDW").get_offsets(),
                                  [[0.5, 0.97], [0.4, 0.96]])
    assert [c.get_label() for c in nc0_axis.collections] == ["SGD", "SGDW"]
    assert nc0_axis.get_xscale() == "log"
    assert nc0_axis.get_yscale() == "linear"


def test_optimizer_color_same_in_every_figure():
    adam = to_rgba(plotting.OPTIMIZER_COLORS["adam"])
    rows = [{"optimizer": name, "learning_rate": 0.01, "weight_decay": 0.0, "nc0": 1.0,
             "nc3": 0.5, "nc4": 0.9} for name in ("adam", "sgd")]
    decay = _line(plotting.decay_comparison(rows, optimizers=("sgd", "adam")).axes[0], "Adam")
    scatter = _scatter(plotting.metric_against_nc0(rows).axes[0], "Adam")
    nc4 = _scatter(plotting.nc4_against_metrics(rows[::-1]).axes[0], "Adam")
    training = plotting.metrics_over_training({"adam": [{"epoch": 0, "nc0": 1.0}]}).axes[0]
    assert to_rgba(decay.get_color()) == adam
    np.testing.assert_allclose(scatter.get_facecolor()[0][:3], adam[:3])
    np.testing.assert_allclose(nc4.get_facecolor()[0][:3], adam[:3])
    assert to_rgba(training.get_lines()[0].get_color()) == adam


@pytest.mark.parametrize("draw", [
    lambda: plotting.decay_comparison([]),
    lambda: plotting.metric_against_nc0([]),
    lambda: plotting.momentum_decay_heatmaps([]),
    lambda: plotting.singular_values_over_training({}),
    lambda: plotting.singular_values_over_training({"adam": [{"epoch": 0}]}),
    lambda: plotting.coupled_share([]),
    lambda: plotting.nc4_against_metrics([{"optimizer": "adam", "nc0": None, "nc4": 1.0}]),
    lambda: plotting.metrics_over_training({"adam": [{"epoch": 0, "nc0": math.inf}]}),
])
def test_empty_panels_say_no_runs(draw):
    fig = draw()
    for axis in fig.axes:
        assert _texts(axis) == ["no runs"]


@pytest.mark.parametrize("draw", [
    lambda path: plotting.decay_comparison(_decay_rows(), path=path),
    lambda path: plotting.metric_against_nc0(SCATTER_ROWS, fits={0.01: (0.1, 0.5)}, path=path),
    lambda path: plotting.momentum_decay_heatmaps(_heatmap_rows(), path=path),
    lambda path: plotting.singular_values_over_training(
        {"adam": _singular_value_history(1.0)}, path=path),
    lambda path: plotting.coupled_share(_mix_rows(), path=path),
    lambda path: plotting.nc4_against_metrics(NC4_ROWS, path=path),
])
def test_study_figure_saves_png_atomically(tmp_path, draw):
    fig = draw(tmp_path / "out" / "figure.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "out" / "figure.png").read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["figure.png"]


def test_plot_writes_png_and_skips_missing_values(tmp_path):
    histories = {
        "adam": [{"epoch": 0, "nc0": 1.0, "nc1": 0.5, "nc2": 0.3, "nc3": 0.2},
                 {"epoch": 10, "nc0": 0.1, "nc1": None, "nc2": 0.2, "nc3": 0.1}],
        "adamw": [{"epoch": 0, "nc0": 1.0, "nc1": 0.5, "nc2": 0.3, "nc3": 0.2},
                  {"epoch": 10, "nc0": 0.0, "nc1": 0.4, "nc2": 0.2, "nc3": 0.3}],
    }
    path = plotting.plot_metrics_over_training(histories, tmp_path / "out" / "nc.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["nc.png"]


def test_metrics_over_training_skips_missing_values():
    histories = {
        "adam": [{"epoch": 0, "nc0": 1.0, "nc1": 0.5}, {"epoch": 10, "nc0": 0.1, "nc1": None},
                 {"epoch": 20, "nc0": math.nan, "nc1": 0.2}],
        "adamw": {"history": [{"epoch": 0, "nc0": 1.0}, {"epoch": 10, "nc0": 0.0},
                              {"epoch": 20, "nc0": 2.0}]},
    }
    fig = plotting.metrics_over_training(histories, metrics=("nc0", "nc1"))
    nc0_axis, nc1_axis = fig.axes
    np.testing.assert_array_equal(_line(nc0_axis, "adam").get_xdata(), [0, 10])
    np.testing.assert_array_equal(_line(nc0_axis, "adamw").get_xdata(), [0, 20])
    np.testing.assert_array_equal(_line(nc1_axis, "adam").get_ydata(), [0.5, 0.2])


def test_plot_single_metric(tmp_path):
    histories = {"sgd": [{"epoch": 0, "nc0": 2.0}, {"epoch": 5, "nc0": 1.0}]}
    path = plotting.plot_metrics_over_training(histories, tmp_path / "nc0.png", metrics=("nc0",))
    assert path.stat().st_size > 0


def test_plot_against_decay_with_zero_decay(tmp_path):
    summaries = {
        "adam": {0.0: {"nc0": (1.0, 0.1)}, 0.01: {"nc0": (0.1, 0.05)}, 0.05: {"nc0": (0.01, 0.02)}},
        "adamw": {0.0: {"nc0": (1.0, 0.1)}, 0.01: {"nc0": (2.0, 0.5)}, 0.05: {"nc0": (3.0, 0.0)}},
    }
    path = plotting.plot_metrics_against_decay(summaries, tmp_path / "decay.png", metrics=("nc0",))
    assert path.read_bytes()[:8] == PNG_SIGNATURE
