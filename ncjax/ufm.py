r"""The unconstrained feature model (UFM), trained with the study's optimizers.

In the UFM the last-layer features are free parameters: ``H`` (p, N) contains
one column ``h_n`` per sample, and it is trained jointly with the classifier
``W`` (K, p) and an optional bias ``b`` (K,) on the softmax cross-entropy

.. math::

    L(W, H, b) = \frac{1}{N} \sum_{n=1}^N \mathrm{CE}(W h_n + b, y_n),

with balanced labels (``samples_per_class`` samples of each class). Training
is full batch, so one step applies one gradient of the mean loss over all N
samples. Weight decay acts on every trained parameter, so with coupled decay
the optimizer receives the gradient of :math:`L + \frac{\lambda}{2}(\|W\|^2 +
\|H\|^2 + \|b\|^2)`. The theorems on sign descent sum the loss over the
samples instead. The sign of the gradient is the same, so decoupled sign
descent matches them at the same :math:`\lambda`, and coupled sign descent
with decay :math:`\lambda'` there matches :math:`\lambda = \lambda' / N`
here.

A whole run is one jitted program: ``lax.scan`` over the steps, with the
metrics of ``ufm_metrics`` at step 0, every ``eval_every`` steps and after
the last step. ``train_ufm_grid`` runs a grid of hyperparameters as one
``jax.vmap`` of that program, compiled once per ``UFMConfig`` and grid
size, so a second grid of the same size with other values reuses it.

Memory of a grid, from XLA's memory analysis of the compiled program (jax
0.10.2 on CPU; a GPU build may assign buffers differently): the temporary
buffers come to about 9 copies of ``H`` per grid point for the Adam family
and 8 for the SGD and Signum families. Three of them belong to the
evaluation, where ``metrics.class_statistics`` holds transposed and centred
copies of the features, and the rest are ``H``, its optimizer state and the
gradient and update of a step. At p = 512, N = 10,000 and 108 grid points in
float32, ``H`` alone is 2.2 GB and an Adam grid needs about 20 GB. Each
evaluation also holds a few (p, p) matrices per grid point, which matter
when N is not much larger than p. With ``train_features=False`` the fixed
``H`` passed in ``initial_params`` is shared by every grid point. Grids of
equal size share one compiled program, so a grid too large for the device
can run as equal chunks without compiling again.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncjax import metrics
from ncjax import optimizers

Array = jax.Array
Params = dict[str, Array]

# Full float32 precision for W @ H. On GPUs with TF32 the default precision
# rounds the inputs to 10 mantissa bits, and the resulting error in the
# gradient would put a floor under NC0, which coupled decay drives to zero.
_HIGHEST = jax.lax.Precision.HIGHEST


class UFMConfig(NamedTuple):
    """Shapes, loop lengths and optimizer choice of a UFM run.

    A config is static under ``jax.jit``: every distinct config compiles its
    own program, while the values in ``UFMHyperparameters`` do not.

    Attributes:
      num_classes: K, at least 2.
      dim: p, the feature dimension.
      samples_per_class: N / K; the labels are balanced.
      optimizer: a key of ``optimizers.FAMILIES`` (its own share of coupled
        decay is the default) or a name in ``optimizers.MIX_OPTIMIZERS``
        (default share 0).
      steps: number of full-batch optimizer steps.
      eval_every: steps between evaluations. Metrics are also taken at step
        0 and after the last step.
      bias: train a bias ``b``, which decays like the other parameters.
      train_features: if False, ``H`` stays at its initial value and only
        ``W`` (and ``b``) are trained.
      init_scale: ``H`` starts with entries drawn from N(0, init_scale^2) and
        ``W`` from N(0, init_scale^2 / p), and ``b`` at 0. The features then
        have unit scale per coordinate, as normalised activations do, and the
        fan-in scaling of ``W`` (LeCun normal) gives logits with standard
        deviation init_scale^2 at the start, whatever p is.
      step_decay: if True, the learning rate is divided by 10 after one
        third and two thirds of the steps, the study's schedule with each
        full-batch step counted as an epoch. Otherwise it is constant.
      adam_b2: ``b2`` of the Adam family, ignored by the others.
      adam_eps: ``eps`` of the Adam family, ignored by the others.
      record_classifier: if True, the history also stores ``W`` (and ``b``)
        at every evaluation. ``H`` is never stored.
    """

    num_classes: int = 10
    dim: int = 512
    samples_per_class: int = 1000
    optimizer: str = "adam"
    steps: int = 1000
    eval_every: int = 100
    bias: bool = False
    train_features: bool = True
    init_scale: float = 1.0
    step_decay: bool = False
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    record_classifier: bool = False

    @property
    def num_samples(self) -> int:
        """N = K * samples_per_class."""
        return self.num_classes * self.samples_per_class

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and its accepted range."""
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} is invalid; expected an integer >= 2")
        for name in ("dim", "samples_per_class", "eval_every"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}={value} is invalid; expected an integer >= 1")
        if self.steps < 0:
            raise ValueError(f"steps={self.steps} is invalid; expected an integer >= 0")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale={self.init_scale} is invalid; expected a value > 0")
        names = [*optimizers.FAMILIES, *optimizers.MIX_OPTIMIZERS]
        if self.optimizer not in names:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of: {', '.join(names)}")


class UFMHyperparameters(NamedTuple):
    """Traced hyperparameters of one run, or of a grid with a leading axis.

    Attributes:
      learning_rate: the learning rate, >= 0.
      momentum: momentum, or ``b1`` for the Adam family, in [0, 1).
      weight_decay: total weight decay, >= 0.
      coupled_share: fraction of ``weight_decay`` added to the gradient, in
        [0, 1]. ``None`` uses the configured optimizer's own share.
      seed: integer seed of the initialisation. Unused when the caller gives
        ``initial_params``.
    """

    learning_rate: Any
    momentum: Any
    weight_decay: Any
    coupled_share: Any = None
    seed: Any = 0


def hyperparameter_grid(
    *,
    learning_rate,
    momentum,
    weight_decay,
    coupled_share=None,
    seed=0,
) -> UFMHyperparameters:
    """Build the Cartesian product of hyperparameter values, flattened to one axis.

    Each argument is a number or a sequence of numbers. The order is that of
    ``itertools.product(learning_rate, momentum, weight_decay, coupled_share,
    seed)``: ``seed`` varies fastest and ``learning_rate`` slowest, so an
    array over the grid reshapes to ``(len(learning_rate), len(momentum),
    len(weight_decay), len(coupled_share), len(seed))``. With
    ``coupled_share=None`` that axis is left out and every point uses the
    optimizer's own share.

    Returns:
      ``UFMHyperparameters`` of 1-D numpy arrays: float64 values, which JAX
      converts to float32 unless x64 is enabled, and int32 seeds.
    """
    values = {
        "learning_rate": np.atleast_1d(np.asarray(learning_rate, np.float64)),
        "momentum": np.atleast_1d(np.asarray(momentum, np.float64)),
        "weight_decay": np.atleast_1d(np.asarray(weight_decay, np.float64)),
    }
    if coupled_share is not None:
        values["coupled_share"] = np.atleast_1d(np.asarray(coupled_share, np.float64))
    values["seed"] = np.atleast_1d(np.asarray(seed, np.int32))
    for name, axis in values.items():
        if axis.ndim != 1 or axis.size == 0:
            raise ValueError(f"{name} must be a number or a non-empty 1-D sequence, got shape {axis.shape}")

    columns = np.meshgrid(*values.values(), indexing="ij")
    flat = {name: column.ravel() for name, column in zip(values, columns)}
    grid = UFMHyperparameters(**flat)
    _check_hyperparameters(grid, grid_axis=True)
    return grid


# For each float hyperparameter, a test of valid values and its description.
_VALID_RANGES = {
    "learning_rate": (lambda value: value >= 0, "a value >= 0"),
    "momentum": (lambda value: (0 <= value) & (value < 1), "a value in [0, 1)"),
    "weight_decay": (lambda value: value >= 0, "a value >= 0"),
    "coupled_share": (lambda value: (0 <= value) & (value <= 1), "a value in [0, 1]"),
}


def _check_hyperparameters(hparams: UFMHyperparameters, *, grid_axis: bool) -> None:
    """Check the shapes and ranges of the hyperparameters that are not traced."""
    for name, value in hparams._asdict().items():
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        value = np.asarray(value)
        if value.ndim > int(grid_axis):
            expected = "a scalar or a 1-D array over the grid" if grid_axis else "a scalar"
            raise ValueError(f"{name} has shape {value.shape}; expected {expected}")
        if name == "seed":
            if not np.issubdtype(value.dtype, np.integer):
                raise ValueError(f"seed has dtype {value.dtype}; expected integers")
            continue
        is_valid, accepted = _VALID_RANGES[name]
        # The comparisons are False for NaN, so NaN is rejected too.
        invalid = np.ravel(value)[~np.ravel(is_valid(value))]
        if invalid.size:
            raise ValueError(f"{name}={invalid[0]} is invalid; expected {accepted}")


def _broadcast_grid(grid: UFMHyperparameters) -> UFMHyperparameters:
    """Broadcast the scalar fields of a grid to the length of its 1-D fields."""
    sizes = {np.shape(value)[0] for value in grid if value is not None and np.ndim(value) == 1}
    if not sizes:
        raise ValueError("the grid has no 1-D field; give at least one hyperparameter as a 1-D array")
    if len(sizes) > 1:
        raise ValueError(f"the 1-D fields of the grid must have the same length, got lengths {sorted(sizes)}")
    size = sizes.pop()
    broadcast = {}
    for name, value in grid._asdict().items():
        if value is None or np.ndim(value) == 1:
            continue
        if isinstance(value, jax.Array):
            broadcast[name] = jnp.broadcast_to(value, (size,))
        else:
            broadcast[name] = np.broadcast_to(np.asarray(value), (size,))
    return grid._replace(**broadcast)


def _check_initial_params(config: UFMConfig, initial_params: Params | None) -> None:
    """Check that the given parameters have the names and shapes of the config."""
    if initial_params is None:
        return
    p, N, K = config.dim, config.num_samples, config.num_classes
    expected = {"H": (p, N), "W": (K, p)}
    if config.bias:
        expected["b"] = (K,)
    if set(initial_params) != set(expected):
        raise ValueError(
            f"initial_params has keys {sorted(initial_params)}; expected {sorted(expected)} for bias={config.bias}"
        )
    for name, shape in expected.items():
        if np.shape(initial_params[name]) != shape:
            raise ValueError(
                f"initial_params[{name!r}] has shape {np.shape(initial_params[name])}; expected {shape}"
                f" for num_classes={K}, dim={p} and {N} samples"
            )


def ufm_labels(config: UFMConfig) -> Array:
    """Return the (N,) int32 labels, sorted by class: ``samples_per_class`` of each."""
    return jnp.repeat(jnp.arange(config.num_classes, dtype=jnp.int32), config.samples_per_class)


def init_ufm(config: UFMConfig, key: Array) -> Params:
    """Draw the initial ``H`` (p, N), ``W`` (K, p) and, with a bias, ``b`` (K,).

    The distributions are those of ``UFMConfig.init_scale``, in JAX's
    default float dtype (float32 unless x64 is enabled).
    """
    key_H, key_W = jax.random.split(key)
    p, N, K = config.dim, config.num_samples, config.num_classes
    params = {
        "H": config.init_scale * jax.random.normal(key_H, (p, N)),
        "W": config.init_scale / np.sqrt(p) * jax.random.normal(key_W, (K, p)),
    }
    if config.bias:
        params["b"] = jnp.zeros((K,))
    return params


def ufm_logits(params: Params) -> Array:
    """Return the (K, N) logits ``W H + b``."""
    logits = jnp.matmul(params["W"], params["H"], precision=_HIGHEST)
    if "b" in params:
        logits = logits + params["b"][:, None]
    return logits


def ufm_loss(params: Params, labels: Array) -> Array:
    """Return the mean softmax cross-entropy over the N samples (no decay term)."""
    logits = ufm_logits(params)
    return optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()


def ufm_metrics(params: Params, labels: Array, num_classes: int) -> dict[str, Array]:
    """Compute the training loss and accuracy and every NC metric of the UFM.

    The NC metrics are ``metrics.collapse_metrics`` on
    ``metrics.class_statistics(H^T, labels)`` and ``W``, so the keys are
    ``metrics.METRIC_NAMES``, "singular_values_W" and "singular_values_M",
    plus "train_loss" and "train_accuracy". The accuracy counts the bias.
    """
    logits = ufm_logits(params)
    stats = metrics.class_statistics(params["H"].T, labels, num_classes)
    values = metrics.collapse_metrics(stats, params["W"])
    values["train_loss"] = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
    values["train_accuracy"] = jnp.mean(jnp.argmax(logits, axis=0) == labels)
    return values


def evaluation_steps(config: UFMConfig) -> np.ndarray:
    """Return the steps at which ``train_ufm`` evaluates: 0, every ``eval_every``, and the last."""
    steps = list(range(0, config.steps + 1, config.eval_every))
    if steps[-1] != config.steps:
        steps.append(config.steps)
    return np.asarray(steps)


def make_ufm_optimizer(config: UFMConfig, hparams: UFMHyperparameters) -> optax.GradientTransformation:
    """Build the configured optimizer's mix with the (possibly traced) hyperparameters."""
    learning_rate = hparams.learning_rate
    if config.step_decay:
        learning_rate = optimizers.step_decay_schedule(learning_rate, max(config.steps, 1), 1)
    options = {}
    mix_name = optimizers.FAMILIES.get(config.optimizer, (config.optimizer, 0.0))[0]
    if mix_name == "adam_adamw":
        options = {"b2": config.adam_b2, "eps": config.adam_eps}
    return optimizers.split_decay_optimizer(
        config.optimizer,
        learning_rate=learning_rate,
        momentum=hparams.momentum,
        weight_decay=hparams.weight_decay,
        coupled_share=hparams.coupled_share,
        **options,
    )


def _train(config: UFMConfig, hparams: UFMHyperparameters, initial_params: Params | None):
    """Run one UFM training: the traceable body of ``train_ufm``."""
    labels = ufm_labels(config)
    if initial_params is None:
        initial_params = init_ufm(config, jax.random.key(hparams.seed))
    dtype = initial_params["W"].dtype
    # Hyperparameters in a wider dtype than the parameters would widen the
    # optimizer state after the first step, and lax.scan needs a fixed carry.
    hparams = hparams._replace(
        **{
            name: jnp.asarray(value, dtype)
            for name, value in hparams._asdict().items()
            if name != "seed" and value is not None
        }
    )

    if config.train_features:
        fixed = {}
        trained = dict(initial_params)
    else:
        fixed = {"H": initial_params["H"]}
        trained = {name: value for name, value in initial_params.items() if name != "H"}
    optimizer = make_ufm_optimizer(config, hparams)

    def loss_fn(trained):
        return ufm_loss(trained | fixed, labels)

    def step(carry, _):
        trained, state = carry
        grads = jax.grad(loss_fn)(trained)
        updates, state = optimizer.update(grads, state, trained)
        return (optax.apply_updates(trained, updates), state), None

    def run_steps(carry, num_steps):
        carry, _ = jax.lax.scan(step, carry, None, length=num_steps)
        return carry

    def evaluate(trained):
        params = trained | fixed
        values = ufm_metrics(params, labels, config.num_classes)
        if config.record_classifier:
            values["W"] = params["W"]
            if "b" in params:
                values["b"] = params["b"]
        return values

    def segment(carry, _):
        carry = run_steps(carry, config.eval_every)
        return carry, evaluate(carry[0])

    carry = (trained, optimizer.init(trained))
    history = [jax.tree.map(lambda value: value[None], evaluate(trained))]
    num_segments, remainder = divmod(config.steps, config.eval_every)
    if num_segments:
        carry, segment_history = jax.lax.scan(segment, carry, None, length=num_segments)
        history.append(segment_history)
    if remainder:
        carry = run_steps(carry, remainder)
        history.append(jax.tree.map(lambda value: value[None], evaluate(carry[0])))
    history = jax.tree.map(lambda *parts: jnp.concatenate(parts), *history)
    history["step"] = jnp.asarray(evaluation_steps(config), jnp.int32)
    return carry[0] | fixed, history


_train_jit = jax.jit(_train, static_argnames="config")


@functools.partial(jax.jit, static_argnames=("config", "return_params", "batch_size"))
def _train_grid_jit(config, grid, initial_params, return_params, batch_size):
    def train_member(hparams):
        params, history = _train(config, hparams, initial_params)
        # Leaving the parameters out lets XLA free them at the end of the run.
        return (params if return_params else None), history

    if batch_size is None:
        return jax.vmap(train_member)(grid)
    if batch_size == 1:
        # Not lax.map's batch_size=1, which vmaps over batches of one point:
        # XLA CPU then writes the gradient of H transposed, about 3x slower.
        return jax.lax.map(train_member, grid)
    # lax.map vmaps train_member over batches of batch_size points and loops
    # over the batches (and a smaller remainder batch) inside this program.
    return jax.lax.map(train_member, grid, batch_size=batch_size)


def train_ufm(
    config: UFMConfig,
    hparams: UFMHyperparameters,
    *,
    initial_params: Params | None = None,
) -> tuple[Params, dict[str, Array]]:
    """Train one UFM in one jitted program.

    Args:
      config: shapes, loop lengths and optimizer, static.
      hparams: scalar hyperparameters. Values that are not traced are
        range-checked first.
      initial_params: ``{"H", "W"}`` (and ``"b"`` with a bias) to start from,
        for example ``H = E``, the simplex ETF, with ``W = 0``. By default
        they are drawn by ``init_ufm`` from ``hparams.seed``. Their dtype sets
        the dtype of the whole run.

    Returns:
      The final parameters (``H`` included, also when it is fixed) and the
      history: a dict of arrays with a leading axis over the evaluations at
      ``evaluation_steps(config)``, holding the metrics of ``ufm_metrics``,
      "step", and with ``record_classifier`` "W" (and "b"). A diverged run is
      not stopped: its metrics become NaN or infinite.

    Raises:
      ValueError: for an invalid config, hyperparameter or initial parameter.
    """
    config.validate()
    _check_hyperparameters(hparams, grid_axis=False)
    _check_initial_params(config, initial_params)
    return _train_jit(config, hparams, initial_params)


def train_ufm_grid(
    config: UFMConfig,
    grid: UFMHyperparameters,
    *,
    initial_params: Params | None = None,
    return_params: bool = False,
    batch_size: int | None = None,
):
    """Train a grid of UFMs as one jitted ``jax.vmap`` of ``train_ufm``.

    The program is compiled once per ``config``, grid size, ``batch_size``
    and dtype, so a second grid of the same size with other values runs
    without compiling. See the module docstring for the memory a grid needs.

    Args:
      config: shapes, loop lengths and optimizer, shared by the grid, static.
      grid: hyperparameters with a leading grid axis, for example from
        ``hyperparameter_grid``. Scalar fields are shared by every point.
      initial_params: parameters shared by every grid point (no grid axis).
        By default each point draws its own from its seed.
      return_params: if True, also return the final parameters of every
        point; ``H`` then costs ``p * N`` floats per point in the output.
      batch_size: if given, the program trains ``batch_size`` points at a
        time as one ``jax.vmap`` and loops over these batches with
        ``jax.lax.map``, all inside the one compiled program. The temporary
        memory then scales with ``batch_size`` rather than the grid size.
        ``batch_size=1`` trains one point after another, without ``vmap``.
        On 2 CPU cores at p = 512 and N = 10,000 that was 1.35 times faster
        than vmapping the points (``benchmarks/ufm_grid.py``, jax 0.10.2).
        ``None`` (the default) vmaps the whole grid at once.

    Returns:
      The history of ``train_ufm`` with a leading grid axis, or with
      ``return_params`` the pair ``(final params, history)``, both with a
      leading grid axis.

    Raises:
      ValueError: for an invalid config, hyperparameter, initial parameter or
        batch size.
    """
    config.validate()
    _check_hyperparameters(grid, grid_axis=True)
    _check_initial_params(config, initial_params)
    valid_batch = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
    if batch_size is not None and not valid_batch:
        raise ValueError(f"batch_size={batch_size!r} is invalid; expected None or an integer >= 1")
    grid = _broadcast_grid(grid)
    params, history = _train_grid_jit(config, grid, initial_params, return_params, batch_size)
    if return_params:
        return params, history
    return history
