"""Training loop with neural collapse metrics at every evaluation.

One epoch is one compiled program: the shuffled minibatches are scanned with
`jax.lax.scan` on the device, so Python runs once per epoch, not per step.
Metrics are computed at initialisation, every `eval_every` epochs and after
the last epoch, from features taken over the whole training split in
batches (two passes of the streaming accumulator) and NC4 over the test
split.
"""

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

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
        if self.coupled_weight_decay is not None and self.optimizer != "adam_adamw":
            raise ValueError(
                f"coupled_weight_decay={self.coupled_weight_decay} is set for "
                f"optimizer {self.optimizer!r}; it applies only to adam_adamw"
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


def build_optimizer(config: TrainConfig, num_steps_per_epoch: int) -> optax.GradientTransformation:
    """Create the configured optimizer with the step-decay schedule."""
    schedule = optimizers.step_decay_schedule(
        config.learning_rate, config.epochs, num_steps_per_epoch
    )
    kwargs = {}
    if config.optimizer == "adam_adamw":
        kwargs["coupled_weight_decay"] = config.coupled_weight_decay or 0.0
    return optimizers.create_optimizer(
        config.optimizer,
        learning_rate=schedule,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        **kwargs,
    )


def make_train_epoch(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
) -> Callable[..., Any]:
    """Return a jitted function that runs one shuffled epoch of `num_steps` steps.

    The function maps (params, rest, opt_state, x, y, key) to
    (params, rest, opt_state, losses), where `rest` is the model's non-trainable
    state and `losses` contains the minibatch loss of every step.
    """

    def loss_fn(params, rest, x, y):
        model = nnx.merge(graphdef, params, rest, copy=True)
        logits = model(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, new_rest

    def train_step(carry, batch_indices):
        params, rest, opt_state, x, y = carry
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, rest, x[batch_indices], y[batch_indices]
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, rest, opt_state, x, y), loss

    @jax.jit
    def train_epoch(params, rest, opt_state, x, y, key):
        order = jax.random.permutation(key, x.shape[0])
        batches = order[: num_steps * batch_size].reshape(num_steps, batch_size)
        carry = (params, rest, opt_state, x, y)
        (params, rest, opt_state, _, _), losses = jax.lax.scan(train_step, carry, batches)
        return params, rest, opt_state, losses

    return train_epoch


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
) -> dict[str, Any]:
    """Compute loss, accuracy and every collapse metric of `model`.

    Class statistics come from the whole training split in two streaming
    passes (class means, then within-class covariance), so the feature matrix
    is never held in memory at once. NC4 uses the test split and the
    training class means. A copy of `model` is evaluated in inference mode
    (BatchNorm running statistics), so `model` itself is left as it was.
    `forward`, when given, must come from `make_forward` on the inference-mode
    graph of this architecture; reusing it across evaluations avoids a
    recompile.
    """
    inference_model = nnx.clone(model)
    inference_model.eval()
    graphdef, params, rest = nnx.split(inference_model, nnx.Param, ...)
    forward = forward or make_forward(graphdef)
    dtype = jnp.float64 if metrics_dtype == "float64" else jnp.float32
    W, _ = models.classifier_parameters(model)
    dim = W.shape[1]
    num_classes = dataset.num_classes

    accumulator = metrics_lib.StreamingClassStatistics(num_classes, dim, dtype=dtype)
    train_loss = train_correct = 0.0
    for xb, yb, wb in _padded_batches(dataset.x_train, dataset.y_train, batch_size):
        features, loss_sum, correct_sum = forward(params, rest, xb, yb, wb)
        accumulator.update_means(features, yb, wb)
        train_loss += float(loss_sum)
        train_correct += float(correct_sum)
    for xb, yb, wb in _padded_batches(dataset.x_train, dataset.y_train, batch_size):
        features, _, _ = forward(params, rest, xb, yb, wb)
        accumulator.update_covariance(features, yb, wb)
    stats = accumulator.result()

    # Float64 statistics stay float64 only while x64 is enabled.
    x64 = jax.enable_x64(True) if metrics_dtype == "float64" else contextlib.nullcontext()
    test_loss = test_correct = matches = 0.0
    for xb, yb, wb in _padded_batches(dataset.x_test, dataset.y_test, batch_size):
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


def train_and_evaluate(
    config: TrainConfig,
    dataset: data_lib.Dataset,
    *,
    workdir: str | Path | None = None,
    name: str | None = None,
) -> RunResult:
    """Train `config` on `dataset`, evaluating collapse metrics along the way.

    When `workdir` is given, the resolved configuration, one JSON line per
    evaluation (rewritten atomically after each) and a summary are written
    there. A run whose loss becomes NaN or infinite stops at that epoch and
    is returned and recorded with status "diverged" and the first bad step.
    """
    config.validate()
    name = name or config.optimizer
    workdir = Path(workdir) if workdir is not None else None
    if workdir is not None:
        results.write_json(
            workdir / results.CONFIG_FILE,
            {**dataclasses.asdict(config), "num_classes": dataset.num_classes,
             "num_train": int(dataset.x_train.shape[0]),
             "num_test": int(dataset.x_test.shape[0])},
        )

    num_steps = steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
    tx = build_optimizer(config, num_steps)
    model = models.create_model(
        config.model,
        dataset.x_train.shape[1:],
        dataset.num_classes,
        seed=config.seed,
        hidden_sizes=config.hidden_sizes,
        batch_norm=config.batch_norm,
    )
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    train_epoch = make_train_epoch(graphdef, tx, num_steps, config.batch_size)
    x_train = jnp.asarray(dataset.x_train)
    y_train = jnp.asarray(dataset.y_train)
    key = jax.random.key(config.seed)
    eval_forward = None

    history: list[dict[str, Any]] = []
    status, diverged_at = "completed", None
    start = time.perf_counter()

    def record(epoch: int) -> None:
        nonlocal eval_forward
        current = nnx.merge(graphdef, params, rest)
        if eval_forward is None:
            current.eval()
            eval_forward = make_forward(nnx.graphdef(current))
            current.train()
        row = {"epoch": epoch, "step": epoch * num_steps}
        row.update(evaluate(current, dataset, batch_size=config.eval_batch_size,
                            metrics_dtype=config.metrics_dtype, forward=eval_forward))
        row["time_s"] = time.perf_counter() - start
        history.append(row)
        _log_row(name, row, config.epochs)
        if workdir is not None:
            results.write_jsonl(workdir / results.METRICS_FILE, history)

    record(0)
    for epoch in range(1, config.epochs + 1):
        key, epoch_key = jax.random.split(key)
        new_params, new_rest, new_opt_state, losses = train_epoch(
            params, rest, opt_state, x_train, y_train, epoch_key
        )
        losses = np.asarray(losses)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            status = "diverged"
            diverged_at = (epoch - 1) * num_steps + int(bad[0]) + 1
            logging.warning(
                "%s diverged: the training loss is %s at step %d (epoch %d), so "
                "this run stops here", name, losses[bad[0]], diverged_at, epoch,
            )
            break
        params, rest, opt_state = new_params, new_rest, new_opt_state
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            record(epoch)

    result = RunResult(
        config, history, status, diverged_at, model=nnx.merge(graphdef, params, rest)
    )
    if workdir is not None:
        summary = {"name": name, "status": status, "diverged_at_step": diverged_at,
                   "epochs_completed": history[-1]["epoch"], "final": history[-1],
                   "initial": history[0]}
        results.write_json(workdir / results.SUMMARY_FILE, summary)
    return result
