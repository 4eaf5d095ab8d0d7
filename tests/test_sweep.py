"""Sweeps: the presets' grids, run names, units, and `experiments.sweep` as a user runs it."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ncjax import results
from ncjax import sweeps
from ncjax import training
from ncjax import ufm

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}

# A sweep small enough for a test: one optimizer's 108 runs on digits.
SMALL = ["--preset=cpu", "--datasets=digits", "--optimizers=adam", "--epochs=1",
         "--eval_every=1", "--samples_per_class=20"]
SMALL_OPTIONS = sweeps.Options(datasets=("digits",), optimizers=("adam",), epochs=1,
                               eval_every=1, samples_per_class=20)


def sweep_command(results_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.sweep", f"--results={results_dir}", *SMALL, *extra]


def result_files(results_dir: Path) -> dict[str, tuple[int, int]]:
    """run_id -> (inode, mtime in ns) of every result file."""
    return {
        path.stem: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in (results_dir / sweeps.RUNS_DIR).glob("*.json")
    }


@pytest.mark.parametrize("preset, expected", [
    ("study", 2 * 3 * 6 * 108),  # models x datasets x optimizers x grid: 3,888
    ("cpu", 6 * 108),
    ("interpolation", 6),
    ("vit", 3 * 4 * 7),
    ("ufm", 3 * 4 * 6 * 5),
])
def test_presets_have_the_study_grid_sizes(preset, expected):
    runs = sweeps.plan(preset)
    assert len(runs) == expected
    assert len({run.run_id for run in runs}) == expected


def test_study_grid_values_follow_the_spec():
    runs = sweeps.plan("study", sweeps.Options(models=("resnet9",), datasets=("mnist",)))
    by_optimizer = {}
    for run in runs:
        config = run.config
        by_optimizer.setdefault(config.optimizer, set()).add(
            (config.learning_rate, config.momentum, config.weight_decay))
    assert sorted(by_optimizer) == sorted(sweeps.STUDY_OPTIMIZERS)
    assert {lr for lr, _, _ in by_optimizer["sgd"]} == {0.001, 0.01, 0.0679}
    assert {lr for lr, _, _ in by_optimizer["adam"]} == {0.001, 0.005, 0.01}
    assert {wd for _, _, wd in by_optimizer["adamw"]} == {0, 5e-4, 0.05, 0.5, 5, 10}
    assert {wd for _, _, wd in by_optimizer["signum"]} == {0, 5e-5, 5e-4, 5e-3, 0.05, 0.5}
    assert {m for _, m, _ in by_optimizer["signumw"]} == {0, 0.5, 0.7, 0.9, 0.95, 0.98}
    assert all(len(points) == 108 for points in by_optimizer.values())
    assert all(run.config.epochs == 200 and run.config.batch_size == 128 for run in runs)
    cifar = sweeps.plan("study", sweeps.Options(datasets=("cifar10",)))
    assert all(run.config.augment for run in cifar)


def test_interpolation_keeps_the_total_decay():
    runs = sweeps.plan("interpolation")
    coupled = [run.config.coupled_weight_decay for run in runs]
    np.testing.assert_allclose(coupled, [0, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4], rtol=0, atol=0)
    assert {run.config.weight_decay for run in runs} == {5e-4}
    assert {run.config.optimizer for run in runs} == {"adam_adamw"}


def test_run_id_is_stable_and_ignores_data_dir():
    a = sweeps.plan("cpu", sweeps.Options(data_dir="/one"))[0]
    b = sweeps.plan("cpu", sweeps.Options(data_dir="/two"))[0]
    c = sweeps.plan("cpu", sweeps.Options(epochs=7))[0]
    assert a.run_id == b.run_id
    assert a.run_id != c.run_id
    assert a.run_id.startswith("mlp-mnist-sgd-lr0.001-m0-wd0-s0-")


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_the_grid_exactly_once(count):
    runs = sweeps.plan("cpu")
    shards = [sweeps.shard(runs, index, count) for index in range(count)]
    ids = [run.run_id for part in shards for run in part]
    assert len(ids) == len(runs)
    assert sorted(ids) == sorted(run.run_id for run in runs)


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0)])
def test_shard_rejects_bad_values(index, count):
    with pytest.raises(ValueError, match="shard|num_shards"):
        sweeps.shard([], index, count)


def test_units_group_only_runs_that_share_a_program():
    runs = sweeps.plan("cpu", sweeps.Options(optimizers=("adam", "sgd")))
    groups = sweeps.units(runs, 50)
    assert [len(unit) for unit in groups] == [50, 50, 8, 50, 50, 8]
    for unit in groups:
        assert len({run.config.optimizer for run in unit}) == 1
    assert sweeps.units(runs, 1) == [[run] for run in runs]
    # Convolutional networks on CPU and the ViT train alone.
    conv = sweeps.plan("study", sweeps.Options(models=("resnet9",), datasets=("mnist",),
                                               optimizers=("adam",)))
    assert all(len(unit) == 1 for unit in sweeps.units(conv, 108))


def test_plan_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        sweeps.plan("nope")
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        sweeps.plan("cpu", sweeps.Options(optimizers=("adamx",)))
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        sweeps.plan("cpu", sweeps.Options(models=("resnet",)))


def test_ufm_unit_matches_single_runs(tmp_path):
    config = ufm.UFMConfig(num_classes=3, dim=4, samples_per_class=5, optimizer="adamw",
                           steps=20, eval_every=10)
    runs = [sweeps.Run("ufm", sweeps.UFMRun(config, lr, 0.9, 1e-3, seed), 1.0)
            for lr in (0.1, 0.3) for seed in (0, 1)]
    (unit,) = sweeps.units(runs, 108)
    records = sweeps.execute(unit, tmp_path / "work")
    paths = sweeps.write_records(tmp_path, records)
    assert [path.stem for path in paths] == [run.run_id for run in runs]
    stored = results.read_json(paths[3])
    assert stored["kind"] == "ufm"
    assert stored["status"] == "completed"
    assert [row["step"] for row in stored["history"]] == [0, 10, 20]
    _, single = ufm.train_ufm(config, ufm.UFMHyperparameters(0.3, 0.9, 1e-3, None, 1))
    np.testing.assert_allclose(stored["history"][-1]["nc0"], float(single["nc0"][-1]), rtol=1e-5)
    assert all(sweeps.is_finished(tmp_path, run) for run in runs)


def test_network_run_alone_checkpoints_and_cleans_up(tmp_path):
    (run,) = sweeps.plan("cpu", sweeps.Options(datasets=("digits",), optimizers=("adam",),
                                               epochs=2, eval_every=1, samples_per_class=20))[:1]
    records = sweeps.execute([run], tmp_path / "work", checkpoint_every=1)
    assert (tmp_path / "work" / run.run_id / "checkpoints").is_dir()
    sweeps.write_records(tmp_path, records)
    assert not (tmp_path / "work" / run.run_id).exists()
    stored = results.read_json(sweeps.result_path(tmp_path, run))
    assert [row["epoch"] for row in stored["history"]] == [0, 1, 2]
    direct = training.train_and_evaluate(run.config, sweeps.dataset_for(run.config))
    assert stored["history"][-1]["nc0"] == pytest.approx(direct.final["nc0"], rel=1e-6)


def test_progress_estimates_the_time_left():
    class Stream:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return False

    stream = Stream()
    progress = sweeps.Progress(10, already_done=2, stream=stream, width=10)
    progress.start -= 40.0  # as if 40 s had passed
    line = progress.update(4)
    assert line.startswith("[######....] 6/10 runs, 40s elapsed, about 40s left")
    assert stream.text == line + "\n"


def test_killed_sweep_restarts_with_only_the_missing_runs(tmp_path):
    """SIGKILL a sweep after some results exist; the restart does only the rest."""
    planned = {run.run_id for run in sweeps.plan("cpu", SMALL_OPTIONS)}
    command = sweep_command(tmp_path, "--max_unit_runs=12")
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len(result_files(tmp_path)) < 20:
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "fewer than 20 results after 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = result_files(tmp_path)
    assert 20 <= len(before) < len(planned)
    assert set(before) <= planned

    restart = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert restart.returncode == 0, restart.stderr[-2000:]
    missing = len(planned) - len(before)
    assert f"{len(before)} finished earlier, {missing} to do" in restart.stdout
    assert f"{missing} runs written" in restart.stdout
    after = result_files(tmp_path)
    assert set(after) == planned
    # Files from before the kill were neither rewritten nor replaced.
    assert {run_id: after[run_id] for run_id in before} == before
    # A kill inside a write can leave a temporary ".<name>.tmp" file, which
    # readers skip; every result file itself parses.
    for path in (tmp_path / sweeps.RUNS_DIR).glob("[!.]*"):
        assert path.suffix == ".json", path.name
        record = json.loads(path.read_text())
        assert record["run_id"] == path.stem
        assert record["status"] in ("completed", "diverged")
    assert not any((tmp_path / sweeps.WORK_DIR).glob("*"))

    again = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0
    assert f"{len(planned)} finished earlier, 0 to do" in again.stdout
    assert result_files(tmp_path) == after


def test_two_shards_in_parallel_cover_the_grid_once(tmp_path):
    planned = {run.run_id for run in sweeps.plan("cpu", SMALL_OPTIONS)}
    processes = [
        subprocess.Popen(sweep_command(tmp_path, f"--shard_index={index}", "--num_shards=2"),
                         cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]
        assert "54 runs, 0 finished earlier, 54 to do" in stdout
        assert "54 runs written" in stdout
    assert set(result_files(tmp_path)) == planned
    shard_of = {run.run_id: index
                for index in range(2)
                for run in sweeps.shard(sweeps.plan("cpu", SMALL_OPTIONS), index, 2)}
    assert sorted(shard_of) == sorted(planned)


@pytest.mark.parametrize("flags, message", [
    (["--num_shards=2", "--shard_index=2"], "shard_index=2 is invalid; expected an integer in [0, 1]"),
    (["--seeds=a"], "--seeds=a is invalid"),
    (["--optimizers=adamx"], "unknown optimizer 'adamx'"),
    (["--max_unit_runs=0"], "max_runs=0 is invalid"),
    (["--datasets=mnist", "--data_dir=/nonexistent/mnist"], "/nonexistent/mnist"),
])
def test_bad_flags_end_in_one_line(tmp_path, flags, message):
    run = subprocess.run(sweep_command(tmp_path / "out", *flags), cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert message in lines[0], run.stderr
    assert not (tmp_path / "out").exists()


def test_dataset_dir_prefers_the_datasets_subfolder(tmp_path):
    (tmp_path / "mnist").mkdir()
    assert sweeps.dataset_dir(str(tmp_path), "mnist") == str(tmp_path / "mnist")
    assert sweeps.dataset_dir(str(tmp_path), "cifar10") == str(tmp_path)
    assert sweeps.dataset_dir(None, "mnist") is None
    runs = sweeps.plan("study", sweeps.Options(data_dir=str(tmp_path), models=("vgg9",)))
    assert {run.config.dataset: run.config.data_dir for run in runs} == {
        "mnist": str(tmp_path / "mnist"), "fashion_mnist": str(tmp_path),
        "cifar10": str(tmp_path)}


def test_dry_run_prints_plan_and_writes_nothing(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", "--preset=study", "--dry_run",
         f"--results={tmp_path / 'out'}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0] == ("preset study: 3888 runs; shard 0 of 1: 3888 runs, 0 finished "
                        "earlier, 3888 to do in 3888 units")
    assert len(lines) == 1 + 3888
    assert not (tmp_path / "out").exists()
