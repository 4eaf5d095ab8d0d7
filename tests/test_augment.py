"""Tests for ncjax.augment against crops and flips enumerated in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import augment


def random_images(num_images: int, size: int = 32, channels: int = 3, seed: int = 0):
    """Images whose pixels are all distinct, so every crop and flip is unique."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_images, size, size, channels)).astype(np.float32)


def all_crops(image: np.ndarray, padding: int) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every crop of the zero-padded image, flipped and not, keyed by (row, column, flip)."""
    height, width, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crops = {}
    for row in range(2 * padding + 1):
        for column in range(2 * padding + 1):
            crop = padded[row : row + height, column : column + width]
            crops[(row, column, False)] = crop
            crops[(row, column, True)] = crop[:, ::-1]
    return crops


def matching_transforms(output: np.ndarray, image: np.ndarray, padding: int):
    return [
        transform
        for transform, crop in all_crops(image, padding).items()
        if np.array_equal(output, crop)
    ]


def test_crop_and_flip_shape_and_dtype():
    images = jnp.asarray(random_images(5))

    output = augment.random_crop_and_flip(jax.random.key(0), images)

    assert output.shape == (5, 32, 32, 3)
    assert output.dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.bfloat16])
def test_crop_and_flip_keeps_dtype(dtype):
    images = jnp.ones((2, 8, 8, 1), dtype=dtype)

    output = augment.random_crop_and_flip(jax.random.key(0), images, padding=2)

    assert output.dtype == dtype


def test_crop_and_flip_deterministic_per_key():
    images = jnp.asarray(random_images(8))

    first = augment.random_crop_and_flip(jax.random.key(3), images)
    again = augment.random_crop_and_flip(jax.random.key(3), images)

    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_crop_and_flip_other_key_differs():
    images = jnp.asarray(random_images(8))

    first = augment.random_crop_and_flip(jax.random.key(3), images)
    other = augment.random_crop_and_flip(jax.random.key(4), images)

    # Two keys give the same transforms for all 8 images with probability
    # 162^-8, so a difference is certain in practice.
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_crop_and_flip_output_is_a_crop():
    images = random_images(6)

    output = np.asarray(
        augment.random_crop_and_flip(jax.random.key(7), jnp.asarray(images))
    )

    for index in range(len(images)):
        # The pixels are distinct, so exactly one of the 81 offsets x 2 flips
        # can match.
        matches = matching_transforms(output[index], images[index], padding=4)
        assert len(matches) == 1, f"image {index} matches {matches}"


def test_crop_and_flip_per_image_transforms():
    images = random_images(400, size=8, channels=1)

    output = np.asarray(
        augment.random_crop_and_flip(jax.random.key(11), jnp.asarray(images), padding=2)
    )

    transforms = []
    for index in range(len(images)):
        matches = matching_transforms(output[index], images[index], padding=2)
        assert len(matches) == 1, f"image {index} matches {matches}"
        transforms.append(matches[0])
    offsets = {(row, column) for row, column, _ in transforms}
    flip_fraction = np.mean([flip for _, _, flip in transforms])
    # 400 draws from 25 equally likely offsets miss one with probability
    # below 25 * (24/25)^400 = 2e-6.
    assert offsets == {(row, column) for row in range(5) for column in range(5)}
    # The flip count is Binomial(400, 0.5) with std 10, so 0.5 +- 0.1 is four
    # standard deviations.
    assert abs(flip_fraction - 0.5) < 0.1


def test_crop_and_flip_zero_padding_only_flips():
    images = random_images(16)

    output = np.asarray(
        augment.random_crop_and_flip(jax.random.key(5), jnp.asarray(images), padding=0)
    )

    flipped = [
        np.array_equal(output[index], images[index, :, ::-1])
        for index in range(len(images))
    ]
    unchanged = [
        np.array_equal(output[index], images[index]) for index in range(len(images))
    ]
    assert all(a != b for a, b in zip(flipped, unchanged))
    assert any(flipped)
    assert any(unchanged)


def test_crop_and_flip_disabled_is_identity():
    images = jnp.asarray(random_images(4))

    output = augment.random_crop_and_flip(
        jax.random.key(5), images, padding=0, flip_probability=0.0
    )

    np.testing.assert_array_equal(np.asarray(output), np.asarray(images))


def test_crop_and_flip_always_flip():
    images = random_images(4)

    output = augment.random_crop_and_flip(
        jax.random.key(5), jnp.asarray(images), padding=0, flip_probability=1.0
    )

    np.testing.assert_array_equal(np.asarray(output), images[:, :, ::-1])


def test_crop_and_flip_without_flip_only_crops():
    images = random_images(6)

    output = np.asarray(
        augment.random_crop_and_flip(
            jax.random.key(9), jnp.asarray(images), flip_probability=0.0
        )
    )

    for index in range(len(images)):
        matches = matching_transforms(output[index], images[index], padding=4)
        assert len(matches) == 1
        assert matches[0][2] is False


def test_crop_and_flip_under_jit_matches_eager():
    images = jnp.asarray(random_images(4))
    jitted = jax.jit(augment.random_crop_and_flip, static_argnames="padding")

    eager = augment.random_crop_and_flip(jax.random.key(1), images, padding=4)
    compiled = jitted(jax.random.key(1), images, padding=4)

    np.testing.assert_array_equal(np.asarray(compiled), np.asarray(eager))


def test_crop_and_flip_under_vmap_matches_loop():
    images = jnp.asarray(random_images(6)).reshape(2, 3, 32, 32, 3)
    keys = jax.random.split(jax.random.key(2), 2)

    mapped = jax.vmap(augment.random_crop_and_flip)(keys, images)

    for member in range(2):
        single = augment.random_crop_and_flip(keys[member], images[member])
        np.testing.assert_array_equal(np.asarray(mapped[member]), np.asarray(single))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"padding": -1}, "padding=-1 is invalid"),
        ({"padding": 2.0}, "padding=2.0 is invalid"),
        ({"flip_probability": 1.5}, r"flip_probability=1.5 is invalid; expected a value in \[0, 1\]"),
    ],
)
def test_crop_and_flip_invalid_arguments(kwargs, message):
    images = jnp.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match=message):
        augment.random_crop_and_flip(jax.random.key(0), images, **kwargs)


def test_crop_and_flip_rejects_unbatched_image():
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, H, W, C\)"):
        augment.random_crop_and_flip(jax.random.key(0), jnp.zeros((8, 8, 3)))
