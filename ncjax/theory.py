r"""NC0 under weight decay: closed forms, exact recursions and simulations.

Throughout, :math:`\alpha_t = \|W_t^\top \mathbf{1}\|_2^2 / K` is the squared
NC0 of the classifier :math:`W_t \in \mathbb{R}^{K \times p}` after
:math:`t` steps, :math:`\eta` the learning rate and :math:`\lambda` the
weight decay. For softmax cross-entropy, :math:`\mathbf{1}^\top \nabla_W L = 0`,
so only the decay term can move :math:`W^\top \mathbf{1}`, and how the
optimizer applies it decides what :math:`\alpha_t` does:

* SGD with momentum :math:`\beta` and coupled decay (Theorem 3.1 of the study,
  an upper bound): :math:`\alpha_t \le C \exp(-\lambda \eta t / \log(1/\beta))
  + O(\eta)` for :math:`\beta > 0` and :math:`\alpha_t \le C (1 - \lambda
  \eta)^t` for :math:`\beta = 0`. Here :math:`u_t = W_t^\top \mathbf{1}`
  follows an exact linear recursion (:func:`sgd_alpha_recursion`) whose
  long-run rate (:func:`sgd_alpha_rate`) is about :math:`2 \lambda / (1 -
  \beta)` per unit of :math:`\eta t`, faster than the bound's exponent.
* Sign descent with decoupled decay on the unconstrained feature model with
  features fixed at the simplex ETF and :math:`W_0 = 0` (Theorem 3.3): the
  signed gradient is the constant :math:`J - 2I`, so
  :math:`W_t = w_t (J - 2I)` and :math:`\alpha_t` tends to
  :math:`(K - 2)^2 / \lambda^2`, never to 0.
* Sign descent with coupled decay in the same setting (Theorem 3.4):
  :math:`\alpha_t` rises, falls and then oscillates in a band of width
  :math:`O(\eta^2)` near 0. The theorem gives no turning times, so
  :func:`sign_descent_coupled_peak_step` computes the peak from the
  condition that ends the rise and :func:`find_turning_points` reads both
  turning points off a simulated trajectory.

The fixed-feature simulations train only ``W`` (no bias) on the mean
cross-entropy of the rows of ``features`` with any Optax chain, so they run the
optimizers of :mod:`ncjax.optimizers` unchanged. The study states the theorems
for the sum over samples, which is K times the mean here. That changes
nothing for Theorem 3.1 and 3.3. For Theorem 3.4, a run here with decay
:math:`\lambda / K` follows the theorem's dynamics with decay :math:`\lambda`,
because :math:`\mathrm{sign}(K g + \lambda W) = \mathrm{sign}(g + (\lambda/K) W)`.

:func:`train_nc0_dynamics` records NC0 at every step of a small MLP, for the
comparison of SGD, Adam, AdamW, Adam0, AdamW0 and sign descent on the
Gaussian-mixture dataset.
"""

from collections.abc import Sequence
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncjax import data as data_lib
from ncjax import metrics
from ncjax import models
from ncjax import optimizers
from ncjax import training


# ---------------------------------------------------------------------------
# Classifier training on fixed features.


class FixedFeatureRun(NamedTuple):
    """Trajectory of a classifier trained on fixed features."""

    alpha: jax.Array  # (steps + 1,): alpha_t for t = 0..steps
    weights: jax.Array  # (K, p): W after the last step


def simulate_fixed_features(
    tx: optax.GradientTransformation,
    features: jax.Array,
    labels: jax.Array,
    initial_weights: jax.Array,
    steps: int,
) -> FixedFeatureRun:
    r"""Train a bias-free linear classifier on fixed features and record alpha.

    Each step takes the full-batch gradient of the mean cross-entropy
    :math:`L(W) = \frac{1}{N} \sum_n \mathrm{CE}(W h_n, y_n)` and applies
    ``tx``. The loop is a ``lax.scan``, so the function can be jitted or
    vmapped over hyperparameters that ``tx`` takes as arrays.

    Args:
        tx: any Optax chain, for example from :mod:`ncjax.optimizers`.
        features: (N, p), row n is :math:`h_n`.
        labels: (N,) integers in [0, K).
        initial_weights: :math:`W_0`, (K, p). Its dtype is the dtype of the
            whole run.
        steps: number of optimizer steps, >= 0.

    Returns:
        :math:`\alpha_t = \|W_t^\top \mathbf{1}\|^2 / K` for t = 0..steps and
        the final :math:`W`.
    """
    features = jnp.asarray(features, initial_weights.dtype)

    def loss(W):
        logits = features @ W.T
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, _):
        W, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(W), opt_state, W)
        W = optax.apply_updates(W, updates)
        return (W, opt_state), metrics.nc0_alpha(W)

    (W, _), alphas = jax.lax.scan(
        step, (initial_weights, tx.init(initial_weights)), None, length=steps
    )
    alpha = jnp.concatenate([metrics.nc0_alpha(initial_weights)[None], alphas])
    return FixedFeatureRun(alpha=alpha, weights=W)


def simulate_fixed_etf(
    tx: optax.GradientTransformation,
    num_classes: int,
    steps: int,
    *,
    initial_weights: jax.Array | None = None,
    dtype=None,
) -> jax.Array:
    r"""Return alpha_t, t = 0..steps, for the classifier of the fixed-ETF UFM.

    The features are the simplex ETF, :math:`H = E = (I - J/K)/\sqrt{K-1}`,
    one sample per class (row k of E has label k), and only W (K x K, no
    bias) is trained by :func:`simulate_fixed_features`.

    Args:
        tx: any Optax chain.
        num_classes: K, >= 2.
        steps: number of optimizer steps.
        initial_weights: :math:`W_0`, (K, K); zeros by default, as in the
            sign-descent theorems.
        dtype: dtype of :math:`W_0` when it is not given (the JAX default
            float when None, float64 only inside ``jax.enable_x64(True)``).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} is invalid; expected an integer >= 2")
    if initial_weights is None:
        initial_weights = jnp.zeros((num_classes, num_classes), dtype)
    features = metrics.simplex_etf(num_classes, initial_weights.dtype)
    labels = jnp.arange(num_classes)
    return simulate_fixed_features(tx, features, labels, initial_weights, steps).alpha


# ---------------------------------------------------------------------------
# Sign descent with decoupled weight decay (Theorem 3.3).


def sign_descent_decoupled_w(t, learning_rate, weight_decay):
    r"""Return :math:`w_t = -(1 - (1 - \eta\lambda)^t)/\lambda`.

    Sign descent with decoupled decay, :math:`W_{t+1} = W_t - \eta
    (\mathrm{sign}(\nabla L) + \lambda W_t)`, from :math:`W_0 = 0` on the
    fixed-ETF UFM has the constant signed gradient :math:`J - 2I`, so
    :math:`W_t = w_t (J - 2I)`: the true-class entries are :math:`-w_t > 0`
    and the others :math:`w_t`. :math:`w_t` tends to :math:`-1/\lambda`.
    """
    decay = 1 - learning_rate * weight_decay
    return -(1 - decay**t) / weight_decay


def sign_descent_decoupled_alpha(t, num_classes, learning_rate, weight_decay):
    r"""Return :math:`\alpha_t = (K-2)^2 (1 - (1 - \eta\lambda)^t)^2 / \lambda^2`.

    This is :math:`\|W_t^\top \mathbf{1}\|^2 / K` for :math:`W_t = w_t (J - 2I)`
    (see :func:`sign_descent_decoupled_w`), since every column of
    :math:`J - 2I` sums to :math:`K - 2`. It increases monotonically to
    :func:`sign_descent_decoupled_alpha_limit`, so with decoupled decay NC0
    never vanishes.

    NOTE: a floating-point simulation (:func:`simulate_fixed_etf` with
    ``ncjax.optimizers.signumw(eta, 0, lam)``) matches this only while the
    wrong-class probabilities :math:`\propto e^{-m}` do not underflow, where
    :math:`m = 2|w_t|/\sqrt{K-1}` is the logit margin. Measured: the
    simulation departs from the closed form once :math:`m` passes about 700
    in float64 and about 80 in float32, because gradient entries then
    become 0 and so do their signs.
    """
    w = sign_descent_decoupled_w(t, learning_rate, weight_decay)
    return (num_classes - 2) ** 2 * w**2


def sign_descent_decoupled_alpha_limit(num_classes, weight_decay):
    r"""Return :math:`\lim_t \alpha_t = (K-2)^2 / \lambda^2` for decoupled sign descent."""
    return (num_classes - 2) ** 2 / weight_decay**2


# ---------------------------------------------------------------------------
# Sign descent with coupled weight decay (Theorem 3.4).


def sign_descent_coupled_peak_step(
    num_classes: int, learning_rate: float, weight_decay: float
) -> int:
    r"""Return :math:`T_1`, the step at which coupled sign descent's alpha peaks.

    Setting: the fixed-ETF UFM of :func:`simulate_fixed_etf` with mean
    cross-entropy, :math:`W_0 = 0` and :math:`W_{t+1} = W_t - \eta\,
    \mathrm{sign}(\nabla L(W_t) + \lambda W_t)`. While the decay flips no
    sign, :math:`W_t = \eta t (2I - J)` as in the decoupled case and
    :math:`\alpha_t = (K-2)^2 \eta^2 t^2` rises. With logit margin
    :math:`m_t = 2\eta t / \sqrt{K-1}` and wrong-class probability
    :math:`q_t = 1 / (e^{m_t} + K - 1)`, the off-diagonal entries of the
    gradient are :math:`q_t / (K \sqrt{K-1})` and those of
    :math:`\lambda W_t` are :math:`-\lambda \eta t`. The first step at which

    .. math::  q_t / (K \sqrt{K-1}) \le \lambda \eta t

    flips the off-diagonal signs (the diagonal ones, K - 1 times larger,
    flip later), so the step from :math:`T_1` to :math:`T_1 + 1` shrinks
    :math:`|W^\top \mathbf{1}|` and :math:`\alpha_{T_1}` is the maximum of the
    rise. Theorem 3.4 of the study only asserts that such a step exists.

    Args:
        num_classes: K, >= 3 (for K = 2, alpha is 0 at every step).
        learning_rate: :math:`\eta > 0`.
        weight_decay: :math:`\lambda > 0`.

    Returns:
        :math:`T_1 \ge 1`.
    """
    if num_classes < 3:
        raise ValueError(f"num_classes={num_classes} is invalid; expected an integer >= 3")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate} is invalid; expected a value > 0")
    if not weight_decay > 0:
        raise ValueError(f"weight_decay={weight_decay} is invalid; expected a value > 0")
    K = num_classes
    scale = K * np.sqrt(K - 1)

    def rise_ends(t: int) -> bool:
        q = 1.0 / (np.exp(2 * learning_rate * t / np.sqrt(K - 1)) + K - 1)
        return q / scale <= weight_decay * learning_rate * t

    # The left side decreases and the right side increases with t, so the
    # first step that ends the rise is found by bisection. q < 1/K bounds it.
    high = max(1, int(np.ceil(1.0 / (K * scale * weight_decay * learning_rate))))
    low = 0  # W_0 = 0 never ends the rise: its decay term is 0.
    while high - low > 1:
        middle = (low + high) // 2
        if rise_ends(middle):
            high = middle
        else:
            low = middle
    return high


class TurningPoints(NamedTuple):
    """Phases of a rise-fall-oscillate trajectory of alpha."""

    peak_step: int  # last step of the initial monotone rise
    oscillation_start: int  # first step after which alpha stays in the band
    band_low: float  # smallest alpha over the last part of the trajectory
    band_high: float  # largest alpha over the last part of the trajectory


def find_turning_points(
    alpha: np.ndarray, *, tail_fraction: float = 0.25, rtol: float = 1e-3
) -> TurningPoints:
    r"""Detect where alpha stops rising and where its late oscillation begins.

    The peak is the first t with :math:`\alpha_{t+1} < \alpha_t`. The band is
    [min, max] of alpha over the last ``tail_fraction`` of the steps, and
    the oscillation starts at the first step from which every later value
    lies in the band widened by ``rtol`` times its upper edge. The
    trajectory must be long enough for its tail to be in the oscillating
    phase. For coupled sign descent from :math:`W_0 = 0` the weights move on
    a lattice of spacing :math:`\eta`, so :math:`\alpha_t / \eta^2` is a
    square integer up to round-off. Values outside the band then differ from
    its edges by at least :math:`\eta^2`, far more than the default
    ``rtol`` while the band's top is below :math:`1000 \eta^2`.

    Args:
        alpha: :math:`\alpha_t` for t = 0..T.
        tail_fraction: share of the trajectory that defines the band, in (0, 1).
        rtol: tolerance relative to the band's upper edge.

    Raises:
        ValueError: if alpha never decreases.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if not 0 < tail_fraction < 1:
        raise ValueError(f"tail_fraction={tail_fraction} is invalid; expected a value in (0, 1)")
    falls = np.flatnonzero(np.diff(alpha) < 0)
    if falls.size == 0:
        raise ValueError(
            f"alpha never decreases in its {len(alpha)} values; simulate more steps"
        )
    peak_step = int(falls[0])

    tail = alpha[int(len(alpha) * (1 - tail_fraction)):]
    band_low, band_high = float(tail.min()), float(tail.max())
    tolerance = rtol * band_high
    outside = np.flatnonzero((alpha < band_low - tolerance) | (alpha > band_high + tolerance))
    oscillation_start = int(outside[-1]) + 1 if outside.size else 0
    return TurningPoints(peak_step, max(oscillation_start, peak_step), band_low, band_high)


# ---------------------------------------------------------------------------
# SGD with momentum and coupled weight decay (Theorem 3.1).


def predicted_sgd_rate(momentum, weight_decay, *, learning_rate=None):
    r"""Return the decay rate of alpha per unit of :math:`\eta t` in Theorem 3.1's bound.

    For :math:`\beta > 0` the bound decays like :math:`\exp(-\lambda \eta t /
    \log(1/\beta))`, so the rate is :math:`\lambda / \log(1/\beta)`. For
    :math:`\beta = 0` it decays like :math:`(1 - \lambda\eta)^t`, a rate of
    :math:`-\log(1 - \lambda\eta)/\eta`, or :math:`\lambda` (its limit for
    small :math:`\eta`) when ``learning_rate`` is None.

    The theorem is an upper bound: the exact rate, :func:`sgd_alpha_rate`,
    is larger, by a factor :math:`2 \log(1/\beta) / (1 - \beta) \ge 2` for
    small :math:`\eta\lambda`.
    """
    if momentum == 0:
        if learning_rate is None:
            return weight_decay
        return -np.log1p(-learning_rate * weight_decay) / learning_rate
    return weight_decay / np.log(1 / momentum)


def _sgd_nc0_matrix(learning_rate, momentum, weight_decay) -> np.ndarray:
    r"""Return A with :math:`(u_{t+1}, z_{t+1}) = A (u_t, z_t)`, u = W^T 1, z = V^T 1."""
    eta, beta, lam = learning_rate, momentum, weight_decay
    return np.array([[1 - eta * lam, -eta * beta], [lam, beta]], dtype=np.float64)


def sgd_alpha_rate(momentum, weight_decay, learning_rate):
    r"""Return the exact long-run decay rate of alpha per unit of :math:`\eta t` under SGD.

    With :math:`u_t = W_t^\top \mathbf{1}` and :math:`z_t = V_t^\top \mathbf{1}`
    (V the momentum buffer), the gradient drops out and

    .. math::

        z_{t+1} = \beta z_t + \lambda u_t, \qquad u_{t+1} = u_t - \eta z_{t+1},

    whatever the model, data or features. So :math:`\alpha_t` decays like
    :math:`\rho^{2t}`, with :math:`\rho` the spectral radius of that 2 x 2
    map (roots of :math:`x^2 - (1 + \beta - \eta\lambda) x + \beta`), and
    the rate is :math:`-2 \log\rho / \eta`, close to
    :math:`2\lambda / (1 - \beta)` for small :math:`\eta\lambda`. For
    :math:`\beta = 0` it is :math:`-2 \log(1 - \eta\lambda)/\eta` exactly.
    """
    slow_mode, _ = sgd_alpha_modes(momentum, weight_decay, learning_rate)
    return -2 * np.log(slow_mode) / learning_rate


def sgd_alpha_modes(momentum, weight_decay, learning_rate) -> tuple[float, float]:
    r"""Return the moduli :math:`\rho_1 \ge \rho_2` of the two modes of :math:`W_t^\top \mathbf{1}` under SGD.

    They are the eigenvalue moduli of the 2 x 2 map in :func:`sgd_alpha_rate`.
    :math:`\rho_1` sets the long-run rate, and the share of the faster mode
    falls like :math:`(\rho_2 / \rho_1)^t`. Their product is :math:`\beta`.
    """
    matrix = _sgd_nc0_matrix(learning_rate, momentum, weight_decay)
    moduli = np.sort(np.abs(np.linalg.eigvals(matrix)))
    return float(moduli[1]), float(moduli[0])


def sgd_alpha_recursion(alpha_0, steps, learning_rate, momentum, weight_decay) -> np.ndarray:
    r"""Return the exact :math:`\alpha_t`, t = 0..steps, of SGD with coupled decay.

    Iterates the recursion of :func:`sgd_alpha_rate` from :math:`u_0 =
    W_0^\top \mathbf{1}` and an empty momentum buffer, :math:`z_0 = 0`, as in
    ``ncjax.optimizers.sgd``. Every coordinate of :math:`u` follows the same
    scalar recursion, so :math:`\alpha_t = \alpha_0 c_t^2` with :math:`c_0 = 1`.
    """
    matrix = _sgd_nc0_matrix(learning_rate, momentum, weight_decay)
    state = np.array([1.0, 0.0])
    scale = np.empty(steps + 1)
    scale[0] = 1.0
    for t in range(1, steps + 1):
        state = matrix @ state
        scale[t] = state[0]
    return alpha_0 * scale**2


def fit_exponential_rate(alpha, learning_rate, *, start_fraction: float = 0.5) -> float:
    r"""Fit :math:`\alpha_t \approx C e^{-r \eta t}` by least squares of :math:`\log\alpha_t` on :math:`\eta t`.

    The fit uses the steps from ``start_fraction`` of the trajectory to its
    end. Under SGD, alpha is a sum of two geometric modes (see
    :func:`sgd_alpha_modes`). The slower one sets the long-run rate, and the
    faster one decays relative to it like :math:`(\rho_2/\rho_1)^t`, so
    skipping the first half of T steps removes that transient when
    :math:`(\rho_2/\rho_1)^{T/2}` is small. ``experiments.theory`` records
    that factor for each setting it fits. Values that are zero or not
    finite (underflow) are left out.

    Args:
        alpha: :math:`\alpha_t` for t = 0..T.
        learning_rate: :math:`\eta`, the unit of time.
        start_fraction: first share of the steps to skip, in [0, 1).

    Returns:
        r, positive when alpha decays.

    Raises:
        ValueError: if fewer than two usable values remain.
    """
    if not 0 <= start_fraction < 1:
        raise ValueError(f"start_fraction={start_fraction} is invalid; expected a value in [0, 1)")
    alpha = np.asarray(alpha, dtype=np.float64)
    steps = np.arange(len(alpha))
    window = steps >= int(start_fraction * len(alpha))
    usable = window & np.isfinite(alpha) & (alpha > 0)
    if usable.sum() < 2:
        raise ValueError(
            f"only {int(usable.sum())} positive finite values of alpha from step"
            f" {int(start_fraction * len(alpha))} on; expected at least 2"
        )
    slope, _ = np.polyfit(learning_rate * steps[usable], np.log(alpha[usable]), 1)
    return float(-slope)


# ---------------------------------------------------------------------------
# NC0 over training of an MLP.

# Names used by ``nc0_dynamics_optimizers``, in plotting order.
NC0_DYNAMICS_OPTIMIZERS = ("sgd", "adam", "adamw", "adam0", "adamw0", "sign", "signw")


def nc0_dynamics_optimizers(
    learning_rate: float,
    weight_decay: float,
    decoupled_weight_decay: float,
    momentum: float = 0.9,
) -> dict[str, optax.GradientTransformation]:
    r"""Build the optimizers compared in the NC0 dynamics experiment.

    ``adam0`` and ``adamw0`` are Adam and AdamW with :math:`\beta_1 = \beta_2
    = 0`, which step by :math:`g / (|g| + \epsilon)`, close to sign descent.
    ``sign`` and ``signw`` are sign descent (Signum and SignumW without
    momentum). SGD, Adam and AdamW use ``momentum`` (:math:`\beta_1`).

    Args:
        learning_rate: :math:`\eta`, constant.
        weight_decay: :math:`\lambda` of the coupled optimizers (sgd, adam,
            adam0, sign).
        decoupled_weight_decay: :math:`\lambda` of the decoupled ones
            (adamw, adamw0, signw).
        momentum: SGD's momentum and Adam's :math:`\beta_1`.
    """
    coupled, decoupled = weight_decay, decoupled_weight_decay
    return {
        "sgd": optimizers.sgd(learning_rate, momentum, coupled),
        "adam": optimizers.adam(learning_rate, momentum, coupled),
        "adamw": optimizers.adamw(learning_rate, momentum, decoupled),
        "adam0": optimizers.adam(learning_rate, 0.0, coupled, b2=0.0),
        "adamw0": optimizers.adamw(learning_rate, 0.0, decoupled, b2=0.0),
        "sign": optimizers.signum(learning_rate, 0.0, coupled),
        "signw": optimizers.signumw(learning_rate, 0.0, decoupled),
    }


def train_nc0_dynamics(
    tx: optax.GradientTransformation,
    dataset: data_lib.Dataset,
    *,
    epochs: int,
    batch_size: int = 128,
    hidden_sizes: Sequence[int] = (128, 128),
    batch_norm: bool = True,
    classifier_init_scale: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    r"""Train an MLP with ``tx`` and return NC0 = :math:`\|W^\top \mathbf{1}\|_2` after every step.

    Minibatches are drawn from a fresh shuffle each epoch (the remainder is
    dropped) and the loss is the mean cross-entropy. The classifier kernel
    starts at ``classifier_init_scale`` times its default initialisation,
    near the :math:`W_0 = 0` of the sign-descent results. It must not be 0
    exactly, because SGD with coupled decay would then keep
    :math:`W^\top \mathbf{1} = 0` at every step.

    Args:
        tx: any Optax chain.
        dataset: training split used; its inputs are flattened by the MLP.
        epochs: passes over the training split, >= 1.
        batch_size: minibatch size, at most the training split's size.
        hidden_sizes: MLP widths; the last is the feature dimension p.
        batch_norm: BatchNorm after each hidden Linear layer.
        classifier_init_scale: factor on the initial classifier kernel.
        seed: seed of the initialisation and of the shuffles.

    Returns:
        float64 array of length ``epochs * steps_per_epoch + 1``; entry 0 is
        at initialisation.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is invalid; expected an integer >= 1")
    num_examples = dataset.x_train.shape[0]
    num_steps = training.steps_per_epoch(num_examples, batch_size)
    model = models.create_model(
        "mlp", dataset.x_train.shape[1:], dataset.num_classes, seed=seed,
        hidden_sizes=hidden_sizes, batch_norm=batch_norm,
    )
    model.train()
    model.classifier.kernel[...] = classifier_init_scale * model.classifier.kernel[...]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x_train = jnp.asarray(dataset.x_train)
    y_train = jnp.asarray(dataset.y_train)

    def loss_fn(params, rest, x, y):
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, new_rest

    def nc0_of(params):
        # The kernel is W^T, (p, K), so W^T 1 sums it over the class axis.
        return jnp.linalg.norm(params["classifier"]["kernel"][...].sum(axis=1))

    def train_step(carry, batch_indices):
        params, rest, opt_state = carry
        (_, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, rest, x_train[batch_indices], y_train[batch_indices]
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state), nc0_of(params)

    def train_epoch(carry, key):
        order = jax.random.permutation(key, num_examples)
        batches = order[: num_steps * batch_size].reshape(num_steps, batch_size)
        return jax.lax.scan(train_step, carry, batches)

    @jax.jit
    def train(params, rest):
        keys = jax.random.split(jax.random.key(seed), epochs)
        _, nc0 = jax.lax.scan(train_epoch, (params, rest, tx.init(params)), keys)
        return nc0.reshape(-1)

    nc0 = train(params, rest)
    return np.concatenate([[float(nc0_of(params))], np.asarray(nc0, np.float64)])
