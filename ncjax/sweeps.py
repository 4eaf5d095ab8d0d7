"""Sweeps over the study's grids: one result file per run, resumable and shardable.

A sweep is a list of `Run`s, each a complete configuration with a `run_id`
made from its fields and a hash of all of them. Results go to a results
directory:

- `runs/<run_id>.json`: one record per finished run (configuration, status,
  one row per evaluation), written atomically when the run ends. A run
  whose file is there is finished, so a restarted sweep skips it.
- `work/<run_id>/`: Orbax checkpoints of a network run while it trains,
  removed once its record is written. A restarted sweep resumes from them.
- `sweep-<preset>.json`: the preset and options that planned the sweep.

Runs are executed in units. Runs that differ only in learning rate,
momentum and decay (and share everything else, the seed included) form one
unit when the model allows it: the MLP trains them as one vmapped program
(`training.train_grid`), the UFM through `ufm.train_ufm_grid`. Every other
run is a unit of its own, trained by `training.train_and_evaluate` with
checkpoints.
"""

from collections.abc import Callable, Iterable, Sequence
import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
import shutil
import sys
import time
from typing import Any, TextIO

from absl import logging
import jax
import numpy as np

from ncjax import data as data_lib
from ncjax import optimizers
from ncjax import results
from ncjax import training
from ncjax import ufm

FORMAT = 1
RUNS_DIR = "runs"
WORK_DIR = "work"

STUDY_OPTIMIZERS = ("sgd", "sgdw", "adam", "adamw", "signum", "signumw")
STUDY_MOMENTA = (0.0, 0.5, 0.7, 0.9, 0.95, 0.98)
STUDY_MODELS = ("resnet9", "vgg9")
STUDY_DATASETS = ("mnist", "fashion_mnist", "cifar10")
# Learning rates and decays of the study's grid (its appendix D).
_SGD_LEARNING_RATES = (0.001, 0.01, 0.0679)
_OTHER_LEARNING_RATES = (0.001, 0.005, 0.01)
_COUPLED_DECAYS = (0.0, 5e-5, 5e-4, 5e-3, 0.05, 0.5)
_DECOUPLED_DECAYS = (0.0, 5e-4, 0.05, 0.5, 5.0, 10.0)
STUDY_MIN_TRAIN_ACCURACY = 0.99


def study_learning_rates(optimizer: str) -> tuple[float, ...]:
    """Return the study's learning rates for `optimizer`."""
    return _SGD_LEARNING_RATES if optimizer in ("sgd", "sgdw") else _OTHER_LEARNING_RATES


def study_weight_decays(optimizer: str) -> tuple[float, ...]:
    """Return the study's decays: larger ones for the decoupled adaptive optimizers."""
    return _DECOUPLED_DECAYS if optimizer in ("adamw", "signumw") else _COUPLED_DECAYS


# The Adam-AdamW mix of the study: total decay 5e-4 at momentum 0.9, the
# coupled part from 0 (AdamW) to all of it (Adam). The study gives neither
# the learning rate nor the number of steps of the coupled part.
INTERPOLATION_TOTAL_DECAY = 5e-4
INTERPOLATION_COUPLED_DECAYS = (0.0, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4)
INTERPOLATION_LEARNING_RATE = 0.001

VIT_MOMENTA = (0.0, 0.8, 0.9, 0.95)
_VIT_DECAYS = {
    "adam": (0.0, 1e-5, 1e-4, 5e-4, 1e-3, 0.05, 0.5),
    "sgd": (0.0, 1e-5, 1e-4, 5e-4, 1e-3, 0.05, 0.5),
    "adamw": (0.0, 1e-4, 0.05, 0.5, 1.0, 2.0, 4.0),
}
VIT_MIN_TRAIN_ACCURACY = 0.5

UFM_OPTIMIZERS = ("adam", "adamw", "sgd")
UFM_LEARNING_RATES = (0.1, 0.3, 0.5, 1.0)
# The UFM loss is a mean over samples (see ncjax.ufm), so these decays stop
# at 0.01: at 0.05 coupled decay keeps Adam below 100% training accuracy.
UFM_WEIGHT_DECAYS = (0.0, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class UFMRun:
    """One UFM run: the static `ufm.UFMConfig` and its hyperparameter values."""

    ufm: ufm.UFMConfig
    learning_rate: float
    momentum: float
    weight_decay: float
    seed: int

    @property
    def optimizer(self) -> str:
        return self.ufm.optimizer


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep and the accuracy it needs to count in the analysis.

    `config` is a `training.TrainConfig` (kind "network") or a `UFMRun`
    (kind "ufm").
    """

    preset: str
    config: Any
    min_train_accuracy: float = STUDY_MIN_TRAIN_ACCURACY

    @property
    def kind(self) -> str:
        return "ufm" if isinstance(self.config, UFMRun) else "network"

    def config_json(self) -> dict[str, Any]:
        """Return the configuration as stored in the result file."""
        if self.kind == "network":
            return results.to_json_value(dataclasses.asdict(self.config))
        run = self.config
        return results.to_json_value({
            "model": "ufm", "dataset": "ufm", **run.ufm._asdict(),
            "learning_rate": run.learning_rate, "momentum": run.momentum,
            "weight_decay": run.weight_decay, "coupled_weight_decay": None,
            "seed": run.seed,
        })

    @functools.cached_property
    def run_id(self) -> str:
        """A readable name from the main fields and a hash of all of them.

        `data_dir` is left out of the hash because it is the location of the
        data, not part of the run, so moving the files does not rename the runs.
        """
        config = self.config_json()
        hashed = {key: value for key, value in config.items() if key != "data_dir"}
        digest = hashlib.sha256(
            json.dumps([self.kind, hashed], sort_keys=True).encode()
        ).hexdigest()[:8]
        parts = [
            config["model"],
            config["dataset"].replace(":", "_"),
            config["optimizer"],
            f"lr{config['learning_rate']:g}",
            f"m{config['momentum']:g}",
            f"wd{config['weight_decay']:g}",
        ]
        if config.get("coupled_weight_decay") is not None:
            parts.append(f"cwd{config['coupled_weight_decay']:g}")
        parts += [f"s{config['seed']}", digest]
        return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class Options:
    """Overrides of a preset's defaults; None keeps the preset's value."""

    models: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    epochs: int | None = None
    samples_per_class: int | None = None
    seeds: tuple[int, ...] | None = None
    width: float | None = None
    data_dir: str | None = None
    eval_every: int | None = None
    eval_batch_size: int | None = None


def _pick(value, default):
    return default if value is None else value


def dataset_dir(data_dir: str | None, dataset: str) -> str | None:
    """`data_dir/<dataset>` if that folder exists, else `data_dir` itself.

    MNIST and FashionMNIST files have the same names, so a sweep over both
    reads each from its own subfolder of one --data_dir.
    """
    if data_dir is None:
        return None
    candidate = Path(data_dir) / dataset
    return str(candidate) if candidate.is_dir() else data_dir


def _network_runs(
    preset: str,
    options: Options,
    *,
    models: Sequence[str],
    datasets: Sequence[str],
    optimizer_names: Sequence[str],
    grid: Callable[[str], Iterable[tuple[float, float, float, float | None]]],
    epochs: int,
    batch_size: int,
    eval_every: int,
    samples_per_class: int | None = None,
    width: float = 1.0,
    min_train_accuracy: float = STUDY_MIN_TRAIN_ACCURACY,
) -> list[Run]:
    """Build a Run for every (model, dataset, optimizer, grid point, seed).

    `grid(optimizer)` yields (learning rate, momentum, decay, coupled decay).
    """
    runs = []
    for model in _pick(options.models, models):
        for dataset in _pick(options.datasets, datasets):
            for optimizer in _pick(options.optimizers, optimizer_names):
                for learning_rate, momentum, decay, coupled in grid(optimizer):
                    for seed in _pick(options.seeds, (0,)):
                        config = training.TrainConfig(
                            dataset=dataset,
                            data_dir=dataset_dir(options.data_dir, dataset),
                            samples_per_class=_pick(options.samples_per_class, samples_per_class),
                            model=model,
                            width=_pick(options.width, width),
                            augment=dataset in ("cifar10", f"{data_lib.TFDS_PREFIX}cifar10"),
                            optimizer=optimizer,
                            learning_rate=learning_rate,
                            momentum=momentum,
                            weight_decay=decay,
                            coupled_weight_decay=coupled,
                            epochs=_pick(options.epochs, epochs),
                            batch_size=batch_size,
                            seed=seed,
                            eval_every=_pick(options.eval_every, eval_every),
                            eval_batch_size=_pick(options.eval_batch_size, 1024),
                        )
                        config.validate()
                        runs.append(Run(preset, config, min_train_accuracy))
    return runs


def _study_grid(optimizer: str):
    for learning_rate in study_learning_rates(optimizer):
        for momentum in STUDY_MOMENTA:
            for decay in study_weight_decays(optimizer):
                yield learning_rate, momentum, decay, None


def _study(options: Options) -> list[Run]:
    return _network_runs(
        "study", options, models=STUDY_MODELS, datasets=STUDY_DATASETS,
        optimizer_names=STUDY_OPTIMIZERS, grid=_study_grid,
        epochs=200, batch_size=128, eval_every=30,
    )


# The CPU preset: the study's optimizers and grids on the MLP over 1,000
# MNIST training images, 60 epochs. See the README for its time on 2 cores.
CPU_SAMPLES_PER_CLASS = 100
CPU_EPOCHS = 60


def _cpu(options: Options) -> list[Run]:
    return _network_runs(
        "cpu", options, models=("mlp",), datasets=("mnist",),
        optimizer_names=STUDY_OPTIMIZERS, grid=_study_grid,
        epochs=CPU_EPOCHS, batch_size=128, eval_every=20,
        samples_per_class=CPU_SAMPLES_PER_CLASS,
    )


def _interpolation_grid(optimizer: str):
    del optimizer  # Only adam_adamw.
    for coupled in INTERPOLATION_COUPLED_DECAYS:
        yield INTERPOLATION_LEARNING_RATE, 0.9, INTERPOLATION_TOTAL_DECAY, coupled


def _interpolation(options: Options) -> list[Run]:
    if options.optimizers is not None and tuple(options.optimizers) != ("adam_adamw",):
        raise ValueError(
            f"--optimizers={','.join(options.optimizers)} is invalid for preset "
            "'interpolation'; it sweeps only adam_adamw"
        )
    return _network_runs(
        "interpolation", options, models=("resnet9",), datasets=("mnist",),
        optimizer_names=("adam_adamw",), grid=_interpolation_grid,
        epochs=200, batch_size=128, eval_every=30,
    )


def _vit_grid(optimizer: str):
    if optimizer not in _VIT_DECAYS:
        raise ValueError(
            f"optimizer {optimizer!r} is not in the vit preset; expected one of: "
            f"{', '.join(_VIT_DECAYS)}"
        )
    for momentum in VIT_MOMENTA:
        for decay in _VIT_DECAYS[optimizer]:
            yield 1e-3, momentum, decay, None


def _vit(options: Options) -> list[Run]:
    return _network_runs(
        "vit", options, models=("vit",), datasets=("cifar10",),
        optimizer_names=tuple(_VIT_DECAYS), grid=_vit_grid,
        epochs=200, batch_size=512, eval_every=30,
        min_train_accuracy=VIT_MIN_TRAIN_ACCURACY,
    )


def _ufm(options: Options) -> list[Run]:
    for name in ("models", "datasets", "width", "data_dir", "eval_batch_size"):
        if getattr(options, name) is not None:
            raise ValueError(f"--{name} does not apply to preset 'ufm', which has no network or dataset")
    runs = []
    steps = _pick(options.epochs, 600)
    for optimizer in _pick(options.optimizers, UFM_OPTIMIZERS):
        config = ufm.UFMConfig(
            num_classes=10, dim=512,
            samples_per_class=_pick(options.samples_per_class, 1000),
            optimizer=optimizer, steps=steps,
            eval_every=_pick(options.eval_every, steps),
        )
        config.validate()
        for learning_rate in UFM_LEARNING_RATES:
            for decay in UFM_WEIGHT_DECAYS:
                for seed in _pick(options.seeds, (0, 1, 2, 3, 4)):
                    runs.append(Run("ufm", UFMRun(config, learning_rate, 0.9, decay, seed), 1.0))
    return runs


PRESETS: dict[str, Callable[[Options], list[Run]]] = {
    "study": _study,
    "interpolation": _interpolation,
    "vit": _vit,
    "ufm": _ufm,
    "cpu": _cpu,
}


def plan(preset: str, options: Options = Options()) -> list[Run]:
    """Return the runs of `preset` with `options` applied, in a fixed order.

    Raises:
      ValueError: for an unknown preset or an option value that the preset
        or `TrainConfig` rejects.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    known = (*optimizers.OPTIMIZERS, *optimizers.FAMILIES)
    for name in options.optimizers or ():
        if name not in known:
            raise ValueError(f"unknown optimizer {name!r}; expected one of: {', '.join(optimizers.OPTIMIZERS)}")
    runs = PRESETS[preset](options)
    if not runs:
        raise ValueError(f"preset {preset!r} with these options has no runs")
    return runs


def shard(runs: Sequence[Run], index: int, count: int) -> list[Run]:
    """Every `count`-th run from `index`: shards 0..count-1 cover `runs` exactly once."""
    if not (isinstance(count, int) and count >= 1):
        raise ValueError(f"num_shards={count!r} is invalid; expected an integer >= 1")
    if not (isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"shard_index={index!r} is invalid; expected an integer in [0, {count - 1}]")
    return list(runs[index::count])


def result_path(results_dir: str | Path, run: Run) -> Path:
    return Path(results_dir) / RUNS_DIR / f"{run.run_id}.json"


def is_finished(results_dir: str | Path, run: Run) -> bool:
    """Return True if the run's record exists, parses and contains this configuration."""
    try:
        record = results.read_json(result_path(results_dir, run))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("config") == run.config_json()


def pending(results_dir: str | Path, runs: Iterable[Run]) -> list[Run]:
    return [run for run in runs if not is_finished(results_dir, run)]


def _batchable(run: Run) -> bool:
    if run.kind == "ufm":
        return True
    # NOTE: only the MLP is batched. A vmapped unit of 108 ResNet9s or VGG9s
    # would hold 108 copies of the activations, and train_grid does not
    # split batches across devices, so those train one run at a time.
    config = run.config
    return (config.model == "mlp" and not config.augment
            and not training.uses_stepwise_epochs(config))


def _unit_key(run: Run):
    if run.kind == "ufm":
        return ("ufm", run.config.ufm)
    fields = {name: None for name in training.GRID_FIELDS if name != "seed"}
    return ("network", dataclasses.replace(run.config, **fields))


def units(runs: Sequence[Run], max_runs: int) -> list[list[Run]]:
    """Group runs into units of at most `max_runs` that train as one program.

    Runs join a unit when they differ only in learning rate, momentum and
    decay and their model can be vmapped. Every other run is a unit of one.
    The order of first appearance is kept.
    """
    if not (isinstance(max_runs, int) and max_runs >= 1):
        raise ValueError(f"max_runs={max_runs!r} is invalid; expected an integer >= 1")
    ordered: dict[Any, list[Run]] = {}
    for position, run in enumerate(runs):
        batched = max_runs > 1 and _batchable(run)
        key = _unit_key(run) if batched else ("single", position)
        ordered.setdefault(key, []).append(run)
    return [
        members[start:start + max_runs]
        for members in ordered.values()
        for start in range(0, len(members), max_runs)
    ]


def record(run: Run, history: list[dict[str, Any]], status: str,
           diverged_at_step: int | None, elapsed_s: float, unit_size: int) -> dict[str, Any]:
    """Build the result file's content for one run (see the module docstring)."""
    return {
        "format": FORMAT,
        "run_id": run.run_id,
        "preset": run.preset,
        "kind": run.kind,
        "min_train_accuracy": run.min_train_accuracy,
        "config": run.config_json(),
        "status": status,
        "diverged_at_step": diverged_at_step,
        "history": results.to_json_value(history),
        "elapsed_s": elapsed_s,
        "unit_size": unit_size,
    }


@functools.lru_cache(maxsize=4)
def _dataset(name: str, data_dir: str | None, samples_per_class: int | None, seed: int):
    return data_lib.load_dataset(name, data_dir=data_dir, samples_per_class=samples_per_class, seed=seed)


def dataset_for(config: training.TrainConfig) -> data_lib.Dataset:
    """Load (once per process) the dataset that `config` trains on."""
    return _dataset(config.dataset, config.data_dir, config.samples_per_class, config.seed)


def _run_network(unit: list[Run], work_dir: Path, checkpoint_every: int | None) -> list[dict]:
    start = time.perf_counter()
    dataset = dataset_for(unit[0].config)
    if len(unit) == 1:
        run = unit[0]
        run_dir = work_dir / run.run_id
        outcome = training.train_and_evaluate(
            run.config, dataset, name=run.run_id,
            workdir=run_dir if checkpoint_every else None,
            checkpoint_every=checkpoint_every,
        )
        outcomes = [outcome]
    else:
        outcomes = training.train_grid([run.config for run in unit], dataset,
                                       names=[run.run_id for run in unit])
    elapsed = time.perf_counter() - start
    return [
        record(run, outcome.history, outcome.status, outcome.diverged_at_step, elapsed, len(unit))
        for run, outcome in zip(unit, outcomes)
    ]


def _ufm_history(history: dict[str, np.ndarray], index: int) -> list[dict[str, Any]]:
    """Rows of one grid point from the arrays of `ufm.train_ufm_grid`."""
    rows = []
    for position, step in enumerate(history["step"][index]):
        row = {"epoch": int(step), "step": int(step)}
        for key, values in history.items():
            if key != "step":
                row[key] = values[index, position]
        rows.append(row)
    return rows


def _run_ufm(unit: list[Run]) -> list[dict]:
    start = time.perf_counter()
    config = unit[0].config.ufm
    grid = ufm.UFMHyperparameters(
        learning_rate=np.asarray([run.config.learning_rate for run in unit], np.float32),
        momentum=np.asarray([run.config.momentum for run in unit], np.float32),
        weight_decay=np.asarray([run.config.weight_decay for run in unit], np.float32),
        coupled_share=None,
        seed=np.asarray([run.config.seed for run in unit], np.int32),
    )
    # One point after another was the faster layout on CPU (benchmarks/ufm_grid.py).
    batch_size = 1 if jax.default_backend() == "cpu" else None
    history = jax.tree.map(np.asarray, ufm.train_ufm_grid(config, grid, batch_size=batch_size))
    elapsed = time.perf_counter() - start
    records = []
    for index, run in enumerate(unit):
        rows = _ufm_history(history, index)
        finite = all(math.isfinite(float(rows[-1][key])) for key in ("train_loss", "nc0"))
        records.append(record(run, rows, "completed" if finite else "diverged", None,
                              elapsed, len(unit)))
    return records


def execute(unit: list[Run], work_dir: str | Path, *, checkpoint_every: int | None = 25) -> list[dict]:
    """Train one unit and return one record per run; nothing is written to results.

    Network runs trained one at a time write Orbax checkpoints every
    `checkpoint_every` epochs to `work_dir/<run_id>` and resume from them.
    This is the function a remote worker calls.
    """
    if unit[0].kind == "ufm":
        return _run_ufm(unit)
    return _run_network(unit, Path(work_dir), checkpoint_every)


def write_records(results_dir: str | Path, records: Iterable[dict]) -> list[Path]:
    """Write each record atomically to `runs/<run_id>.json` and drop its checkpoints."""
    paths = []
    for item in records:
        path = Path(results_dir) / RUNS_DIR / f"{item['run_id']}.json"
        results.write_json(path, item)
        shutil.rmtree(Path(results_dir) / WORK_DIR / item["run_id"], ignore_errors=True)
        paths.append(path)
    return paths


def store_unit(results_dir: str | Path, records: list[dict], progress: "Progress") -> None:
    """Write a finished unit's records and advance `progress`, noting any divergence."""
    write_records(results_dir, records)
    diverged = sum(item["status"] == "diverged" for item in records)
    progress.update(len(records), note=f"{diverged} diverged" if diverged else "")


def log_failed_unit(unit: list[Run], description: str, progress: "Progress") -> int:
    """Log a unit that raised instead of training, advance `progress`; return its run count."""
    logging.error("unit of %d runs starting with %s failed: %s",
                  len(unit), unit[0].run_id, description)
    progress.update(0, note=f"{len(unit)} runs failed")
    return len(unit)


class Progress:
    """A progress bar with the time left, estimated from the runs done so far.

    On a terminal the bar is redrawn in place; otherwise each update is one line.
    """

    def __init__(self, total: int, *, already_done: int = 0, stream: TextIO | None = None,
                 width: int = 30):
        self.total = total
        self.done = already_done
        self.done_here = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.start = time.perf_counter()

    def update(self, finished: int, note: str = "") -> str:
        self.done += finished
        self.done_here += finished
        elapsed = time.perf_counter() - self.start
        left = (self.total - self.done) * elapsed / self.done_here if self.done_here else math.nan
        filled = round(self.width * self.done / self.total) if self.total else self.width
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} runs, "
                f"{format_duration(elapsed)} elapsed, about {format_duration(left)} left")
        if note:
            line += f" ({note})"
        if self.stream.isatty():
            # "\x1b[K" clears what a longer previous line left on the right.
            self.stream.write("\r" + line + "\x1b[K" + ("\n" if self.done >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        return line


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
