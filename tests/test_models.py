"""Tests for the models' feature and classifier interface."""

import math
import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import models
from ncjax import optimizers


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
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; expected one of: mlp, resnet9, vgg9, vit$"):
        models.create_model("resnet", (4,), 3, seed=0)


def test_empty_hidden_sizes_rejected():
    with pytest.raises(ValueError, match=r"hidden_sizes=\(\)"):
        models.create_model("mlp", (4,), 3, seed=0, hidden_sizes=())


# Small widths keep the image models fast on a CPU. At width 0.125 the ResNet9
# has 8 to 64 channels, the VGG9 8 to 64, and the ViT a token width of 64.
SMALL_WIDTH = 0.125
IMAGE_SHAPE = (32, 32, 3)


def _images(batch_size, shape=IMAGE_SHAPE, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch_size, *shape))


# One compiled program per model and input shape is faster on a CPU than
# running the layers eagerly, and it is how training calls the models.
@nnx.jit
def _features(model, x):
    return model.features(x)


@nnx.jit
def _logits(model, x):
    return model(x)


@pytest.mark.parametrize("name, num_features", [("resnet9", 64), ("vgg9", 128), ("vit", 64)])
def test_image_model_logits_are_classifier_of_features(name, num_features):
    model = models.create_model(name, IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    x = _images(3)

    features = _features(model, x)
    W, b = models.classifier_parameters(model)

    assert features.shape == (3, num_features)
    assert W.shape == (10, num_features)
    assert b.shape == (10,)
    np.testing.assert_allclose(_logits(model, x), features @ W.T + b, rtol=1e-5, atol=1e-5)


def test_vgg9_features_follow_input_size():
    # Four 2x2 max-pools take 16x48 to 1x3, so p = 32 channels * 3 positions.
    model = models.create_model("vgg9", (16, 48, 1), 4, seed=0, width=SMALL_WIDTH)
    features = _features(model, _images(2, (16, 48, 1)))
    assert features.shape == (2, 32 * 3)


def test_resnet9_accepts_sides_multiple_of_8():
    # Three max-pools take 8x8 to 1x1, and the global max-pool handles any size.
    model = models.create_model("resnet9", (8, 8, 1), 4, seed=0, width=SMALL_WIDTH)
    assert _features(model, _images(2, (8, 8, 1))).shape == (2, 64)


def _conv_bn_count(channel_pairs, *, batch_norm):
    # A 3x3 convolution has 9 * c_in * c_out weights. With BatchNorm it has no
    # bias, and BatchNorm adds a scale and a shift. Without it, it has a bias.
    total = 0
    for c_in, c_out in channel_pairs:
        total += 9 * c_in * c_out
        total += 2 * c_out if batch_norm else c_out
    return total


RESNET9_CHANNELS = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
VGG9_CHANNELS = [(3, 64), (64, 128), (128, 512), (512, 512), (512, 256), (256, 256)]


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize(
    "name, channel_pairs, num_features",
    [("resnet9", RESNET9_CHANNELS, 512), ("vgg9", VGG9_CHANNELS, 1024)],
)
def test_cnn_parameter_count_full_width(name, channel_pairs, num_features, batch_norm):
    # eval_shape builds the parameters' shapes without initialising them.
    model = nnx.eval_shape(lambda: models.create_model(name, IMAGE_SHAPE, 10, seed=0, batch_norm=batch_norm))
    expected = _conv_bn_count(channel_pairs, batch_norm=batch_norm) + num_features * 10 + 10
    assert models.count_parameters(model) == expected


def test_resnet9_parameter_count_cifar10():
    # The closed form above for K = 10, written out as a number.
    model = nnx.eval_shape(lambda: models.create_model("resnet9", IMAGE_SHAPE, 10, seed=0))
    assert models.count_parameters(model) == 6_573_130


def test_vit_parameter_count_full_width():
    model = nnx.eval_shape(lambda: models.create_model("vit", IMAGE_SHAPE, 10, seed=0))
    dim, mlp_dim, num_patches = 512, 512, 64
    patch_embedding = 4 * 4 * 3 * dim + dim
    tokens = dim + (num_patches + 1) * dim
    layer_norm = 2 * dim
    attention = 4 * (dim * dim + dim)
    mlp = dim * mlp_dim + mlp_dim + mlp_dim * dim + dim
    block = 2 * layer_norm + attention + mlp
    expected = patch_embedding + tokens + 6 * block + layer_norm + dim * 10 + 10
    assert models.count_parameters(model) == expected


def test_cnn_batch_norm_train_and_eval_modes():
    model = models.create_model("vgg9", IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    x = 3.0 + 2.0 * _images(8)

    model.train()
    train_features = _features(model, x)
    first = model.blocks[0]
    pre_norm = first.conv(x)
    # One training batch moves the running mean 10% of the way to the batch
    # mean over batch, height and width, as PyTorch's BatchNorm does.
    np.testing.assert_allclose(first.norm.mean[...], 0.1 * pre_norm.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    # Batch statistics make each example's features depend on the rest of the batch.
    assert not np.allclose(_features(model, x[:2]), train_features[:2], atol=1e-3)

    model.eval()
    eval_features = _features(model, x)
    assert not np.allclose(eval_features, train_features, atol=1e-3)
    np.testing.assert_allclose(_features(model, x[:2]), eval_features[:2], rtol=1e-5, atol=1e-5)


def test_resnet9_residual_pairs_add_input():
    model = models.create_model("resnet9", IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    model.eval()
    x = _images(2)

    @nnx.jit
    def features_without_residual_pairs(model, x):
        h = model.layer1(model.prep(x))
        h = model.layer3(model.layer2(h))
        return jnp.max(h, axis=(1, 2))

    # With random weights the residual branches change the features.
    assert not np.allclose(_features(model, x), features_without_residual_pairs(model, x), atol=1e-3)

    # A zero BatchNorm scale and shift make a branch output ReLU(0) = 0, so
    # each residual pair must return its input unchanged.
    for pair in (model.residual1, model.residual3):
        pair.second.norm.scale[...] = jnp.zeros_like(pair.second.norm.scale[...])
        pair.second.norm.bias[...] = jnp.zeros_like(pair.second.norm.bias[...])
    np.testing.assert_allclose(_features(model, x), features_without_residual_pairs(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("corner", [(0, 0), (28, 28)])
def test_vit_features_depend_on_every_patch(corner):
    # Only attention carries patch information to the class token.
    model = models.create_model("vit", IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    x = _images(2)
    row, col = corner
    changed = x.at[:, row : row + 4, col : col + 4, :].add(1.0)

    difference = jnp.abs(_features(model, changed) - _features(model, x)).max(axis=1)

    assert float(difference.min()) > 1e-4


def _leaf_names(params):
    """Return each parameter leaf's path as names, in `jax.tree.leaves` order."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return [tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey)) for path in paths]


def test_vit_weight_decay_mask_excludes_biases_and_norms():
    model = models.create_model("vit", IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    params = nnx.state(model, nnx.Param)

    mask = models.weight_decay_mask(model)

    assert jax.tree.structure(mask) == jax.tree.structure(params)
    decays = jax.tree.leaves(mask)
    names = _leaf_names(params)
    for leaf_names, leaf_decays in zip(names, decays, strict=True):
        is_norm = len(leaf_names) > 1 and leaf_names[-2].endswith("norm")
        is_excluded = leaf_names[-1] in ("bias", "class_token", "position_embedding") or is_norm
        assert leaf_decays is (not is_excluded), leaf_names
    # Per block: two LayerNorms (scale and bias each), query, key, value and
    # output biases, and two MLP biases. Outside the blocks: the patch
    # embedding bias, the class token, the position embeddings, the final
    # LayerNorm and the classifier bias.
    assert decays.count(False) == 6 * (4 + 4 + 2) + 1 + 2 + 2 + 1
    # Per block: query, key, value, output and two MLP kernels. Outside the
    # blocks: the patch embedding and classifier kernels.
    assert decays.count(True) == 6 * 6 + 2


@pytest.mark.parametrize("name, input_shape", [("mlp", (8, 8, 1)), ("resnet9", IMAGE_SHAPE), ("vgg9", IMAGE_SHAPE)])
def test_weight_decay_mask_all_true_without_vit(name, input_shape):
    model = models.create_model(name, input_shape, 10, seed=0, **({} if name == "mlp" else {"width": SMALL_WIDTH}))
    params = nnx.state(model, nnx.Param)

    mask = models.weight_decay_mask(model)

    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert all(leaf is True for leaf in jax.tree.leaves(mask))


def test_vit_weight_decay_mask_in_optimizer():
    model = models.create_model("vit", IMAGE_SHAPE, 10, seed=0, width=SMALL_WIDTH)
    mask = models.weight_decay_mask(model)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    zero_gradients = jax.tree.map(jnp.zeros_like, params)
    # With a zero gradient and no momentum, both parts of the split decay
    # (0.04 coupled, 0.06 decoupled) give an update of -0.1 * w where the mask allows.
    tx = optimizers.create_optimizer(
        "sgd_sgdw", learning_rate=1.0, momentum=0.0, weight_decay=0.1, coupled_weight_decay=0.04, mask=mask
    )

    updates, _ = jax.jit(tx.update)(zero_gradients, tx.init(params), params)

    for leaf_names, leaf_decays, update, param in zip(
        _leaf_names(params), jax.tree.leaves(mask), jax.tree.leaves(updates), jax.tree.leaves(params), strict=True
    ):
        expected = -0.1 * param if leaf_decays else np.zeros_like(param)
        np.testing.assert_allclose(update, expected, rtol=1e-6, atol=0, err_msg=str(leaf_names))


@pytest.mark.parametrize(
    "name, width, message",
    [
        ("resnet9", 0.0, r"width=0.0 is invalid; expected a finite number > 0"),
        ("vgg9", -0.5, r"width=-0.5 is invalid; expected a finite number > 0"),
        ("vgg9", math.nan, r"width=nan is invalid; expected a finite number > 0"),
        ("resnet9", 0.005, r"width=0.005 is invalid: it scales a 64-channel layer below one channel; expected width >= 1/64"),
        ("vit", 0.3, r"width=0.3 is invalid for model 'vit': it gives a dim of 154, which is not a multiple of the 8 heads"),
        ("mlp", 0.5, r"width=0.5 is invalid for model 'mlp'; expected 1.0"),
    ],
)
def test_invalid_width_rejected(name, width, message):
    input_shape = (8, 8, 1) if name == "mlp" else IMAGE_SHAPE
    with pytest.raises(ValueError, match=message):
        models.create_model(name, input_shape, 10, seed=0, width=width)


@pytest.mark.parametrize(
    "name, input_shape, multiple",
    [
        ("resnet9", (28, 28, 1), 8),
        ("resnet9", (32, 32), 8),
        ("vgg9", (24, 24, 3), 16),
        ("vgg9", (32, 48, 3, 1), 16),
        ("vit", (30, 32, 3), 4),
    ],
)
def test_invalid_input_shape_rejected(name, input_shape, multiple):
    message = (
        rf"input_shape={re.escape(str(input_shape))} is invalid for model '{name}'; expected"
        rf" \(height, width, channels\) with height and width multiples of {multiple}"
    )
    with pytest.raises(ValueError, match=message):
        models.create_model(name, input_shape, 10, seed=0, width=SMALL_WIDTH)
