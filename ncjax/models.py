"""Flax NNX models that expose penultimate features and the linear classifier.

Neural collapse metrics need two things from a network: the features `h` it
feeds into its last layer, and that layer's weights `W` (K x p) and bias `b`.
Every model here has a `features(x)` method and a `classifier` attribute (an
`nnx.Linear` with bias), and `__call__(x)` is `classifier(features(x))`.

The convolutional networks and the ViT take NHWC images, (batch, height,
width, channels), and a `width` multiplier that scales every channel count
(or the ViT's token width) for small runs.
"""

from collections.abc import Sequence
import math
import numbers

import jax
import jax.numpy as jnp
from flax import nnx

MODELS = ("mlp", "resnet9", "vgg9", "vit")

# Running statistics are updated as 0.9 * running + 0.1 * batch, PyTorch's
# default. The MLP docstring explains why Flax's default, 0.99, is not used.
BATCH_NORM_MOMENTUM = 0.9

# The study's ViT for 32x32 inputs: 64 patches of 4x4, 8 heads, 6 blocks.
VIT_PATCH_SIZE = 4
VIT_NUM_HEADS = 8
VIT_DEPTH = 6


class MLP(nnx.Module):
    """Fully connected ReLU network with a linear classifier on top.

    The input is flattened and passed through `len(hidden_sizes)` layers of
    Linear, optional BatchNorm and ReLU; the output of the last one is the
    feature vector (p = hidden_sizes[-1]). BatchNorm uses batch statistics in
    training mode and running statistics after `model.eval()`, updated as
    `0.9 * running + 0.1 * batch` like PyTorch's default (Flax's default, 0.99,
    lags far behind on short runs and skews inference-mode metrics). It makes the
    hidden layers invariant to the scale of their weights, as in the study's
    convolutional networks, so weight decay there changes the effective step
    size rather than the function.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256, 256),
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        if not hidden_sizes:
            raise ValueError(
                "hidden_sizes=() is invalid; expected at least one hidden layer"
            )
        sizes = [in_features, *hidden_sizes]
        self.hidden = nnx.List([
            nnx.Linear(n_in, n_out, rngs=rngs)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        ])
        self.norms = nnx.List([
            nnx.BatchNorm(size, momentum=BATCH_NORM_MOMENTUM, rngs=rngs) if batch_norm else None
            for size in hidden_sizes
        ])
        self.classifier = nnx.Linear(hidden_sizes[-1], num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Return the penultimate features, shape (batch, p)."""
        h = x.reshape((x.shape[0], -1))
        for layer, norm in zip(self.hidden, self.norms):
            h = layer(h)
            if norm is not None:
                h = norm(h)
            h = nnx.relu(h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.features(x))


def _scale_width(base: int, width: float) -> int:
    """Return `base` channels scaled by the multiplier `width`, rounded.

    Raises:
        ValueError: if `width` is not a finite number > 0, or if
            `base * width` is below 1.
    """
    if not (isinstance(width, numbers.Real) and math.isfinite(width) and width > 0):
        raise ValueError(f"width={width!r} is invalid; expected a finite number > 0")
    if base * width < 1:
        raise ValueError(
            f"width={width} is invalid: it scales a {base}-channel layer below one"
            f" channel; expected width >= 1/{base}"
        )
    return round(base * width)


class ConvBlock(nnx.Module):
    """A 3x3 convolution ('SAME' padding), BatchNorm and ReLU, then an optional 2x2 max-pool.

    With BatchNorm the convolution has no bias, because the BatchNorm shift
    would cancel it. Without BatchNorm the convolution has a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        pool: bool = False,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_channels,
            out_channels,
            kernel_size=(3, 3),
            padding="SAME",
            use_bias=not batch_norm,
            rngs=rngs,
        )
        self.norm = (
            nnx.BatchNorm(out_channels, momentum=BATCH_NORM_MOMENTUM, rngs=rngs)
            if batch_norm
            else None
        )
        self.pool = pool

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv(x)
        if self.norm is not None:
            h = self.norm(h)
        h = nnx.relu(h)
        if self.pool:
            h = max_pool_2x2(h)
        return h


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """Max-pool (batch, H, W, C) over 2x2 windows with stride 2; H and W must be even.

    A reshape and a max rather than `nnx.max_pool`, whose gradient
    (select-and-scatter) took 3.6 times as long on XLA CPU (jax 0.10.2,
    batch 128 of 32x32x32). The outputs are equal. The gradients differ only
    for ties inside a window, which this form splits equally and PyTorch
    gives to one element. After a ReLU ties are zeros, whose gradient the
    ReLU stops anyway.
    """
    batch, height, width, channels = x.shape
    windows = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    return windows.max(axis=(2, 4))


class ResidualPair(nnx.Module):
    """Two `ConvBlock`s at a fixed channel count whose output is added to the input."""

    def __init__(self, channels: int, *, batch_norm: bool = True, rngs: nnx.Rngs):
        self.first = ConvBlock(channels, channels, batch_norm=batch_norm, rngs=rngs)
        self.second = ConvBlock(channels, channels, batch_norm=batch_norm, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.second(self.first(x))


def _check_image_shape(model: str, input_shape: Sequence[int], multiple: int) -> None:
    """Raise ValueError unless `input_shape` is (height, width, channels) with sides divisible by `multiple`."""
    shape = tuple(input_shape)
    valid = (
        len(shape) == 3
        and all(isinstance(size, int) and size >= 1 for size in shape)
        and shape[0] % multiple == 0
        and shape[1] % multiple == 0
    )
    if not valid:
        raise ValueError(
            f"input_shape={shape} is invalid for model {model!r}; expected"
            f" (height, width, channels) with height and width multiples of"
            f" {multiple}, such as (32, 32, 3)"
        )


class ResNet9(nnx.Module):
    """The ResNet9 of the DAWNBench CIFAR-10 entries (Myrtle.ai), with a biased classifier.

    Stages at `width=1` (channels, then spatial size for a 32x32 input):
    a 64-channel `ConvBlock` (32x32); a 128-channel block and max-pool
    (16x16); a 128-channel `ResidualPair`; 256 channels and max-pool (8x8);
    512 channels and max-pool (4x4); a 512-channel `ResidualPair`; then a
    global max-pool over height and width gives p = 512 features. `width`
    scales every channel count, so `width=0.125` gives 8 to 64 channels and
    p = 64. The three max-pools need height and width divisible by 8.
    """

    NUM_POOLS = 3

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: float = 1.0,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        c64, c128, c256, c512 = (_scale_width(base, width) for base in (64, 128, 256, 512))
        self.prep = ConvBlock(in_channels, c64, batch_norm=batch_norm, rngs=rngs)
        self.layer1 = ConvBlock(c64, c128, pool=True, batch_norm=batch_norm, rngs=rngs)
        self.residual1 = ResidualPair(c128, batch_norm=batch_norm, rngs=rngs)
        self.layer2 = ConvBlock(c128, c256, pool=True, batch_norm=batch_norm, rngs=rngs)
        self.layer3 = ConvBlock(c256, c512, pool=True, batch_norm=batch_norm, rngs=rngs)
        self.residual3 = ResidualPair(c512, batch_norm=batch_norm, rngs=rngs)
        self.classifier = nnx.Linear(c512, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Return the penultimate features, shape (batch, p)."""
        h = self.prep(x)
        h = self.residual1(self.layer1(h))
        h = self.layer2(h)
        h = self.residual3(self.layer3(h))
        return jnp.max(h, axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.features(x))


class VGG9(nnx.Module):
    """A VGG-style network of seven `ConvBlock`s and a linear classifier.

    Channels at `width=1`: 64, pool, 128, pool, 512, 512, pool, 256, 256,
    pool. The last feature map is flattened, so p = 256 * (height / 16) *
    (width / 16) times the width multiplier: 1024 for a 32x32 input. The
    four max-pools need height and width divisible by 16.
    """

    NUM_POOLS = 4
    # (channels at width 1, max-pool after the block)
    STAGES = ((64, True), (128, True), (512, False), (512, True), (256, False), (256, True))

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: float = 1.0,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        height, image_width, in_channels = input_shape
        blocks = []
        channels = in_channels
        for base, pool in self.STAGES:
            out_channels = _scale_width(base, width)
            blocks.append(ConvBlock(channels, out_channels, pool=pool, batch_norm=batch_norm, rngs=rngs))
            channels = out_channels
        self.blocks = nnx.List(blocks)
        side_reduction = 2**self.NUM_POOLS
        num_features = channels * (height // side_reduction) * (image_width // side_reduction)
        self.classifier = nnx.Linear(num_features, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Return the penultimate features, shape (batch, p)."""
        h = x
        for block in self.blocks:
            h = block(h)
        return h.reshape((h.shape[0], -1))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.features(x))


class EncoderBlock(nnx.Module):
    """A pre-norm transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)).

    The MLP is Linear, GELU (the exact erf form) and Linear. There is no
    dropout.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=num_heads,
            in_features=dim,
            qkv_features=dim,
            out_features=dim,
            decode=False,
            rngs=rngs,
        )
        self.mlp_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_hidden = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp_output = nnx.Linear(mlp_dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.attention_norm(x))
        h = nnx.gelu(self.mlp_hidden(self.mlp_norm(x)), approximate=False)
        return x + self.mlp_output(h)


class VisionTransformer(nnx.Module):
    """A ViT classifier whose features are the final class-token representation.

    The image is cut into `patch_size` x `patch_size` patches, each embedded
    by a linear map (a strided convolution). A learned class token is
    prepended, learned position embeddings are added, `depth` pre-norm
    `EncoderBlock`s follow, and a final LayerNorm is applied. The class
    token's output is the feature vector, so p = `dim`.

    The study's ViT for 32x32 inputs is the default: patch size 4 (64
    patches), dim 512, 6 blocks, 8 heads and MLP width 512.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        patch_size: int = VIT_PATCH_SIZE,
        dim: int = 512,
        depth: int = VIT_DEPTH,
        num_heads: int = VIT_NUM_HEADS,
        mlp_dim: int = 512,
        rngs: nnx.Rngs,
    ):
        height, image_width, in_channels = input_shape
        if dim % num_heads != 0:
            raise ValueError(
                f"dim={dim} is invalid; expected a multiple of num_heads={num_heads}"
            )
        num_patches = (height // patch_size) * (image_width // patch_size)
        self.patch_embedding = nnx.Conv(
            in_channels,
            dim,
            kernel_size=(patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            rngs=rngs,
        )
        self.class_token = nnx.Param(jnp.zeros((1, 1, dim)))
        self.position_embedding = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (1, num_patches + 1, dim))
        )
        self.blocks = nnx.List([
            EncoderBlock(dim, num_heads, mlp_dim, rngs=rngs) for _ in range(depth)
        ])
        self.final_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.classifier = nnx.Linear(dim, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Return the penultimate features, shape (batch, p)."""
        patches = self.patch_embedding(x)
        batch, _, _, dim = patches.shape
        tokens = patches.reshape((batch, -1, dim))
        class_tokens = jnp.broadcast_to(self.class_token[...], (batch, 1, dim))
        h = jnp.concatenate([class_tokens, tokens], axis=1) + self.position_embedding[...]
        for block in self.blocks:
            h = block(h)
        return self.final_norm(h[:, 0])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.features(x))


def classifier_parameters(model: nnx.Module) -> tuple[jax.Array, jax.Array]:
    """Return the classifier as (W, b) with W of shape (K, p).

    Flax stores a Linear kernel as (p, K), so W is its transpose.
    """
    W = model.classifier.kernel[...].T
    b = model.classifier.bias[...]
    return W, b


def create_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int,
    hidden_sizes: Sequence[int] = (256, 256, 256),
    batch_norm: bool = True,
    width: float = 1.0,
) -> nnx.Module:
    """Build a model by name for inputs of `input_shape` (without batch).

    Args:
        name: one of `MODELS`.
        input_shape: any shape for "mlp", which flattens it. For "resnet9",
            "vgg9" and "vit", (height, width, channels) with height and width
            multiples of 8, 16 and 4 respectively, such as (32, 32, 3).
        num_classes: K, the classifier's output size.
        seed: seed of the initialisation.
        hidden_sizes: the MLP's hidden widths; the other models ignore it.
        batch_norm: BatchNorm after each hidden layer of the MLP and each
            convolution of the CNNs. The ViT ignores it (it uses LayerNorm).
        width: channel multiplier of "resnet9", "vgg9" and "vit". The ViT's
            dim and MLP width, 512 * width, must be a multiple of its 8 heads.

    Raises:
        ValueError: for an unknown name, an invalid `input_shape` or `width`,
            or `width` other than 1 for "mlp".
    """
    rngs = nnx.Rngs(seed)
    if name == "mlp":
        if width != 1.0:
            raise ValueError(
                f"width={width} is invalid for model 'mlp'; expected 1.0 (set"
                " hidden_sizes to change the MLP's widths)"
            )
        return MLP(
            math.prod(input_shape),
            num_classes,
            hidden_sizes=tuple(hidden_sizes),
            batch_norm=batch_norm,
            rngs=rngs,
        )
    if name == "resnet9":
        _check_image_shape(name, input_shape, 2**ResNet9.NUM_POOLS)
        return ResNet9(input_shape[-1], num_classes, width=width, batch_norm=batch_norm, rngs=rngs)
    if name == "vgg9":
        _check_image_shape(name, input_shape, 2**VGG9.NUM_POOLS)
        return VGG9(input_shape, num_classes, width=width, batch_norm=batch_norm, rngs=rngs)
    if name == "vit":
        return _create_vision_transformer(input_shape, num_classes, width=width, rngs=rngs)
    raise ValueError(
        f"unknown model {name!r}; expected one of: {', '.join(MODELS)}"
    )


def _create_vision_transformer(
    input_shape: Sequence[int], num_classes: int, *, width: float, rngs: nnx.Rngs
) -> VisionTransformer:
    _check_image_shape("vit", input_shape, VIT_PATCH_SIZE)
    dim = _scale_width(512, width)
    if dim % VIT_NUM_HEADS != 0:
        raise ValueError(
            f"width={width} is invalid for model 'vit': it gives a dim of {dim},"
            f" which is not a multiple of the {VIT_NUM_HEADS} heads; expected 512 *"
            f" width to be a multiple of {VIT_NUM_HEADS}, such as width=0.125, 0.25 or 0.5"
        )
    return VisionTransformer(input_shape, num_classes, dim=dim, mlp_dim=dim, rngs=rngs)


def weight_decay_mask(model: nnx.Module) -> nnx.State:
    """Mark which parameters of `model` weight decay applies to.

    Returns `nnx.state(model, nnx.Param)` with every array replaced by a
    bool, so it is the `mask` of `optax.add_decayed_weights` and of the
    optimizers in `ncjax.optimizers` for that state (or for the `nnx.Param`
    part of `nnx.split(model, nnx.Param, ...)`). It is True for every
    parameter of the MLP and the CNNs. For the ViT it is True for the
    kernels and False for biases, LayerNorm scales and biases, the class
    token and the position embeddings. timm's `VisionTransformer` also lists
    the last two in its `no_weight_decay()`.

    The mask depends on the model's type, which a parameter state alone does
    not record, so build it from the model before splitting it.
    """
    params = nnx.state(model, nnx.Param)
    if not isinstance(model, VisionTransformer):
        return jax.tree.map(lambda _: True, params)

    norm_paths = {
        path for path, node in nnx.iter_graph(model) if isinstance(node, nnx.LayerNorm)
    }
    no_decay_names = {"bias", "class_token", "position_embedding"}

    def decays(path, _):
        names = tuple(key.key for key in path if isinstance(key, jax.tree_util.DictKey))
        return names[-1] not in no_decay_names and names[:-1] not in norm_paths

    return jax.tree_util.tree_map_with_path(decays, params)


def count_parameters(model: nnx.Module) -> int:
    """Return the number of trainable parameters.

    Works on abstract models from `nnx.eval_shape` too, because it reads only shapes.
    """
    params = nnx.state(model, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
