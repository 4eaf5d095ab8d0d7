"""Datasets for the neural collapse study, loaded into host memory as numpy arrays.

Three datasets are available without a download:

* ``digits``: scikit-learn's bundled handwritten digits (1,797 images of 8x8,
  ten classes), split into train and test with a fixed seed.
* ``mnist``: MNIST read from the IDX files of its original distribution (the
  files TFDS and torchvision download). When a directory contains only the
  ``t10k-*`` test files, that split is divided into train and test.
* ``gaussian_mixture``: a linearly separable synthetic dataset, class k drawn
  from ``N(e_k, std^2 I)`` in R^784.

The image loaders return ``(N, H, W, C)`` float32 and the Gaussian mixture
returns flat ``(N, dim)`` float32 vectors. Labels are ``(N,)`` int32 in
``[0, num_classes)``.
"""

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets
import sklearn.model_selection

DATASETS = ("digits", "mnist", "gaussian_mixture")

# Pixel mean and std of the 60,000 MNIST training images scaled to [0, 1], the
# values PyTorch MNIST code commonly passes to transforms.Normalize.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_NUM_CLASSES = 10
MNIST_IMAGE_SIZE = 28

DIGITS_NUM_CLASSES = 10
DIGITS_IMAGE_SIZE = 8
# Each pixel of scikit-learn's digits counts the set pixels of a 4x4 block.
DIGITS_MAX_VALUE = 16.0

# The separable dataset of the study's NC0 dynamics experiment: 1,000 samples
# per class of N(e_k, 0.1^2 I) in R^784.
GAUSSIAN_MIXTURE_SAMPLES_PER_CLASS = 1000
GAUSSIAN_MIXTURE_NUM_CLASSES = 10
GAUSSIAN_MIXTURE_DIM = 784
GAUSSIAN_MIXTURE_STD = 0.1
# The study does not size a test split for this dataset.
GAUSSIAN_MIXTURE_TEST_SAMPLES_PER_CLASS = 200

# Images per jax.image.resize call, which bounds the device memory of a resize.
RESIZE_CHUNK_SIZE = 4096

# IDX element types by type byte. IDX stores every multi-byte value big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """Invalid or missing dataset input.

    The message names the bad value or file and what is accepted.
    """


class Dataset(NamedTuple):
    """A labelled train/test split held in host memory."""

    name: str
    x_train: np.ndarray  # (N, H, W, C) images or (N, dim) vectors, float32
    y_train: np.ndarray  # (N,) int32 in [0, num_classes)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def read_idx(
    path: str | os.PathLike[str], *, expected_ndim: int | None = None
) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, into a native-endian numpy array.

    Compression is detected from the gzip magic bytes ``1f 8b``, not from the
    file name. All six IDX element types are supported.

    Args:
      path: the IDX file.
      expected_ndim: if given, the number of dimensions the file must declare.

    Returns:
      The array with the shape and element type declared in the header.

    Raises:
      DataError: if the file is missing, is corrupt gzip, has an invalid
        header, declares another number of dimensions than ``expected_ndim``,
        or contains more or fewer data bytes than its header declares.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as error:
        raise DataError(f"failed to read IDX file {path}: {error}") from None

    if content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(
                f"{path}: invalid gzip data ({error}); re-download the file"
            ) from None

    if len(content) < 4:
        raise DataError(
            f"{path}: truncated IDX header: expected at least 4 bytes,"
            f" found {len(content)}"
        )
    if content[:2] != b"\x00\x00":
        raise DataError(
            f"{path}: invalid IDX magic number 0x{content[:4].hex()}; expected two"
            " zero bytes, a type byte and a dimension count"
        )

    type_code = content[2]
    if type_code not in _IDX_DTYPES:
        accepted = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise DataError(
            f"{path}: unknown IDX type byte 0x{type_code:02x};"
            f" expected one of: {accepted}"
        )
    dtype = _IDX_DTYPES[type_code]

    ndim = content[3]
    if ndim == 0:
        raise DataError(
            f"{path}: IDX header declares 0 dimensions; expected at least 1"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"{path}: IDX header declares {ndim} dimensions;"
            f" expected {expected_ndim}"
        )

    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(
            f"{path}: truncated IDX header: expected {header_size} bytes for"
            f" {ndim} dimensions, found {len(content)}"
        )
    sizes = np.frombuffer(content, dtype=">u4", count=ndim, offset=4)
    shape = tuple(int(size) for size in sizes)

    expected_bytes = math.prod(shape) * dtype.itemsize
    actual_bytes = len(content) - header_size
    if actual_bytes < expected_bytes:
        raise DataError(
            f"{path}: truncated IDX file: expected {expected_bytes} data bytes"
            f" for shape {shape} of {dtype.name}, found {actual_bytes}"
        )
    if actual_bytes > expected_bytes:
        raise DataError(
            f"{path}: IDX file has {actual_bytes - expected_bytes} trailing bytes:"
            f" expected {expected_bytes} data bytes for shape {shape} of"
            f" {dtype.name}, found {actual_bytes}"
        )

    data = np.frombuffer(content, dtype=dtype, offset=header_size)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def load_digits(
    *,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    image_size: int = DIGITS_IMAGE_SIZE,
) -> Dataset:
    """Load scikit-learn's bundled 8x8 digits, split and standardised.

    Pixels are scaled to [0, 1], then standardised with the mean and std of the
    training split's pixels, so the training images have mean 0 and std 1.

    Args:
      test_fraction: fraction of each class that goes to the test split, in
        (0, 1).
      split_seed: seed of the stratified split. It is separate from any
        training seed so that the test set stays the same across runs.
      image_size: side of the square output images. 8 keeps the original
        resolution, and any other size is reached by bilinear resizing.

    Returns:
      A ``Dataset`` with images of shape ``(N, image_size, image_size, 1)``.
    """
    _check_image_size(image_size)
    bunch = sklearn.datasets.load_digits()
    images = bunch.images.astype(np.float32) / DIGITS_MAX_VALUE
    labels = bunch.target.astype(np.int32)
    _check_labels(labels, DIGITS_NUM_CLASSES, source="scikit-learn digits")

    train_index, test_index = _stratified_split(labels, test_fraction, split_seed)
    if image_size != DIGITS_IMAGE_SIZE:
        images = resize_images(images, image_size)

    train_pixels = images[train_index]
    mean = float(train_pixels.mean())
    std = float(train_pixels.std())
    images = (images - mean) / std

    return Dataset(
        name="digits",
        x_train=images[train_index, :, :, None],
        y_train=labels[train_index],
        x_test=images[test_index, :, :, None],
        y_test=labels[test_index],
        num_classes=DIGITS_NUM_CLASSES,
    )


def load_mnist(
    data_dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Load MNIST from IDX files, resized and normalised.

    If ``data_dir`` contains ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (each raw or with ``.gz``), they form the
    training split and the ``t10k-*`` files the test split. If it contains
    only the ``t10k-*`` files, those images are split stratified into train and
    test by ``test_fraction``.

    Pixels are scaled to [0, 1], resized bilinearly to ``image_size`` (28 keeps
    the original size), then normalised with mean 0.1307 and std 0.3081.

    Args:
      data_dir: directory containing the IDX files.
      image_size: side of the square output images.
      test_fraction: fraction of each class held out for testing when only the
        test files are present, in (0, 1). Ignored when the train files exist.
      split_seed: seed of that stratified split.

    Returns:
      A ``Dataset`` with images of shape ``(N, image_size, image_size, 1)``.

    Raises:
      DataError: if the directory or the files are missing or invalid.
    """
    _check_image_size(image_size)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"MNIST directory not found: {data_dir}; expected a directory"
            f" containing {_expected_mnist_names('t10k')}, and optionally"
            f" {_expected_mnist_names('train')}"
        )

    test_images, test_labels = _read_mnist_pair(data_dir, "t10k")
    if _find_mnist_pair(data_dir, "train") is not None:
        train_images, train_labels = _read_mnist_pair(data_dir, "train")
    else:
        full_images, full_labels = test_images, test_labels
        train_index, test_index = _stratified_split(
            full_labels, test_fraction, split_seed
        )
        train_images, train_labels = full_images[train_index], full_labels[train_index]
        test_images, test_labels = full_images[test_index], full_labels[test_index]
        logging.info(
            "Found only the MNIST test split in %s, so divided its %d images into"
            " %d for training and %d for testing (stratified, test_fraction=%g,"
            " split_seed=%d).",
            data_dir,
            len(full_labels),
            len(train_labels),
            len(test_labels),
            test_fraction,
            split_seed,
        )

    return Dataset(
        name="mnist",
        x_train=_preprocess_mnist_images(train_images, image_size),
        y_train=train_labels,
        x_test=_preprocess_mnist_images(test_images, image_size),
        y_test=test_labels,
        num_classes=MNIST_NUM_CLASSES,
    )


def load_gaussian_mixture(
    *,
    samples_per_class: int = GAUSSIAN_MIXTURE_SAMPLES_PER_CLASS,
    num_classes: int = GAUSSIAN_MIXTURE_NUM_CLASSES,
    dim: int = GAUSSIAN_MIXTURE_DIM,
    std: float = GAUSSIAN_MIXTURE_STD,
    test_samples_per_class: int = GAUSSIAN_MIXTURE_TEST_SAMPLES_PER_CLASS,
    seed: int = 0,
) -> Dataset:
    """Draw a Gaussian mixture with one component per class.

    Class k is drawn from ``N(e_k, std^2 I)`` in R^dim, with ``e_k`` the k-th
    standard basis vector, so the class means are orthonormal and the classes
    are linearly separable for small ``std``. The training and test splits are
    independent draws from two streams of ``seed``, so changing
    ``samples_per_class`` leaves the test split unchanged. Samples are ordered
    by class.

    Args:
      samples_per_class: training samples per class, at least 1.
      num_classes: K, in [2, dim].
      dim: dimension of each sample.
      std: standard deviation of every coordinate, at least 0.
      test_samples_per_class: test samples per class, at least 1.
      seed: seed of both splits.

    Returns:
      A ``Dataset`` with inputs of shape ``(N, dim)`` float32.

    Raises:
      DataError: naming the first invalid argument and its accepted range.
    """
    for name, value in (
        ("samples_per_class", samples_per_class),
        ("test_samples_per_class", test_samples_per_class),
        ("dim", dim),
    ):
        if not _is_integer(value) or value < 1:
            raise DataError(f"{name}={value!r} is invalid; expected an integer >= 1")
    if not _is_integer(num_classes) or not 2 <= num_classes <= dim:
        raise DataError(
            f"num_classes={num_classes!r} is invalid; expected an integer in"
            f" [2, dim={dim}]"
        )
    if not std >= 0:
        raise DataError(f"std={std!r} is invalid; expected a value >= 0")

    train_stream, test_stream = np.random.SeedSequence(seed).spawn(2)
    means = np.eye(num_classes, dim, dtype=np.float32)

    def draw(stream: np.random.SeedSequence, count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes, dtype=np.int32), count)
        noise = np.random.default_rng(stream).standard_normal(
            (len(labels), dim), dtype=np.float32
        )
        return means[labels] + np.float32(std) * noise, labels

    x_train, y_train = draw(train_stream, samples_per_class)
    x_test, y_test = draw(test_stream, test_samples_per_class)
    return Dataset(
        name="gaussian_mixture",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
    )


def balanced_subset(
    x: np.ndarray,
    y: np.ndarray,
    samples_per_class: int,
    *,
    seed: int,
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Select ``samples_per_class`` examples of every class.

    The examples are shuffled by a permutation fixed by ``seed``, and the first
    ``samples_per_class`` of each class in that order are kept. The result stays
    in permutation order, so the classes are interleaved.

    Args:
      x: inputs, indexed along the first axis.
      y: integer labels of shape ``(N,)``.
      samples_per_class: examples to keep per class, at least 1.
      seed: seed of the permutation.
      num_classes: if given, every class in ``[0, num_classes)`` must be
        present. Otherwise the classes are those that occur in ``y``.

    Returns:
      ``(x_subset, y_subset)`` with ``samples_per_class`` examples per class.

    Raises:
      DataError: if ``samples_per_class`` is not positive, ``x`` and ``y``
        differ in length, or a class has fewer examples than requested.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if not _is_integer(samples_per_class):
        raise DataError(
            f"samples_per_class must be a positive integer, got {samples_per_class!r}"
        )
    if samples_per_class <= 0:
        raise DataError(
            f"samples_per_class must be at least 1, got {samples_per_class}"
        )
    if y.ndim != 1:
        raise DataError(f"labels must have shape (N,), got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(
            f"inputs and labels differ in length: {len(x)} inputs, {len(y)} labels"
        )

    classes = np.arange(num_classes) if num_classes is not None else np.unique(y)
    permutation = np.random.default_rng(seed).permutation(len(y))
    permuted_labels = y[permutation]

    class_positions = {
        label: np.flatnonzero(permuted_labels == label) for label in classes
    }
    smallest = min(class_positions, key=lambda label: len(class_positions[label]))
    if len(class_positions[smallest]) < samples_per_class:
        raise DataError(
            f"samples_per_class={samples_per_class} is invalid: class {smallest}"
            f" has only {len(class_positions[smallest])} examples; expected a"
            f" value <= {len(class_positions[smallest])}"
        )
    keep = np.zeros(len(y), dtype=bool)
    for positions in class_positions.values():
        keep[positions[:samples_per_class]] = True

    selected = permutation[keep]
    return x[selected], y[selected]


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
) -> Dataset:
    """Load a dataset by name, optionally cutting its training split per class.

    Args:
      name: one of ``DATASETS``.
      data_dir: directory with the IDX files, required for ``mnist``.
      samples_per_class: if given, the training split is cut to this many
        examples per class by ``balanced_subset``. The test split is never cut.
        For ``gaussian_mixture`` it is the number of training samples drawn
        per class instead (default 1,000), so it may exceed 1,000.
      seed: seed of that subset. The train/test split itself uses a fixed seed
        of 0, so the test set does not change with ``seed``. The Gaussian
        mixture is always drawn with seed 0, so every run uses the same data.
      image_size: side of the output images. ``None`` keeps each dataset's
        default, 8 for digits and 32 for mnist. The Gaussian mixture has no
        images and accepts only ``None``.

    Returns:
      The loaded ``Dataset``.

    Raises:
      DataError: for an unknown name, a missing ``data_dir`` for ``mnist``, or
        any error of the loaders and of ``balanced_subset``.
    """
    size_kwargs = {} if image_size is None else {"image_size": image_size}
    if name == "digits":
        dataset = load_digits(**size_kwargs)
    elif name == "mnist":
        if data_dir is None:
            raise DataError(
                "dataset 'mnist' requires --data_dir, a directory containing"
                f" {_expected_mnist_names('t10k')}"
            )
        dataset = load_mnist(data_dir, **size_kwargs)
    elif name == "gaussian_mixture":
        if image_size is not None:
            raise DataError(
                f"image_size={image_size} is invalid for dataset"
                " 'gaussian_mixture', whose samples are vectors; expected no value"
            )
        if samples_per_class is None:
            samples_per_class = GAUSSIAN_MIXTURE_SAMPLES_PER_CLASS
        return load_gaussian_mixture(samples_per_class=samples_per_class, seed=0)
    else:
        raise DataError(
            f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}"
        )

    if samples_per_class is not None:
        x_train, y_train = balanced_subset(
            dataset.x_train,
            dataset.y_train,
            samples_per_class,
            seed=seed,
            num_classes=dataset.num_classes,
        )
        dataset = dataset._replace(x_train=x_train, y_train=y_train)
    return dataset


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` images to ``(N, image_size, image_size)`` float32.

    The interpolation is bilinear. ``jax.image.resize`` applies an antialiasing
    filter when it shrinks an image and none when it enlarges one. Each call
    resizes at most ``RESIZE_CHUNK_SIZE`` images.
    """
    chunks = []
    for start in range(0, len(images), RESIZE_CHUNK_SIZE):
        chunk = jnp.asarray(images[start : start + RESIZE_CHUNK_SIZE], jnp.float32)
        target_shape = (chunk.shape[0], image_size, image_size)
        resized = jax.image.resize(chunk, target_shape, method="linear")
        chunks.append(np.asarray(resized))
    if not chunks:
        return np.zeros((0, image_size, image_size), dtype=np.float32)
    return np.concatenate(chunks)


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_image_size(image_size: int) -> None:
    if not _is_integer(image_size) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")


def _check_labels(
    labels: np.ndarray, num_classes: int, *, source: str | os.PathLike[str]
) -> None:
    out_of_range = (labels < 0) | (labels >= num_classes)
    if out_of_range.any():
        bad_value = labels[np.argmax(out_of_range)]
        raise DataError(
            f"{source}: label {bad_value} is out of range; expected labels in"
            f" [0, {num_classes}) ({int(out_of_range.sum())} labels out of range)"
        )


def _stratified_split(
    labels: np.ndarray, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted train and test indices with each class's share in both."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        train_index, test_index = sklearn.model_selection.train_test_split(
            np.arange(len(labels)),
            test_size=test_fraction,
            random_state=split_seed,
            stratify=labels,
        )
    except ValueError as error:
        raise DataError(
            f"cannot split {len(labels)} examples with"
            f" test_fraction={test_fraction}: {error}"
        ) from None
    return np.sort(train_index), np.sort(test_index)


def _mnist_stems(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _expected_mnist_names(prefix: str) -> str:
    images_stem, labels_stem = _mnist_stems(prefix)
    return f"{images_stem}[.gz] and {labels_stem}[.gz]"


def _find_file(data_dir: Path, stem: str) -> Path | None:
    """Return ``stem`` or ``stem.gz`` in ``data_dir``, preferring the raw file."""
    for name in (stem, f"{stem}.gz"):
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    return None


def _find_mnist_pair(data_dir: Path, prefix: str) -> tuple[Path, Path] | None:
    """Return the images and labels files of one split, or None if neither exists."""
    images_stem, labels_stem = _mnist_stems(prefix)
    images_path = _find_file(data_dir, images_stem)
    labels_path = _find_file(data_dir, labels_stem)
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        missing = images_stem if images_path is None else labels_stem
        raise DataError(
            f"{data_dir}: found one of the MNIST {prefix} files but not"
            f" {missing}[.gz]; expected both {_expected_mnist_names(prefix)}"
        )
    return images_path, labels_path


def _read_mnist_pair(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate the uint8 images and int32 labels of one MNIST split."""
    paths = _find_mnist_pair(data_dir, prefix)
    if paths is None:
        raise DataError(
            f"MNIST files not found in {data_dir}; expected"
            f" {_expected_mnist_names(prefix)}"
        )
    images_path, labels_path = paths

    images = read_idx(images_path, expected_ndim=3)
    if images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: MNIST pixels have type {images.dtype};"
            " expected unsigned bytes (type 0x08)"
        )
    labels = read_idx(labels_path, expected_ndim=1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: MNIST labels have type {labels.dtype};"
            " expected an integer type"
        )
    if len(images) != len(labels):
        raise DataError(
            f"MNIST {prefix} files disagree: {images_path} has {len(images)}"
            f" images but {labels_path} has {len(labels)} labels"
        )
    _check_labels(labels, MNIST_NUM_CLASSES, source=labels_path)
    return images, labels.astype(np.int32)


def _preprocess_mnist_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Scale uint8 pixels to [0, 1], resize, normalise and add the channel axis."""
    scaled = images.astype(np.float32) / 255.0
    if scaled.shape[1:] != (image_size, image_size):
        scaled = resize_images(scaled, image_size)
    normalised = (scaled - MNIST_MEAN) / MNIST_STD
    return normalised[..., None].astype(np.float32)
