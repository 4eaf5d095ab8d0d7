r"""Time one optimizer's 108-point UFM grid five ways and print the ratios.

The grid is the study's for that optimizer: 3 learning rates x 6 momenta x
6 weight decays (``STUDY_GRIDS``), trained full batch for a fixed number of
steps at two sizes, quick (p = 32, N = 200, K = 10) and the study's
(p = 512, N = 10,000, K = 10). Each size times

1. vmapped: the whole grid as one ``ufm.train_ufm_grid`` program, with
   ``eval_every = steps`` so the metrics are taken only at step 0 and at the
   end. At the study size the grid runs in equal chunks that reuse one
   compiled program, because all 108 points at once need about 20 GB;
2. mapped: the whole grid as one ``ufm.train_ufm_grid`` program with
   ``batch_size=1``, which trains the points one after another inside the
   program (``jax.lax.map``) rather than side by side;
3. loop: ``ufm.train_ufm`` called once per grid point from Python, one
   compiled program reused for every point;
4. torch: the same update rule with ``torch.optim`` (``Adam`` with its
   coupled ``weight_decay``, ``AdamW`` or ``SGD``) on torch tensors ``H`` and
   ``W``, full-batch cross-entropy, one run per grid point. PyTorch is
   optional: without it this column is skipped;
5. bound (study size only): a jitted elementwise program that reads and
   writes the bytes one optimizer step of the whole grid must move at the
   least (see ``traffic_bytes_per_point``). The vmapped grid's time over the
   bound's time measures how far it is from the memory bandwidth limit.

Every time per step is a difference of two runs, (T(steps) - T(steps / 2)) /
(steps / 2), taken as the best of several passes. The difference cancels
what does not grow with the steps: the two evaluations of every JAX run,
dispatch and the torch setup. At the study size the final evaluation costs
about as much as 8 to 10 training steps of its grid point on 2 CPU cores.
Compilation happens in a warm-up call before the timed passes and is
reported on its own. Every
method starts from the same ``H`` and ``W`` (``ufm.init_ufm`` with seed 0,
which every point of ``ufm.hyperparameter_grid`` uses by default).

Run from the repository root:

  python benchmarks/ufm_grid.py --optimizer=adam

It prints a table and the pass or fail of three targets: at the quick size
vmapped >= 30x faster than the torch loop; at the study size >= 2x faster
than the torch loop and within 1.5x of the memory-traffic bound. It exits
with status 1 when vmapped and looped runs disagree on the final NC0 (rtol
1e-4), which would mean the methods do not do the same work. A missed
timing target does not change the exit status.
"""

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import ufm

# The study's grid per optimizer: (learning rates, momenta, weight decays).
_MOMENTA = (0.0, 0.5, 0.7, 0.9, 0.95, 0.98)
_DECAYS = (0.0, 5e-5, 5e-4, 5e-3, 0.05, 0.5)
_DECOUPLED_DECAYS = (0.0, 5e-4, 0.05, 0.5, 5.0, 10.0)
STUDY_GRIDS = {
    "sgd": ((0.001, 0.01, 0.0679), _MOMENTA, _DECAYS),
    "sgdw": ((0.001, 0.01, 0.0679), _MOMENTA, _DECAYS),
    "adam": ((0.001, 0.005, 0.01), _MOMENTA, _DECAYS),
    "adamw": ((0.001, 0.005, 0.01), _MOMENTA, _DECOUPLED_DECAYS),
    "signum": ((0.001, 0.005, 0.01), _MOMENTA, _DECAYS),
    "signumw": ((0.001, 0.005, 0.01), _MOMENTA, _DECOUPLED_DECAYS),
}

# Optimizer state arrays per parameter, as ncjax builds them: Adam's first
# and second moments, or one momentum (SGD) or moving-average (Signum)
# buffer. SGD keeps its buffer at momentum 0 too.
STATE_ARRAYS = {"sgd": 1, "sgdw": 1, "adam": 2, "adamw": 2, "signum": 1, "signumw": 1}

# torch.optim classes with the same update rule. The other optimizers have none.
TORCH_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

TARGETS = {
    "quick_vs_torch": 30.0,
    "study_vs_torch": 2.0,
    "study_vs_bound": 1.5,
}
NC0_RTOL = 1e-4
NC0_CHECK_POINTS = 2


@dataclasses.dataclass(frozen=True)
class Size:
    """One problem size and how much of its grid each method runs."""

    name: str
    dim: int
    num_samples: int
    num_classes: int
    steps: int
    chunks: int
    loop_points: int
    torch_points: int
    repeats: int

    def config(self, optimizer: str, steps: int) -> ufm.UFMConfig:
        return ufm.UFMConfig(
            num_classes=self.num_classes,
            dim=self.dim,
            samples_per_class=self.num_samples // self.num_classes,
            optimizer=optimizer,
            steps=steps,
            eval_every=steps,
        )


@dataclasses.dataclass
class Timing:
    """Seconds per grid step of one method, with how it was obtained."""

    per_grid_step: float
    points_timed: int
    compile_s: float | None = None
    per_step_with_evaluation: float | None = None
    passes: list[float] = dataclasses.field(default_factory=list)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="adam", choices=sorted(STUDY_GRIDS),
                        help="optimizer whose study grid is timed (default adam)")
    parser.add_argument("--sizes", default="quick,study",
                        help="comma-separated sizes to run, from: quick, study")
    parser.add_argument("--num-classes", type=int, default=10, help="K for both sizes")
    parser.add_argument("--quick-dim", type=int, default=32, help="p at the quick size")
    parser.add_argument("--quick-samples", type=int, default=200, help="N at the quick size")
    parser.add_argument("--quick-steps", type=int, default=200,
                        help="full-batch steps of the long runs at the quick size (the short runs take half)")
    parser.add_argument("--quick-repeats", type=int, default=3,
                        help="timed passes at the quick size, of which the best is reported")
    parser.add_argument("--study-dim", type=int, default=512, help="p at the study size")
    parser.add_argument("--study-samples", type=int, default=10_000, help="N at the study size")
    parser.add_argument("--study-steps", type=int, default=30,
                        help="full-batch steps of the long runs at the study size (the short runs take half)")
    parser.add_argument("--study-repeats", type=int, default=2,
                        help="timed passes at the study size, of which the best is reported")
    parser.add_argument("--study-chunks", type=int, default=4,
                        help="equal chunks of the grid run by the vmapped method at the study size")
    parser.add_argument("--study-loop-points", type=int, default=12,
                        help="grid points the Python loop runs at the study size, timed and scaled to the whole grid")
    parser.add_argument("--study-torch-points", type=int, default=12,
                        help="grid points the torch loop runs at the study size, timed and scaled to the whole grid")
    parser.add_argument("--torch-fused", action="store_true",
                        help="pass fused=True to the torch optimizer (default: torch's default implementation)")
    args = parser.parse_args(argv)

    names = [name.strip() for name in args.sizes.split(",") if name.strip()]
    for name in names:
        if name not in ("quick", "study"):
            parser.error(f"--sizes contains {name!r}; expected quick and/or study")
    if not names:
        parser.error("--sizes is empty; expected quick and/or study")
    for flag in ("num_classes", "quick_dim", "quick_samples", "study_dim", "study_samples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} is invalid; expected an integer >= 1")
    for flag in ("quick_steps", "study_steps"):
        if getattr(args, flag) < 2:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} is invalid; expected an integer >= 2")
    for flag in ("quick_repeats", "study_repeats", "study_chunks", "study_loop_points", "study_torch_points"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} is invalid; expected an integer >= 1")
    for flag in ("quick_samples", "study_samples"):
        if getattr(args, flag) % args.num_classes:
            parser.error(
                f"--{flag.replace('_', '-')}={getattr(args, flag)} is invalid; expected a multiple of"
                f" --num-classes={args.num_classes}"
            )
    grid_size = _grid_size(args.optimizer)
    if grid_size % args.study_chunks:
        parser.error(
            f"--study-chunks={args.study_chunks} is invalid; expected a divisor of the grid size {grid_size}"
        )

    sizes = []
    if "quick" in names:
        sizes.append(Size("quick", args.quick_dim, args.quick_samples, args.num_classes,
                          args.quick_steps, 1, grid_size, grid_size, args.quick_repeats))
    if "study" in names:
        sizes.append(Size("study", args.study_dim, args.study_samples, args.num_classes,
                          args.study_steps, args.study_chunks, min(args.study_loop_points, grid_size),
                          min(args.study_torch_points, grid_size), args.study_repeats))
    return args, sizes


def _grid_size(optimizer: str) -> int:
    return int(np.prod([len(axis) for axis in STUDY_GRIDS[optimizer]]))


def build_grid(optimizer: str) -> ufm.UFMHyperparameters:
    learning_rates, momenta, decays = STUDY_GRIDS[optimizer]
    return ufm.hyperparameter_grid(learning_rate=learning_rates, momentum=momenta, weight_decay=decays)


def grid_point(grid: ufm.UFMHyperparameters, index: int) -> ufm.UFMHyperparameters:
    """Return point ``index`` of the grid as Python floats, so ``train_ufm`` reuses one program."""
    return ufm.UFMHyperparameters(
        learning_rate=float(grid.learning_rate[index]),
        momentum=float(grid.momentum[index]),
        weight_decay=float(grid.weight_decay[index]),
        seed=int(grid.seed[index]),
    )


def spread_indices(grid_size: int, count: int) -> list[int]:
    """Return ``count`` grid indices spread evenly from the first point to the last."""
    return sorted({int(i) for i in np.linspace(0, grid_size - 1, count).round()})


def load_average() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def jax_threads() -> int:
    # XLA's CPU client sizes its intra-op thread pool to the CPUs this
    # process may run on (the affinity mask), not to os.cpu_count(). Checked
    # with jax 0.10.2 by counting its tf_XLAEigen threads under taskset.
    return len(os.sched_getaffinity(0))


def traffic_bytes_per_point(size: Size, optimizer: str) -> int:
    """Return the bytes one optimizer step of one grid point must move, at the least.

    A fully fused step reads ``H``, ``W`` and their optimizer state once and
    writes them once: (1 + state arrays) x (p N + K p) floats each way. The
    gradient needs only ``H``, ``W`` and the labels, which are read already
    or shared by the grid (N int32 labels and three scalars, under 0.01% of
    the total at the study size), so they are left out.
    """
    floats_per_array = size.dim * size.num_samples + size.num_classes * size.dim
    arrays = 1 + STATE_ARRAYS[optimizer]
    return 2 * arrays * floats_per_array * 4


# --------------------------------------------------------------------------
# Timed methods


def _best(values):
    return min(values)


def _difference_per_step(short_totals, long_totals, step_gap):
    """Return (best long - best short) / step_gap, the seconds per step."""
    return (_best(long_totals) - _best(short_totals)) / step_gap


def time_vmapped(size, optimizer, grid, initial_params, *, batch_size=None, chunks=None):
    """Time the grid as ``train_ufm_grid`` programs, one per chunk.

    ``batch_size`` is passed to ``train_ufm_grid``; ``chunks`` defaults to
    ``size.chunks``. Returns the Timing and the long runs' final NC0 for
    every grid point.
    """
    chunks_count = size.chunks if chunks is None else chunks
    short_steps, long_steps = size.steps // 2, size.steps
    configs = {steps: size.config(optimizer, steps) for steps in (short_steps, long_steps)}
    chunk_size = len(grid.learning_rate) // chunks_count
    chunks = [
        jax.tree.map(lambda values: values[start:start + chunk_size], grid)
        for start in range(0, len(grid.learning_rate), chunk_size)
    ]

    def run(steps, chunk):
        start = time.perf_counter()
        history = ufm.train_ufm_grid(configs[steps], chunk, initial_params=initial_params, batch_size=batch_size)
        nc0 = np.asarray(history["nc0"][:, -1])
        return time.perf_counter() - start, nc0

    first_calls = {steps: run(steps, chunks[0])[0] for steps in configs}
    totals = {steps: [] for steps in configs}
    nc0 = None
    for _ in range(size.repeats):
        for steps in configs:
            results = [run(steps, chunk) for chunk in chunks]
            totals[steps].append(sum(seconds for seconds, _ in results))
            if steps == long_steps:
                nc0 = np.concatenate([values for _, values in results])

    per_step = _difference_per_step(totals[short_steps], totals[long_steps], long_steps - short_steps)
    # Compilation is estimated as the warm-up call minus a steady call of the
    # same chunk, averaged over the two programs.
    steady_chunk = {steps: _best(totals[steps]) / chunks_count for steps in configs}
    compile_s = statistics.mean(first_calls[steps] - steady_chunk[steps] for steps in configs)
    timing = Timing(
        per_grid_step=per_step,
        points_timed=len(grid.learning_rate),
        compile_s=compile_s,
        per_step_with_evaluation=_best(totals[long_steps]) / long_steps,
        passes=totals[long_steps],
    )
    return timing, nc0


def time_python_loop(size, optimizer, grid, initial_params, indices):
    """Time ``train_ufm`` called once per point of ``indices``, scaled to the whole grid.

    Returns the Timing and the long runs' final NC0 at each of ``indices``.
    """
    short_steps, long_steps = size.steps // 2, size.steps
    configs = {steps: size.config(optimizer, steps) for steps in (short_steps, long_steps)}
    points = [grid_point(grid, index) for index in indices]

    def run(steps, hparams):
        params, history = ufm.train_ufm(configs[steps], hparams, initial_params=initial_params)
        return float(history["nc0"][-1])

    first_calls = {}
    for steps in configs:
        start = time.perf_counter()
        run(steps, points[0])
        first_calls[steps] = time.perf_counter() - start

    totals = {steps: [] for steps in configs}
    nc0 = None
    for _ in range(size.repeats):
        for steps in configs:
            start = time.perf_counter()
            values = [run(steps, hparams) for hparams in points]
            totals[steps].append(time.perf_counter() - start)
            if steps == long_steps:
                nc0 = np.asarray(values)

    scale = len(grid.learning_rate) / len(points)
    per_step = scale * _difference_per_step(totals[short_steps], totals[long_steps], long_steps - short_steps)
    steady_call = {steps: _best(totals[steps]) / len(points) for steps in configs}
    compile_s = statistics.mean(first_calls[steps] - steady_call[steps] for steps in configs)
    timing = Timing(
        per_grid_step=per_step,
        points_timed=len(points),
        compile_s=compile_s,
        per_step_with_evaluation=scale * _best(totals[long_steps]) / long_steps,
        passes=[scale * total for total in totals[long_steps]],
    )
    return timing, nc0


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def time_torch_loop(torch, size, optimizer, grid, initial_params, indices, fused):
    """Time one torch.optim run per point of ``indices``, scaled to the whole grid.

    Returns the Timing and the long runs' final NC0 at each of ``indices``.
    Only the step loop is timed: creating the tensors and the optimizer is not.
    """
    optimizer_class = getattr(torch.optim, TORCH_OPTIMIZERS[optimizer])
    short_steps, long_steps = size.steps // 2, size.steps
    H0 = np.asarray(initial_params["H"])
    W0 = np.asarray(initial_params["W"])
    labels = torch.from_numpy(np.asarray(ufm.ufm_labels(size.config(optimizer, 1))).astype(np.int64))
    options = {"fused": True} if fused else {}

    def run(steps, index):
        H = torch.tensor(H0, requires_grad=True)
        W = torch.tensor(W0, requires_grad=True)
        learning_rate = float(grid.learning_rate[index])
        momentum = float(grid.momentum[index])
        decay = float(grid.weight_decay[index])
        if optimizer == "sgd":
            torch_optimizer = optimizer_class([H, W], lr=learning_rate, momentum=momentum,
                                              weight_decay=decay, **options)
        else:
            torch_optimizer = optimizer_class([H, W], lr=learning_rate, betas=(momentum, 0.999), eps=1e-8,
                                              weight_decay=decay, **options)
        start = time.perf_counter()
        for _ in range(steps):
            torch_optimizer.zero_grad(set_to_none=True)
            # The logits are W H, (K, N), as in ufm.ufm_logits.
            loss = torch.nn.functional.cross_entropy((W @ H).T, labels)
            loss.backward()
            torch_optimizer.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            nc0 = float(torch.linalg.vector_norm(W.sum(dim=0)))
        return seconds, nc0

    # The first torch steps pay one-time costs (thread pool start, allocator).
    run(2, indices[0])
    totals = {steps: [] for steps in (short_steps, long_steps)}
    nc0 = None
    for _ in range(size.repeats):
        for steps in totals:
            results = [run(steps, index) for index in indices]
            totals[steps].append(sum(seconds for seconds, _ in results))
            if steps == long_steps:
                nc0 = np.asarray([value for _, value in results])

    scale = len(grid.learning_rate) / len(indices)
    per_step = scale * _difference_per_step(totals[short_steps], totals[long_steps], long_steps - short_steps)
    timing = Timing(
        per_grid_step=per_step,
        points_timed=len(indices),
        per_step_with_evaluation=scale * _best(totals[long_steps]) / long_steps,
        passes=[scale * total for total in totals[long_steps]],
    )
    return timing, nc0


@functools.partial(jax.jit, static_argnames="steps", donate_argnums=0)
def _move_bytes(arrays, steps):
    """Run ``steps`` passes that each read every array once and write it back in place.

    Each array gets its own update ``a * 0.999 + 1e-4``, so XLA CPU compiles
    one in-place loop fusion per array and no copies (jax 0.10.2, checked in
    the compiled HLO). Updates that mix the arrays, like a real optimizer
    step, made XLA copy the loop-carried arrays and read ``H`` three times,
    which moved about 2.7 times the bytes counted here.
    """

    def step(arrays, _):
        return [array * 0.999 + 1e-4 for array in arrays], None

    arrays, _ = jax.lax.scan(step, arrays, None, length=steps)
    return arrays


def time_traffic_bound(size, optimizer):
    """Time ``_move_bytes`` on one chunk's worth of H- and W-shaped arrays, scaled to the grid."""
    short_steps, long_steps = size.steps // 2, size.steps
    chunk_size = _grid_size(optimizer) // size.chunks
    state = STATE_ARRAYS[optimizer]
    shapes = [(chunk_size, size.dim, size.num_samples), (chunk_size, size.num_classes, size.dim)]

    def fresh_arrays():
        # The parameter and its optimizer state for H and for W.
        return [jnp.full(shape, 0.5 + 0.1 * i, jnp.float32) for shape in shapes for i in range(1 + state)]

    def run(steps):
        arrays = fresh_arrays()
        jax.block_until_ready(arrays)
        start = time.perf_counter()
        jax.block_until_ready(_move_bytes(arrays, steps))
        return time.perf_counter() - start

    first_calls = {steps: run(steps) for steps in (short_steps, long_steps)}
    totals = {steps: [] for steps in (short_steps, long_steps)}
    for _ in range(size.repeats):
        for steps in totals:
            totals[steps].append(run(steps))

    # A copy of an H-shaped array would add bytes that the count leaves out.
    abstract = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes for _ in range(1 + state)]
    hlo = _move_bytes.lower(abstract, steps=2).compile().as_text()
    h_shape = ",".join(map(str, shapes[0]))
    copies = [line for line in hlo.splitlines() if " copy(" in line and f"[{h_shape}]" in line]
    if copies:
        print(f"WARNING: the bound program copies {len(copies)} H-shaped arrays per step, so it moves more"
              " bytes than counted and its time is not a lower bound", file=sys.stderr)

    per_step = size.chunks * _difference_per_step(totals[short_steps], totals[long_steps], long_steps - short_steps)
    compile_s = statistics.mean(first_calls[steps] - _best(totals[steps]) for steps in totals)
    return Timing(per_grid_step=per_step, points_timed=chunk_size, compile_s=compile_s)


# --------------------------------------------------------------------------
# Report


def _format_seconds(seconds):
    if seconds is None:
        return "-"
    if abs(seconds) >= 1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1e3:.3f} ms"


def _verdict(passed):
    if passed is None:
        return "NOT MEASURED"
    return "PASS" if passed else "FAIL"


def print_ratio(name, numerator, denominator, *, target=None, at_least=True):
    """Print numerator / denominator of two per-step times; return the target's pass, or None.

    A time per step that is not positive means the timing noise exceeded the
    time of the extra steps, so no ratio is printed from it.
    """
    if not (numerator.per_grid_step > 0 and denominator.per_grid_step > 0):
        print(f"ratio {name}: not measured, because a time per step came out <= 0 (timing noise larger"
              " than the extra steps); raise --quick-steps or --study-steps, or the repeats")
        return None
    ratio = numerator.per_grid_step / denominator.per_grid_step
    if target is None:
        print(f"ratio {name}: {ratio:.2f}x")
        return None
    passed = ratio >= target if at_least else ratio <= target
    comparison = ">=" if at_least else "<="
    print(f"ratio {name}: {ratio:.2f}x (target {comparison} {target:g}x: {_verdict(passed)})")
    return passed


def print_header(args, sizes, torch):
    print("# UFM grid benchmark")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {memory_gib():.1f} GiB RAM")
    versions = [
        f"python {platform.python_version()}",
        f"jax {jax.__version__}",
        f"jaxlib {jax.lib.__version__}",
        f"numpy {np.__version__}",
    ]
    try:
        import optax

        versions.insert(3, f"optax {optax.__version__}")
    except ImportError:
        pass
    if torch is not None:
        versions.append(f"torch {torch.__version__}")
    print("versions: " + ", ".join(versions))
    print(f"JAX backend: {jax.default_backend()}, XLA intra-op threads: {jax_threads()},"
          f" XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    if torch is not None:
        print(f"torch threads: {torch.get_num_threads()} (set to the XLA thread count),"
              f" optimizer implementation: {'fused' if args.torch_fused else 'torch default'}")
    learning_rates, momenta, decays = STUDY_GRIDS[args.optimizer]
    print(f"optimizer: {args.optimizer}; grid: lr {list(learning_rates)} x momentum {list(momenta)}"
          f" x weight decay {list(decays)} = {_grid_size(args.optimizer)} points")
    print("timing: per step = (T(steps) - T(steps/2)) / (steps/2), each T the best of the passes,"
          " so the two evaluations (step 0 and the last step), initialisation and dispatch cancel;"
          " compilation is a separate warm-up call")
    print(f"load average at start: {load_average()}")
    print()


def print_size(size, optimizer, timings, check, torch_message):
    grid_size = _grid_size(optimizer)
    print(f"## {size.name}: p = {size.dim}, N = {size.num_samples}, K = {size.num_classes},"
          f" {size.steps} and {size.steps // 2} steps, best of {size.repeats} passes")
    chunk_size = grid_size // size.chunks
    notes = {
        "vmapped": (f"{size.chunks} chunks of {chunk_size} points, one compiled program"
                    if size.chunks > 1 else "all points in one program"),
        "mapped": "all points in one program, batch_size=1: lax.map over the points",
        "loop": f"{timings['loop'].points_timed} of {grid_size} points timed, scaled by"
                f" {grid_size}/{timings['loop'].points_timed}" if timings["loop"].points_timed < grid_size
                else "every point",
    }
    if "torch" in timings:
        torch_points = timings["torch"].points_timed
        notes["torch"] = (f"{torch_points} of {grid_size} points timed, scaled by {grid_size}/{torch_points}"
                          if torch_points < grid_size else "every point")
    if "bound" in timings:
        notes["bound"] = (f"{timings['bound'].points_timed} points' arrays timed, scaled by {size.chunks};"
                          f" {traffic_bytes_per_point(size, optimizer) / 1e6:.1f} MB per point per step")

    header = ("method", "per grid step", "per point-step", "with evaluation", "compile", "note")
    rows = []
    for method, timing in timings.items():
        rows.append((
            method,
            _format_seconds(timing.per_grid_step),
            _format_seconds(timing.per_grid_step / grid_size),
            _format_seconds(timing.per_step_with_evaluation),
            _format_seconds(timing.compile_s),
            notes[method],
        ))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("'with evaluation' is T(steps) / steps for the long runs, which also contains two evaluations.")
    if torch_message:
        print(torch_message)
    if "bound" in timings and timings["bound"].per_grid_step > 0:
        bytes_per_step = grid_size * traffic_bytes_per_point(size, optimizer)
        print(f"bound: {bytes_per_step / 1e9:.2f} GB per grid step, moved at"
              f" {bytes_per_step / timings['bound'].per_grid_step / 1e9:.1f} GB/s by the bound program")

    # results maps a target to True (pass), False (fail) or None (not measured).
    results = {}
    print_ratio("loop / vmapped", timings["loop"], timings["vmapped"])
    print_ratio("vmapped / mapped", timings["vmapped"], timings["mapped"])
    if "torch" in timings:
        key = f"{size.name}_vs_torch"
        results[key] = print_ratio("torch / vmapped", timings["torch"], timings["vmapped"],
                                   target=TARGETS[key], at_least=True)
        print_ratio("torch / mapped", timings["torch"], timings["mapped"], target=TARGETS[key], at_least=True)
    if "bound" in timings:
        results["study_vs_bound"] = print_ratio("vmapped / bound", timings["vmapped"], timings["bound"],
                                                target=TARGETS["study_vs_bound"], at_least=False)
        print_ratio("mapped / bound", timings["mapped"], timings["bound"],
                    target=TARGETS["study_vs_bound"], at_least=False)
    print(check)
    print(f"load average after: {load_average()}")
    print()
    return results


def check_nc0(vmapped_nc0, loop_nc0, torch_nc0, loop_indices, torch_indices):
    """Compare the final NC0 of the vmapped and looped runs; return (passed, message)."""
    checked = loop_indices[:NC0_CHECK_POINTS]
    lines = []
    passed = True
    for position, index in enumerate(checked):
        expected, actual = vmapped_nc0[index], loop_nc0[position]
        agrees = bool(np.isclose(actual, expected, rtol=NC0_RTOL, atol=0))
        passed &= agrees
        lines.append(f"point {index}: vmapped {expected:.7g}, loop {actual:.7g}")
    message = (f"NC0 check, vmapped against loop at rtol {NC0_RTOL:g}: {'agree' if passed else 'DISAGREE'}"
               f" ({'; '.join(lines)})")
    if torch_nc0 is not None:
        relative = np.abs(torch_nc0 - vmapped_nc0[torch_indices]) / np.abs(vmapped_nc0[torch_indices])
        # Not a check: torch sums in another order, and where decay drives NC0
        # near 0 the relative difference of that small value grows large.
        worst = torch_indices[int(np.argmax(relative))]
        message += (f"\nNC0, torch against vmapped over {len(torch_indices)} points: median relative difference"
                    f" {np.median(relative):.2g}, max {np.max(relative):.2g} (point {worst},"
                    f" vmapped NC0 {vmapped_nc0[worst]:.4g})")
    return passed, message


def run_size(size, args, grid, torch):
    config = size.config(args.optimizer, size.steps)
    initial_params = ufm.init_ufm(config, jax.random.key(0))
    grid_size = len(grid.learning_rate)
    loop_indices = spread_indices(grid_size, size.loop_points)
    torch_indices = spread_indices(grid_size, size.torch_points)

    timings = {}
    print(f"[{size.name}] vmapped grid, load {load_average()}", file=sys.stderr, flush=True)
    timings["vmapped"], vmapped_nc0 = time_vmapped(size, args.optimizer, grid, initial_params)
    print(f"[{size.name}] grid mapped point by point, load {load_average()}", file=sys.stderr, flush=True)
    timings["mapped"], mapped_nc0 = time_vmapped(size, args.optimizer, grid, initial_params, batch_size=1, chunks=1)
    print(f"[{size.name}] Python loop, load {load_average()}", file=sys.stderr, flush=True)
    timings["loop"], loop_nc0 = time_python_loop(size, args.optimizer, grid, initial_params, loop_indices)

    torch_nc0 = None
    torch_message = None
    if torch is None:
        torch_message = "torch column skipped: PyTorch is not installed (pip install torch==2.13.0)"
    elif args.optimizer not in TORCH_OPTIMIZERS:
        torch_message = (f"torch column skipped: torch.optim has no {args.optimizer}. It covers"
                         f" {', '.join(TORCH_OPTIMIZERS)}.")
    else:
        print(f"[{size.name}] torch loop, load {load_average()}", file=sys.stderr, flush=True)
        timings["torch"], torch_nc0 = time_torch_loop(
            torch, size, args.optimizer, grid, initial_params, torch_indices, args.torch_fused
        )
    if size.name == "study":
        del initial_params
        print(f"[{size.name}] memory-traffic bound, load {load_average()}", file=sys.stderr, flush=True)
        timings["bound"] = time_traffic_bound(size, args.optimizer)

    passed, check = check_nc0(vmapped_nc0, loop_nc0, torch_nc0, loop_indices,
                              torch_indices if torch_nc0 is not None else None)
    checked = loop_indices[:NC0_CHECK_POINTS]
    mapped_agrees = bool(np.allclose(mapped_nc0[checked], vmapped_nc0[checked], rtol=NC0_RTOL, atol=0))
    passed &= mapped_agrees
    # As with torch, points where decay drives NC0 near 0 differ by more than
    # NC0_RTOL, because there the float32 rounding of a small value dominates.
    relative = np.abs(mapped_nc0 - vmapped_nc0) / np.abs(vmapped_nc0)
    worst = int(np.argmax(relative))
    check += (f"\nNC0 check, mapped against vmapped at points {checked} at rtol {NC0_RTOL:g}:"
              f" {'agree' if mapped_agrees else 'DISAGREE'}; over all {grid_size} points: median relative"
              f" difference {np.median(relative):.2g}, max {relative[worst]:.2g} (point {worst},"
              f" vmapped NC0 {vmapped_nc0[worst]:.4g})")
    results = print_size(size, args.optimizer, timings, check, torch_message)
    return passed, results


def main(argv=None):
    args, sizes = parse_args(argv)
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(jax_threads())
    print_header(args, sizes, torch)
    if torch is None:
        print("torch column skipped: PyTorch is not installed (pip install torch==2.13.0)")

    grid = build_grid(args.optimizer)
    all_agree = True
    results = {}
    for size in sizes:
        agrees, size_results = run_size(size, args, grid, torch)
        all_agree &= agrees
        results.update(size_results)

    print("## targets")
    descriptions = {
        "quick_vs_torch": f"quick size, vmapped >= {TARGETS['quick_vs_torch']:g}x faster than the torch loop",
        "study_vs_torch": f"study size, vmapped >= {TARGETS['study_vs_torch']:g}x faster than the torch loop",
        "study_vs_bound": f"study size, vmapped within {TARGETS['study_vs_bound']:g}x of the memory-traffic bound",
    }
    for key, description in descriptions.items():
        verdict = _verdict(results[key]) if key in results else "not run"
        print(f"- {description}: {verdict}")
    if not all_agree:
        print("NC0 check failed: the vmapped and looped runs disagree, so the timings may not compare equal work.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
