"""Killing a training run and resuming it from its Orbax checkpoint."""

import json
import os
from pathlib import Path
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("NCJAX_SHARED_DATA", REPO.parent / "shared" / "data")) / "mnist"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def train_command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
            "--optimizer=adam", "--checkpoint_every=1", *extra]


def final_rows(run_dir: Path) -> list[dict]:
    """Return the metric rows of a run without their wall-clock times."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["time_s"]
    return rows


def kill_after_first_checkpoint(command: list[str], run_dir: Path, seed: int) -> None:
    """Start `command`, and SIGKILL it at a random moment after its epoch-1 checkpoint."""
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not (run_dir / "checkpoints" / "1").is_dir():
            assert process.poll() is None, "the run ended before writing its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.05)
        # Somewhere inside the next epochs, not at an epoch boundary on purpose.
        time.sleep(random.Random(seed).uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"


def check_resume_matches_uninterrupted(tmp_path: Path, extra: list[str], seed: int) -> None:
    interrupted = tmp_path / "interrupted"
    kill_after_first_checkpoint(train_command(interrupted, *extra), interrupted / "adam", seed)
    assert not (interrupted / "adam" / "summary.json").exists()

    resumed = subprocess.run(train_command(interrupted, *extra), cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from the checkpoint after epoch" in resumed.stderr

    reference = tmp_path / "reference"
    uninterrupted = subprocess.run(train_command(reference, "--checkpoint_every=0", *extra),
                                   cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    # Bitwise: the JSON floats are the exact float64 values of each metric.
    assert final_rows(interrupted / "adam") == final_rows(reference / "adam")


def test_killed_mlp_run_resumes_bitwise(tmp_path):
    extra = ["--dataset=digits", "--hidden_sizes=64,64", "--epochs=12", "--eval_every=3",
             "--batch_size=32"]
    check_resume_matches_uninterrupted(tmp_path, extra, seed=0)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST IDX files not found in {MNIST_DIR}")
def test_killed_resnet9_run_resumes_bitwise(tmp_path):
    extra = ["--dataset=mnist", f"--data_dir={MNIST_DIR}", "--samples_per_class=20",
             "--model=resnet9", "--width=0.125", "--epochs=6", "--eval_every=2",
             "--batch_size=50", "--eval_batch_size=200"]
    check_resume_matches_uninterrupted(tmp_path, extra, seed=1)
