"""Data augmentation on the device, fixed by a PRNG key.

``random_crop_and_flip`` is the standard CIFAR-10 training augmentation: pad
each image by 4 pixels, crop it back to its size at a random offset, and
mirror it horizontally with probability 0.5. It is traceable, so it can run on
a whole batch inside a jitted training step without the pixels leaving the
device.
"""

import jax
import jax.numpy as jnp


def random_crop_and_flip(
    key: jax.Array,
    images: jax.Array,
    padding: int = 4,
    flip_probability: float = 0.5,
) -> jax.Array:
    """Randomly crop and horizontally flip each image of a batch.

    Each image is padded by ``padding`` zeros on every side and cropped back to
    its height H and width W at an offset drawn uniformly from the ``(2 *
    padding + 1)^2`` positions, then mirrored left to right with probability
    ``flip_probability``. Each image gets its own offset and flip, and the same
    ``key`` gives the same output.

    The zeros are added to the images as given. On images normalised by the
    channel mean, as ``ncjax.data`` returns them, the border is therefore the
    mean colour, whereas torchvision's ``RandomCrop(padding=4)`` before
    ``Normalize`` pads with black.

    The function is traceable: under ``jax.jit`` pass ``padding`` as a static
    argument, and under ``jax.vmap`` map over ``key`` and ``images`` together.

    Args:
      key: a PRNG key.
      images: a batch of shape ``(N, H, W, C)``.
      padding: pixels of zeros added on each side before cropping, at least 0.
        0 disables the crop.
      flip_probability: probability of mirroring each image, in [0, 1].

    Returns:
      An array of the shape and dtype of ``images``.

    Raises:
      ValueError: if ``images`` is not 4-dimensional, ``padding`` is not a
        non-negative integer, or a Python number ``flip_probability`` is
        outside [0, 1].
    """
    if images.ndim != 4:
        raise ValueError(
            f"images have shape {images.shape}; expected a batch of shape"
            " (N, H, W, C)"
        )
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(
            f"padding={padding!r} is invalid; expected a non-negative integer"
        )
    # A traced flip_probability cannot be checked here.
    if isinstance(flip_probability, (int, float)) and not 0 <= flip_probability <= 1:
        raise ValueError(
            f"flip_probability={flip_probability!r} is invalid; expected a value"
            " in [0, 1]"
        )

    num_images, height, width, channels = images.shape
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(
        offset_key, (num_images, 2), minval=0, maxval=2 * padding + 1
    )
    flips = jax.random.bernoulli(flip_key, flip_probability, (num_images,))

    padded = jnp.pad(
        images, ((0, 0), (padding, padding), (padding, padding), (0, 0))
    )

    def crop_and_flip(image: jax.Array, offset: jax.Array, flip: jax.Array) -> jax.Array:
        start = (offset[0], offset[1], 0)
        crop = jax.lax.dynamic_slice(image, start, (height, width, channels))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(crop_and_flip)(padded, offsets, flips)
