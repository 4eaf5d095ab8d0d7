r"""Train one or more optimizers and track neural collapse over training.

Default: scikit-learn's bundled digits (no download) and the six optimizers
of the study at their best-NC3 settings, 200 epochs. It takes about 40
seconds of training on 2 idle CPU cores:

  python -m experiments.train --workdir=runs/digits

MNIST from IDX files in a directory:

  python -m experiments.train --dataset=mnist --data_dir=/path/to/mnist \
      --samples_per_class=100 --optimizer=adam,adamw --epochs=30 \
      --workdir=/tmp/mnist

A narrow ResNet9 on 2,000 MNIST images (see the README for its runtime and
result on 2 CPU cores):

  python -m experiments.train --dataset=mnist --data_dir=/path/to/mnist \
      --samples_per_class=200 --model=resnet9 --width=0.125 --batch_size=64 \
      --optimizer=adam,adamw --epochs=120 --eval_every=30 --workdir=/tmp/resnet9

What it shows: with coupled weight decay (sgd, adam, signum), NC0 falls by
orders of magnitude. NC0 is the norm of the sum of the classifier rows. With
decoupled decay (adamw, signumw) it stays large. Each run writes `config.json`,
`metrics.jsonl` (one row per evaluation), `summary.json` and Orbax
checkpoints under `workdir/<optimizer>/`. The figure of NC0 to NC3 over
training goes to `workdir/nc_over_training.png` and the table of final
metrics to `workdir/summary.md`. Both cover the optimizers of the latest
command. A finished run with the same configuration is skipped when the
command is repeated, and an unfinished one resumes from its last checkpoint.
A run folder with a different configuration is an error unless --rerun is
given, which trains every listed optimizer again from the start.
"""

import dataclasses
import os
from pathlib import Path
import shutil

from absl import flags
from absl import logging
from flax import nnx
import jax

from experiments import cli
from ncjax import checkpoints
from ncjax import data as data_lib
from ncjax import models
from ncjax import optimizers
from ncjax import plotting
from ncjax import results
from ncjax import training

DEFAULT_OPTIMIZERS = "sgd,sgdw,adam,adamw,signum,signumw"

_DATASET = flags.DEFINE_string(
    "dataset", "digits", f"Dataset: one of {', '.join(data_lib.DATASETS)}."
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "Directory with the dataset's files: IDX files for mnist and fashion_mnist, "
    "cifar-10-batches-py (or its parent) for cifar10, the TFDS data directory "
    "for tfds:* datasets.",
)
_SAMPLES_PER_CLASS = flags.DEFINE_integer(
    "samples_per_class", None,
    "Train on a balanced subset with this many samples per class "
    "(default: the whole training split).",
)
_MODEL = flags.DEFINE_string(
    "model", "mlp", f"Model: one of {', '.join(models.MODELS)}."
)
_WIDTH = flags.DEFINE_float(
    "width", 1.0,
    "Channel multiplier of resnet9 and vgg9, and width multiplier of vit "
    "(0.125 gives a ResNet9 with 64 features, for CPU runs).",
)
_AUGMENT = flags.DEFINE_bool(
    "augment", None,
    "Random crops of the 4-pixel padded images and horizontal flips "
    "(default: on for cifar10 and tfds:cifar10, off otherwise).",
)
_HIDDEN_SIZES = flags.DEFINE_list(
    "hidden_sizes", ["256", "256", "256"],
    "MLP hidden layer widths; the last one is the feature dimension p.",
)
_BATCH_NORM = flags.DEFINE_bool(
    "batch_norm", True, "BatchNorm after each hidden Linear layer of the MLP."
)
_OPTIMIZER = flags.DEFINE_string(
    "optimizer", DEFAULT_OPTIMIZERS,
    "One optimizer or a comma-separated list, from: "
    f"{', '.join(optimizers.OPTIMIZERS)}.",
)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", None,
    "Initial learning rate, divided by 10 after 1/3 and 2/3 of the epochs "
    "(default: the optimizer's best setting in the study).",
)
_MOMENTUM = flags.DEFINE_float(
    "momentum", None,
    "Momentum (beta1 for Adam), in [0, 1) (default: the study's best setting).",
)
_WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", None, "Weight decay, >= 0 (default: the study's best setting)."
)
_COUPLED_WEIGHT_DECAY = flags.DEFINE_float(
    "coupled_weight_decay", None,
    "For adam_adamw only: the part of --weight_decay added to the gradient "
    "(0 gives AdamW, --weight_decay gives Adam).",
)
_EPOCHS = flags.DEFINE_integer("epochs", 200, "Training epochs.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Minibatch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation and data order.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 10, "Evaluate every N epochs (and at initialisation and the end)."
)
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
    "eval_batch_size", 1024, "Batch size of the feature passes for metrics."
)
_METRICS_DTYPE = flags.DEFINE_enum(
    "metrics_dtype", "float64", training.METRICS_DTYPES,
    "Precision of the class statistics and metrics.",
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/train", "Output directory.")
_FIGURE = flags.DEFINE_string(
    "figure", None, "Path of the PNG figure (default: WORKDIR/nc_over_training.png)."
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 25,
    "Write an Orbax checkpoint of each run every N epochs, so that repeating "
    "the command resumes an interrupted run from its last checkpoint; 0 "
    "writes none.",
)
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "For training on several hosts: host:port of process 0, passed with "
    "--num_processes and --process_id to jax.distributed.initialize.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "For several hosts: the number of processes."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "For several hosts: the index of this process, from 0."
)
_RERUN = flags.DEFINE_bool(
    "rerun", False,
    "Train every listed optimizer again, replacing its folder under --workdir "
    "even when that folder contains a finished run or another configuration.",
)


def parse_optimizer_names(value: str) -> list[str]:
    """Split a comma-separated optimizer list, rejecting unknown and repeated names."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(
            f"--optimizer={value!r} is invalid; expected one or more of: "
            f"{', '.join(optimizers.OPTIMIZERS)}"
        )
    for name in names:
        if name not in optimizers.OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {name!r}; expected one of: "
                f"{', '.join(optimizers.OPTIMIZERS)}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--optimizer lists {', '.join(repeated)} more than once")
    return names


def build_configs() -> list[training.TrainConfig]:
    """Turn the flags into one validated TrainConfig per optimizer."""
    try:
        hidden_sizes = tuple(int(size) for size in _HIDDEN_SIZES.value)
    except ValueError:
        raise ValueError(
            f"--hidden_sizes={','.join(_HIDDEN_SIZES.value)} is invalid; "
            "expected comma-separated integers >= 1"
        ) from None
    configs = []
    for name in parse_optimizer_names(_OPTIMIZER.value):
        hyperparameters = training.resolve_hyperparameters(
            name,
            learning_rate=_LEARNING_RATE.value,
            momentum=_MOMENTUM.value,
            weight_decay=_WEIGHT_DECAY.value,
        )
        config = training.TrainConfig(
            dataset=_DATASET.value,
            data_dir=_DATA_DIR.value,
            samples_per_class=_SAMPLES_PER_CLASS.value,
            model=_MODEL.value,
            hidden_sizes=hidden_sizes,
            batch_norm=_BATCH_NORM.value,
            width=_WIDTH.value,
            augment=augment_default() if _AUGMENT.value is None else _AUGMENT.value,
            optimizer=name,
            learning_rate=hyperparameters.learning_rate,
            momentum=hyperparameters.momentum,
            weight_decay=hyperparameters.weight_decay,
            coupled_weight_decay=(
                _COUPLED_WEIGHT_DECAY.value if name == "adam_adamw" else None
            ),
            epochs=_EPOCHS.value,
            batch_size=_BATCH_SIZE.value,
            seed=_SEED.value,
            eval_every=_EVAL_EVERY.value,
            eval_batch_size=_EVAL_BATCH_SIZE.value,
            metrics_dtype=_METRICS_DTYPE.value,
        )
        config.validate()
        configs.append(config)
    if _COUPLED_WEIGHT_DECAY.value is not None and not any(
        config.optimizer == "adam_adamw" for config in configs
    ):
        raise ValueError(
            f"--coupled_weight_decay={_COUPLED_WEIGHT_DECAY.value} applies only "
            "to adam_adamw, which --optimizer does not list"
        )
    return configs


# Datasets read from files in --data_dir; TFDS datasets also take it, as
# the directory of their prepared files.
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


def augment_default() -> bool:
    return _DATASET.value in ("cifar10", f"{data_lib.TFDS_PREFIX}cifar10")


def check_data_dir_is_used() -> None:
    reads_files = _DATASET.value in FILE_DATASETS or _DATASET.value.startswith(data_lib.TFDS_PREFIX)
    if _DATA_DIR.value is not None and not reads_files:
        raise ValueError(
            f"--data_dir={_DATA_DIR.value} is set but --dataset={_DATASET.value} reads "
            f"no files; --data_dir applies to {', '.join(FILE_DATASETS)} and tfds:* datasets"
        )


def check_checkpoint_every() -> int | None:
    """Return the epochs between checkpoints, or None for --checkpoint_every=0."""
    value = _CHECKPOINT_EVERY.value
    if value < 0:
        raise ValueError(f"--checkpoint_every={value} is invalid; expected an integer >= 0")
    return value or None


def initialize_distributed() -> None:
    """Connect to the other processes when --coordinator_address is given."""
    values = (_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if all(value is None for value in values):
        return
    if any(value is None for value in values):
        raise ValueError(
            "--coordinator_address, --num_processes and --process_id must be given "
            "together; got only some of them"
        )
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR_ADDRESS.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )


def check_workdir(workdir: Path, configs: list[training.TrainConfig]) -> None:
    """Reject a workdir that cannot hold the runs, or runs that would be replaced.

    Runs before any training, so a bad --workdir leaves nothing written.
    """
    for path in (workdir, *(workdir / config.optimizer for config in configs)):
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"--workdir: {path} exists and is not a directory; choose another --workdir"
            )
    for parent in workdir.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(
                    f"--workdir={workdir} cannot be created: {parent} is not a "
                    "writable directory"
                )
            break
    if _RERUN.value:
        return
    for config in configs:
        changed = changed_fields(workdir / config.optimizer, config)
        if changed:
            raise ValueError(
                f"{workdir / config.optimizer} contains a run with another "
                f"configuration ({', '.join(changed)}); pass --rerun to replace "
                "it or choose another --workdir"
            )


def changed_fields(run_dir: Path, config: training.TrainConfig) -> list[str]:
    """Return 'field stored -> new' for each field that differs from a stored config."""
    try:
        stored = results.read_json(run_dir / results.CONFIG_FILE)
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return ["unreadable config.json"]
    expected = results.to_json_value(dataclasses.asdict(config))
    return [
        f"{key} {stored.get(key)!r} -> {value!r}"
        for key, value in expected.items()
        if stored.get(key) != value
    ]


def load_data(config: training.TrainConfig) -> data_lib.Dataset:
    """Load the dataset and check that the model and batch sizes fit it."""
    dataset = data_lib.load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        samples_per_class=config.samples_per_class,
        seed=config.seed,
    )
    training.steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
    training.check_batch_sizes(config, len(jax.devices()))
    # Shapes only: raises the model's ValueError for an input shape or width
    # it cannot take, without initialising any weights.
    try:
        nnx.eval_shape(lambda: training.create_model(config, dataset))
    except ValueError as error:
        raise ValueError(
            f"--model={config.model} cannot train on --dataset={config.dataset}"
            f" (images {dataset.x_train.shape[1:]}): {error}"
        ) from None
    return dataset


def finished_run(run_dir: Path, config: training.TrainConfig):
    """Return the stored history if `run_dir` contains a finished run of `config`."""
    if changed_fields(run_dir, config):
        return None
    try:
        summary = results.read_json(run_dir / results.SUMMARY_FILE)
        history = results.read_jsonl(run_dir / results.METRICS_FILE)
    except (OSError, ValueError):
        return None
    return training.RunResult(
        config, history, summary["status"], summary.get("diverged_at_step")
    )


def format_summary(runs: dict[str, training.RunResult]) -> str:
    """Return a Markdown table of the final metrics of each run."""
    header = ("| optimizer | lr | momentum | decay | status | train acc | test acc "
              "| NC0 | NC1 | NC2 | NC3 | NC4 |")
    lines = [header, "|" + " --- |" * 12]
    for name, run in runs.items():
        final, config = run.final, run.config

        def number(key):
            value = final.get(key)
            return "n/a" if value is None else f"{value:.3g}"

        decay = f"{config.weight_decay:g}"
        if config.coupled_weight_decay is not None:
            decay += f" ({config.coupled_weight_decay:g} coupled)"
        lines.append(
            f"| {name} | {config.learning_rate:g} | {config.momentum:g} "
            f"| {decay} | {run.status} "
            f"| {final['train_accuracy']:.4f} | {final['test_accuracy']:.4f} "
            f"| {number('nc0')} | {number('nc1')} | {number('nc2')} "
            f"| {number('nc3')} | {number('nc4')} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv  # cli.run has rejected any argument that is not a flag.
    workdir = Path(_WORKDIR.value)
    try:
        check_data_dir_is_used()
        checkpoint_every = check_checkpoint_every()
        initialize_distributed()
        configs = build_configs()
        check_workdir(workdir, configs)
        dataset = load_data(configs[0])
    except ValueError as error:
        cli.fail(str(error))

    logging.info(
        "%s: %d training and %d test samples, %d classes, input shape %s",
        dataset.name, dataset.x_train.shape[0], dataset.x_test.shape[0],
        dataset.num_classes, dataset.x_train.shape[1:],
    )
    runs = {}
    for config in configs:
        run_dir = workdir / config.optimizer
        previous = None if _RERUN.value else finished_run(run_dir, config)
        if previous is not None:
            logging.info("%s: finished run with this config found in %s; skipping "
                         "(pass --rerun to train again)", config.optimizer, run_dir)
            runs[config.optimizer] = previous
            continue
        if _RERUN.value:
            # A checkpoint of the replaced run would otherwise be resumed.
            shutil.rmtree(run_dir / checkpoints.CHECKPOINT_DIR, ignore_errors=True)
        logging.info("%s: lr %g, momentum %g, weight decay %g", config.optimizer,
                     config.learning_rate, config.momentum, config.weight_decay)
        runs[config.optimizer] = training.train_and_evaluate(
            config, dataset, workdir=run_dir, name=config.optimizer,
            checkpoint_every=checkpoint_every,
        )

    if jax.process_index() != 0:
        return  # With several processes, the first one writes the figure and table.
    figure = Path(_FIGURE.value) if _FIGURE.value else workdir / "nc_over_training.png"
    plotting.plot_metrics_over_training(
        {name: run.history for name, run in runs.items()},
        figure,
        title=f"{dataset.name}, {configs[0].model}",
    )
    table = format_summary(runs)
    results.write_text_atomic(workdir / "summary.md", table + "\n")
    print(table)
    print(f"\nResults in {workdir}; figure in {figure}")



if __name__ == "__main__":
    cli.run(main)
