"""Tests of ncjax.ufm against closed forms, ncjax.metrics and one-at-a-time runs."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import metrics
from ncjax import ufm


@pytest.fixture
def float64():
    """Run the test with 64-bit JAX types, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


def _fixed_etf_config(num_classes, steps, optimizer="signumw", **overrides):
    """Config of the fixed-feature setting: p = N = K, H = E, only W trained."""
    return ufm.UFMConfig(
        num_classes=num_classes,
        dim=num_classes,
        samples_per_class=1,
        optimizer=optimizer,
        steps=steps,
        eval_every=1,
        train_features=False,
        record_classifier=True,
        **overrides,
    )


def _fixed_etf_params(num_classes):
    return {
        "H": metrics.simplex_etf(num_classes, jnp.float64),
        "W": jnp.zeros((num_classes, num_classes), jnp.float64),
    }


@pytest.mark.parametrize("num_classes, learning_rate, weight_decay", [(3, 0.1, 0.5), (5, 0.01, 1.0), (10, 0.05, 0.2)])
def test_decoupled_sign_descent_closed_form(float64, num_classes, learning_rate, weight_decay):
    steps = 300
    config = _fixed_etf_config(num_classes, steps)
    hparams = ufm.UFMHyperparameters(learning_rate=learning_rate, momentum=0.0, weight_decay=weight_decay)

    _, history = ufm.train_ufm(config, hparams, initial_params=_fixed_etf_params(num_classes))

    # The signed gradient is J - 2I at every step, so W_t = w_t (J - 2I).
    t = np.arange(steps + 1)
    shrinkage = 1 - (1 - learning_rate * weight_decay) ** t
    w = -shrinkage / weight_decay
    sign_matrix = np.ones((num_classes, num_classes)) - 2 * np.eye(num_classes)
    expected_W = w[:, None, None] * sign_matrix
    expected_alpha = (num_classes - 2) ** 2 * shrinkage**2 / weight_decay**2
    np.testing.assert_array_equal(history["step"], t)
    assert history["W"].dtype == jnp.float64
    np.testing.assert_allclose(history["W"], expected_W, rtol=1e-9, atol=0)
    np.testing.assert_allclose(history["nc0_alpha"], expected_alpha, rtol=1e-9, atol=0)


def test_sign_descent_step_decay_recursion(float64):
    num_classes, learning_rate, weight_decay, steps = 4, 0.1, 0.5, 30
    config = _fixed_etf_config(num_classes, steps, step_decay=True)
    hparams = ufm.UFMHyperparameters(learning_rate=learning_rate, momentum=0.0, weight_decay=weight_decay)

    _, history = ufm.train_ufm(config, hparams, initial_params=_fixed_etf_params(num_classes))

    # Divided by 10 from step 10 and again from step 20 of 30.
    sign_matrix = np.ones((num_classes, num_classes)) - 2 * np.eye(num_classes)
    W = np.zeros((num_classes, num_classes))
    expected_W = [W]
    for t in range(steps):
        eta = learning_rate * 0.1 ** ((t >= 10) + (t >= 20))
        W = W - eta * (sign_matrix + weight_decay * W)
        expected_W.append(W)
    np.testing.assert_allclose(history["W"], np.stack(expected_W), rtol=1e-12, atol=0)


def test_fixed_features_stay_fixed(float64):
    config = _fixed_etf_config(3, steps=5, optimizer="adam", bias=True)
    initial_params = _fixed_etf_params(3) | {"b": jnp.zeros(3, jnp.float64)}
    hparams = ufm.UFMHyperparameters(learning_rate=0.1, momentum=0.9, weight_decay=0.5)

    final_params, _ = ufm.train_ufm(config, hparams, initial_params=initial_params)

    np.testing.assert_array_equal(final_params["H"], initial_params["H"])
    assert np.all(final_params["W"] != 0)
    assert np.all(final_params["b"] != 0)


@pytest.mark.parametrize("bias", [False, True])
def test_no_decay_keeps_classifier_sum(float64, bias):
    # Cross-entropy gradients of W (and b) have columns that sum to zero, so
    # without decay plain gradient descent never changes W^T 1.
    config = ufm.UFMConfig(
        num_classes=4, dim=6, samples_per_class=3, optimizer="sgd", steps=40, eval_every=10, bias=bias
    )
    hparams = ufm.UFMHyperparameters(learning_rate=0.5, momentum=0.9, weight_decay=0.0)

    final_params, history = ufm.train_ufm(config, hparams)

    initial_nc0 = history["nc0"][0]
    np.testing.assert_allclose(history["nc0"], initial_nc0, rtol=1e-12)
    assert history["train_loss"][-1] < history["train_loss"][0]
    if bias:
        np.testing.assert_allclose(final_params["b"].sum(), 0.0, atol=1e-14)


@pytest.mark.parametrize("bias", [False, True])
def test_metrics_match_ncjax_metrics(float64, bias):
    config = ufm.UFMConfig(
        num_classes=3, dim=5, samples_per_class=4, optimizer="adamw", steps=20, eval_every=20, bias=bias
    )
    hparams = ufm.UFMHyperparameters(learning_rate=0.05, momentum=0.9, weight_decay=0.01, seed=3)

    initial_params = ufm.init_ufm(config, jax.random.key(3))
    final_params, history = ufm.train_ufm(config, hparams)

    labels = np.repeat(np.arange(3), 4)
    np.testing.assert_array_equal(ufm.ufm_labels(config), labels)
    for index, params in [(0, initial_params), (-1, final_params)]:
        H, W = np.asarray(params["H"]), np.asarray(params["W"])
        stats = metrics.class_statistics(jnp.asarray(H.T), jnp.asarray(labels), 3)
        expected = metrics.collapse_metrics(stats, jnp.asarray(W))
        for name in expected:
            np.testing.assert_allclose(history[name][index], expected[name], rtol=1e-10, err_msg=name)

        logits = W @ H + (np.asarray(params["b"])[:, None] if bias else 0.0)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=0))
        expected_loss = -np.mean(log_probabilities[labels, np.arange(12)])
        expected_accuracy = np.mean(np.argmax(logits, axis=0) == labels)
        np.testing.assert_allclose(history["train_loss"][index], expected_loss, rtol=1e-10)
        np.testing.assert_allclose(history["train_accuracy"][index], expected_accuracy, rtol=1e-12)
    np.testing.assert_array_equal(history["step"], [0, 20])


def test_adamw_keeps_nc0_far_above_adam():
    settings = dict(learning_rate=0.01, momentum=0.9, weight_decay=5e-3)
    final_nc0 = {}
    for name in ("adam", "adamw"):
        config = ufm.UFMConfig(
            num_classes=4, dim=16, samples_per_class=10, optimizer=name, steps=2000, eval_every=500
        )
        _, history = ufm.train_ufm(config, ufm.UFMHyperparameters(**settings))

        assert history["train_accuracy"][-1] == 1.0, name
        final_nc0[name] = float(history["nc0"][-1])

    assert final_nc0["adamw"] >= 100 * final_nc0["adam"]


GRID_CONFIG = ufm.UFMConfig(num_classes=3, dim=8, samples_per_class=4, optimizer="adam", steps=30, eval_every=10)


def test_grid_matches_single_runs():
    full_grid = ufm.hyperparameter_grid(
        learning_rate=[0.01, 0.05], momentum=0.9, weight_decay=0.01, coupled_share=[0.0, 0.5, 1.0], seed=[0, 1]
    )
    # Scalar fields are shared by every grid point.
    grid = full_grid._replace(momentum=0.9, weight_decay=0.01)

    final_params, history = ufm.train_ufm_grid(GRID_CONFIG, grid, return_params=True)

    assert history["nc0"].shape == (12, 4)
    assert final_params["H"].shape == (12, 8, 12)
    for index in range(12):
        hparams = jax.tree.map(lambda values: values[index], full_grid)
        expected_params, expected_history = ufm.train_ufm(GRID_CONFIG, hparams)
        for name, values in expected_history.items():
            np.testing.assert_allclose(history[name][index], values, rtol=1e-5, atol=1e-6, err_msg=f"{index}, {name}")
        for name, values in expected_params.items():
            np.testing.assert_allclose(final_params[name][index], values, rtol=1e-5, atol=1e-6, err_msg=f"{index}, {name}")


@pytest.mark.parametrize("batch_size", [1, 5])
def test_batched_grid_matches_one_vmap(batch_size):
    # 12 points in batches of 5 leave a remainder batch of 2.
    grid = ufm.hyperparameter_grid(
        learning_rate=[0.01, 0.05], momentum=0.9, weight_decay=0.01, coupled_share=[0.0, 0.5, 1.0], seed=[0, 1]
    )

    final_params, history = ufm.train_ufm_grid(GRID_CONFIG, grid, return_params=True)
    batched_params, batched_history = ufm.train_ufm_grid(
        GRID_CONFIG, grid, return_params=True, batch_size=batch_size
    )

    for name, values in history.items():
        np.testing.assert_allclose(batched_history[name], values, rtol=1e-5, atol=1e-6, err_msg=name)
    for name, values in final_params.items():
        np.testing.assert_allclose(batched_params[name], values, rtol=1e-5, atol=1e-6, err_msg=name)


def test_second_grid_does_not_recompile():
    # A config used by no other test, so its program is not cached yet.
    config = GRID_CONFIG._replace(optimizer="signum", steps=7, eval_every=3)
    first = ufm.hyperparameter_grid(learning_rate=[0.01, 0.1], momentum=[0.0, 0.9], weight_decay=0.01, seed=0)
    second = ufm.hyperparameter_grid(learning_rate=[0.02, 0.3], momentum=[0.5, 0.95], weight_decay=0.2, seed=4)
    compilations = []

    def count_compilation(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compilations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count_compilation)
    try:
        first_history = ufm.train_ufm_grid(config, first)
        second_history = ufm.train_ufm_grid(config, second)
    finally:
        jax.monitoring.unregister_event_duration_listener(count_compilation)

    assert len(compilations) == 1
    assert not np.allclose(first_history["nc0"], second_history["nc0"])


def test_hyperparameter_grid_order():
    grid = ufm.hyperparameter_grid(learning_rate=[0.1, 0.2], momentum=0.9, weight_decay=[0.0, 0.5, 1.0], seed=[7, 8])

    assert grid.coupled_share is None
    assert grid.seed.dtype == np.int32
    np.testing.assert_array_equal(grid.learning_rate, np.repeat([0.1, 0.2], 6))
    np.testing.assert_array_equal(grid.momentum, np.full(12, 0.9))
    np.testing.assert_array_equal(grid.weight_decay, np.tile(np.repeat([0.0, 0.5, 1.0], 2), 2))
    np.testing.assert_array_equal(grid.seed, np.tile([7, 8], 6))


def test_evaluation_steps():
    np.testing.assert_array_equal(ufm.evaluation_steps(ufm.UFMConfig(steps=25, eval_every=10)), [0, 10, 20, 25])
    np.testing.assert_array_equal(ufm.evaluation_steps(ufm.UFMConfig(steps=20, eval_every=10)), [0, 10, 20])
    np.testing.assert_array_equal(ufm.evaluation_steps(ufm.UFMConfig(steps=0, eval_every=10)), [0])


INVALID_CASES = [
    pytest.param(dict(num_classes=1), {}, "num_classes=1 is invalid; expected an integer >= 2", id="classes"),
    pytest.param(dict(eval_every=0), {}, "eval_every=0 is invalid; expected an integer >= 1", id="eval-every"),
    pytest.param(dict(steps=-1), {}, "steps=-1 is invalid; expected an integer >= 0", id="steps"),
    pytest.param(dict(init_scale=0.0), {}, "init_scale=0.0 is invalid; expected a value > 0", id="init-scale"),
    pytest.param(dict(optimizer="lion"), {}, "unknown optimizer 'lion'", id="optimizer"),
    pytest.param({}, dict(learning_rate=-0.1), "learning_rate=-0.1 is invalid; expected a value >= 0", id="lr"),
    pytest.param({}, dict(momentum=1.0), "momentum=1.0 is invalid; expected a value in [0, 1)", id="momentum"),
    pytest.param({}, dict(weight_decay=float("nan")), "weight_decay=nan is invalid", id="wd-nan"),
    pytest.param({}, dict(coupled_share=2.0), "coupled_share=2.0 is invalid; expected a value in [0, 1]", id="share"),
]


@pytest.mark.parametrize("config_fields, hparam_fields, message", INVALID_CASES)
def test_invalid_value_raises(config_fields, hparam_fields, message):
    config = ufm.UFMConfig(num_classes=3, dim=4, samples_per_class=2, steps=2, eval_every=1)._replace(**config_fields)
    hparams = ufm.UFMHyperparameters(learning_rate=0.1, momentum=0.9, weight_decay=0.0)._replace(**hparam_fields)

    with pytest.raises(ValueError, match=re.escape(message)):
        ufm.train_ufm(config, hparams)


def test_invalid_grid_raises():
    config = ufm.UFMConfig(num_classes=3, dim=4, samples_per_class=2, steps=2, eval_every=1)
    uneven = ufm.UFMHyperparameters(learning_rate=np.array([0.1, 0.2]), momentum=np.array([0.9]), weight_decay=np.zeros(2))

    with pytest.raises(ValueError, match=re.escape("same length, got lengths [1, 2]")):
        ufm.train_ufm_grid(config, uneven)
    with pytest.raises(ValueError, match="the grid has no 1-D field"):
        ufm.train_ufm_grid(config, ufm.UFMHyperparameters(learning_rate=0.1, momentum=0.9, weight_decay=0.0))
    with pytest.raises(ValueError, match=re.escape("momentum=1.5 is invalid; expected a value in [0, 1)")):
        ufm.hyperparameter_grid(learning_rate=0.1, momentum=[0.9, 1.5], weight_decay=0.0)
    grid = ufm.hyperparameter_grid(learning_rate=[0.1, 0.2], momentum=0.9, weight_decay=0.0)
    for batch_size in (0, 1.5, True):
        with pytest.raises(ValueError, match=re.escape(f"batch_size={batch_size!r} is invalid; expected None or")):
            ufm.train_ufm_grid(config, grid, batch_size=batch_size)


def test_invalid_initial_params_raise():
    config = ufm.UFMConfig(num_classes=3, dim=4, samples_per_class=2, steps=2, eval_every=1, bias=True)
    hparams = ufm.UFMHyperparameters(learning_rate=0.1, momentum=0.9, weight_decay=0.0)
    params = {"H": np.zeros((4, 6)), "W": np.zeros((3, 4))}

    with pytest.raises(ValueError, match=re.escape("has keys ['H', 'W']; expected ['H', 'W', 'b'] for bias=True")):
        ufm.train_ufm(config, hparams, initial_params=params)
    with pytest.raises(ValueError, match=re.escape("initial_params['W'] has shape (4, 3); expected (3, 4)")):
        ufm.train_ufm(config, hparams, initial_params=params | {"W": np.zeros((4, 3)), "b": np.zeros(3)})
