r"""Sweep weight decay on the unconstrained feature model (UFM).

The UFM trains free features H (p x N) with the classifier W (K x p). The
sweep trains Adam, AdamW and SGD with coupled decay at momentum 0.9, at
every learning rate, weight decay and seed of the grid. It keeps the runs
that reach 100% training accuracy and draws NC0, NC3, NC1 and NC2 against
the decay: the mean over kept runs with a band of one standard deviation.

CPU preset (p = 512, K = 10, N = 1,000, 5 seeds; about 10 minutes on 2 CPU
cores):

  python -m experiments.ufm_sweep --preset=cpu --workdir=runs/ufm_cpu

Study size (N = 10,000), the default when JAX finds an accelerator:

  python -m experiments.ufm_sweep --preset=study --workdir=runs/ufm

What it shows: with coupled decay (adam, sgd), NC0 and NC3 fall as the decay
grows. With decoupled decay (adamw) they stay high at every decay.

Outputs in --workdir: `config.json` (the resolved sweep), `runs.jsonl` (one
row per grid point with its final metrics and whether it was kept),
`summary.json` (mean, std and count per optimizer and decay), and
`metrics_vs_decay.png`. Each optimizer's grid runs in chunks of equal size,
which share one compiled program. `runs.jsonl` is rewritten atomically after
every chunk, and a restarted sweep with the same configuration skips the
chunks it already finished.
"""

import dataclasses
from pathlib import Path
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from experiments import cli
from ncjax import analysis
from ncjax import optimizers
from ncjax import plotting
from ncjax import results
from ncjax import ufm

PRESETS = ("auto", "cpu", "study")
SUMMARY_METRICS = ("nc0", "nc1", "nc2", "nc3", "train_accuracy", "train_loss")

_PRESET = flags.DEFINE_enum(
    "preset", "auto", PRESETS,
    "Problem size: 'cpu' (N = 1,000), 'study' (N = 10,000), or 'auto' (study "
    "size when JAX finds a GPU or TPU, cpu otherwise).",
)
_OPTIMIZERS = flags.DEFINE_list(
    "optimizers", ["adam", "adamw", "sgd"],
    f"Optimizers to sweep, from: {', '.join(optimizers.FAMILIES)}.",
)
_LEARNING_RATES = flags.DEFINE_list(
    "learning_rates", ["0.1", "0.3", "0.5", "1.0"], "Learning rates (constant)."
)
# NOTE: the loss is the mean over samples. Written as a sum over samples, as
# the study writes the UFM objective, the loss gradient would be N times
# larger beside the same decay. With the mean, coupled decay of 0.05 pulls H
# to zero before the classes separate (no Adam run at N = 1,000 reached 100%
# training accuracy), so the default grid stops at 0.01.
_WEIGHT_DECAYS = flags.DEFINE_list(
    "weight_decays", ["0", "1e-4", "5e-4", "1e-3", "5e-3", "1e-2"],
    "Weight decays; 0 is drawn on the symlog axis of the figure.",
)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "Momentum (b1 for Adam), in [0, 1).")
_NUM_SEEDS = flags.DEFINE_integer("num_seeds", 5, "Seeds per grid point: 0 .. num_seeds-1.")
_DIM = flags.DEFINE_integer("dim", 512, "Feature dimension p.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 10, "Number of classes K.")
_SAMPLES_PER_CLASS = flags.DEFINE_integer(
    "samples_per_class", None, "N / K (default: 100 for the cpu preset, 1,000 for study)."
)
_STEPS = flags.DEFINE_integer("steps", 600, "Full-batch optimizer steps per run.")
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 600,
    "Steps between evaluations inside a run (the last step is always evaluated).",
)
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", None,
    "Grid points per compiled program (default: one learning rate's decays and seeds). "
    "Smaller chunks need less memory.",
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/ufm_sweep", "Output directory.")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: the static UFM settings and the grid values."""

    optimizers: tuple[str, ...]
    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]
    momentum: float
    seeds: tuple[int, ...]
    dim: int
    num_classes: int
    samples_per_class: int
    steps: int
    eval_every: int
    chunk_size: int

    def ufm_config(self, optimizer: str) -> ufm.UFMConfig:
        return ufm.UFMConfig(
            num_classes=self.num_classes,
            dim=self.dim,
            samples_per_class=self.samples_per_class,
            optimizer=optimizer,
            steps=self.steps,
            eval_every=self.eval_every,
        )

    def grid_points(self) -> list[tuple[float, float, int]]:
        """(learning rate, decay, seed) of every point, seed varying fastest."""
        return [
            (lr, decay, seed)
            for lr in self.learning_rates
            for decay in self.weight_decays
            for seed in self.seeds
        ]


def parse_numbers(name: str, values: list[str], kind=float) -> tuple:
    try:
        numbers = tuple(kind(value) for value in values)
    except ValueError:
        raise ValueError(
            f"--{name}={','.join(values)} is invalid; expected comma-separated numbers"
        ) from None
    if not numbers:
        raise ValueError(f"--{name} is empty; expected one or more numbers")
    return numbers


def resolve_preset(preset: str) -> str:
    if preset != "auto":
        return preset
    return "cpu" if jax.default_backend() == "cpu" else "study"


def build_sweep_config() -> SweepConfig:
    """Turn the flags into a validated SweepConfig; raise ValueError on bad values."""
    preset = resolve_preset(_PRESET.value)
    samples_per_class = _SAMPLES_PER_CLASS.value or (100 if preset == "cpu" else 1000)
    names = tuple(name.strip() for name in _OPTIMIZERS.value if name.strip())
    for name in names:
        if name not in optimizers.FAMILIES:
            raise ValueError(
                f"unknown optimizer {name!r}; expected one of: {', '.join(optimizers.FAMILIES)}"
            )
    if not names:
        raise ValueError("--optimizers is empty; expected one or more optimizer names")

    learning_rates = parse_numbers("learning_rates", _LEARNING_RATES.value)
    weight_decays = parse_numbers("weight_decays", _WEIGHT_DECAYS.value)
    for value in learning_rates:
        optimizers.validate_hyperparameters(
            learning_rate=value, momentum=_MOMENTUM.value, weight_decay=0.0
        )
    for value in weight_decays:
        optimizers.validate_hyperparameters(
            learning_rate=0.0, momentum=_MOMENTUM.value, weight_decay=value
        )

    if _NUM_SEEDS.value < 1:
        raise ValueError(f"--num_seeds={_NUM_SEEDS.value} is invalid; expected an integer >= 1")
    per_learning_rate = len(weight_decays) * _NUM_SEEDS.value
    chunk_size = _CHUNK_SIZE.value or per_learning_rate
    if chunk_size < 1:
        raise ValueError(f"--chunk_size={chunk_size} is invalid; expected an integer >= 1")

    sweep = SweepConfig(
        optimizers=names,
        learning_rates=learning_rates,
        weight_decays=weight_decays,
        momentum=_MOMENTUM.value,
        seeds=tuple(range(_NUM_SEEDS.value)),
        dim=_DIM.value,
        num_classes=_NUM_CLASSES.value,
        samples_per_class=samples_per_class,
        steps=_STEPS.value,
        eval_every=_EVAL_EVERY.value,
        chunk_size=chunk_size,
    )
    for name in names:
        sweep.ufm_config(name).validate()
    return sweep


def run_chunk(sweep: SweepConfig, optimizer: str, points) -> list[dict]:
    """Train the grid points of one chunk in one program; return one row per point."""
    learning_rates, decays, seeds = (np.asarray(column) for column in zip(*points))
    grid = ufm.UFMHyperparameters(
        learning_rate=learning_rates.astype(np.float32),
        momentum=np.full(len(points), sweep.momentum, np.float32),
        weight_decay=decays.astype(np.float32),
        coupled_share=None,
        seed=seeds.astype(np.int32),
    )
    history = ufm.train_ufm_grid(sweep.ufm_config(optimizer), grid)
    history = jax.tree.map(np.asarray, history)
    rows = []
    for index, (lr, decay, seed) in enumerate(points):
        final = {key: float(values[index, -1]) for key, values in history.items()
                 if values.ndim == 2}
        row = {"optimizer": optimizer, "learning_rate": float(lr),
               "weight_decay": float(decay), "momentum": sweep.momentum,
               "seed": int(seed), **final}
        finite = all(np.isfinite(value) for value in final.values())
        row["status"] = "completed" if finite else "diverged"
        row["kept"] = finite and final.get("train_accuracy") == 1.0
        rows.append(row)
    return rows


def chunks_of(sweep: SweepConfig):
    """Yield (optimizer, points) chunks of `chunk_size` points.

    A last chunk that is smaller compiles its own program once.
    """
    points = sweep.grid_points()
    for optimizer in sweep.optimizers:
        for start in range(0, len(points), sweep.chunk_size):
            yield optimizer, points[start:start + sweep.chunk_size]


def load_finished_rows(workdir: Path, sweep: SweepConfig) -> list[dict]:
    """Return rows from an earlier run of the same sweep, or [] if there is none."""
    try:
        stored = results.read_json(workdir / results.CONFIG_FILE)
        rows = results.read_jsonl(workdir / "runs.jsonl")
    except (OSError, ValueError):
        return []
    if stored != results.to_json_value(dataclasses.asdict(sweep)):
        return []
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[float, dict[str, tuple[float, float]]]]:
    """Mean and std per optimizer and decay over the kept runs."""
    kept = [row for row in rows if row["kept"]]
    grouped = analysis.mean_and_std_by(kept, ("optimizer", "weight_decay"), SUMMARY_METRICS)
    summary: dict[str, dict[float, dict]] = {}
    for (optimizer, decay), values in grouped.items():
        summary.setdefault(optimizer, {})[decay] = values
    return summary


def run_sweep(sweep: SweepConfig, workdir: Path) -> list[dict]:
    """Train every chunk not yet in `workdir`, writing rows after each chunk."""
    rows = load_finished_rows(workdir, sweep)
    if not rows:
        results.write_json(workdir / results.CONFIG_FILE, dataclasses.asdict(sweep))
    done = {(row["optimizer"], row["learning_rate"], row["weight_decay"], row["seed"])
            for row in rows}
    chunks = list(chunks_of(sweep))
    start = time.perf_counter()
    trained = 0
    for number, (optimizer, points) in enumerate(chunks, start=1):
        if all((optimizer, lr, decay, seed) in done for lr, decay, seed in points):
            logging.info("chunk %d/%d (%s) finished earlier; skipping", number,
                         len(chunks), optimizer)
            continue
        rows.extend(run_chunk(sweep, optimizer, points))
        results.write_jsonl(workdir / "runs.jsonl", rows)
        trained += 1
        elapsed = time.perf_counter() - start
        remaining = sum(
            1 for later_optimizer, later_points in chunks[number:]
            if not all((later_optimizer, lr, decay, seed) in done
                       for lr, decay, seed in later_points)
        )
        logging.info(
            "chunk %d/%d (%s, %d runs) done; %.0f s elapsed, about %.0f s left",
            number, len(chunks), optimizer, len(points), elapsed,
            elapsed / trained * remaining,
        )
    return rows


def format_table(summary) -> str:
    lines = ["| optimizer | decay | kept runs | NC0 | NC3 | NC1 | NC2 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for optimizer, by_decay in summary.items():
        for decay, values in sorted(by_decay.items()):
            cells = [f"{values[key][0]:.3g} ± {values[key][1]:.2g}"
                     for key in ("nc0", "nc3", "nc1", "nc2")]
            lines.append(f"| {optimizer} | {decay:g} | {values['nc0'][2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv  # cli.run has rejected any argument that is not a flag.
    workdir = Path(_WORKDIR.value)
    try:
        sweep = build_sweep_config()
        if workdir.exists() and not workdir.is_dir():
            raise ValueError(f"--workdir: {workdir} exists and is not a directory")
    except ValueError as error:
        cli.fail(str(error))

    logging.info(
        "UFM sweep on %s: p=%d, K=%d, N=%d, %d steps; %d optimizers x %d grid points",
        jax.default_backend(), sweep.dim, sweep.num_classes,
        sweep.num_classes * sweep.samples_per_class, sweep.steps,
        len(sweep.optimizers), len(sweep.grid_points()),
    )
    rows = run_sweep(sweep, workdir)
    summary = summarize(rows)
    results.write_json(
        workdir / "summary.json",
        {optimizer: {f"{decay:g}": values for decay, values in by_decay.items()}
         for optimizer, by_decay in summary.items()},
    )
    figure = plotting.plot_metrics_against_decay(
        {optimizer: {decay: {key: value[:2] for key, value in values.items()}
                     for decay, values in by_decay.items()}
         for optimizer, by_decay in summary.items()},
        workdir / "metrics_vs_decay.png",
        title=(f"UFM p={sweep.dim}, K={sweep.num_classes}, "
               f"N={sweep.num_classes * sweep.samples_per_class}, momentum {sweep.momentum:g}"),
    )
    kept = sum(row["kept"] for row in rows)
    print(format_table(summary))
    print(f"\n{kept} of {len(rows)} runs reached 100% training accuracy and were kept.")
    print(f"Results in {workdir}; figure in {figure}")



if __name__ == "__main__":
    cli.run(main)
