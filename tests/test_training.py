"""Tests for the training loop, its evaluation and the files it writes."""

import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np
import pytest

from ncjax import data as data_lib
from ncjax import metrics as metrics_lib
from ncjax import models
from ncjax import results
from ncjax import training


def make_clusters(num_classes=3, per_class=40, dim=6, seed=0):
    """Return a Dataset of well separated Gaussian clusters (unequal test sizes)."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((num_classes, dim))

    def draw(counts):
        labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
        x = centres[labels] + 0.3 * rng.standard_normal((labels.size, dim))
        return x.astype(np.float32), labels.astype(np.int32)

    x_train, y_train = draw([per_class + 7 * k for k in range(num_classes)])
    x_test, y_test = draw([10] * num_classes)
    return data_lib.Dataset("clusters", x_train, y_train, x_test, y_test, num_classes)


def small_config(**overrides):
    values = dict(
        dataset="clusters", hidden_sizes=(16, 8), optimizer="adam",
        learning_rate=0.01, momentum=0.9, weight_decay=5e-4, epochs=4,
        batch_size=16, eval_every=2, eval_batch_size=32,
    )
    values.update(overrides)
    return training.TrainConfig(**values)


def test_history_rows_at_init_every_and_end(tmp_path):
    config = small_config(epochs=5, eval_every=2)
    run = training.train_and_evaluate(config, make_clusters(), workdir=tmp_path)
    assert [row["epoch"] for row in run.history] == [0, 2, 4, 5]
    assert run.status == "completed"
    steps = training.steps_per_epoch(make_clusters().x_train.shape[0], 16)
    assert [row["step"] for row in run.history] == [0, 2 * steps, 4 * steps, 5 * steps]
    for key in (*metrics_lib.METRIC_NAMES, "nc4", "train_loss", "train_accuracy",
                "test_loss", "test_accuracy", "singular_values_W", "singular_values_M"):
        assert key in run.final, key


def test_workdir_files_parse(tmp_path):
    config = small_config()
    run = training.train_and_evaluate(config, make_clusters(), workdir=tmp_path)
    stored = results.read_json(tmp_path / results.CONFIG_FILE)
    assert stored["optimizer"] == "adam"
    assert stored["learning_rate"] == 0.01
    assert stored["num_classes"] == 3
    rows = results.read_jsonl(tmp_path / results.METRICS_FILE)
    assert rows == results.to_json_value(run.history)
    summary = results.read_json(tmp_path / results.SUMMARY_FILE)
    assert summary["status"] == "completed"
    assert summary["final"]["epoch"] == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_clusters_are_learned():
    dataset = make_clusters()
    run = training.train_and_evaluate(small_config(epochs=20, eval_every=20), dataset)
    assert run.final["train_accuracy"] == 1.0
    assert run.final["test_accuracy"] == 1.0
    assert run.final["train_loss"] < run.history[0]["train_loss"]

    # The returned model is the trained one: re-evaluating it gives the final row.
    row = training.evaluate(run.model, dataset, batch_size=32)
    np.testing.assert_allclose(row["nc0"], run.final["nc0"], rtol=1e-12)
    np.testing.assert_allclose(row["train_loss"], run.final["train_loss"], rtol=1e-12)


def test_divergence_is_recorded(tmp_path):
    config = small_config(optimizer="sgd", learning_rate=1e30, momentum=0.0, weight_decay=0.0)
    run = training.train_and_evaluate(config, make_clusters(), workdir=tmp_path)
    assert run.status == "diverged"
    assert run.diverged_at_step is not None and run.diverged_at_step >= 1
    summary = results.read_json(tmp_path / results.SUMMARY_FILE)
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == run.diverged_at_step
    # The model keeps the last finite parameters.
    W = run.model.classifier.kernel[...]
    assert np.all(np.isfinite(np.asarray(W)))


def test_evaluate_matches_one_shot_metrics():
    dataset = make_clusters()
    model = models.create_model("mlp", (6,), 3, seed=0, hidden_sizes=(16, 8))
    row = training.evaluate(model, dataset, batch_size=32, metrics_dtype="float64")
    model.eval()  # evaluate() uses BatchNorm running statistics; so does the reference

    with jax.enable_x64(True):
        features = np.asarray(model.features(jnp.asarray(dataset.x_train)), np.float64)
        test_features = np.asarray(model.features(jnp.asarray(dataset.x_test)), np.float64)
        W = np.asarray(models.classifier_parameters(model)[0], np.float64)
        stats = metrics_lib.class_statistics(jnp.asarray(features), jnp.asarray(dataset.y_train), 3)
        expected = metrics_lib.collapse_metrics(stats, jnp.asarray(W))
        expected_nc4 = metrics_lib.nc4(jnp.asarray(test_features), jnp.asarray(W), stats.class_means)
    for key in metrics_lib.METRIC_NAMES:
        # Features come from float32 forward passes in both paths.
        np.testing.assert_allclose(row[key], float(expected[key]), rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(row["nc4"], float(expected_nc4), rtol=1e-12)

    logits = np.asarray(model(jnp.asarray(dataset.x_train)))
    accuracy = np.mean(np.argmax(logits, axis=1) == dataset.y_train)
    np.testing.assert_allclose(row["train_accuracy"], accuracy, rtol=1e-12)


def test_epoch_compiles_once():
    dataset = make_clusters()
    config = small_config()
    steps = training.steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
    tx = training.build_optimizer(config, steps)
    model = models.create_model("mlp", (6,), 3, seed=0, hidden_sizes=(16, 8))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    train_epoch = training.make_train_epoch(graphdef, tx, steps, config.batch_size)
    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    for seed in range(3):
        params, rest, opt_state, losses = train_epoch(
            params, rest, opt_state, x, y, jax.random.key(seed)
        )
        assert losses.shape == (steps,)
    assert train_epoch._cache_size() == 1


def test_resolve_hyperparameters_uses_best_setting():
    resolved = training.resolve_hyperparameters("adamw")
    assert resolved == (0.005, 0.95, 5.0)
    explicit = training.resolve_hyperparameters("adamw", learning_rate=0.1, weight_decay=0.0)
    assert explicit == (0.1, 0.95, 0.0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(epochs=0), "epochs=0"),
        (dict(batch_size=-1), "batch_size=-1"),
        (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
        (dict(model="resnet"), "unknown model 'resnet'"),
        (dict(learning_rate=-0.1), "learning_rate=-0.1"),
        (dict(weight_decay=-1.0), "weight_decay=-1.0"),
        (dict(momentum=1.0), "momentum=1.0"),
        (dict(coupled_weight_decay=0.1), "coupled_weight_decay=0.1"),
        (dict(metrics_dtype="float16"), "metrics_dtype='float16'"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides).validate()


def test_batch_larger_than_dataset_rejected():
    with pytest.raises(ValueError, match="batch_size=500 is invalid for 10 training samples"):
        training.steps_per_epoch(10, 500)


GRID_METRICS = ("train_loss", "train_accuracy", "test_accuracy", "nc0", "nc1", "nc2", "nc3")


def grid_configs(values, optimizer="sgd"):
    return [
        small_config(optimizer=optimizer, learning_rate=lr, momentum=momentum,
                     weight_decay=decay, coupled_weight_decay=coupled, seed=seed)
        for lr, momentum, decay, coupled, seed in values
    ]


def test_grid_matches_single_runs():
    dataset = make_clusters()
    # SGD keeps float32 rounding differences at rounding level. Adam divides
    # near-zero gradients by their own scale, so rounding noise there becomes
    # full-size steps: on this data single and vmapped Adam runs differed by
    # up to 6e-4 (relative) in the loss after two epochs.
    configs = grid_configs([
        (0.05, 0.9, 5e-3, None, 0),
        (0.01, 0.5, 5e-2, None, 1),
        (0.1, 0.0, 1e-2, None, 2),
    ])
    grid = training.train_grid(configs, dataset)
    for config, member in zip(configs, grid):
        single = training.train_and_evaluate(config, dataset)
        assert member.status == "completed"
        assert [row["epoch"] for row in member.history] == [row["epoch"] for row in single.history]
        for row, expected in zip(member.history, single.history):
            for key in GRID_METRICS:
                # vmapped float32 matmuls may round differently from single ones.
                np.testing.assert_allclose(row[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_grid_new_values_reuse_compiled_epoch():
    dataset = make_clusters()
    mix = "adam_adamw"
    first = grid_configs([(0.01, 0.9, 5e-3, 0.0, 0), (0.003, 0.5, 5e-2, 5e-2, 1)], mix)
    second = grid_configs([(0.05, 0.7, 1e-3, 1e-4, 3), (0.001, 0.95, 0.5, 0.2, 4)], mix)
    training._grid_epoch_program.cache_clear()
    training.train_grid(first, dataset)
    training.train_grid(second, dataset)

    config = first[0]
    graphdef = training._create_split_model(config, dataset)[0]
    steps = training.steps_per_epoch(dataset.x_train.shape[0], config.batch_size)
    program = training._grid_epoch_program(
        graphdef, config.optimizer, config.epochs, steps, config.batch_size
    )
    assert training._grid_epoch_program.cache_info().misses == 1
    # One trace and compilation served every epoch of both grids.
    assert program._cache_size() == 1


def test_grid_rejects_differing_static_fields():
    configs = [small_config(), small_config(epochs=7)]
    with pytest.raises(ValueError, match="configs differ in epochs"):
        training.train_grid(configs, make_clusters())
