"""Tests of `python -m experiments.ufm_sweep` at a tiny size, in subprocesses."""

import os
from pathlib import Path
import subprocess
import sys

import pytest

from ncjax import results

REPO = Path(__file__).resolve().parents[1]
TINY = ("--preset=cpu", "--dim=8", "--num_classes=3", "--samples_per_class=4",
        "--steps=20", "--eval_every=20", "--num_seeds=2", "--learning_rates=0.1,0.3",
        "--weight_decays=0,1e-3", "--optimizers=adam,adamw")


def run_sweep(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.ufm_sweep", *args],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True, text=True, timeout=600,
    )


def test_tiny_sweep_writes_results_and_resumes(tmp_path):
    workdir = tmp_path / "sweep"
    first = run_sweep(*TINY, f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr
    rows = results.read_jsonl(workdir / "runs.jsonl")
    # 2 optimizers x 2 learning rates x 2 decays x 2 seeds.
    assert len(rows) == 16
    assert {row["optimizer"] for row in rows} == {"adam", "adamw"}
    assert all(row["kept"] == (row["train_accuracy"] == 1.0) for row in rows)
    summary = results.read_json(workdir / "summary.json")
    assert set(summary) <= {"adam", "adamw"}
    assert (workdir / "metrics_vs_decay.png").read_bytes()[:4] == b"\x89PNG"
    before = (workdir / "runs.jsonl").read_bytes()

    again = run_sweep(*TINY, f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("finished earlier; skipping") == 4
    assert (workdir / "runs.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--optimizers=rmsprop"], "rmsprop"),
        (["--weight_decays=0,-1"], "weight_decay=-1.0"),
        (["--learning_rates=abc"], "--learning_rates=abc"),
        (["--momentum=1.5"], "momentum=1.5"),
        (["--num_seeds=0"], "--num_seeds=0"),
    ],
)
def test_bad_sweep_flag_is_one_line(tmp_path, args, fragment):
    result = run_sweep(*TINY, *args, f"--workdir={tmp_path / 'sweep'}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert not (tmp_path / "sweep").exists()
