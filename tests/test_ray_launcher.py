"""Tests of `python -m experiments.sweep --launcher=ray` against a real local Ray head.

The head is started with the `ray` CLI next to this Python, in its own temp
directory, and stopped by signalling that process alone. `ray stop` would
stop every Ray instance of the user on the machine. 50 to 80 s on 2 CPU cores.
"""

import json
import os
from pathlib import Path
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ncjax import results
from ncjax import sweeps

REPO = Path(__file__).resolve().parents[1]

# The sweep of the acceptance test: 2 optimizers x 108 grid points on the
# digits dataset, 4 units of 54 runs.
SWEEP_FLAGS = (
    "--preset=cpu", "--datasets=digits", "--optimizers=adam,adamw", "--epochs=2",
    "--eval_every=2", "--samples_per_class=20", "--max_unit_runs=54",
)
SWEEP_OPTIONS = sweeps.Options(datasets=("digits",), optimizers=("adam", "adamw"), epochs=2,
                               eval_every=2, samples_per_class=20)
HEAD_START_TIMEOUT_S = 60
# The head listens on all interfaces (see ray_address), so it requires this
# token. Setting the mode also keeps a ~/.ray/auth_token file out of the
# decision. Ray (2.60) turns token mode on for `ray start` when that file
# exists, but not for a driver given an explicit address.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def environment(**extra) -> dict[str, str]:
    """Return the environment of every Ray process here: CPU JAX, no usage statistics."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", JAX_PLATFORMS="cpu", **RAY_AUTH, **extra)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """Start a Ray head with 2 CPUs for this module and return its address."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"the ray command is not installed next to {sys.executable}")
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray_head") / "ray_start.log"
    # A temp dir of its own keeps the session files and the address file that
    # a plain ray.init() reads out of /tmp/ray. It is short because Ray puts
    # Unix sockets in it, and their paths are limited to about 100 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    # --block keeps `ray start` in the foreground, and its SIGTERM handler
    # stops the processes it started. NOTE: Ray (2.60) replaces 127.0.0.1 by
    # the machine's primary address and listens on all interfaces anyway.
    command = [
        str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    with open(log_path, "w") as log:
        head = subprocess.Popen(command, env=environment(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for_head(head, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_head(head: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while "Ray runtime started" not in log_path.read_text():
        if head.poll() is not None:
            pytest.fail(f"ray start exited with status {head.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"ray start timed out after {HEAD_START_TIMEOUT_S} s:\n{log_path.read_text()}")
        time.sleep(0.5)


def stop_head(head: subprocess.Popen) -> None:
    """Stop the head by its process; kill its process group if it hangs."""
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def run_sweep(results_dir: Path, *flags: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *SWEEP_FLAGS, f"--results={results_dir}",
         *flags],
        cwd=REPO, env=env or environment(), capture_output=True, text=True, timeout=600,
    )


def file_times(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): path.stat().st_mtime_ns
            for path in directory.rglob("*") if path.is_file()}


def test_sweep_on_ray_writes_every_run_and_resumes(ray_address, tmp_path):
    results_dir = tmp_path / "results"
    expected = {run.run_id: run for run in sweeps.plan("cpu", SWEEP_OPTIONS)}
    assert len(expected) == 216

    first = run_sweep(results_dir, "--launcher=ray", f"--ray_address={ray_address}")
    assert first.returncode == 0, first.stderr
    assert "216 to do in 4 units" in first.stdout, first.stdout
    assert "216 runs written" in first.stdout, first.stdout

    paths = sorted((results_dir / sweeps.RUNS_DIR).iterdir())
    assert len(paths) == 216
    assert {path.stem for path in paths} == set(expected)
    for path in paths:
        record = results.read_json(path)
        assert record["run_id"] == path.stem
        assert record["config"] == expected[path.stem].config_json(), path.name
        assert record["status"] in ("completed", "diverged"), path.name
        assert record["unit_size"] == 54, path.name
        assert record["history"], path.name

    before = file_times(results_dir)
    second = run_sweep(results_dir, "--launcher=ray", f"--ray_address={ray_address}")
    assert second.returncode == 0, second.stderr
    assert "216 finished earlier, 0 to do" in second.stdout, second.stdout
    assert file_times(results_dir) == before


# A driver that launches one unit that fails (its MNIST directory is missing)
# and one that trains, then prints the outcome as JSON. It runs in its own
# process because Ray (2.60) ignored RAY_AUTH_MODE set after `import ray`.
FAILING_DRIVER = """
import io, json, sys
from experiments import ray_launcher
from ncjax import sweeps

address, missing_dir = sys.argv[1:]
missing = sweeps.plan("cpu", sweeps.Options(
    datasets=("mnist",), data_dir=missing_dir, optimizers=("adam",), epochs=1,
    samples_per_class=5))[:2]
good = sweeps.plan("cpu", sweeps.Options(
    datasets=("digits",), optimizers=("adam",), epochs=2, eval_every=2,
    samples_per_class=20))[0]
progress = sweeps.Progress(3, stream=io.StringIO())
failed = ray_launcher.launch([missing, [good]], "results", address=address,
                             checkpoint_every=1, progress=progress)
print(json.dumps({"failed": failed, "missing": missing[0].run_id, "good": good.run_id,
                  "progress": progress.stream.getvalue()}))
"""


def test_failed_unit_is_logged_and_counted(ray_address, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FAILING_DRIVER, ray_address, str(tmp_path / "no_such_dir")],
        cwd=tmp_path, env=environment(PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["failed"] == 2
    errors = [line for line in result.stderr.splitlines() if "failed:" in line]
    assert len(errors) == 1, result.stderr
    assert f"unit of 2 runs starting with {outcome['missing']} failed" in errors[0]
    assert "no_such_dir" in errors[0]
    assert "Traceback" not in result.stderr
    assert "2 runs failed" in outcome["progress"]
    record = results.read_json(tmp_path / "results" / "runs" / f"{outcome['good']}.json")
    assert record["status"] in ("completed", "diverged")
    # The checkpoints went to the absolute work directory under the driver's
    # cwd, not the worker's, and were removed once the record was written.
    assert (tmp_path / "results" / sweeps.WORK_DIR).is_dir()
    assert not (tmp_path / "results" / sweeps.WORK_DIR / outcome["good"]).exists()


def test_unreachable_address_is_one_line_exit_2(tmp_path):
    pytest.importorskip("ray")
    results_dir = tmp_path / "results"
    address = f"127.0.0.1:{free_port()}"

    result = run_sweep(results_dir, "--launcher=ray", f"--ray_address={address}")

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert address in lines[0]
    assert "ray start --head" in lines[0]
    assert not results_dir.exists()


def test_missing_ray_is_one_line_exit_2(tmp_path):
    fake = tmp_path / "fake_site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named \'ray\'")\n')
    pythonpath = os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))
    results_dir = tmp_path / "results"

    result = run_sweep(results_dir, "--launcher=ray", env=environment(PYTHONPATH=pythonpath))

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "--launcher=ray" in lines[0]
    assert "pip install 'ncjax[ray]'" in lines[0]
    assert not results_dir.exists()
