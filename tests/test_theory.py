"""Tests of ncjax.theory: closed forms and recursions against simulation, and experiments.theory."""

import json
import math
import os
from pathlib import Path
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import data
from ncjax import metrics
from ncjax import optimizers
from ncjax import theory

REPO = Path(__file__).resolve().parents[1]


def simulate_float64(tx, num_classes, steps, initial_weights=None):
    with jax.enable_x64(True):
        if initial_weights is not None:
            initial_weights = jnp.asarray(initial_weights, jnp.float64)
        alpha = theory.simulate_fixed_etf(
            tx, num_classes, steps, initial_weights=initial_weights, dtype=jnp.float64
        )
        return np.asarray(alpha)


# Sign descent with decoupled weight decay.

DECOUPLED_CASES = [(10, 0.01, 0.05), (3, 0.02, 0.05), (5, 0.1, 0.2), (10, 0.1, 0.01)]


@pytest.mark.parametrize("num_classes, learning_rate, weight_decay", DECOUPLED_CASES)
def test_decoupled_alpha_matches_simulation(num_classes, learning_rate, weight_decay):
    steps = 3000
    tx = optimizers.signumw(learning_rate, 0.0, weight_decay)

    simulated = simulate_float64(tx, num_classes, steps)
    closed_form = np.asarray(theory.sign_descent_decoupled_alpha(
        np.arange(steps + 1, dtype=np.float64), num_classes, learning_rate, weight_decay
    ))

    np.testing.assert_allclose(simulated, closed_form, rtol=1e-9, atol=0)


@pytest.mark.parametrize("num_classes, learning_rate, weight_decay", DECOUPLED_CASES[:2])
def test_decoupled_weights_closed_form(num_classes, learning_rate, weight_decay):
    steps = 500
    tx = optimizers.signumw(learning_rate, 0.0, weight_decay)
    with jax.enable_x64(True):
        run = theory.simulate_fixed_features(
            tx,
            metrics.simplex_etf(num_classes, jnp.float64),
            jnp.arange(num_classes),
            jnp.zeros((num_classes, num_classes), jnp.float64),
            steps,
        )
        weights = np.asarray(run.weights)

    w_t = theory.sign_descent_decoupled_w(steps, learning_rate, weight_decay)
    expected = w_t * (np.ones((num_classes, num_classes)) - 2 * np.eye(num_classes))
    np.testing.assert_allclose(weights, expected, rtol=1e-9)


def test_decoupled_alpha_tends_to_limit():
    limit = theory.sign_descent_decoupled_alpha_limit(10, 0.05)

    assert limit == pytest.approx(64 / 0.05**2, rel=1e-12)
    late = float(theory.sign_descent_decoupled_alpha(1e6, 10, 0.01, 0.05))
    assert late == pytest.approx(limit, rel=1e-12)


def test_decoupled_alpha_increases_monotonically():
    alpha = np.asarray(theory.sign_descent_decoupled_alpha(np.arange(2000.0), 5, 0.01, 0.1))

    assert np.all(np.diff(alpha) > 0)


# Sign descent with coupled weight decay.


@pytest.fixture(scope="module")
def coupled_runs():
    """Coupled sign descent on the fixed-ETF UFM, keyed by (K, lam, eta), over eta t <= 6."""
    runs = {}
    for num_classes, weight_decay in [(10, 0.01), (4, 0.05)]:
        for learning_rate in (0.01, 0.005):
            tx = optimizers.signum(learning_rate, 0.0, weight_decay)
            steps = math.ceil(6 / learning_rate)
            runs[num_classes, weight_decay, learning_rate] = simulate_float64(
                tx, num_classes, steps
            )
    return runs


def test_coupled_rise_matches_closed_form_until_peak(coupled_runs):
    for (num_classes, weight_decay, learning_rate), alpha in coupled_runs.items():
        peak = theory.sign_descent_coupled_peak_step(num_classes, learning_rate, weight_decay)
        t = np.arange(peak + 1)

        np.testing.assert_allclose(
            alpha[: peak + 1], (num_classes - 2) ** 2 * learning_rate**2 * t**2,
            rtol=1e-9, atol=0,
        )
        assert np.all(np.diff(alpha[: peak + 1]) > 0)


def test_coupled_peak_step_matches_simulation(coupled_runs):
    for (num_classes, weight_decay, learning_rate), alpha in coupled_runs.items():
        turning = theory.find_turning_points(alpha)

        predicted = theory.sign_descent_coupled_peak_step(num_classes, learning_rate, weight_decay)
        assert turning.peak_step == predicted, (num_classes, weight_decay, learning_rate)


def test_coupled_alpha_falls_after_peak(coupled_runs):
    for key, alpha in coupled_runs.items():
        turning = theory.find_turning_points(alpha)

        assert np.all(alpha[turning.peak_step + 1:] < alpha[turning.peak_step]), key
        assert turning.oscillation_start > turning.peak_step, key
        # The band at the end is tiny next to the peak.
        assert turning.band_high < 1e-2 * alpha[turning.peak_step], key


def test_coupled_band_scales_with_eta_squared(coupled_runs):
    for num_classes, weight_decay in [(10, 0.01), (4, 0.05)]:
        bands, peaks = [], []
        for learning_rate in (0.01, 0.005):
            alpha = coupled_runs[num_classes, weight_decay, learning_rate]
            turning = theory.find_turning_points(alpha)
            bands.append(turning.band_high / learning_rate**2)
            peaks.append(alpha[turning.peak_step])

        # Entries of W move on a lattice of spacing eta, so alpha / eta^2 is a
        # square integer. The band's top stays between 1 and K^2 at both
        # rates, while the peak keeps its size.
        for band in bands:
            assert 1 - 1e-6 <= band <= num_classes**2
        assert peaks[1] == pytest.approx(peaks[0], rel=0.1)


def test_coupled_turning_times_scale_with_one_over_eta(coupled_runs):
    for num_classes, weight_decay in [(10, 0.01), (4, 0.05)]:
        times = []
        for learning_rate in (0.01, 0.005):
            turning = theory.find_turning_points(
                coupled_runs[num_classes, weight_decay, learning_rate]
            )
            times.append((learning_rate * turning.peak_step,
                          learning_rate * turning.oscillation_start))

        assert times[1][0] == pytest.approx(times[0][0], rel=0.05)
        assert times[1][1] == pytest.approx(times[0][1], rel=0.05)


def test_find_turning_points_synthetic():
    alpha = [0, 1, 2, 3, 2.5, 2.6, 1, 0.5, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2]

    turning = theory.find_turning_points(alpha)

    assert turning.peak_step == 3
    assert turning.oscillation_start == 8
    assert turning.band_low == pytest.approx(0.1, abs=0)
    assert turning.band_high == pytest.approx(0.2, abs=0)


def test_find_turning_points_rejects_monotone_alpha():
    with pytest.raises(ValueError, match="never decreases in its 4 values"):
        theory.find_turning_points([0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "args, message",
    [
        ((2, 0.01, 0.01), "num_classes=2 is invalid; expected an integer >= 3"),
        ((10, 0.0, 0.01), "learning_rate=0.0 is invalid; expected a value > 0"),
        ((10, 0.01, -1.0), "weight_decay=-1.0 is invalid; expected a value > 0"),
    ],
)
def test_coupled_peak_step_invalid_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        theory.sign_descent_coupled_peak_step(*args)


# SGD with momentum and coupled weight decay.

SGD_CASES = [(0.9, 0.01), (0.5, 0.05), (0.95, 0.005)]
SGD_LEARNING_RATE = 0.01


def random_weights(num_classes, seed=0):
    return np.random.default_rng(seed).standard_normal((num_classes, num_classes))


@pytest.mark.parametrize("momentum, weight_decay", SGD_CASES + [(0.0, 0.05)])
def test_sgd_alpha_follows_recursion(momentum, weight_decay):
    steps = 4000
    tx = optimizers.sgd(SGD_LEARNING_RATE, momentum, weight_decay)

    simulated = simulate_float64(tx, 10, steps, initial_weights=random_weights(10))

    exact = theory.sgd_alpha_recursion(
        simulated[0], steps, SGD_LEARNING_RATE, momentum, weight_decay
    )
    np.testing.assert_allclose(simulated, exact, rtol=1e-9)


@pytest.mark.parametrize("momentum, weight_decay", SGD_CASES)
def test_sgd_fitted_rate_matches_exact_rate(momentum, weight_decay):
    tx = optimizers.sgd(SGD_LEARNING_RATE, momentum, weight_decay)
    simulated = simulate_float64(tx, 10, 4000, initial_weights=random_weights(10))

    fitted = theory.fit_exponential_rate(simulated, SGD_LEARNING_RATE)

    exact = theory.sgd_alpha_rate(momentum, weight_decay, SGD_LEARNING_RATE)
    assert fitted == pytest.approx(exact, rel=1e-6)
    # For small eta lam the exact rate is close to 2 lam / (1 - beta).
    assert exact == pytest.approx(2 * weight_decay / (1 - momentum), rel=0.03)


@pytest.mark.parametrize("momentum, weight_decay", SGD_CASES)
def test_sgd_fitted_rate_exceeds_theorem_bound(momentum, weight_decay):
    tx = optimizers.sgd(SGD_LEARNING_RATE, momentum, weight_decay)
    simulated = simulate_float64(tx, 10, 4000, initial_weights=random_weights(10))

    fitted = theory.fit_exponential_rate(simulated, SGD_LEARNING_RATE)

    bound = theory.predicted_sgd_rate(momentum, weight_decay)
    assert bound == pytest.approx(weight_decay / math.log(1 / momentum), rel=1e-12)
    # Theorem 3.1 bounds alpha from above, so alpha decays at least as fast,
    # here by the factor 2 log(1/beta) / (1 - beta) of the small-step rate.
    assert fitted > bound
    assert fitted / bound == pytest.approx(2 * math.log(1 / momentum) / (1 - momentum), rel=0.05)


def test_sgd_without_momentum_decays_as_square_of_bound():
    weight_decay = 0.05
    tx = optimizers.sgd(SGD_LEARNING_RATE, 0.0, weight_decay)
    simulated = simulate_float64(tx, 10, 2000, initial_weights=random_weights(10))

    t = np.arange(2001)
    factor = 1 - SGD_LEARNING_RATE * weight_decay
    np.testing.assert_allclose(simulated / simulated[0], factor ** (2 * t), rtol=1e-9)
    bound_rate = theory.predicted_sgd_rate(0.0, weight_decay, learning_rate=SGD_LEARNING_RATE)
    assert bound_rate == pytest.approx(-math.log(factor) / SGD_LEARNING_RATE, rel=1e-12)
    assert theory.predicted_sgd_rate(0.0, weight_decay) == weight_decay


def test_sgd_alpha_modes_multiply_to_momentum():
    slow, fast = theory.sgd_alpha_modes(0.9, 0.01, 0.01)

    assert slow >= fast
    assert slow * fast == pytest.approx(0.9, rel=1e-12)


def test_fit_exponential_rate_exact_exponential():
    t = np.arange(101)
    alpha = 3.0 * np.exp(-0.7 * 0.05 * t)

    assert theory.fit_exponential_rate(alpha, 0.05) == pytest.approx(0.7, rel=1e-10)


def test_fit_exponential_rate_skips_zeros():
    alpha = np.exp(-0.1 * np.arange(50.0))
    alpha[40:] = 0.0

    assert theory.fit_exponential_rate(alpha, 1.0) == pytest.approx(0.1, rel=1e-10)


def test_fit_exponential_rate_too_few_values():
    with pytest.raises(ValueError, match="only 1 positive finite values"):
        theory.fit_exponential_rate([1.0, 0.5, 0.25, 0.0], 0.1)


# NC0 of an MLP.


@pytest.fixture(scope="module")
def small_mixture():
    return data.load_gaussian_mixture(samples_per_class=10, dim=40)


def test_mlp_sgd_nc0_follows_recursion(small_mixture):
    learning_rate, momentum, weight_decay = 0.05, 0.9, 0.05
    tx = optimizers.sgd(learning_rate, momentum, weight_decay)

    nc0 = theory.train_nc0_dynamics(
        tx, small_mixture, epochs=3, batch_size=20, hidden_sizes=(16,)
    )

    assert nc0.shape == (3 * 5 + 1,)
    # The classifier's gradient has zero column sums, so W^T 1 follows the
    # SGD recursion whatever the features do.
    alpha = theory.sgd_alpha_recursion(1.0, 15, learning_rate, momentum, weight_decay)
    np.testing.assert_allclose(nc0, nc0[0] * np.sqrt(alpha), rtol=1e-4)


def test_mlp_classifier_init_scale(small_mixture):
    tx = optimizers.sgd(0.0)

    full = theory.train_nc0_dynamics(
        tx, small_mixture, epochs=1, batch_size=50, hidden_sizes=(16,), classifier_init_scale=1.0
    )
    scaled = theory.train_nc0_dynamics(
        tx, small_mixture, epochs=1, batch_size=50, hidden_sizes=(16,), classifier_init_scale=0.01
    )

    assert scaled[0] == pytest.approx(0.01 * full[0], rel=1e-5)


def test_nc0_dynamics_optimizers_names():
    chains = theory.nc0_dynamics_optimizers(1e-3, 0.05, 0.5)

    assert tuple(chains) == theory.NC0_DYNAMICS_OPTIMIZERS


# experiments.theory as a user runs it.


def run_experiment(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "experiments.theory", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_experiment_quick_writes_figures_and_json(tmp_path):
    result = run_experiment("--quick", f"--workdir={tmp_path}")

    assert result.returncode == 0, result.stderr
    names = ["sign_descent_decoupled", "sign_descent_coupled", "sgd_nc0_rate", "nc0_dynamics_mlp"]
    for name in names:
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.json").is_file()
    decoupled = json.loads((tmp_path / "sign_descent_decoupled.json").read_text())
    for row in decoupled["settings"]:
        assert row["max_relative_error"] < 1e-9
    coupled = json.loads((tmp_path / "sign_descent_coupled.json").read_text())
    for run in coupled["runs"]:
        assert run["peak_step"] == run["peak_step_predicted"]
    mlp = json.loads((tmp_path / "nc0_dynamics_mlp.json").read_text())
    assert sorted(mlp["nc0"]) == sorted(theory.NC0_DYNAMICS_OPTIMIZERS)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--sgd_momenta=0.5,1.5"], ["--sgd_momenta contains 1.5", "in (0, 1)"]),
        (["--sgd_weight_decays=x"], ["--sgd_weight_decays=x is invalid", "> 0"]),
        (["--mlp_hidden_sizes=0"], ["--mlp_hidden_sizes=0 is invalid"]),
        (["--mlp_epochs=abc"], ["mlp_epochs", "abc"]),
        (["--no_such_flag"], ["no_such_flag"]),
    ],
)
def test_experiment_bad_flag_one_line_exit_2(tmp_path, args, fragments):
    result = run_experiment(*args, f"--workdir={tmp_path / 'out'}")

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
