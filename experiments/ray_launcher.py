"""Run a sweep's units as Ray tasks, on a cluster or on a local instance.

Start a cluster head, add workers, then point the sweep at the head:

  ray start --head --port=6379 --disable-usage-stats   # on the head node
  ray start --address=HEAD_IP:6379                     # on each worker node
  python -m experiments.sweep --preset=study --data_dir=/data --results=runs/study \\
      --launcher=ray --ray_address=HEAD_IP:6379 --ray_gpus_per_unit=1

Every node needs ncjax installed and the dataset files at the same
--data_dir path. Ray (2.60 checked) turns token authentication on for
`ray start` when ~/.ray/auth_token exists, and a local ray.init() writes
that file. A sweep given --ray_address then needs RAY_AUTH_MODE=token and the
token (that file, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN) in its environment. Without --ray_address the sweep starts a local Ray instance
and stops it at the end. NOTE: Ray (2.60 checked) cannot keep that instance
on loopback. It replaces 127.0.0.1 by the address of the primary network
interface, and its GCS and raylet listen on all interfaces, as they do
after any `ray start --head`.

Each task trains one unit (`sweeps.execute`) and returns its records. The
driver writes them to `<results>/runs/`, so the workers need no shared file
system for results. Network runs trained one at a time write their
checkpoints to `<results>/work/<run_id>`, given to the workers as an
absolute path. On a cluster that path must be writable on every node. If it
is not shared, checkpoints stay on the node that wrote them: a retried task
resumes only if it lands on the same node, and the driver cannot remove
them once the run's record is written.

With a fractional --ray_gpus_per_unit, several JAX processes share one GPU,
and each preallocates 75% of its memory by default. Set
XLA_CLIENT_MEM_FRACTION (jaxlib also reads the deprecated
XLA_PYTHON_CLIENT_MEM_FRACTION) or XLA_PYTHON_CLIENT_PREALLOCATE=false in
the environment of `ray start` on the GPU nodes.
"""

import importlib
import logging as std_logging
import os
from pathlib import Path
import socket
import warnings

from absl import logging

from ncjax import sweeps

INSTALL_COMMAND = "pip install 'ncjax[ray]'"
# ray.init (2.60 checked) kept retrying a HOST:PORT that nothing listened on
# for over 10 minutes, so check_address gives up after this many seconds.
CONNECT_TIMEOUT_S = 10.0


def check_installed() -> None:
    """Raise ValueError with one line naming the install command unless Ray imports."""
    try:
        # Ray is optional, so it is imported only when the launcher is used.
        importlib.import_module("ray")
    except ImportError as error:
        raise ValueError(
            f"--launcher=ray needs Ray, but importing it failed ({error}); "
            f"install it with: {INSTALL_COMMAND} (in a clone: pip install -e '.[ray]')"
        ) from None


def check_address(address: str | None) -> None:
    """Raise ValueError unless a HOST:PORT `address` accepts TCP connections.

    None, "local", "auto" and ray:// addresses are left to Ray.
    """
    if not address or address in ("local", "auto") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray_address={address} is invalid; expected HOST:PORT, auto "
                         "or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ValueError(
            f"--ray_address={address}: connecting failed ({error}); start the cluster head "
            f"with `ray start --head --port={port}` or correct the address"
        ) from None


def execute_unit(unit: list[sweeps.Run], work_dir: str,
                 checkpoint_every: int | None) -> list[dict]:
    """Train one unit on a Ray worker and return its records (the task's body)."""
    return sweeps.execute(unit, work_dir, checkpoint_every=checkpoint_every)


def launch(
    todo_units: list[list[sweeps.Run]],
    results_dir: str | Path,
    *,
    address: str | None = None,
    checkpoint_every: int | None = 25,
    cpus_per_unit: float = 1.0,
    gpus_per_unit: float = 0.0,
    progress: sweeps.Progress,
) -> int:
    """Train every unit as a Ray task and write the records on this process.

    Connects to the cluster at `address`, or starts a local instance when
    it is None, unless Ray is already initialized in this process. Only a
    connection or instance made here is shut down at the end. A task can raise, or lose
    its worker or node after Ray's retries. Such a task is logged with the
    unit's first run_id and its runs count as failed, while the others go on.

    Returns:
      The number of runs that failed.
    """
    import ray  # Ray is optional, so it is imported only when used.

    results_dir = Path(results_dir)
    work_dir = str((results_dir / sweeps.WORK_DIR).resolve())
    started = _init(ray, address)
    try:
        execute_task = ray.remote(execute_unit).options(
            num_cpus=cpus_per_unit, num_gpus=gpus_per_unit
        )
        submitted = {
            execute_task.remote(unit, work_dir, checkpoint_every): unit
            for unit in todo_units
        }
        logging.info("submitted %d units to Ray (%s CPUs, %s GPUs each)",
                     len(submitted), cpus_per_unit, gpus_per_unit)
        return _collect(ray, submitted, results_dir, progress)
    finally:
        if started:
            ray.shutdown()


def _init(ray, address: str | None) -> bool:
    """Connect to `address` or start a local instance; return whether ray.init ran."""
    if ray.is_initialized():
        return False
    # Ray sends usage statistics to a remote server unless this is 0. A user
    # who sets it to 1 opts in.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level=std_logging.WARNING)
    else:
        # "local" starts a new instance, where no address would connect to
        # RAY_ADDRESS or to the last `ray start` cluster of this machine.
        with warnings.catch_warnings():
            # JAX warns about every os.fork, but Ray starts its processes
            # with subprocess, whose child calls exec at once.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                    category=RuntimeWarning)
            ray.init(address="local", include_dashboard=False,
                     logging_level=std_logging.WARNING)
    return True


def _collect(ray, submitted: dict, results_dir: Path, progress: sweeps.Progress) -> int:
    """Write each unit's records as its task finishes; return the failed run count."""
    failed = 0
    while submitted:
        ready, _ = ray.wait(list(submitted), num_returns=1)
        for ref in ready:
            unit = submitted.pop(ref)
            try:
                records = ray.get(ref)
            except ray.exceptions.RayError as error:  # One lost unit must not end the sweep.
                failed += sweeps.log_failed_unit(unit, _describe(error), progress)
                continue
            sweeps.store_unit(results_dir, records, progress)
    return failed


def _describe(error: Exception) -> str:
    """Format a failed task's error as one line: the worker's exception, else Ray's error."""
    # RayTaskError carries the exception raised on the worker as `cause`,
    # and its own message adds the remote traceback.
    cause = getattr(error, "cause", None)
    exception = cause if isinstance(cause, BaseException) else error
    lines = str(exception).strip().splitlines()
    return f"{type(exception).__name__}: {lines[0] if lines else ''}"
