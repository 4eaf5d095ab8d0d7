"""Training loop with neural collapse metrics at every evaluation.

One epoch is one compiled program: the shuffled minibatches are scanned with
`jax.lax.scan` on the device, so Python runs once per epoch, not per step.
Metrics are computed at initialisation, every `eval_every` epochs and after
the last epoch, from features taken over the whole training split in
batches (two passes of the streaming accumulator) and NC4 over the test
split.
"""

from collections.abc import Callable, Iterator, Sequence
import contextlib
import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, NamedTuple

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncjax import augment as augment_lib
from ncjax import checkpoints
from ncjax import data as data_lib
from ncjax import metrics as metrics_lib
from ncjax import models
from ncjax import optimizers
from ncjax import results

METRICS_DTYPES = ("float32", "float64")



@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run."""

    dataset: str = "digits"
    data_dir: str | None = None
    samples_per_class: int | None = None
    model: str = "mlp"
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    batch_norm: bool = True
    # Channel (or ViT width) multiplier of the convolutional models and the ViT.
    width: float = 1.0
    # Random 32x32 crops of the 4-pixel padded images and horizontal flips,
    # drawn on the device from the seed (the study's CIFAR-10 augmentation).
    augment: bool = False
    optimizer: str = "adam"
    learning_rate: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Share of `weight_decay` added to the gradient; only for "adam_adamw".
    coupled_weight_decay: float | None = None
    epochs: int = 200
    batch_size: int = 128
    seed: int = 0
    eval_every: int = 10
    eval_batch_size: int = 1024
    metrics_dtype: str = "float64"

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and its accepted range."""
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; expected an integer >= 1")
        if self.samples_per_class is not None and self.samples_per_class < 1:
            raise ValueError(
                f"samples_per_class={self.samples_per_class} is invalid; "
                "expected an integer >= 1, or no value for the whole split"
            )
        if self.metrics_dtype not in METRICS_DTYPES:
            raise ValueError(
                f"metrics_dtype={self.metrics_dtype!r} is invalid; "
                f"expected one of: {', '.join(METRICS_DTYPES)}"
            )
        if self.model not in models.MODELS:
            raise ValueError(
                f"unknown model {self.model!r}; expected one of: {', '.join(models.MODELS)}"
            )
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ValueError(f"width={self.width!r} is invalid; expected a value > 0")
        if any(size < 1 for size in self.hidden_sizes) or not self.hidden_sizes:
            raise ValueError(
                f"hidden_sizes={list(self.hidden_sizes)} is invalid; "
                "expected one or more integers >= 1"
            )
        if self.optimizer not in optimizers.OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; "
                f"expected one of: {', '.join(optimizers.OPTIMIZERS)}"
            )
        if self.coupled_weight_decay is not None and not is_mix_optimizer(self.optimizer):
            raise ValueError(
                f"coupled_weight_decay={self.coupled_weight_decay} is set for "
                f"optimizer {self.optimizer!r}; it applies only to "
                f"{', '.join(optimizers.MIX_OPTIMIZERS)}"
            )
        optimizers.validate_hyperparameters(
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            coupled_weight_decay=self.coupled_weight_decay,
        )


@dataclasses.dataclass
class RunResult:
    """History of one run: one row per evaluation, and how it ended."""

    config: TrainConfig
    history: list[dict[str, Any]]
    status: str  # "completed" or "diverged"
    diverged_at_step: int | None = None
    # The trained model in training mode, or None for a run read from disk.
    # A diverged run keeps its parameters from before the bad epoch.
    model: nnx.Module | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]


# The study gives no best setting for the Adam-AdamW mix; these are its
# interpolation experiment's momentum and total decay, with Adam's usual rate.
MIX_DEFAULT_SETTING = optimizers.Hyperparameters(
    learning_rate=0.001, momentum=0.9, weight_decay=5e-4
)


def resolve_hyperparameters(
    optimizer: str,
    *,
    learning_rate: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
) -> optimizers.Hyperparameters:
    """Fill hyperparameters that are None from the study's best setting.

    The study's best-NC3 setting of each optimizer is used for every value
    the caller leaves out; values given explicitly always win.
    """
    default = optimizers.STUDY_BEST_SETTINGS.get(optimizer, MIX_DEFAULT_SETTING)
    return optimizers.Hyperparameters(
        learning_rate=default.learning_rate if learning_rate is None else learning_rate,
        momentum=default.momentum if momentum is None else momentum,
        weight_decay=default.weight_decay if weight_decay is None else weight_decay,
    )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Return full minibatches per epoch; the remainder is dropped each epoch.

    Each epoch reshuffles, so every sample is still seen over training.
    """
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size={batch_size} is invalid for {num_examples} training "
            f"samples; expected a value <= {num_examples}"
        )
    return num_examples // batch_size


def is_mix_optimizer(name: str) -> bool:
    """Return whether `name` takes a coupled part of the decay as a hyperparameter."""
    return name in optimizers.MIX_OPTIMIZERS


# The study trains its ViT with a warm-up and cosine schedule, gradient
# clipping and no decay on biases and LayerNorm parameters. Its other
# networks use step decay, no clipping and decay on every parameter.
VIT_MAX_GRADIENT_NORM = 1.0


def make_optimizer(
    name: str,
    *,
    epochs: int,
    num_steps_per_epoch: int,
    learning_rate: Any,
    momentum: Any,
    weight_decay: Any,
    coupled_weight_decay: Any = None,
    schedule: str = "step",
    mask: Any = None,
    max_gradient_norm: float | None = None,
) -> optax.GradientTransformation:
    """Create optimizer `name` with its learning-rate schedule.

    The hyperparameters may be Python numbers or traced JAX scalars, so one
    compiled program can serve a grid of values.

    Args:
      schedule: "step" divides the rate by 10 after one third and two thirds
        of the epochs; "warmup_cosine" is `optimizers.warmup_cosine_schedule`
        over all steps (the study's ViT schedule).
      mask: the parameters that decay, for example
        `models.weight_decay_mask(model)`; None decays all of them.
      max_gradient_norm: if given, gradients are clipped to this global norm
        before the optimizer sees them.
    """
    total_steps = epochs * num_steps_per_epoch
    if schedule == "step":
        rate = optimizers.step_decay_schedule(learning_rate, epochs, num_steps_per_epoch)
    elif schedule == "warmup_cosine":
        rate = optimizers.warmup_cosine_schedule(learning_rate, total_steps)
    else:
        raise ValueError(f"schedule={schedule!r} is invalid; expected 'step' or 'warmup_cosine'")
    kwargs = {}
    if is_mix_optimizer(name):
        kwargs["coupled_weight_decay"] = (
            0.0 if coupled_weight_decay is None else coupled_weight_decay
        )
    tx = optimizers.create_optimizer(
        name,
        learning_rate=rate,
        momentum=momentum,
        weight_decay=weight_decay,
        mask=mask,
        **kwargs,
    )
    if max_gradient_norm is not None:
        tx = optimizers.with_gradient_clipping(tx, max_gradient_norm)
    return tx


def build_optimizer(
    config: TrainConfig, num_steps_per_epoch: int, model: nnx.Module | None = None
) -> optax.GradientTransformation:
    """Create the configured optimizer with the schedule of its model.

    For the ViT, `model` is required: its decay mask leaves out biases,
    LayerNorm parameters, the class token and the position embeddings.
    """
    vit_options = {}
    if config.model == "vit":
        if model is None:
            raise ValueError("the ViT's optimizer needs the model for its weight decay mask")
        vit_options = dict(
            schedule="warmup_cosine",
            mask=models.weight_decay_mask(model),
            max_gradient_norm=VIT_MAX_GRADIENT_NORM,
        )
    return make_optimizer(
        config.optimizer,
        epochs=config.epochs,
        num_steps_per_epoch=num_steps_per_epoch,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        coupled_weight_decay=config.coupled_weight_decay,
        **vit_options,
    )


class _EpochParts(NamedTuple):
    """The two unjitted functions an epoch is built from."""

    # (carry, (batch_indices, augment_key)) -> (carry, loss), with carry
    # (params, rest, opt_state, x, y).
    train_step: Callable[..., Any]
    # (key, num_examples) -> (batch indices (num_steps, batch_size),
    # augmentation keys (num_steps,)).
    epoch_inputs: Callable[..., Any]


def _epoch_parts(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    *,
    batch_sharding: jax.sharding.Sharding | None = None,
    augment: bool = False,
) -> _EpochParts:
    """Build the training step and the per-epoch data order of one epoch.

    With `batch_sharding`, every minibatch is split along its batch axis
    across the devices of that sharding. The program stays the global
    computation, so BatchNorm statistics and the gradient are those of the
    whole minibatch, and XLA inserts the reductions across devices.
    """

    def loss_fn(params, rest, x, y):
        model = nnx.merge(graphdef, params, rest, copy=True)
        logits = model(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, new_rest

    def train_step(carry, inputs):
        params, rest, opt_state, x, y = carry
        batch_indices, augment_key = inputs
        xb, yb = x[batch_indices], y[batch_indices]
        if batch_sharding is not None:
            xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
            yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
        if augment:
            xb = augment_lib.random_crop_and_flip(augment_key, xb)
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state, x, y), loss

    def epoch_inputs(key, num_examples):
        order = jax.random.permutation(key, num_examples)
        batches = order[: num_steps * batch_size].reshape(num_steps, batch_size)
        # Derived with fold_in, so the data order is the same with and
        # without augmentation.
        augment_keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
        return batches, augment_keys

    return _EpochParts(train_step, epoch_inputs)


def _scanned_epoch(parts: _EpochParts) -> Callable[..., Any]:
    """Return the unjitted (params, rest, opt_state, x, y, key) -> (..., losses) epoch.

    The steps run as one `lax.scan`, so a jitted epoch is one program.
    """

    def train_epoch(params, rest, opt_state, x, y, key):
        inputs = parts.epoch_inputs(key, x.shape[0])
        carry = (params, rest, opt_state, x, y)
        (params, rest, opt_state, _, _), losses = jax.lax.scan(parts.train_step, carry, inputs)
        return params, rest, opt_state, losses

    return train_epoch


def _stepwise_epoch(parts: _EpochParts) -> Callable[..., Any]:
    """Return the epoch of `_scanned_epoch` run as one jitted call per step.

    The same steps in the same order, for models whose steps are slow inside
    a compiled loop. On XLA CPU (jax 0.10.2) the weight gradient of a
    convolution inside a `while` loop ran about 30 times slower than the
    same convolution outside one (jax-ml/jax issue 12868). With steps of
    tens of milliseconds or more, one dispatch per step costs little.
    """
    step = jax.jit(parts.train_step)
    epoch_inputs = jax.jit(parts.epoch_inputs, static_argnums=1)

    def train_epoch(params, rest, opt_state, x, y, key):
        batches, augment_keys = epoch_inputs(key, x.shape[0])
        carry = (params, rest, opt_state, x, y)
        losses = []
        for indices, augment_key in zip(batches, augment_keys):
            carry, loss = step(carry, (indices, augment_key))
            losses.append(loss)
        params, rest, opt_state, _, _ = carry
        return params, rest, opt_state, jnp.stack(losses)

    return train_epoch


def make_train_epoch(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    *,
    batch_sharding: jax.sharding.Sharding | None = None,
    augment: bool = False,
    stepwise: bool = False,
) -> Callable[..., Any]:
    """Return a function that runs one shuffled epoch of `num_steps` steps.

    The function maps (params, rest, opt_state, x, y, key) to
    (params, rest, opt_state, losses), where `rest` is the model's non-trainable
    state and `losses` contains the minibatch loss of every step. With
    `batch_sharding` each minibatch is split across devices (data
    parallelism); with `augment` each minibatch is randomly cropped and
    flipped, with keys drawn from `key`. The epoch is one jitted `lax.scan`,
    or with `stepwise` one jitted call per step (see `_stepwise_epoch`).
    """
    parts = _epoch_parts(
        graphdef, tx, num_steps, batch_size, batch_sharding=batch_sharding, augment=augment
    )
    if stepwise:
        return _stepwise_epoch(parts)
    return jax.jit(_scanned_epoch(parts))


def make_grid_train_epoch(
    graphdef: nnx.GraphDef,
    make_tx: Callable[[dict[str, jax.Array]], optax.GradientTransformation],
    num_steps: int,
    batch_size: int,
) -> Callable[..., Any]:
    """Return one jitted program that runs an epoch for every member of a grid.

    The function maps (params, rest, opt_state, hyperparameters, x, y, keys)
    to (params, rest, opt_state, losses). Every argument but `x` and `y` has a
    leading grid axis, and `hyperparameters` is a dict of traced scalars per
    member that `make_tx` turns into that member's optimizer. A new grid of
    the same size with other values reuses the compiled program.
    """

    def member_epoch(params, rest, opt_state, hyperparameters, x, y, key):
        tx = make_tx(hyperparameters)
        return _scanned_epoch(_epoch_parts(graphdef, tx, num_steps, batch_size))(
            params, rest, opt_state, x, y, key
        )

    grid_epoch = jax.vmap(member_epoch, in_axes=(0, 0, 0, 0, None, None, 0))
    return jax.jit(grid_epoch)


def _padded_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield fixed-size batches with 0/1 weights, padding the last one.

    A fixed shape keeps every evaluation batch on one compiled program.
    """
    num_examples = x.shape[0]
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        count = stop - start
        xb = np.zeros((batch_size, *x.shape[1:]), x.dtype)
        yb = np.zeros((batch_size,), y.dtype)
        xb[:count] = x[start:stop]
        yb[:count] = y[start:stop]
        weights = np.zeros((batch_size,), np.float32)
        weights[:count] = 1.0
        yield xb, yb, weights


@functools.lru_cache(maxsize=16)
def make_forward(graphdef: nnx.GraphDef) -> Callable[..., Any]:
    """Return a jitted (params, rest, x, y, weights) -> (features, loss_sum, correct_sum)."""

    @jax.jit
    def forward(params, rest, x, y, weights):
        model = nnx.merge(graphdef, params, rest, copy=True)
        features = model.features(x)
        logits = model.classifier(features)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        return features, jnp.sum(losses * weights), jnp.sum(correct * weights)

    return forward


def evaluate(
    model: nnx.Module,
    dataset: data_lib.Dataset,
    *,
    batch_size: int,
    metrics_dtype: str = "float64",
    forward: Callable[..., Any] | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> dict[str, Any]:
    """Compute loss, accuracy and every collapse metric of `model`.

    Class statistics come from the whole training split in two streaming
    passes (class means, then within-class covariance), so the feature matrix
    is never held in memory at once. NC4 uses the test split and the
    training class means. A copy of `model` is evaluated in inference mode
    (BatchNorm running statistics), so `model` itself is left as it was.
    `forward`, when given, must come from `make_forward` on the inference-mode
    graph of this architecture; reusing it across evaluations avoids a
    recompile. With `batch_sharding`, each batch is split across its devices,
    so `batch_size` must be a multiple of their number.
    """
    inference_model = nnx.clone(model)
    inference_model.eval()
    graphdef, params, rest = nnx.split(inference_model, nnx.Param, ...)
    forward = forward or make_forward(graphdef)
    dtype = jnp.float64 if metrics_dtype == "float64" else jnp.float32
    W, _ = models.classifier_parameters(model)
    dim = W.shape[1]
    num_classes = dataset.num_classes

    def batches(x, y):
        for xb, yb, wb in _padded_batches(x, y, batch_size):
            if batch_sharding is not None:
                xb, yb, wb = jax.device_put((xb, yb, wb), batch_sharding)
            yield xb, yb, wb

    accumulator = metrics_lib.StreamingClassStatistics(num_classes, dim, dtype=dtype)
    train_loss = train_correct = 0.0
    for xb, yb, wb in batches(dataset.x_train, dataset.y_train):
        features, loss_sum, correct_sum = forward(params, rest, xb, yb, wb)
        accumulator.update_means(features, yb, wb)
        train_loss += float(loss_sum)
        train_correct += float(correct_sum)
    for xb, yb, wb in batches(dataset.x_train, dataset.y_train):
        features, _, _ = forward(params, rest, xb, yb, wb)
        accumulator.update_covariance(features, yb, wb)
    stats = accumulator.result()

    # Float64 statistics stay float64 only while x64 is enabled.
    x64 = jax.enable_x64(True) if metrics_dtype == "float64" else contextlib.nullcontext()
    test_loss = test_correct = matches = 0.0
    for xb, yb, wb in batches(dataset.x_test, dataset.y_test):
        features, loss_sum, correct_sum = forward(params, rest, xb, yb, wb)
        test_loss += float(loss_sum)
        test_correct += float(correct_sum)
        with x64:
            matches += float(metrics_lib.nc4_matches(
                features.astype(dtype), W.astype(dtype), stats.class_means, wb
            ))

    num_train = dataset.x_train.shape[0]
    num_test = dataset.x_test.shape[0]
    row: dict[str, Any] = {
        "train_loss": train_loss / num_train,
        "train_accuracy": train_correct / num_train,
        "test_loss": test_loss / num_test,
        "test_accuracy": test_correct / num_test,
        "nc4": matches / num_test,
    }
    with x64:
        collapse = metrics_lib.collapse_metrics(stats, W.astype(dtype))
        row.update(results.to_json_value(dict(collapse)))
    return row


def _log_row(name: str, row: dict[str, Any], epochs: int) -> None:
    collapse = [row.get(key) for key in ("nc0", "nc1", "nc2", "nc3")]
    collapse = [float("nan") if value is None else value for value in collapse]
    logging.info(
        "%s epoch %d/%d: train accuracy %.4f, loss %.4g; NC0 %.4g, NC1 %.4g, "
        "NC2 %.4g, NC3 %.4g",
        name, row["epoch"], epochs, row["train_accuracy"], row["train_loss"],
        *collapse,
    )


class _RunLog:
    """History, log lines and result files of one run.

    With a workdir, the configuration is written at the start, the metrics
    file is rewritten atomically after each evaluation, and the summary is
    written when the run ends.
    """

    def __init__(self, config, dataset, name, workdir, batch_sharding=None):
        self.config = config
        self.dataset = dataset
        self.name = name
        # With several processes (jax.distributed), only the first writes.
        is_writer = jax.process_index() == 0
        self.workdir = Path(workdir) if workdir is not None and is_writer else None
        self.batch_sharding = batch_sharding
        self.history: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        if self.workdir is not None:
            results.write_json(
                self.workdir / results.CONFIG_FILE,
                {**dataclasses.asdict(config), "num_classes": dataset.num_classes,
                 "num_train": int(dataset.x_train.shape[0]),
                 "num_test": int(dataset.x_test.shape[0])},
            )

    def record(self, model, epoch, num_steps, forward) -> None:
        row = {"epoch": epoch, "step": epoch * num_steps}
        row.update(evaluate(model, self.dataset, batch_size=self.config.eval_batch_size,
                            metrics_dtype=self.config.metrics_dtype, forward=forward,
                            batch_sharding=self.batch_sharding))
        row["time_s"] = time.perf_counter() - self.start
        self.history.append(row)
        _log_row(self.name, row, self.config.epochs)
        if self.workdir is not None:
            results.write_jsonl(self.workdir / results.METRICS_FILE, self.history)

    def resume(self, history: list[dict[str, Any]], epoch: int) -> None:
        """Continue after `epoch` from the stored `history`, dropping later rows.

        Rows after the checkpoint's epoch belong to steps the resumed run
        trains again, so they are recomputed rather than kept.
        """
        self.history = [row for row in history if row["epoch"] <= epoch]
        if self.history:
            self.start = time.perf_counter() - self.history[-1]["time_s"]
        logging.info("%s resumed from the checkpoint after epoch %d", self.name, epoch)

    def diverged(self, losses, epoch, num_steps) -> int:
        """Log the first non-finite loss of `epoch` and return its global step."""
        first_bad = int(np.flatnonzero(~np.isfinite(losses))[0])
        step = (epoch - 1) * num_steps + first_bad + 1
        logging.warning(
            "%s diverged: the training loss is %s at step %d (epoch %d), so "
            "this run stops here", self.name, losses[first_bad], step, epoch,
        )
        return step

    def finish(self, status, diverged_at, model) -> RunResult:
        if self.workdir is not None:
            summary = {"name": self.name, "status": status,
                       "diverged_at_step": diverged_at,
                       "epochs_completed": self.history[-1]["epoch"],
                       "final": self.history[-1], "initial": self.history[0]}
            results.write_json(self.workdir / results.SUMMARY_FILE, summary)
        return RunResult(self.config, self.history, status, diverged_at, model=model)


def _inference_forward(graphdef, params, rest):
    """Return `make_forward` for the inference-mode graph of a model."""
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return make_forward(nnx.graphdef(model))


def create_model(config: TrainConfig, dataset: data_lib.Dataset) -> nnx.Module:
    """Build the configured model for the images and classes of `dataset`."""
    return models.create_model(
        config.model,
        dataset.x_train.shape[1:],
        dataset.num_classes,
        seed=config.seed,
        hidden_sizes=config.hidden_sizes,
        batch_norm=config.batch_norm,
        width=config.width,
    )


def _create_split_model(config: TrainConfig, dataset: data_lib.Dataset):
    model = create_model(config, dataset)
    model.train()
    return nnx.split(model, nnx.Param, ...)


DATA_AXIS = "data"


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Return a one-axis mesh named `DATA_AXIS` over `devices` (default: all devices).

    With several processes started by `jax.distributed.initialize`,
    `jax.devices()` lists the devices of every process, so the mesh spans
    them all.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def uses_stepwise_epochs(config: TrainConfig) -> bool:
    """Return whether `config` trains one jitted call per step rather than per epoch.

    True for the convolutional models on CPU, where XLA runs convolution
    gradients far slower inside a compiled loop (see `_stepwise_epoch`).
    """
    return config.model in ("resnet9", "vgg9") and jax.default_backend() == "cpu"


def check_batch_sizes(config: TrainConfig, num_devices: int) -> None:
    """Raise ValueError unless both batch sizes split evenly across `num_devices`."""
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value % num_devices:
            raise ValueError(
                f"{name}={value} is invalid for {num_devices} devices; expected a "
                f"multiple of {num_devices}, because each batch is split evenly across them"
            )


def train_and_evaluate(
    config: TrainConfig,
    dataset: data_lib.Dataset,
    *,
    workdir: str | Path | None = None,
    name: str | None = None,
    checkpoint_every: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> RunResult:
    """Train `config` on `dataset`, evaluating collapse metrics along the way.

    Training is data parallel over `devices` (default: all devices): the
    parameters and the dataset are replicated, and each minibatch is split
    across the devices, so `batch_size` and `eval_batch_size` must be
    multiples of their number. The result equals a one-device run up to
    the order of floating-point sums.

    When `workdir` is given, the resolved configuration, one JSON line per
    evaluation (rewritten atomically after each) and a summary are written
    there. A run whose loss becomes NaN or infinite stops at that epoch and
    is returned and recorded with status "diverged" and the first bad step.

    With `checkpoint_every`, an Orbax checkpoint of the whole training state
    is written to `workdir/checkpoints` every that many epochs, and a call
    that finds one there continues after its epoch. The resumed run takes
    the same steps as an uninterrupted one. The checkpoint must come from
    the same `config`; `experiments.train` checks that before calling.
    """
    config.validate()
    if checkpoint_every is not None:
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(
                f"checkpoint_every={checkpoint_every!r} is invalid; expected an integer >= 1 or None"
            )
        if workdir is None:
            raise ValueError("checkpoint_every is set without a workdir; checkpoints need a workdir")
    mesh = data_parallel_mesh(devices)
    check_batch_sizes(config, mesh.size)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))

    log = _RunLog(config, dataset, name or config.optimizer, workdir, batch_sharding)
    num_steps = steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
    graphdef, params, rest = _create_split_model(config, dataset)
    tx = build_optimizer(config, num_steps, nnx.merge(graphdef, params, rest))
    params, rest = jax.device_put((params, rest), replicated)
    opt_state = jax.device_put(tx.init(params), replicated)
    train_epoch = make_train_epoch(
        graphdef, tx, num_steps, config.batch_size,
        batch_sharding=batch_sharding, augment=config.augment,
        stepwise=uses_stepwise_epochs(config),
    )
    forward = _inference_forward(graphdef, params, rest)
    x_train, y_train = jax.device_put((dataset.x_train, dataset.y_train), replicated)
    key = jax.random.key(config.seed)

    start_epoch = 0
    manager = None
    if checkpoint_every is not None:
        manager = checkpoints.open_manager(workdir)
        restored = checkpoints.restore_latest(
            manager, checkpoints.training_state(params, rest, opt_state, key, 0)
        )
        if restored is not None:
            params, rest, opt_state = restored["params"], restored["rest"], restored["opt_state"]
            key = checkpoints.unpack_key(restored)
            start_epoch = int(restored["epoch"])
            log.resume(_stored_history(workdir), start_epoch)

    status, diverged_at = "completed", None
    if start_epoch == 0:
        log.record(nnx.merge(graphdef, params, rest), 0, num_steps, forward)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        key, epoch_key = jax.random.split(key)
        new_params, new_rest, new_opt_state, losses = train_epoch(
            params, rest, opt_state, x_train, y_train, epoch_key
        )
        losses = np.asarray(losses)
        if not np.all(np.isfinite(losses)):
            status, diverged_at = "diverged", log.diverged(losses, epoch, num_steps)
            break
        params, rest, opt_state = new_params, new_rest, new_opt_state
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            log.record(nnx.merge(graphdef, params, rest), epoch, num_steps, forward)
        if manager is not None and epoch % checkpoint_every == 0:
            checkpoints.save(manager, checkpoints.training_state(params, rest, opt_state, key, epoch))
    if manager is not None:
        manager.close()
    return log.finish(status, diverged_at, nnx.merge(graphdef, params, rest))


def _stored_history(workdir: str | Path) -> list[dict[str, Any]]:
    """Return the evaluation rows already written to `workdir`, or [] if there are none."""
    try:
        return results.read_jsonl(Path(workdir) / results.METRICS_FILE)
    except FileNotFoundError:
        return []


# Fields that may differ between the members of one grid: they enter the
# compiled program as traced values. Every other field must be equal.
GRID_FIELDS = ("learning_rate", "momentum", "weight_decay", "coupled_weight_decay", "seed")


def _check_grid(configs: Sequence[TrainConfig]) -> None:
    if not configs:
        raise ValueError("configs is empty; expected at least one TrainConfig")
    for config in configs:
        config.validate()
    reference = configs[0]
    # NOTE: the grid program has neither the ViT's schedule, clipping and
    # decay mask nor augmentation yet, so it rejects them instead of
    # training something else.
    if reference.model == "vit":
        raise ValueError("train_grid does not support model 'vit'; train it with train_and_evaluate")
    if reference.augment:
        raise ValueError("train_grid does not support augment=True; train it with train_and_evaluate")
    for config in configs[1:]:
        for field in dataclasses.fields(TrainConfig):
            if field.name in GRID_FIELDS:
                continue
            if getattr(config, field.name) != getattr(reference, field.name):
                raise ValueError(
                    f"configs differ in {field.name} ({getattr(reference, field.name)!r} "
                    f"and {getattr(config, field.name)!r}); a grid may differ only in "
                    f"{', '.join(GRID_FIELDS)}"
                )


@functools.lru_cache(maxsize=16)
def _grid_epoch_program(graphdef, optimizer, epochs, num_steps, batch_size):
    """Return the grid epoch for these static settings, built once and reused.

    Caching the jitted function is what lets a later grid with other values
    skip tracing and compilation.
    """
    make_tx = functools.partial(
        make_optimizer, optimizer, epochs=epochs, num_steps_per_epoch=num_steps
    )
    return make_grid_train_epoch(
        graphdef, lambda values: make_tx(**values), num_steps, batch_size
    )


def _grid_member(tree, index: int):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def train_grid(
    configs: Sequence[TrainConfig],
    dataset: data_lib.Dataset,
    *,
    workdirs: Sequence[str | Path] | None = None,
    names: Sequence[str] | None = None,
) -> list[RunResult]:
    """Train many configurations at once, one vmapped program per epoch.

    The configurations may differ only in `GRID_FIELDS` (learning rate,
    momentum, weight decay, coupled decay and seed). Those enter the compiled
    epoch as traced values with a leading grid axis, so the whole grid runs
    as one program, and another grid of the same size and static fields
    reuses it. Each member gives the same history as `train_and_evaluate`
    up to float32 rounding: the same initialisation and data order for its
    seed, and evaluations at the same epochs. A member whose loss becomes NaN
    or infinite is recorded as diverged at its first bad step, and the
    others go on, and its result has no model. Memory grows linearly with
    the grid size (parameters and optimizer state of every member).
    """
    _check_grid(configs)
    config = configs[0]
    names = list(names) if names is not None else [c.optimizer for c in configs]
    workdirs = list(workdirs) if workdirs is not None else [None] * len(configs)
    if len(names) != len(configs) or len(workdirs) != len(configs):
        raise ValueError(
            f"got {len(configs)} configs, {len(names)} names and {len(workdirs)} "
            "workdirs; expected one name and one workdir per config"
        )
    logs = [
        _RunLog(member, dataset, name, workdir)
        for member, name, workdir in zip(configs, names, workdirs)
    ]
    num_steps = steps_per_epoch(dataset.x_train.shape[0], config.batch_size)

    split_models = [_create_split_model(member, dataset) for member in configs]
    graphdef = split_models[0][0]
    params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[m[1] for m in split_models])
    rest = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[m[2] for m in split_models])
    hyperparameters = {
        "learning_rate": jnp.asarray([c.learning_rate for c in configs], jnp.float32),
        "momentum": jnp.asarray([c.momentum for c in configs], jnp.float32),
        "weight_decay": jnp.asarray([c.weight_decay for c in configs], jnp.float32),
        "coupled_weight_decay": jnp.asarray(
            [c.coupled_weight_decay or 0.0 for c in configs], jnp.float32
        ),
    }

    make_tx = functools.partial(
        make_optimizer, config.optimizer, epochs=config.epochs,
        num_steps_per_epoch=num_steps,
    )
    opt_state = jax.vmap(lambda p, values: make_tx(**values).init(p))(params, hyperparameters)
    grid_epoch = _grid_epoch_program(
        graphdef, config.optimizer, config.epochs, num_steps, config.batch_size
    )
    forward = _inference_forward(graphdef, *split_models[0][1:])
    x_train = jnp.asarray(dataset.x_train)
    y_train = jnp.asarray(dataset.y_train)
    keys = jnp.stack([jax.random.key(c.seed) for c in configs])

    def member_model(index):
        return nnx.merge(graphdef, _grid_member(params, index), _grid_member(rest, index))

    status = ["completed"] * len(configs)
    diverged_at: list[int | None] = [None] * len(configs)
    for index, log in enumerate(logs):
        log.record(member_model(index), 0, num_steps, forward)
    for epoch in range(1, config.epochs + 1):
        split_keys = jax.vmap(jax.random.split)(keys)
        keys, epoch_keys = split_keys[:, 0], split_keys[:, 1]
        params, rest, opt_state, losses = grid_epoch(
            params, rest, opt_state, hyperparameters, x_train, y_train, epoch_keys
        )
        losses = np.asarray(losses)
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        for index, log in enumerate(logs):
            if status[index] != "completed":
                continue
            if not np.all(np.isfinite(losses[index])):
                status[index] = "diverged"
                diverged_at[index] = log.diverged(losses[index], epoch, num_steps)
            elif evaluate_now:
                log.record(member_model(index), epoch, num_steps, forward)
        if all(value == "diverged" for value in status):
            break
    return [
        log.finish(status[index], diverged_at[index],
                   member_model(index) if status[index] == "completed" else None)
        for index, log in enumerate(logs)
    ]
