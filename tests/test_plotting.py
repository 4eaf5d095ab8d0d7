"""Tests for figures made from run histories."""

from ncjax import plotting


def test_plot_writes_png_and_skips_missing_values(tmp_path):
    histories = {
        "adam": [{"epoch": 0, "nc0": 1.0, "nc1": 0.5, "nc2": 0.3, "nc3": 0.2},
                 {"epoch": 10, "nc0": 0.1, "nc1": None, "nc2": 0.2, "nc3": 0.1}],
        "adamw": [{"epoch": 0, "nc0": 1.0, "nc1": 0.5, "nc2": 0.3, "nc3": 0.2},
                  {"epoch": 10, "nc0": 0.0, "nc1": 0.4, "nc2": 0.2, "nc3": 0.3}],
    }
    path = plotting.plot_metrics_over_training(histories, tmp_path / "out" / "nc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["nc.png"]


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
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
