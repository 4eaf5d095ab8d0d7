"""Flax NNX models that expose penultimate features and the linear classifier.

Neural collapse metrics need two things from a network: the features `h` it
feeds into its last layer, and that layer's weights `W` (K x p) and bias `b`.
Every model here has a `features(x)` method and a `classifier` attribute (an
`nnx.Linear`), and `__call__(x)` is `classifier(features(x))`.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
from flax import nnx

MODELS = ("mlp",)


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
            nnx.BatchNorm(size, momentum=0.9, rngs=rngs) if batch_norm else None
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
) -> nnx.Module:
    """Build a model by name for inputs of `input_shape` (without batch)."""
    if name == "mlp":
        return MLP(
            math.prod(input_shape),
            num_classes,
            hidden_sizes=tuple(hidden_sizes),
            batch_norm=batch_norm,
            rngs=nnx.Rngs(seed),
        )
    raise ValueError(
        f"unknown model {name!r}; expected one of: {', '.join(MODELS)}"
    )


def count_parameters(model: nnx.Module) -> int:
    """Return the number of trainable parameters."""
    params = nnx.state(model, nnx.Param)
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
