"""`python -m experiments.report` on results of a real (small) sweep."""

import csv
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from ncjax import analysis
from ncjax import sweeps

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "experiments.report", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A fifth of the cpu grid of Adam, AdamW and SGD on digits, 2 epochs, plus the study's best settings."""
    directory = tmp_path_factory.mktemp("sweep")
    options = sweeps.Options(datasets=("digits",), optimizers=("adam", "adamw", "sgd"),
                             epochs=2, eval_every=2, samples_per_class=20)
    runs = sweeps.plan("cpu", options)
    best = [run for run in runs if (run.config.optimizer, run.config.learning_rate,
                                    run.config.momentum, run.config.weight_decay)
            in {("adam", 0.005, 0.98, 0.05), ("adamw", 0.005, 0.95, 5.0), ("sgd", 0.01, 0.9, 0.05)}]
    chosen = runs[::5] + [run for run in best if run not in runs[::5]]
    for unit in sweeps.units(chosen, 108):
        sweeps.write_records(directory, sweeps.execute(unit, directory / "work"))
    return directory


def test_report_makes_what_the_results_allow(results_dir, tmp_path):
    out = tmp_path / "report"
    run = run_report(f"--results={results_dir}", f"--out={out}", "--min_train_accuracy=0")
    assert run.returncode == 0, run.stderr[-2000:]
    group = out / "mlp_digits"
    for name in ("runs.csv", "nc0_by_decay.md", "nc0_by_decay.csv", "table1.md", "table2.csv",
                 "table4.md", "table5.csv", "figure1.png", "figure2.png", "figure3.png",
                 "figure4.png", "figure5.png", "figure6.png", "figure11.png", "figure12.png",
                 "figure44.png"):
        assert (group / name).is_file(), name
    assert "skipped figure7: no kept runs of the Adam-AdamW mix" in run.stdout
    assert (out / "report.md").read_text().count("skipped figure7") == 1

    rows = analysis.run_table(analysis.load_runs(results_dir))
    with open(group / "runs.csv", newline="") as stream:
        stored = list(csv.DictReader(stream))
    assert sorted(row["run_id"] for row in stored) == sorted(row["run_id"] for row in rows)

    # Table 5 is the OLS of NC3 on log10(NC0) over the runs, per learning rate and overall.
    fits = dict(analysis.nc3_on_nc0(rows))
    with open(group / "table5.csv", newline="") as stream:
        table5 = {row["experiment"]: row for row in csv.DictReader(stream)}
    assert sorted(table5) == sorted(fits)
    assert float(table5["all"]["slope"]) == fits["all"].slope
    assert int(table5["all"]["n"]) == fits["all"].n

    # The comparison of coupled and decoupled decay covers the decays both ran.
    with open(group / "nc0_by_decay.csv", newline="") as stream:
        pairs = list(csv.DictReader(stream))
    decays = {float(row["weight_decay"]) for row in pairs if row["coupled"] == "adam"}
    assert decays == {0.0, 5e-4, 0.05, 0.5}
    assert "decay 0.05: NC0 adam" in run.stdout


def test_report_with_the_presets_threshold_skips_with_reasons(results_dir, tmp_path):
    # After 2 epochs on digits no run reaches 99% training accuracy.
    run = run_report(f"--results={results_dir}", f"--out={tmp_path}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped table2: no kept runs of the study's optimizers" in run.stdout
    assert "skipped figure1: no kept Adam or AdamW runs" in run.stdout
    assert (tmp_path / "mlp_digits" / "runs.csv").is_file()


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "runs"),
    (lambda path: (path / "runs").mkdir(parents=True), "contains no run files"),
    (lambda path: ((path / "runs").mkdir(parents=True),
                   (path / "runs" / "bad.json").write_text("{not json")), "bad.json"),
])
def test_bad_results_end_in_one_line(tmp_path, make, message):
    make(tmp_path / "results")
    run = run_report(f"--results={tmp_path / 'results'}", f"--out={tmp_path / 'out'}")
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert message in lines[0], run.stderr
    assert not (tmp_path / "out").exists()


def test_bad_threshold_is_rejected(results_dir, tmp_path):
    run = run_report(f"--results={results_dir}", f"--out={tmp_path / 'out'}",
                     "--min_train_accuracy=1.5")
    assert run.returncode == 2
    assert "--min_train_accuracy=1.5 is invalid" in run.stderr
    assert json.loads((next((results_dir / "runs").glob("*.json"))).read_text())["format"] == 1
