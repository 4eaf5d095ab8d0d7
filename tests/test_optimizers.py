"""Tests for ncjax.optimizers against hand-written float64 update rules and PyTorch."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ncjax import optimizers

NUM_EPOCHS = 6
STEPS_PER_EPOCH = 4
NUM_STEPS = NUM_EPOCHS * STEPS_PER_EPOCH
# Decay applies to the matrix "w" only, as for a network whose biases do not decay.
DECAY_MASK = {"w": True, "b": False}


@pytest.fixture
def float64():
    """Run the test with 64-bit JAX types, restoring the previous setting afterwards."""
    with jax.enable_x64(True):
        yield


def _random_problem(seed: int, num_steps: int = NUM_STEPS):
    """Return float64 numpy parameters (two leaves) and a list of gradients."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    gradients = [{name: rng.normal(size=value.shape) for name, value in params.items()} for _ in range(num_steps)]
    return params, gradients


def _run_optax(optimizer, params, gradients):
    """Apply `optimizer` to the gradient sequence under jit and return the parameters after each step."""
    params = jax.tree.map(jnp.asarray, params)
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    trajectory = []
    for grads in gradients:
        updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(jax.tree.map(np.asarray, params))
    return trajectory


# Reference update rules in numpy, one parameter leaf at a time. Each takes the
# 1-based step t and the learning rate eta of that step. The rule adds
# `coupled_decay * w` to the gradient before the moment and `decoupled_decay * w`
# to the step after it.


def _heavy_ball_rule(w, g, state, t, eta, *, momentum, coupled_decay, decoupled_decay):
    del t
    v = momentum * state.get("v", 0.0) + (g + coupled_decay * w)
    return w - eta * (v + decoupled_decay * w), {"v": v}


def _adam_rule(w, g, state, t, eta, *, beta1, beta2, eps, coupled_decay, decoupled_decay):
    d = g + coupled_decay * w
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * d
    s = beta2 * state.get("s", 0.0) + (1 - beta2) * d * d
    m_hat = m / (1 - beta1**t)
    s_hat = s / (1 - beta2**t)
    return w - eta * (m_hat / (np.sqrt(s_hat) + eps) + decoupled_decay * w), {"m": m, "s": s}


def _signum_rule(w, g, state, t, eta, *, beta, coupled_decay, decoupled_decay):
    del t
    m = beta * state.get("m", 0.0) + (1 - beta) * (g + coupled_decay * w)
    return w - eta * (np.sign(m) + decoupled_decay * w), {"m": m}


def _run_reference(rule, params, gradients, learning_rates, decay_mask, **hyperparameters):
    """Apply `rule` leaf by leaf; leaves where `decay_mask` is False get no decay."""
    params = {name: value.copy() for name, value in params.items()}
    states = {name: {} for name in params}
    trajectory = []
    for t, (grads, eta) in enumerate(zip(gradients, learning_rates), start=1):
        for name in params:
            leaf_hyperparameters = dict(hyperparameters)
            if not decay_mask[name]:
                leaf_hyperparameters.update(coupled_decay=0.0, decoupled_decay=0.0)
            params[name], states[name] = rule(params[name], grads[name], states[name], t, eta, **leaf_hyperparameters)
        trajectory.append({name: value.copy() for name, value in params.items()})
    return trajectory


def _reference_step_decay(learning_rate, num_steps):
    """Learning rate of each step, divided by 10 from epoch 2 and again from epoch 4 of 6."""
    epochs = np.arange(num_steps) // STEPS_PER_EPOCH
    drops = (epochs >= NUM_EPOCHS // 3).astype(int) + (epochs >= 2 * NUM_EPOCHS // 3).astype(int)
    return learning_rate * 0.1**drops


def _assert_trajectories_close(actual, expected, *, rtol):
    assert len(actual) == len(expected)
    for step, (actual_params, expected_params) in enumerate(zip(actual, expected), start=1):
        for name in expected_params:
            np.testing.assert_allclose(
                actual_params[name], expected_params[name], rtol=rtol, atol=0, err_msg=f"step {step}, leaf {name!r}"
            )


# Rows of (name, constructor kwargs, reference rule, reference kwargs). Where
# each reference puts the decay (coupled or decoupled) is the rule under test.
RULE_CASES = [
    pytest.param(
        "sgd",
        dict(learning_rate=0.05, momentum=0.9, weight_decay=0.05),
        _heavy_ball_rule,
        dict(momentum=0.9, coupled_decay=0.05, decoupled_decay=0.0),
        id="sgd",
    ),
    pytest.param(
        "sgd",
        dict(learning_rate=0.05, momentum=0.0, weight_decay=0.5),
        _heavy_ball_rule,
        dict(momentum=0.0, coupled_decay=0.5, decoupled_decay=0.0),
        id="sgd-no-momentum",
    ),
    pytest.param(
        "sgdw",
        dict(learning_rate=0.0679, momentum=0.5, weight_decay=0.05),
        _heavy_ball_rule,
        dict(momentum=0.5, coupled_decay=0.0, decoupled_decay=0.05),
        id="sgdw",
    ),
    pytest.param(
        "adam",
        dict(learning_rate=0.005, momentum=0.98, weight_decay=0.05),
        _adam_rule,
        dict(beta1=0.98, beta2=0.999, eps=1e-8, coupled_decay=0.05, decoupled_decay=0.0),
        id="adam",
    ),
    pytest.param(
        "adam",
        dict(learning_rate=0.01, momentum=0.0, weight_decay=0.05, b2=0.0),
        _adam_rule,
        dict(beta1=0.0, beta2=0.0, eps=1e-8, coupled_decay=0.05, decoupled_decay=0.0),
        id="adam0",
    ),
    pytest.param(
        "adamw",
        dict(learning_rate=0.005, momentum=0.95, weight_decay=5.0, b2=0.99, eps=1e-6),
        _adam_rule,
        dict(beta1=0.95, beta2=0.99, eps=1e-6, coupled_decay=0.0, decoupled_decay=5.0),
        id="adamw",
    ),
    pytest.param(
        "adamw",
        dict(learning_rate=0.01, momentum=0.0, weight_decay=0.5, b2=0.0),
        _adam_rule,
        dict(beta1=0.0, beta2=0.0, eps=1e-8, coupled_decay=0.0, decoupled_decay=0.5),
        id="adamw0",
    ),
    pytest.param(
        "signum",
        dict(learning_rate=0.01, momentum=0.9, weight_decay=0.05),
        _signum_rule,
        dict(beta=0.9, coupled_decay=0.05, decoupled_decay=0.0),
        id="signum",
    ),
    pytest.param(
        "signumw",
        dict(learning_rate=0.01, momentum=0.98, weight_decay=10.0),
        _signum_rule,
        dict(beta=0.98, coupled_decay=0.0, decoupled_decay=10.0),
        id="signumw",
    ),
    pytest.param(
        "adam_adamw",
        dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5, coupled_weight_decay=0.2),
        _adam_rule,
        dict(beta1=0.9, beta2=0.999, eps=1e-8, coupled_decay=0.2, decoupled_decay=0.3),
        id="adam_adamw",
    ),
    pytest.param(
        "sgd_sgdw",
        dict(learning_rate=0.05, momentum=0.9, weight_decay=0.5, coupled_weight_decay=0.2),
        _heavy_ball_rule,
        dict(momentum=0.9, coupled_decay=0.2, decoupled_decay=0.3),
        id="sgd_sgdw",
    ),
    pytest.param(
        "signum_signumw",
        dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5, coupled_weight_decay=0.3),
        _signum_rule,
        dict(beta=0.9, coupled_decay=0.3, decoupled_decay=0.2),
        id="signum_signumw",
    ),
]


@pytest.mark.parametrize("name, kwargs, rule, rule_kwargs", RULE_CASES)
def test_chain_matches_update_rule(float64, name, kwargs, rule, rule_kwargs):
    params, gradients = _random_problem(seed=0)
    learning_rates = np.full(NUM_STEPS, kwargs["learning_rate"])

    trajectory = _run_optax(optimizers.OPTIMIZERS[name](**kwargs), params, gradients)

    expected = _run_reference(rule, params, gradients, learning_rates, {"w": True, "b": True}, **rule_kwargs)
    _assert_trajectories_close(trajectory, expected, rtol=1e-10)


@pytest.mark.parametrize("name, kwargs, rule, rule_kwargs", RULE_CASES)
def test_chain_with_schedule_and_mask(float64, name, kwargs, rule, rule_kwargs):
    params, gradients = _random_problem(seed=1)
    schedule = optimizers.step_decay_schedule(kwargs["learning_rate"], NUM_EPOCHS, STEPS_PER_EPOCH)

    def decay_matrices_only(tree):
        return jax.tree.map(lambda leaf: leaf.ndim > 1, tree)

    optimizer = optimizers.OPTIMIZERS[name](**(kwargs | {"learning_rate": schedule}), mask=decay_matrices_only)

    trajectory = _run_optax(optimizer, params, gradients)

    learning_rates = _reference_step_decay(kwargs["learning_rate"], NUM_STEPS)
    expected = _run_reference(rule, params, gradients, learning_rates, DECAY_MASK, **rule_kwargs)
    _assert_trajectories_close(trajectory, expected, rtol=1e-10)


def test_step_decay_schedule_boundaries():
    schedule = optimizers.step_decay_schedule(0.1, total_epochs=200, steps_per_epoch=10)

    assert float(schedule(0)) == pytest.approx(0.1, rel=1e-6)
    assert float(schedule(659)) == pytest.approx(0.1, rel=1e-6)
    assert float(schedule(660)) == pytest.approx(0.01, rel=1e-6)
    assert float(schedule(1329)) == pytest.approx(0.01, rel=1e-6)
    assert float(schedule(1330)) == pytest.approx(0.001, rel=1e-6)
    assert float(schedule(1999)) == pytest.approx(0.001, rel=1e-6)


def test_step_decay_schedule_one_epoch():
    # Both drops fall on step 0 and multiply.
    schedule = optimizers.step_decay_schedule(0.1, total_epochs=1, steps_per_epoch=5)

    assert float(schedule(0)) == pytest.approx(0.001, rel=1e-6)
    assert float(schedule(4)) == pytest.approx(0.001, rel=1e-6)


@pytest.mark.parametrize("with_mask", [False, True])
def test_mix_reduces_to_adam_and_adamw(float64, with_mask):
    params, gradients = _random_problem(seed=2)
    mask = DECAY_MASK if with_mask else None
    hyperparameters = dict(learning_rate=0.01, momentum=0.9, weight_decay=0.05, mask=mask)

    fully_coupled = _run_optax(
        optimizers.adam_adamw(**hyperparameters, coupled_weight_decay=0.05), params, gradients
    )
    fully_decoupled = _run_optax(
        optimizers.adam_adamw(**hyperparameters, coupled_weight_decay=0.0), params, gradients
    )

    adam = _run_optax(optimizers.adam(**hyperparameters), params, gradients)
    adamw = _run_optax(optimizers.adamw(**hyperparameters), params, gradients)
    _assert_trajectories_close(fully_coupled, adam, rtol=1e-14)
    _assert_trajectories_close(fully_decoupled, adamw, rtol=1e-14)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_signum_no_momentum_sign_descent(float64, weight_decay):
    params, gradients = _random_problem(seed=3)
    learning_rate = 0.01

    coupled = _run_optax(optimizers.signum(learning_rate, 0.0, weight_decay), params, gradients)
    decoupled = _run_optax(optimizers.signumw(learning_rate, 0.0, weight_decay), params, gradients)

    expected_coupled, expected_decoupled = [], []
    w_coupled = dict(params)
    w_decoupled = dict(params)
    for grads in gradients:
        w_coupled = {k: w - learning_rate * np.sign(grads[k] + weight_decay * w) for k, w in w_coupled.items()}
        w_decoupled = {k: w - learning_rate * (np.sign(grads[k]) + weight_decay * w) for k, w in w_decoupled.items()}
        expected_coupled.append(w_coupled)
        expected_decoupled.append(w_decoupled)
    _assert_trajectories_close(coupled, expected_coupled, rtol=1e-10)
    _assert_trajectories_close(decoupled, expected_decoupled, rtol=1e-10)


def test_signum_matches_optax_sign_sgd(float64):
    params, gradients = _random_problem(seed=4)

    ours = _run_optax(optimizers.signum(0.01, momentum=0.0), params, gradients)

    theirs = _run_optax(optax.sign_sgd(0.01), params, gradients)
    _assert_trajectories_close(ours, theirs, rtol=1e-14)


@pytest.mark.parametrize("num_classes", [2, 10])
def test_cross_entropy_grad_column_sums_zero(float64, num_classes):
    rng = np.random.default_rng(num_classes)
    num_samples, feature_dim = 64, 16
    features = jnp.asarray(rng.normal(size=(num_samples, feature_dim)))
    labels = jnp.asarray(rng.integers(0, num_classes, size=num_samples))
    classifier = {
        "W": jnp.asarray(rng.normal(size=(num_classes, feature_dim))),
        "b": jnp.asarray(rng.normal(size=(num_classes,))),
    }

    def loss(params):
        logits = features @ params["W"].T + params["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss)(classifier)

    assert grads["W"].dtype == jnp.float64
    scale = float(jnp.abs(grads["W"]).max())
    np.testing.assert_allclose(grads["W"].sum(axis=0), 0.0, atol=1e-14 * scale)
    np.testing.assert_allclose(grads["b"].sum(), 0.0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_jit_float32_single_compile(name):
    params = {"w": jnp.ones((3, 4), jnp.float32), "b": jnp.zeros((4,), jnp.float32)}
    grads = jax.tree.map(lambda leaf: jnp.full_like(leaf, 0.5), params)
    schedule = optimizers.step_decay_schedule(0.01, total_epochs=3, steps_per_epoch=1)
    optimizer = optimizers.create_optimizer(name, learning_rate=schedule, momentum=0.9, weight_decay=0.05)
    trace_count = 0

    @jax.jit
    def step(params, state):
        nonlocal trace_count
        trace_count += 1
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = optimizer.init(params)
    for _ in range(4):
        params, state = step(params, state)

    assert trace_count == 1
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32)


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_traced_hyperparameters_vmap(float64, name):
    params, gradients = _random_problem(seed=5, num_steps=5)
    params = jax.tree.map(jnp.asarray, params)
    stacked_gradients = jax.tree.map(lambda *leaves: jnp.stack(leaves), *gradients)
    grid = [(0.01, 0.9, 0.05), (0.005, 0.5, 0.5), (0.001, 0.0, 0.0)]

    def train(learning_rate, momentum, weight_decay):
        coupled_weight_decay = weight_decay / 2 if name in optimizers.MIX_OPTIMIZERS else None
        optimizer = optimizers.create_optimizer(
            name,
            learning_rate=learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            coupled_weight_decay=coupled_weight_decay,
        )

        def body(carry, grads):
            params, state = carry
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (final_params, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), stacked_gradients)
        return final_params

    batched = jax.jit(jax.vmap(train))(*(jnp.asarray(column) for column in zip(*grid)))

    for index, setting in enumerate(grid):
        expected = train(*setting)
        for leaf in expected:
            np.testing.assert_allclose(batched[leaf][index], expected[leaf], rtol=1e-12, err_msg=f"{setting}, {leaf}")


# Rows of (name, constructor kwargs, torch.optim class, its kwargs). Both sides
# run in float64 and differ only in the order of floating-point operations, so
# the comparison uses rtol=1e-10.
TORCH_CASES = [
    pytest.param(
        "sgd",
        dict(learning_rate=0.05, momentum=0.9, weight_decay=0.05),
        "SGD",
        dict(lr=0.05, momentum=0.9, weight_decay=0.05),
        id="sgd",
    ),
    pytest.param(
        "sgd",
        dict(learning_rate=0.05, momentum=0.0, weight_decay=0.5),
        "SGD",
        dict(lr=0.05, momentum=0.0, weight_decay=0.5),
        id="sgd-no-momentum",
    ),
    pytest.param(
        "adam",
        dict(learning_rate=0.005, momentum=0.98, weight_decay=0.05),
        "Adam",
        dict(lr=0.005, betas=(0.98, 0.999), eps=1e-8, weight_decay=0.05),
        id="adam",
    ),
    pytest.param(
        "adam",
        dict(learning_rate=0.01, momentum=0.0, weight_decay=0.05, b2=0.0),
        "Adam",
        dict(lr=0.01, betas=(0.0, 0.0), eps=1e-8, weight_decay=0.05),
        id="adam0",
    ),
    pytest.param(
        "adamw",
        dict(learning_rate=0.005, momentum=0.95, weight_decay=5.0),
        "AdamW",
        dict(lr=0.005, betas=(0.95, 0.999), eps=1e-8, weight_decay=5.0),
        id="adamw",
    ),
    pytest.param(
        "adamw",
        dict(learning_rate=0.01, momentum=0.0, weight_decay=0.5, b2=0.0),
        "AdamW",
        dict(lr=0.01, betas=(0.0, 0.0), eps=1e-8, weight_decay=0.5),
        id="adamw0",
    ),
]


def _run_torch(torch, optimizer_class, optimizer_kwargs, params, gradients, *, milestones=None):
    """Run a torch.optim optimizer on the gradient sequence and return the parameters after each step.

    With `milestones`, a MultiStepLR scheduler (factor 0.1) steps once per epoch.
    """
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    optimizer = optimizer_class(list(tensors.values()), **optimizer_kwargs)
    scheduler = None
    if milestones is not None:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    trajectory = []
    for step, grads in enumerate(gradients, start=1):
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name], dtype=torch.float64)
        optimizer.step()
        if scheduler is not None and step % STEPS_PER_EPOCH == 0:
            scheduler.step()
        trajectory.append({name: tensor.detach().numpy().copy() for name, tensor in tensors.items()})
    return trajectory


@pytest.mark.parametrize("name, kwargs, torch_name, torch_kwargs", TORCH_CASES)
def test_chain_matches_torch_optimizer(float64, name, kwargs, torch_name, torch_kwargs):
    torch = pytest.importorskip("torch")
    params, gradients = _random_problem(seed=6)

    trajectory = _run_optax(optimizers.OPTIMIZERS[name](**kwargs), params, gradients)

    expected = _run_torch(torch, getattr(torch.optim, torch_name), torch_kwargs, params, gradients)
    _assert_trajectories_close(trajectory, expected, rtol=1e-10)


def test_step_decay_sgd_matches_torch(float64):
    torch = pytest.importorskip("torch")
    params, gradients = _random_problem(seed=7)
    schedule = optimizers.step_decay_schedule(0.05, NUM_EPOCHS, STEPS_PER_EPOCH)

    trajectory = _run_optax(optimizers.sgd(schedule, momentum=0.9, weight_decay=0.05), params, gradients)

    milestones = [NUM_EPOCHS // 3, 2 * NUM_EPOCHS // 3]
    expected = _run_torch(
        torch,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, weight_decay=0.05),
        params,
        gradients,
        milestones=milestones,
    )
    _assert_trajectories_close(trajectory, expected, rtol=1e-10)


def test_step_decay_matches_torch_200_epochs(float64):
    torch = pytest.importorskip("torch")
    total_epochs, steps_per_epoch = 200, 3
    schedule = optimizers.step_decay_schedule(0.01, total_epochs, steps_per_epoch)
    parameter = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=0.01)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[66, 133], gamma=0.1)

    torch_rates = []
    for _ in range(total_epochs):
        torch_rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()

    first_steps = jnp.arange(total_epochs) * steps_per_epoch
    last_steps = first_steps + steps_per_epoch - 1
    np.testing.assert_allclose(schedule(first_steps), torch_rates, rtol=1e-12)
    np.testing.assert_allclose(schedule(last_steps), torch_rates, rtol=1e-12)


INVALID_CASES = [
    pytest.param(
        optimizers.sgd,
        dict(learning_rate=-0.1),
        "learning_rate=-0.1 is invalid; expected a value >= 0",
        id="lr",
    ),
    pytest.param(optimizers.sgd, dict(learning_rate=float("nan")), "learning_rate=nan is invalid", id="lr-nan"),
    pytest.param(
        optimizers.sgdw,
        dict(learning_rate=0.1, momentum=1.0),
        "momentum=1.0 is invalid; expected a value in [0, 1)",
        id="momentum-1",
    ),
    pytest.param(
        optimizers.signum,
        dict(learning_rate=0.1, momentum=-0.5),
        "momentum=-0.5 is invalid",
        id="momentum-negative",
    ),
    pytest.param(
        optimizers.adamw,
        dict(learning_rate=0.1, weight_decay=-0.0005),
        "weight_decay=-0.0005 is invalid; expected a value >= 0",
        id="wd",
    ),
    pytest.param(
        optimizers.adam,
        dict(learning_rate=0.1, b2=1.0),
        "b2=1.0 is invalid; expected a value in [0, 1)",
        id="b2",
    ),
    pytest.param(
        optimizers.adam,
        dict(learning_rate=0.1, eps=-1e-8),
        "eps=-1e-08 is invalid; expected a value >= 0",
        id="eps",
    ),
    pytest.param(
        optimizers.adam_adamw,
        dict(learning_rate=0.1, weight_decay=0.0005, coupled_weight_decay=0.001),
        "coupled_weight_decay=0.001 is invalid; expected a value in [0, weight_decay=0.0005]",
        id="coupled-above-total",
    ),
    pytest.param(
        optimizers.adam_adamw,
        dict(learning_rate=0.1, weight_decay=0.0005, coupled_weight_decay=-0.0001),
        "coupled_weight_decay=-0.0001 is invalid; expected a value >= 0",
        id="coupled-negative",
    ),
    pytest.param(
        optimizers.sgd_sgdw,
        dict(learning_rate=0.1, weight_decay=0.0005, coupled_weight_decay=0.001),
        "coupled_weight_decay=0.001 is invalid; expected a value in [0, weight_decay=0.0005]",
        id="sgd-coupled-above-total",
    ),
    pytest.param(
        optimizers.signum_signumw,
        dict(learning_rate=0.1, weight_decay=0.0005, coupled_weight_decay=-0.0001),
        "coupled_weight_decay=-0.0001 is invalid; expected a value >= 0",
        id="signum-coupled-negative",
    ),
    pytest.param(
        optimizers.split_decay_optimizer,
        dict(name="adam", learning_rate=0.1, momentum=0.9, weight_decay=0.05, coupled_share=1.5),
        "coupled_share=1.5 is invalid; expected a value in [0, 1]",
        id="share-above-one",
    ),
    pytest.param(
        optimizers.split_decay_optimizer,
        dict(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.05, coupled_share=float("nan")),
        "coupled_share=nan is invalid",
        id="share-nan",
    ),
    pytest.param(
        optimizers.split_decay_optimizer,
        dict(name="lion", learning_rate=0.1, momentum=0.9, weight_decay=0.05),
        "unknown optimizer 'lion'",
        id="split-unknown-name",
    ),
    pytest.param(
        optimizers.step_decay_schedule,
        dict(learning_rate=0.1, total_epochs=0, steps_per_epoch=10),
        "total_epochs=0 is invalid; expected an integer >= 1",
        id="schedule-epochs",
    ),
    pytest.param(
        optimizers.step_decay_schedule,
        dict(learning_rate=0.1, total_epochs=10, steps_per_epoch=0),
        "steps_per_epoch=0 is invalid; expected an integer >= 1",
        id="schedule-steps",
    ),
    pytest.param(
        optimizers.step_decay_schedule,
        dict(learning_rate=0.1, total_epochs=10, steps_per_epoch=10, factor=0.0),
        "factor=0.0 is invalid; expected a value > 0",
        id="schedule-factor",
    ),
]


@pytest.mark.parametrize("function, kwargs, message", INVALID_CASES)
def test_invalid_value_raises(function, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        function(**kwargs)


def test_unknown_optimizer_lists_names():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'") as error:
        optimizers.create_optimizer("lion", learning_rate=0.1, momentum=0.9, weight_decay=0.0)

    for name in optimizers.OPTIMIZERS:
        assert name in str(error.value)


def test_coupled_share_only_for_mix():
    with pytest.raises(ValueError, match="applies only to 'adam_adamw'"):
        optimizers.create_optimizer(
            "adam", learning_rate=0.1, momentum=0.9, weight_decay=0.1, coupled_weight_decay=0.05
        )


def test_registry_names():
    assert set(optimizers.OPTIMIZERS) == {
        "sgd",
        "sgdw",
        "adam",
        "adamw",
        "signum",
        "signumw",
        "adam_adamw",
        "sgd_sgdw",
        "signum_signumw",
    }
    assert set(optimizers.MIX_OPTIMIZERS) <= set(optimizers.OPTIMIZERS)
    assert set(optimizers.STUDY_BEST_SETTINGS) <= set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(optimizers.STUDY_BEST_SETTINGS))
def test_study_best_settings_build(name):
    settings = optimizers.STUDY_BEST_SETTINGS[name]
    params = {"w": jnp.ones((2, 2))}

    optimizer = optimizers.create_optimizer(name, **settings._asdict())
    updates, _ = optimizer.update(params, optimizer.init(params), params)

    assert bool(jnp.all(jnp.isfinite(updates["w"])))


# Rows of (mix, coupled optimizer, decoupled optimizer, hyperparameters).
MIX_ENDPOINT_CASES = [
    pytest.param("sgd_sgdw", "sgd", "sgdw", dict(learning_rate=0.05, momentum=0.9, weight_decay=0.05), id="sgd"),
    pytest.param("adam_adamw", "adam", "adamw", dict(learning_rate=0.01, momentum=0.9, weight_decay=0.05), id="adam"),
    pytest.param(
        "signum_signumw", "signum", "signumw", dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5), id="signum"
    ),
]


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("mix, coupled, decoupled, hyperparameters", MIX_ENDPOINT_CASES)
def test_mix_reduces_to_endpoints(float64, mix, coupled, decoupled, hyperparameters, with_mask):
    params, gradients = _random_problem(seed=8)
    hyperparameters = hyperparameters | {"mask": DECAY_MASK if with_mask else None}
    weight_decay = hyperparameters["weight_decay"]

    fully_coupled = _run_optax(
        optimizers.OPTIMIZERS[mix](**hyperparameters, coupled_weight_decay=weight_decay), params, gradients
    )
    fully_decoupled = _run_optax(
        optimizers.OPTIMIZERS[mix](**hyperparameters, coupled_weight_decay=0.0), params, gradients
    )

    expected_coupled = _run_optax(optimizers.OPTIMIZERS[coupled](**hyperparameters), params, gradients)
    expected_decoupled = _run_optax(optimizers.OPTIMIZERS[decoupled](**hyperparameters), params, gradients)
    _assert_trajectories_close(fully_coupled, expected_coupled, rtol=1e-14)
    _assert_trajectories_close(fully_decoupled, expected_decoupled, rtol=1e-14)


def test_families_map_to_mixes():
    assert set(optimizers.FAMILIES) == {"sgd", "sgdw", "adam", "adamw", "signum", "signumw"}
    for name, (mix, share) in optimizers.FAMILIES.items():
        assert mix in optimizers.MIX_OPTIMIZERS, name
        assert share == (0.0 if name.endswith("w") else 1.0), name


@pytest.mark.parametrize("name", sorted(optimizers.FAMILIES))
def test_split_decay_default_share(float64, name):
    params, gradients = _random_problem(seed=9)
    hyperparameters = dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5)

    trajectory = _run_optax(optimizers.split_decay_optimizer(name, **hyperparameters), params, gradients)

    expected = _run_optax(optimizers.OPTIMIZERS[name](**hyperparameters), params, gradients)
    _assert_trajectories_close(trajectory, expected, rtol=1e-14)


@pytest.mark.parametrize("name", ["sgd", "adamw", "signum_signumw"])
def test_split_decay_explicit_share(float64, name):
    params, gradients = _random_problem(seed=10)
    hyperparameters = dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5)
    mix = optimizers.FAMILIES.get(name, (name, 0.0))[0]

    trajectory = _run_optax(
        optimizers.split_decay_optimizer(name, **hyperparameters, coupled_share=0.4), params, gradients
    )

    expected = _run_optax(optimizers.OPTIMIZERS[mix](**hyperparameters, coupled_weight_decay=0.2), params, gradients)
    _assert_trajectories_close(trajectory, expected, rtol=1e-14)


def test_split_decay_mix_default_decoupled(float64):
    params, gradients = _random_problem(seed=11)
    hyperparameters = dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5)

    trajectory = _run_optax(optimizers.split_decay_optimizer("sgd_sgdw", **hyperparameters), params, gradients)

    expected = _run_optax(optimizers.sgdw(**hyperparameters), params, gradients)
    _assert_trajectories_close(trajectory, expected, rtol=1e-14)


@pytest.mark.parametrize("name", ["sgd", "adam", "signum"])
def test_split_decay_traced_share_vmap(float64, name):
    params, gradients = _random_problem(seed=12, num_steps=5)
    params = jax.tree.map(jnp.asarray, params)
    stacked_gradients = jax.tree.map(lambda *leaves: jnp.stack(leaves), *gradients)
    shares = [0.0, 0.3, 1.0]

    def train(coupled_share):
        optimizer = optimizers.split_decay_optimizer(
            name, learning_rate=0.01, momentum=0.9, weight_decay=0.5, coupled_share=coupled_share
        )

        def body(carry, grads):
            params, state = carry
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (final_params, _), _ = jax.lax.scan(body, (params, optimizer.init(params)), stacked_gradients)
        return final_params

    batched = jax.jit(jax.vmap(train))(jnp.asarray(shares))

    for index, share in enumerate(shares):
        expected = train(share)
        for leaf in expected:
            np.testing.assert_allclose(batched[leaf][index], expected[leaf], rtol=1e-12, err_msg=f"{share}, {leaf}")


@pytest.mark.parametrize("name", optimizers.MIX_OPTIMIZERS)
def test_create_optimizer_accepts_coupled_for_mixes(float64, name):
    params, gradients = _random_problem(seed=13)
    hyperparameters = dict(learning_rate=0.01, momentum=0.9, weight_decay=0.5)

    trajectory = _run_optax(
        optimizers.create_optimizer(name, **hyperparameters, coupled_weight_decay=0.2), params, gradients
    )

    expected = _run_optax(optimizers.OPTIMIZERS[name](**hyperparameters, coupled_weight_decay=0.2), params, gradients)
    _assert_trajectories_close(trajectory, expected, rtol=1e-14)


def _reference_warmup_cosine(step, peak, total_steps, warmup_steps, initial=1e-7, final=1e-5):
    """Linear warm-up from `initial` to `peak`, then cosine decay from `peak` to `final`, in float64."""
    if step < warmup_steps:
        return initial + (peak - initial) * step / warmup_steps
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return final + (peak - final) * 0.5 * (1 + np.cos(np.pi * progress))


def test_warmup_cosine_schedule_matches_formula(float64):
    # 5% of 200 steps is a 10-step warm-up.
    schedule = optimizers.warmup_cosine_schedule(1e-3, 200)
    steps = np.arange(230)

    rates = np.asarray(jax.vmap(schedule)(jnp.asarray(steps)))

    expected = [_reference_warmup_cosine(step, 1e-3, 200, 10) for step in steps]
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)


def test_warmup_cosine_schedule_endpoints(float64):
    schedule = optimizers.warmup_cosine_schedule(1e-3, 200)
    assert float(schedule(0)) == pytest.approx(1e-7, rel=1e-12)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-12)
    assert float(schedule(200)) == pytest.approx(1e-5, rel=1e-12)
    assert float(schedule(1000)) == pytest.approx(1e-5, rel=1e-12)


def test_warmup_cosine_schedule_equals_optax(float64):
    schedule = optimizers.warmup_cosine_schedule(
        3e-4, 1000, warmup_fraction=0.1, initial_learning_rate=1e-6, final_learning_rate=2e-5
    )
    reference = optax.warmup_cosine_decay_schedule(
        init_value=1e-6, peak_value=3e-4, warmup_steps=100, decay_steps=1000, end_value=2e-5
    )
    steps = jnp.arange(0, 1100, 7)
    np.testing.assert_allclose(jax.vmap(schedule)(steps), jax.vmap(reference)(steps), rtol=1e-12, atol=0)


def test_warmup_cosine_schedule_without_warmup(float64):
    schedule = optimizers.warmup_cosine_schedule(1e-3, 100, warmup_fraction=0.0)
    steps = np.arange(0, 101, 10)
    expected = [_reference_warmup_cosine(step, 1e-3, 100, 0) for step in steps]
    np.testing.assert_allclose(jax.vmap(schedule)(jnp.asarray(steps)), expected, rtol=1e-12, atol=0)


def test_warmup_cosine_schedule_caps_warmup(float64):
    # round(0.9 * 2) = 2 warm-up steps would leave no cosine step, so one is used.
    schedule = optimizers.warmup_cosine_schedule(1e-3, 2, warmup_fraction=0.9)
    assert float(schedule(0)) == pytest.approx(1e-7, rel=1e-12)
    assert float(schedule(1)) == pytest.approx(1e-3, rel=1e-12)
    assert float(schedule(2)) == pytest.approx(1e-5, rel=1e-12)


def test_warmup_cosine_schedule_traced_peak(float64):
    peaks = [1e-4, 1e-3, 3e-2]

    def rate_at_step_37(peak):
        return optimizers.warmup_cosine_schedule(peak, 100)(37)

    batched = jax.jit(jax.vmap(rate_at_step_37))(jnp.asarray(peaks))

    expected = [_reference_warmup_cosine(37, peak, 100, 5) for peak in peaks]
    np.testing.assert_allclose(batched, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((0.0, 100), {}, "peak_learning_rate=0.0 is invalid; expected a value > 0"),
        ((1e-3, 0), {}, "total_steps=0 is invalid; expected an integer >= 1"),
        ((1e-3, 10.0), {}, "total_steps=10.0 is invalid; expected an integer >= 1"),
        ((1e-3, 100), dict(warmup_fraction=1.0), r"warmup_fraction=1.0 is invalid; expected a value in \[0, 1\)"),
        ((1e-3, 100), dict(warmup_fraction=-0.1), r"warmup_fraction=-0.1 is invalid; expected a value in \[0, 1\)"),
        ((1e-3, 100), dict(initial_learning_rate=-1.0), "initial_learning_rate=-1.0 is invalid; expected a value >= 0"),
        ((1e-3, 100), dict(final_learning_rate=-1.0), "final_learning_rate=-1.0 is invalid; expected a value >= 0"),
    ],
)
def test_warmup_cosine_schedule_invalid_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizers.warmup_cosine_schedule(*args, **kwargs)


def test_gradient_clipping_scales_large_gradients(float64):
    params = {"w": jnp.ones((3,)), "b": jnp.ones((4,))}
    # Global norm sqrt(3 * 2^2 + 4 * 2^2) = sqrt(28) > 1 is scaled to 1.
    large = {"w": jnp.full((3,), 2.0), "b": jnp.full((4,), -2.0)}
    small = {"w": jnp.full((3,), 0.1), "b": jnp.full((4,), -0.1)}
    tx = optimizers.with_gradient_clipping(optimizers.sgd(learning_rate=1.0))
    state = tx.init(params)

    large_updates, _ = tx.update(large, state, params)
    small_updates, _ = tx.update(small, state, params)

    for name in params:
        np.testing.assert_allclose(large_updates[name], -large[name] / np.sqrt(28.0), rtol=1e-12)
        np.testing.assert_allclose(small_updates[name], -small[name], rtol=1e-12)


def test_gradient_clipping_leaves_decay_unclipped(float64):
    params = {"w": jnp.full((3,), 10.0)}
    gradients = {"w": jnp.full((3,), 2.0)}
    tx = optimizers.with_gradient_clipping(optimizers.sgdw(learning_rate=1.0, weight_decay=0.5), max_norm=0.5)

    updates, _ = tx.update(gradients, tx.init(params), params)

    # The gradient (norm 2 * sqrt(3)) is scaled to norm 0.5, but the decay 0.5 * w is added whole.
    clipped = gradients["w"] * 0.5 / (2.0 * np.sqrt(3.0))
    np.testing.assert_allclose(updates["w"], -(clipped + 0.5 * params["w"]), rtol=1e-12)


@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_gradient_clipping_invalid_max_norm(max_norm):
    with pytest.raises(ValueError, match=f"max_norm={max_norm} is invalid; expected a value > 0"):
        optimizers.with_gradient_clipping(optimizers.sgd(learning_rate=0.1), max_norm=max_norm)
