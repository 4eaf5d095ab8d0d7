"""End-to-end checks that coupled and decoupled decay differ in NC0 on digits."""

import os
from pathlib import Path
import subprocess
import sys

import pytest

from ncjax import data as data_lib
from ncjax import results
from ncjax import training

REPO = Path(__file__).resolve().parents[1]


def final_row(name, dataset, epochs=200):
    hyperparameters = training.resolve_hyperparameters(name)
    config = training.TrainConfig(
        dataset="digits", optimizer=name, epochs=epochs, eval_every=epochs,
        **hyperparameters._asdict(),
    )
    run = training.train_and_evaluate(config, dataset)
    assert run.status == "completed"
    return run.final


@pytest.mark.parametrize("coupled, decoupled", [("adam", "adamw"), ("signum", "signumw")])
def test_decoupled_decay_keeps_nc0_large(coupled, decoupled):
    dataset = data_lib.load_digits()
    coupled_row = final_row(coupled, dataset)
    decoupled_row = final_row(decoupled, dataset)
    assert coupled_row["train_accuracy"] >= 0.99
    assert decoupled_row["train_accuracy"] >= 0.99
    assert decoupled_row["nc0"] >= 10 * coupled_row["nc0"]
    assert decoupled_row["nc3"] > coupled_row["nc3"]


@pytest.mark.slow
def test_readme_main_command(tmp_path):
    """The README's default run: six optimizers, figure and the NC0 gaps."""
    workdir = tmp_path / "digits"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--workdir={workdir}"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    final = {}
    for name in ("sgd", "sgdw", "adam", "adamw", "signum", "signumw"):
        summary = results.read_json(workdir / name / results.SUMMARY_FILE)
        assert summary["status"] == "completed"
        assert summary["final"]["epoch"] == 200
        final[name] = summary["final"]
    assert final["adamw"]["nc0"] >= 10 * final["adam"]["nc0"]
    assert final["signumw"]["nc0"] >= 10 * final["signum"]["nc0"]
    assert (workdir / "nc_over_training.png").stat().st_size > 0
