"""Tests for the models' feature and classifier interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import models


def test_mlp_logits_are_classifier_of_features():
    model = models.create_model("mlp", (8, 8, 1), 10, seed=0, hidden_sizes=(32, 16))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 1))
    features = model.features(x)
    W, b = models.classifier_parameters(model)
    assert features.shape == (5, 16)
    assert W.shape == (10, 16)
    assert b.shape == (10,)
    np.testing.assert_allclose(model(x), features @ W.T + b, rtol=1e-6, atol=1e-6)


def test_mlp_features_are_post_relu():
    model = models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=(8,))
    features = model.features(jax.random.normal(jax.random.key(0), (20, 4)))
    assert float(jnp.min(features)) >= 0.0


def test_mlp_seed_fixes_initialisation():
    first = models.create_model("mlp", (4,), 3, seed=3, hidden_sizes=(8,))
    second = models.create_model("mlp", (4,), 3, seed=3, hidden_sizes=(8,))
    np.testing.assert_array_equal(
        models.classifier_parameters(first)[0], models.classifier_parameters(second)[0]
    )


def test_count_parameters():
    plain = models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=(8,), batch_norm=False)
    assert models.count_parameters(plain) == 4 * 8 + 8 + 8 * 3 + 3
    normed = models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=(8,))
    assert models.count_parameters(normed) == 4 * 8 + 8 + 2 * 8 + 8 * 3 + 3


def test_batch_norm_running_statistics_in_eval_mode():
    model = models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=(8,))
    x = 5.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 4))
    model.train()
    train_features = model.features(x)
    model.eval()
    eval_features = model.features(x)
    # One training batch moves the running statistics 10% of the way,
    # as PyTorch's BatchNorm does, so inference-mode features still differ.
    assert not np.allclose(train_features, eval_features, atol=1e-3)
    layer = model.hidden[0]
    pre = x @ layer.kernel[...] + layer.bias[...]
    np.testing.assert_allclose(model.norms[0].mean[...], 0.1 * pre.mean(axis=0), rtol=1e-4, atol=1e-6)


def test_unknown_model_names_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; expected one of: mlp"):
        models.create_model("resnet", (4,), 3, seed=0)


def test_empty_hidden_sizes_rejected():
    with pytest.raises(ValueError, match=r"hidden_sizes=\(\)"):
        models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=())
