r"""Check the NC0 results for SGD and sign descent against simulation, and draw them.

  python -m experiments.theory --workdir=runs/theory

Two full runs took 37 and 51 seconds on 2 shared CPU cores (jax 0.10.2), 80%
of it for the seven MLP trainings of figure d. Add --quick for a smoke run
(13 to 18 seconds) with shorter simulations and a tiny MLP. It writes four
PNG figures to --workdir, each with a JSON file of the same name holding
the numbers it draws. alpha is ||W^T 1||^2 / K, the squared NC0 of the
classifier W.

a. sign_descent_decoupled: sign descent with decoupled decay on the
   unconstrained feature model with features fixed at the simplex ETF and
   W_0 = 0. The simulation lies on the closed form (K-2)^2 (1 - (1 -
   eta lam)^t)^2 / lam^2 (relative error at most 3e-13 in float64) and
   levels off at (K-2)^2 / lam^2, not at 0.
b. sign_descent_coupled: the same with coupled decay. alpha rises as
   (K-2)^2 eta^2 t^2 until the predicted peak step, falls in a zig-zag and
   then oscillates in a band below K^2 eta^2. Plotted against eta t, the
   turning points of three learning rates line up and alpha / eta^2 ends in
   the same band.
c. sgd_nc0_rate: SGD with momentum beta and coupled decay lam on random
   initial weights. The fitted decay rate of alpha per unit of eta t lies
   on the exact rate of the linear recursion that W^T 1 follows, about
   2 lam / (1 - beta). The bound lam / log(1/beta) of Theorem 3.1 of the
   study is 2.1 to 2.8 times smaller over the grid, so those points lie
   above the identity line. With beta = 0, alpha falls as
   (1 - lam eta)^(2t), the square of the bound's (1 - lam eta)^t.
d. nc0_dynamics_mlp: NC0 at every step of an MLP on the Gaussian-mixture
   dataset (class k from N(e_k, 0.1^2 I) in R^784) for SGD, Adam, AdamW,
   Adam0, AdamW0 (beta1 = beta2 = 0) and sign descent with coupled (sign)
   and decoupled (signw) decay. In the default run SGD decays steadily.
   Coupled sign descent and Adam0 (nearly the same curve) peak near step
   80, fall and then fluctuate around 0.2, and Adam peaks and falls to
   about 0.1 to 0.2. The decoupled ones rise and flatten out, at 3.6
   (AdamW), 42 (AdamW0) and 83 (signw) after 3,900 steps.

Settings of d: learning rate 1e-3 for all seven optimizers (a value in the
study's learning-rate grid of every optimizer), momentum 0.9, coupled decay
0.05 and decoupled decay 0.5. At 0.5, eta lam = 5e-4, so the decoupled
weights settle within a few thousand steps. The study's grids also give
decoupled optimizers larger decays. The classifier starts at 1% of its default
initialisation, near the W_0 = 0 of the sign-descent results. At exactly 0,
SGD would keep W^T 1 = 0 forever.
"""

from collections.abc import Sequence
import math
import os
from pathlib import Path
import time
from typing import Any

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from matplotlib.figure import Figure
import numpy as np

from experiments import cli
from ncjax import data as data_lib
from ncjax import optimizers
from ncjax import plotting
from ncjax import results
from ncjax import theory

FIGURE_NAMES = (
    "sign_descent_decoupled",
    "sign_descent_coupled",
    "sgd_nc0_rate",
    "nc0_dynamics_mlp",
)

# (K, eta, lam) of figure a. The largest logit margin reached, 2 / (lam
# sqrt(K - 1)) = 28 for K = 3 and lam = 0.05, keeps every gradient entry far
# from float64 underflow, so the simulation follows the closed form.
DECOUPLED_SETTINGS = ((10, 0.01, 0.05), (10, 0.02, 0.1), (5, 0.01, 0.1), (3, 0.02, 0.05))
# Steps of figure a: eta lam t reaches 4 for the slowest setting.
DECOUPLED_STEPS, DECOUPLED_STEPS_QUICK = 8000, 500

# K, lam and the learning rates of figure b. The simulation covers eta t <= 6,
# and the oscillation starts near eta t = 2.6 for K = 10 and lam = 0.01.
COUPLED_NUM_CLASSES = 10
COUPLED_WEIGHT_DECAY = 0.01
COUPLED_LEARNING_RATES = (0.02, 0.01, 0.005)
COUPLED_TIME = 6.0

# Figure c: each fit runs until the bound of Theorem 3.1 has fallen by
# e^-10, at most SGD_MAX_STEPS steps. alpha itself then falls by at most
# e^-28, so it stays far above its float64 round-off floor (estimated at
# 1e-30 of alpha_0), where the fitted rate would be meaningless.
SGD_NUM_CLASSES = 10
SGD_BOUND_DECAY_NATS = 10.0
SGD_MAX_STEPS, SGD_MAX_STEPS_QUICK = 20_000, 2_000
SGD_ZERO_MOMENTUM_DECAYS = (0.01, 0.05)

# Most points of one trajectory stored and drawn in figures a and c.
MAX_STORED_POINTS = 400

_WORKDIR = flags.DEFINE_string("workdir", "runs/theory", "Output directory.")
_QUICK = flags.DEFINE_bool(
    "quick", False,
    "Smoke run: shorter simulations, a 2-step SGD grid and a tiny MLP for 2 epochs.",
)
_SGD_LEARNING_RATE = flags.DEFINE_float(
    "sgd_learning_rate", 0.01, "Learning rate eta of the SGD simulations (figure c)."
)
_SGD_MOMENTA = flags.DEFINE_list(
    "sgd_momenta", ["0.5", "0.7", "0.9", "0.95"],
    "Momenta beta of the SGD grid (figure c), each in (0, 1).",
)
_SGD_WEIGHT_DECAYS = flags.DEFINE_list(
    "sgd_weight_decays", ["0.001", "0.005", "0.01", "0.05"],
    "Coupled weight decays lam of the SGD grid (figure c), each > 0.",
)
_MLP_LEARNING_RATE = flags.DEFINE_float(
    "mlp_learning_rate", 1e-3, "Constant learning rate of every optimizer in figure d."
)
_MLP_MOMENTUM = flags.DEFINE_float(
    "mlp_momentum", 0.9, "Momentum of SGD and beta1 of Adam and AdamW in figure d."
)
_MLP_WEIGHT_DECAY = flags.DEFINE_float(
    "mlp_weight_decay", 0.05, "Weight decay of sgd, adam, adam0 and sign in figure d."
)
_MLP_DECOUPLED_WEIGHT_DECAY = flags.DEFINE_float(
    "mlp_decoupled_weight_decay", 0.5,
    "Weight decay of adamw, adamw0 and signw in figure d.",
)
_MLP_EPOCHS = flags.DEFINE_integer("mlp_epochs", 50, "Training epochs of figure d.")
_MLP_SAMPLES_PER_CLASS = flags.DEFINE_integer(
    "mlp_samples_per_class", 1000, "Gaussian-mixture training samples per class."
)
_MLP_HIDDEN_SIZES = flags.DEFINE_list(
    "mlp_hidden_sizes", ["128", "128"], "MLP hidden widths; the last is p."
)
_MLP_BATCH_SIZE = flags.DEFINE_integer("mlp_batch_size", 128, "Minibatch size of figure d.")
_MLP_CLASSIFIER_INIT_SCALE = flags.DEFINE_float(
    "mlp_classifier_init_scale", 0.01,
    "Factor on the MLP's initial classifier weights, > 0.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of W_0 in figure c and of the MLP.")


# ---------------------------------------------------------------------------
# Figure a: decoupled sign descent.


def _subsample(length: int, max_points: int = MAX_STORED_POINTS) -> np.ndarray:
    return np.unique(np.linspace(0, length - 1, min(length, max_points)).astype(int))


def compute_decoupled_sign_descent(
    settings: Sequence[tuple[int, float, float]], steps: int
) -> dict[str, Any]:
    """Simulate decoupled sign descent on the fixed-ETF UFM and compare it with the closed form."""
    rows = []
    for num_classes, learning_rate, weight_decay in settings:
        with jax.enable_x64(True):
            tx = optimizers.signumw(learning_rate, 0.0, weight_decay)
            simulated = np.asarray(
                theory.simulate_fixed_etf(tx, num_classes, steps, dtype=jnp.float64)
            )
        exact = np.asarray(theory.sign_descent_decoupled_alpha(
            np.arange(steps + 1, dtype=np.float64), num_classes, learning_rate, weight_decay
        ))
        relative_error = np.abs(simulated[1:] - exact[1:]) / exact[1:]
        stored_steps = _subsample(steps + 1)
        rows.append({
            "num_classes": num_classes,
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "limit": theory.sign_descent_decoupled_alpha_limit(num_classes, weight_decay),
            "max_relative_error": float(relative_error.max()),
            "step": stored_steps,
            "simulated": simulated[stored_steps],
            "closed_form": exact[stored_steps],
        })
        logging.info(
            "Decoupled sign descent K=%d eta=%g lam=%g: max relative error %.2g over %d steps",
            num_classes, learning_rate, weight_decay, relative_error.max(), steps,
        )
    return {"steps": steps, "settings": rows}


def plot_decoupled_sign_descent(record: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(6.4, 4.4))
    axis = fig.subplots()
    for index, row in enumerate(record["settings"]):
        color = f"C{index}"
        label = (
            f"K={row['num_classes']}, $\\eta$={row['learning_rate']:g}, "
            f"$\\lambda$={row['weight_decay']:g} (max rel. err. {row['max_relative_error']:.0e})"
        )
        axis.plot(row["step"], row["closed_form"], color=color, label=label)
        markers = slice(None, None, max(1, len(row["step"]) // 25))
        axis.plot(row["step"][markers], row["simulated"][markers], "o", color=color,
                  markersize=3.5, markerfacecolor="none")
        axis.axhline(row["limit"], color=color, linestyle=":", linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("step t")
    axis.set_ylabel(r"$\alpha_t = \|W_t^\top \mathbf{1}\|^2 / K$")
    axis.set_title(
        "Sign descent, decoupled decay, features fixed at the ETF\n"
        r"line: $(K-2)^2(1-(1-\eta\lambda)^t)^2/\lambda^2$; circles: simulation; "
        r"dotted: limit $(K-2)^2/\lambda^2$",
        fontsize="small",
    )
    axis.legend(fontsize="x-small", loc="lower right")
    axis.grid(True, which="both", alpha=0.3)
    return plotting.save_figure(fig, path)


# ---------------------------------------------------------------------------
# Figure b: coupled sign descent.


def compute_coupled_sign_descent(
    num_classes: int, weight_decay: float, learning_rates: Sequence[float], time_span: float
) -> dict[str, Any]:
    """Simulate coupled sign descent, find its turning points and its late band."""
    rows = []
    for learning_rate in learning_rates:
        steps = math.ceil(time_span / learning_rate)
        with jax.enable_x64(True):
            coupled = np.asarray(theory.simulate_fixed_etf(
                optimizers.signum(learning_rate, 0.0, weight_decay), num_classes, steps,
                dtype=jnp.float64,
            ))
        decoupled = np.asarray(theory.sign_descent_decoupled_alpha(
            np.arange(steps + 1, dtype=np.float64), num_classes, learning_rate, weight_decay
        ))
        turning = theory.find_turning_points(coupled)
        predicted_peak = theory.sign_descent_coupled_peak_step(
            num_classes, learning_rate, weight_decay
        )
        rows.append({
            "learning_rate": learning_rate,
            "steps": steps,
            "peak_step_predicted": predicted_peak,
            "peak_step": turning.peak_step,
            "peak_alpha": float(coupled[turning.peak_step]),
            "oscillation_start": turning.oscillation_start,
            "band_low": turning.band_low,
            "band_high": turning.band_high,
            "band_high_over_eta_squared": turning.band_high / learning_rate**2,
            "alpha": coupled,
            "alpha_decoupled": decoupled,
        })
        logging.info(
            "Coupled sign descent eta=%g: peak at step %d (predicted %d), oscillation from "
            "step %d in [%.3g, %.3g] = [%.3g, %.3g] eta^2",
            learning_rate, turning.peak_step, predicted_peak, turning.oscillation_start,
            turning.band_low, turning.band_high, turning.band_low / learning_rate**2,
            turning.band_high / learning_rate**2,
        )
    return {"num_classes": num_classes, "weight_decay": weight_decay, "runs": rows}


def plot_coupled_sign_descent(record: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    K, lam = record["num_classes"], record["weight_decay"]
    runs = record["runs"]
    main = runs[len(runs) // 2]
    eta = main["learning_rate"]
    steps = np.arange(len(main["alpha"]))
    left.plot(steps, main["alpha"], color="C0", linewidth=0.8, label="coupled (simulation)")
    left.plot(steps, main["alpha_decoupled"], color="C7", linestyle="--",
              label="decoupled (closed form)")
    rise = steps[: main["peak_step"] + 1]
    left.plot(rise, (K - 2) ** 2 * eta**2 * rise**2, color="C3", linestyle=":",
              label=r"rise $(K-2)^2\eta^2t^2$")
    left.axvline(main["peak_step_predicted"], color="C3", linewidth=0.8,
                 label=f"peak $T_1$={main['peak_step']} (predicted {main['peak_step_predicted']})")
    left.axvline(main["oscillation_start"], color="C2", linewidth=0.8,
                 label=f"oscillation from $T_2$={main['oscillation_start']}")
    left.set_ylim(0, 1.6 * main["peak_alpha"])
    left.set_xlabel("step t")
    left.set_ylabel(r"$\alpha_t$")
    left.set_title(f"Sign descent, coupled decay: K={K}, $\\lambda$={lam:g}, $\\eta$={eta:g}",
                   fontsize="small")
    left.legend(fontsize="x-small", loc="upper right")
    left.grid(True, alpha=0.3)

    for index, run in enumerate(runs):
        eta = run["learning_rate"]
        time_axis = eta * np.arange(len(run["alpha"]))
        scaled = np.asarray(run["alpha"]) / eta**2
        right.plot(time_axis, scaled, color=f"C{index}", linewidth=0.7,
                   label=f"$\\eta$={eta:g}: band [{run['band_low'] / eta**2:.3g}, "
                         f"{run['band_high_over_eta_squared']:.3g}]")
    right.axhline(K**2, color="k", linestyle=":", linewidth=1, label="$K^2$")
    # The weights move on a lattice of spacing eta, so alpha / eta^2 is a
    # square integer: 0 (up to round-off) or at least 1, and a symlog axis
    # that is linear below 1 shows the zeros.
    right.set_yscale("symlog", linthresh=1)
    right.set_ylim(bottom=0)
    right.set_xlabel(r"$\eta t$")
    right.set_ylabel(r"$\alpha_t / \eta^2$")
    right.set_title(r"Late band scales with $\eta^2$", fontsize="small")
    right.legend(fontsize="x-small", loc="lower left")
    right.grid(True, which="both", alpha=0.3)
    return plotting.save_figure(fig, path)


# ---------------------------------------------------------------------------
# Figure c: SGD with momentum and coupled decay.


def _simulate_sgd(learning_rate, momenta, weight_decays, steps, initial_weights):
    """Return alpha of SGD on the fixed-ETF UFM for each (beta, lam) pair, one compile."""

    def simulate(momentum, weight_decay):
        tx = optimizers.sgd(learning_rate, momentum, weight_decay)
        return theory.simulate_fixed_etf(
            tx, SGD_NUM_CLASSES, steps, initial_weights=initial_weights
        )

    return np.asarray(jax.jit(jax.vmap(simulate))(jnp.asarray(momenta), jnp.asarray(weight_decays)))


def sgd_steps_for(momentum, weight_decay, learning_rate, max_steps) -> int:
    """Return the steps after which Theorem 3.1's bound has fallen by e^-SGD_BOUND_DECAY_NATS."""
    bound_rate = theory.predicted_sgd_rate(momentum, weight_decay, learning_rate=learning_rate)
    return min(max_steps, math.ceil(SGD_BOUND_DECAY_NATS / (bound_rate * learning_rate)))


def compute_sgd_rates(
    learning_rate: float,
    momenta: Sequence[float],
    weight_decays: Sequence[float],
    max_steps: int,
    seed: int,
) -> dict[str, Any]:
    """Fit the decay rate of alpha under SGD over a (beta, lam) grid and compare with theory."""
    grid = [(beta, lam) for beta in momenta for lam in weight_decays]
    zero_momentum = [(0.0, lam) for lam in SGD_ZERO_MOMENTUM_DECAYS]
    pairs = grid + zero_momentum
    horizons = [sgd_steps_for(beta, lam, learning_rate, max_steps) for beta, lam in pairs]
    with jax.enable_x64(True):
        initial_weights = jax.random.normal(
            jax.random.key(seed), (SGD_NUM_CLASSES, SGD_NUM_CLASSES), jnp.float64
        )
        alphas = _simulate_sgd(
            learning_rate, [beta for beta, _ in pairs], [lam for _, lam in pairs],
            max(horizons), initial_weights,
        )

    rows = []
    for (beta, lam), steps, alpha in zip(pairs, horizons, alphas):
        alpha = alpha[: steps + 1]
        slow_mode, fast_mode = theory.sgd_alpha_modes(beta, lam, learning_rate)
        exact = theory.sgd_alpha_recursion(alpha[0], steps, learning_rate, beta, lam)
        row = {
            "momentum": beta,
            "weight_decay": lam,
            "steps": steps,
            "fitted_rate": theory.fit_exponential_rate(alpha, learning_rate),
            "theorem_rate": float(theory.predicted_sgd_rate(beta, lam, learning_rate=learning_rate)),
            "exact_rate": float(theory.sgd_alpha_rate(beta, lam, learning_rate)),
            "small_step_rate": 2 * lam / (1 - beta),
            # Theorem 3.1 assumes 2 lam / log(1/beta) < 1 when beta > 0.
            "theorem_condition_holds": bool(beta == 0 or 2 * lam / math.log(1 / beta) < 1),
            "transient_at_fit_start": (fast_mode / slow_mode) ** (steps // 2),
            "max_relative_error_to_recursion": float(np.max(np.abs(alpha - exact) / exact)),
        }
        if beta == 0:
            stored_steps = _subsample(steps + 1)
            row.update(step=stored_steps, alpha_over_alpha_0=alpha[stored_steps] / alpha[0])
        rows.append(row)
        logging.info(
            "SGD beta=%g lam=%g: fitted rate %.4g, exact %.4g, Theorem 3.1 bound %.4g",
            beta, lam, row["fitted_rate"], row["exact_rate"], row["theorem_rate"],
        )
    return {"learning_rate": learning_rate, "num_classes": SGD_NUM_CLASSES, "seed": seed,
            "runs": rows}


def plot_sgd_rates(record: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(11, 4.4))
    left, right = fig.subplots(1, 2)
    eta = record["learning_rate"]
    grid = [row for row in record["runs"] if row["momentum"] > 0]
    momenta = sorted({row["momentum"] for row in grid})
    for index, beta in enumerate(momenta):
        rows = [row for row in grid if row["momentum"] == beta]
        for row in rows:
            filled = row["theorem_condition_holds"]
            left.plot(row["theorem_rate"], row["fitted_rate"], "o", color=f"C{index}",
                      markerfacecolor=f"C{index}" if filled else "none")
        left.plot([row["exact_rate"] for row in rows], [row["fitted_rate"] for row in rows],
                  "x", color=f"C{index}", label=f"$\\beta$={beta:g}")
    rates = [row[key] for row in grid for key in ("theorem_rate", "exact_rate", "fitted_rate")]
    span = np.array([min(rates) / 2, max(rates) * 2])
    left.plot(span, span, color="k", linewidth=0.8, label="identity")
    left.plot([], [], "o", color="gray", label=r"circle: predicted $\lambda/\log(1/\beta)$ (Theorem 3.1)")
    left.plot([], [], "x", color="gray", label="cross: predicted exact rate of the recursion")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(r"predicted rate per unit $\eta t$")
    left.set_ylabel(r"fitted rate of $\alpha_t$ per unit $\eta t$")
    left.set_title(f"SGD, coupled decay, $\\eta$={eta:g} (hollow: theorem's condition fails)",
                   fontsize="small")
    left.legend(fontsize="x-small")
    left.grid(True, which="both", alpha=0.3)

    for index, row in enumerate(row for row in record["runs"] if row["momentum"] == 0):
        lam = row["weight_decay"]
        steps = np.asarray(row["step"])
        color = f"C{index}"
        markers = slice(None, None, max(1, len(steps) // 25))
        right.plot(steps[markers], np.asarray(row["alpha_over_alpha_0"])[markers], "o",
                   color=color, markersize=3.5, markerfacecolor="none",
                   label=f"simulation, $\\lambda$={lam:g}")
        right.plot(steps, (1 - lam * eta) ** (2 * steps), color=color,
                   label=r"$(1-\lambda\eta)^{2t}$")
        right.plot(steps, (1 - lam * eta) ** steps, color=color, linestyle="--",
                   label=r"bound $(1-\lambda\eta)^{t}$")
    right.set_yscale("log")
    right.set_xlabel("step t")
    right.set_ylabel(r"$\alpha_t / \alpha_0$")
    right.set_title(r"SGD without momentum ($\beta$=0)", fontsize="small")
    right.legend(fontsize="x-small")
    right.grid(True, which="both", alpha=0.3)
    return plotting.save_figure(fig, path)


# ---------------------------------------------------------------------------
# Figure d: NC0 of an MLP.


def compute_mlp_dynamics(settings: dict[str, Any]) -> dict[str, Any]:
    """Train the MLP with each optimizer of theory.nc0_dynamics_optimizers and keep NC0 per step."""
    dataset = data_lib.load_gaussian_mixture(samples_per_class=settings["samples_per_class"])
    chains = theory.nc0_dynamics_optimizers(
        settings["learning_rate"], settings["weight_decay"],
        settings["decoupled_weight_decay"], settings["momentum"],
    )
    nc0 = {}
    for name, tx in chains.items():
        start = time.perf_counter()
        nc0[name] = theory.train_nc0_dynamics(
            tx, dataset, epochs=settings["epochs"], batch_size=settings["batch_size"],
            hidden_sizes=settings["hidden_sizes"],
            classifier_init_scale=settings["classifier_init_scale"], seed=settings["seed"],
        )
        logging.info("MLP %s: NC0 %.3g at the start, %.3g at the end (%.1f s)",
                     name, nc0[name][0], nc0[name][-1], time.perf_counter() - start)
    return {**settings, "nc0": nc0}


def plot_mlp_dynamics(record: dict[str, Any], path: Path) -> Path:
    fig = Figure(figsize=(6.8, 4.4))
    axis = fig.subplots()
    decoupled = {"adamw", "adamw0", "signw"}
    for index, (name, values) in enumerate(record["nc0"].items()):
        values = np.asarray(values, dtype=np.float64)
        axis.plot(np.arange(len(values)), values, color=f"C{index}", linewidth=0.9,
                  linestyle="--" if name in decoupled else "-", label=name)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel(r"NC0 $\|W^\top \mathbf{1}\|_2$")
    axis.set_title(
        f"MLP {tuple(record['hidden_sizes'])} on the Gaussian mixture, "
        f"$\\eta$={record['learning_rate']:g}\ncoupled $\\lambda$={record['weight_decay']:g} "
        f"(solid), decoupled $\\lambda$={record['decoupled_weight_decay']:g} (dashed)",
        fontsize="small",
    )
    axis.legend(fontsize="x-small", ncol=2)
    axis.grid(True, which="both", alpha=0.3)
    return plotting.save_figure(fig, path)


# ---------------------------------------------------------------------------
# Entry point.


def _parse_floats(flag: flags.FlagHolder, low: float, high: float | None) -> list[float]:
    """Parse a list flag of numbers in (low, high), or > low when high is None."""
    accepted = f"in ({low:g}, {high:g})" if high is not None else f"> {low:g}"
    try:
        values = [float(value) for value in flag.value]
    except ValueError:
        raise ValueError(
            f"--{flag.name}={','.join(flag.value)} is invalid; expected comma-separated "
            f"numbers {accepted}"
        ) from None
    for value in values:
        if not (value > low and (high is None or value < high)):
            raise ValueError(f"--{flag.name} contains {value:g}; expected values {accepted}")
    if not values:
        raise ValueError(f"--{flag.name} is empty; expected one or more numbers {accepted}")
    return values


def _check_number(flag: flags.FlagHolder, low: float, high: float | None = None,
                  *, low_inclusive: bool = False) -> None:
    """Reject a number flag outside (low, high), or [low, high) when low_inclusive."""
    value = flag.value
    above_low = value >= low if low_inclusive else value > low
    if above_low and (high is None or value < high):
        return
    opening = "[" if low_inclusive else "("
    if high is not None:
        accepted = f"a value in {opening}{low:g}, {high:g})"
    else:
        accepted = f"a value {'>=' if low_inclusive else '>'} {low:g}"
    raise ValueError(f"--{flag.name}={value:g} is invalid; expected {accepted}")


def _resolve_mlp_settings(quick: bool) -> dict[str, Any]:
    """Turn the --mlp_* flags into the settings of figure d; --quick shrinks the run."""
    try:
        hidden_sizes = [int(size) for size in _MLP_HIDDEN_SIZES.value]
    except ValueError:
        hidden_sizes = []
    if not hidden_sizes or min(hidden_sizes) < 1:
        raise ValueError(
            f"--mlp_hidden_sizes={','.join(_MLP_HIDDEN_SIZES.value)} is invalid; expected "
            "comma-separated integers >= 1"
        )
    for flag in (_MLP_EPOCHS, _MLP_SAMPLES_PER_CLASS, _MLP_BATCH_SIZE):
        if flag.value < 1:
            raise ValueError(f"--{flag.name}={flag.value} is invalid; expected an integer >= 1")
    _check_number(_MLP_LEARNING_RATE, 0.0)
    _check_number(_MLP_MOMENTUM, 0.0, 1.0, low_inclusive=True)
    _check_number(_MLP_WEIGHT_DECAY, 0.0, low_inclusive=True)
    _check_number(_MLP_DECOUPLED_WEIGHT_DECAY, 0.0, low_inclusive=True)
    _check_number(_MLP_CLASSIFIER_INIT_SCALE, 0.0)

    mlp = {
        "learning_rate": _MLP_LEARNING_RATE.value,
        "momentum": _MLP_MOMENTUM.value,
        "weight_decay": _MLP_WEIGHT_DECAY.value,
        "decoupled_weight_decay": _MLP_DECOUPLED_WEIGHT_DECAY.value,
        "epochs": 2 if quick else _MLP_EPOCHS.value,
        "samples_per_class": 20 if quick else _MLP_SAMPLES_PER_CLASS.value,
        "hidden_sizes": [16] if quick else hidden_sizes,
        "batch_size": 20 if quick else _MLP_BATCH_SIZE.value,
        "classifier_init_scale": _MLP_CLASSIFIER_INIT_SCALE.value,
        "seed": _SEED.value,
    }
    num_examples = mlp["samples_per_class"] * data_lib.GAUSSIAN_MIXTURE_NUM_CLASSES
    if mlp["batch_size"] > num_examples:
        raise ValueError(
            f"--mlp_batch_size={mlp['batch_size']} is invalid for {num_examples} training "
            f"samples; expected a value <= {num_examples}"
        )
    return mlp


def resolve_settings() -> dict[str, Any]:
    """Turn the flags into the settings of the four figures, rejecting invalid values."""
    quick = _QUICK.value
    momenta = _parse_floats(_SGD_MOMENTA, 0.0, 1.0)
    weight_decays = _parse_floats(_SGD_WEIGHT_DECAYS, 0.0, None)
    _check_number(_SGD_LEARNING_RATE, 0.0)
    return {
        "quick": quick,
        "decoupled_steps": DECOUPLED_STEPS_QUICK if quick else DECOUPLED_STEPS,
        "coupled_time": COUPLED_TIME,
        "sgd_learning_rate": _SGD_LEARNING_RATE.value,
        "sgd_momenta": momenta[:1] if quick else momenta,
        "sgd_weight_decays": weight_decays[-1:] if quick else weight_decays,
        "sgd_max_steps": SGD_MAX_STEPS_QUICK if quick else SGD_MAX_STEPS,
        "mlp": _resolve_mlp_settings(quick),
    }


def run(settings: dict[str, Any], workdir: Path) -> dict[str, Path]:
    """Compute the four figures' numbers, write them as JSON and draw the figures from those files."""
    computations = {
        "sign_descent_decoupled": (
            lambda: compute_decoupled_sign_descent(DECOUPLED_SETTINGS, settings["decoupled_steps"]),
            plot_decoupled_sign_descent,
        ),
        "sign_descent_coupled": (
            lambda: compute_coupled_sign_descent(
                COUPLED_NUM_CLASSES, COUPLED_WEIGHT_DECAY, COUPLED_LEARNING_RATES,
                settings["coupled_time"],
            ),
            plot_coupled_sign_descent,
        ),
        "sgd_nc0_rate": (
            lambda: compute_sgd_rates(
                settings["sgd_learning_rate"], settings["sgd_momenta"],
                settings["sgd_weight_decays"], settings["sgd_max_steps"], _SEED.value,
            ),
            plot_sgd_rates,
        ),
        "nc0_dynamics_mlp": (lambda: compute_mlp_dynamics(settings["mlp"]), plot_mlp_dynamics),
    }
    figures = {}
    for name, (compute, plot) in computations.items():
        start = time.perf_counter()
        json_path = workdir / f"{name}.json"
        results.write_json(json_path, compute())
        figures[name] = plot(results.read_json(json_path), workdir / f"{name}.png")
        logging.info("Wrote %s and %s (%.1f s)", json_path, figures[name],
                     time.perf_counter() - start)
    return figures


def main(argv):
    del argv  # cli.run has rejected any argument that is not a flag.
    workdir = Path(_WORKDIR.value)
    try:
        settings = resolve_settings()
        check_workdir(workdir)
    except ValueError as error:
        cli.fail(str(error))
    start = time.perf_counter()
    figures = run(settings, workdir)
    print(f"Figures in {workdir} ({time.perf_counter() - start:.0f} s):")
    for path in figures.values():
        print(f"  {path}")


def check_workdir(workdir: Path) -> None:
    """Reject a --workdir that is a file or cannot be created, before any work."""
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir: {workdir} exists and is not a directory; choose another")
    for parent in workdir.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(
                    f"--workdir={workdir} cannot be created: {parent} is not a writable directory"
                )
            break



if __name__ == "__main__":
    cli.run(main)
