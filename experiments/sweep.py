r"""Run one of the study's grids, or a shard of it, into a results directory.

Presets, the grids of the study (its appendix D):

- `cpu`: the six optimizers over their study learning rates, momenta and
  decays (648 runs) on the MLP with 1,000 MNIST training images, 60 epochs.
  Needs the MNIST IDX files in --data_dir (`t10k-*` alone suffice). About
  15 minutes on 2 CPU cores; the MLP trains each optimizer's 108 runs as one
  vmapped program.
- `study`: ResNet9 and VGG9 on MNIST, FashionMNIST and CIFAR-10, the six
  optimizers and their grids, 200 epochs: 3,888 runs, for accelerators.
- `interpolation`: the Adam-AdamW mix on ResNet9 and MNIST, total decay 5e-4
  with the coupled part from 0 to 5e-4.
- `vit`: the ViT on CIFAR-10 with Adam, AdamW and SGD (batch 512).
- `ufm`: the unconstrained feature model with Adam, AdamW and SGD.

  python -m experiments.sweep --preset=cpu --data_dir=/path/to/mnist --results=runs/sweep
  python -m experiments.report --results=runs/sweep --out=runs/report

Each finished run is written to `<results>/runs/<run_id>.json` at once, so
an interrupted sweep loses at most the runs in progress, and the same
command run again skips every finished run. Network runs trained one at a
time also resume from their last checkpoint. `--shard_index` and
`--num_shards` split the grid for a job array: shard i runs every
num_shards-th run from i, and shards may share the results directory.
`--launcher=ray` sends the units to a Ray cluster instead
(`pip install 'ncjax[ray]'`).
"""

import dataclasses
import os
from pathlib import Path
import sys
import time

from absl import flags
from absl import logging
import jax

from experiments import cli
from experiments import ray_launcher
from ncjax import data as data_lib
from ncjax import results
from ncjax import sweeps
from ncjax import training

_PRESET = flags.DEFINE_enum("preset", "cpu", list(sweeps.PRESETS), "The grid to run.")
_RESULTS = flags.DEFINE_string("results", "runs/sweep", "Results directory (shared by shards).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Directory of the dataset files (MNIST and FashionMNIST IDX files, the CIFAR-10 "
    "python batches), or the TFDS data directory for tfds:* datasets. A subfolder "
    "named after a dataset (mnist/, fashion_mnist/, cifar10/) is used for that "
    "dataset when it exists.",
)
_MODELS = flags.DEFINE_list("models", None, "Override the preset's models.")
_DATASETS = flags.DEFINE_list("datasets", None, "Override the preset's datasets.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", None, "Override the preset's optimizers.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override the epochs (UFM: full-batch steps).")
_SAMPLES_PER_CLASS = flags.DEFINE_integer(
    "samples_per_class", None, "Override the training images per class (UFM: N / K)."
)
_SEEDS = flags.DEFINE_list("seeds", None, "Override the seeds, for example 0,1,2.")
_WIDTH = flags.DEFINE_float("width", None, "Override the width multiplier of the networks.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", None, "Override the epochs between evaluations.")
_EVAL_BATCH_SIZE = flags.DEFINE_integer("eval_batch_size", None, "Batch size of the evaluations.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard to run, in [0, num_shards).")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of shards the grid is split into.")
_MAX_UNIT_RUNS = flags.DEFINE_integer(
    "max_unit_runs", 108,
    "Most runs trained as one vmapped program (MLP and UFM only); 1 trains every run alone.",
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 25,
    "Epochs between checkpoints of network runs trained one at a time; 0 writes none.",
)
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "ray"], "Where the units run.")
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None,
    "Address of a running Ray cluster (for example auto or HOST:PORT); by default "
    "Ray starts a local instance.",
)
_RAY_CPUS_PER_UNIT = flags.DEFINE_float("ray_cpus_per_unit", 1.0, "CPUs Ray reserves for each unit.")
_RAY_GPUS_PER_UNIT = flags.DEFINE_float("ray_gpus_per_unit", 0.0, "GPUs Ray reserves for each unit.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False,
    "Print the plan and the units left to do, each with its first run id, without "
    "reading data or training.",
)


def parse_seeds(values: list[str] | None) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        seeds = tuple(int(value) for value in values)
    except ValueError:
        raise ValueError(f"--seeds={','.join(values)} is invalid; expected comma-separated integers") from None
    if not seeds or any(seed < 0 for seed in seeds):
        raise ValueError(f"--seeds={','.join(values)} is invalid; expected integers >= 0")
    return seeds


def build_options() -> sweeps.Options:
    def names(values):
        if values is None:
            return None
        cleaned = tuple(value.strip() for value in values if value.strip())
        return cleaned or None

    return sweeps.Options(
        models=names(_MODELS.value),
        datasets=names(_DATASETS.value),
        optimizers=names(_OPTIMIZERS.value),
        epochs=_EPOCHS.value,
        samples_per_class=_SAMPLES_PER_CLASS.value,
        seeds=parse_seeds(_SEEDS.value),
        width=_WIDTH.value,
        data_dir=_DATA_DIR.value,
        eval_every=_EVAL_EVERY.value,
        eval_batch_size=_EVAL_BATCH_SIZE.value,
    )


def check_results_dir(path: Path) -> None:
    for candidate in (path, path / sweeps.RUNS_DIR):
        if candidate.exists() and not candidate.is_dir():
            raise ValueError(f"--results: {candidate} exists and is not a directory")
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir() or not _writable(parent):
                raise ValueError(f"--results={path} cannot be written: {parent} is not a writable directory")
            break


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_data(runs: list[sweeps.Run]) -> None:
    """Load each dataset the runs need and check that the models fit it.

    Runs before anything is written, so a missing or corrupt file stops the
    sweep with one line.
    """
    seen = set()
    for run in runs:
        if run.kind != "network":
            continue
        config = run.config
        key = (config.dataset, config.data_dir, config.samples_per_class, config.seed, config.model)
        if key in seen:
            continue
        seen.add(key)
        dataset = sweeps.dataset_for(config)
        training.steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
        training.check_batch_sizes(config, len(jax.devices()))


def run_local(todo_units, results_dir: Path, progress: sweeps.Progress) -> int:
    """Train the units one after another; return the number of runs that failed."""
    failed = 0
    checkpoint_every = _CHECKPOINT_EVERY.value or None
    for unit in todo_units:
        try:
            records = sweeps.execute(unit, results_dir / sweeps.WORK_DIR,
                                     checkpoint_every=checkpoint_every)
        except Exception as error:  # A crash of one unit must not end the sweep.
            failed += sweeps.log_failed_unit(unit, f"{type(error).__name__}: {error}", progress)
            continue
        sweeps.store_unit(results_dir, records, progress)
    return failed


def main(argv):
    del argv  # cli.run has rejected any argument that is not a flag.
    # Each run logs its evaluations at INFO, hundreds of lines that would
    # bury the progress bar, so a sweep shows warnings and errors unless
    # --verbosity is given.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    results_dir = Path(_RESULTS.value)
    try:
        if _CHECKPOINT_EVERY.value < 0:
            raise ValueError(f"--checkpoint_every={_CHECKPOINT_EVERY.value} is invalid; expected an integer >= 0")
        options = build_options()
        runs = sweeps.plan(_PRESET.value, options)
        mine = sweeps.shard(runs, _SHARD_INDEX.value, _NUM_SHARDS.value)
        todo = sweeps.pending(results_dir, mine)
        todo_units = sweeps.units(todo, _MAX_UNIT_RUNS.value)
        check_results_dir(results_dir)
        if not _DRY_RUN.value:
            check_data(todo)
        if _LAUNCHER.value == "ray":
            if not _RAY_CPUS_PER_UNIT.value > 0:
                raise ValueError(f"--ray_cpus_per_unit={_RAY_CPUS_PER_UNIT.value} is invalid; expected a value > 0")
            if not _RAY_GPUS_PER_UNIT.value >= 0:
                raise ValueError(f"--ray_gpus_per_unit={_RAY_GPUS_PER_UNIT.value} is invalid; expected a value >= 0")
            ray_launcher.check_installed()
            ray_launcher.check_address(_RAY_ADDRESS.value)
    except (ValueError, data_lib.DataError) as error:
        cli.fail(str(error))

    print(f"preset {_PRESET.value}: {len(runs)} runs; shard {_SHARD_INDEX.value} of "
          f"{_NUM_SHARDS.value}: {len(mine)} runs, {len(mine) - len(todo)} finished earlier, "
          f"{len(todo)} to do in {len(todo_units)} units")
    if _DRY_RUN.value:
        for unit in todo_units:
            print(f"unit of {len(unit)}: {unit[0].run_id}" + (" ..." if len(unit) > 1 else ""))
        return
    if not todo:
        return
    results.write_json(results_dir / f"sweep-{_PRESET.value}.json", {
        "preset": _PRESET.value,
        "options": dataclasses.asdict(options),
        "runs": len(runs),
        "min_train_accuracy": runs[0].min_train_accuracy,
    })
    progress = sweeps.Progress(len(mine), already_done=len(mine) - len(todo))
    start = time.perf_counter()
    if _LAUNCHER.value == "ray":
        failed = ray_launcher.launch(
            todo_units, results_dir, address=_RAY_ADDRESS.value,
            checkpoint_every=_CHECKPOINT_EVERY.value or None,
            cpus_per_unit=_RAY_CPUS_PER_UNIT.value, gpus_per_unit=_RAY_GPUS_PER_UNIT.value,
            progress=progress,
        )
    else:
        failed = run_local(todo_units, results_dir, progress)
    print(f"{len(todo) - failed} runs written to {results_dir / sweeps.RUNS_DIR} in "
          f"{sweeps.format_duration(time.perf_counter() - start)}")
    if failed:
        print(f"error: {failed} runs failed (see the log above); the same command "
              "runs them again", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
