"""Datasets for the neural collapse study, loaded into host memory as numpy arrays.

Five datasets load from local files or need no download:

* ``digits``: scikit-learn's bundled handwritten digits (1,797 images of 8x8,
  ten classes), split into train and test with a fixed seed.
* ``mnist``: MNIST read from the IDX files of its original distribution (the
  files TFDS and torchvision download). When a directory contains only the
  ``t10k-*`` test files, that split is divided into train and test.
* ``fashion_mnist``: Fashion-MNIST, whose IDX files have the same names and
  layout as MNIST's and are read the same way.
* ``cifar10``: CIFAR-10 read from the pickled batches of its python version
  (the ``cifar-10-batches-py`` directory). The unpickler builds only builtins
  and numeric numpy arrays, so a file cannot run code.
* ``gaussian_mixture``: a linearly separable synthetic dataset, class k drawn
  from ``N(e_k, std^2 I)`` in R^784.

``load_tfds`` loads mnist, fashion_mnist and cifar10 through TensorFlow
Datasets instead, downloading them when needed, with the same preprocessing.
``load_dataset`` selects it by the names ``tfds:mnist``, ``tfds:fashion_mnist``
and ``tfds:cifar10``.

The image loaders return ``(N, H, W, C)`` float32 and the Gaussian mixture
returns flat ``(N, dim)`` float32 vectors. Labels are ``(N,)`` int32 in
``[0, num_classes)``.
"""

import gzip
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets
import sklearn.model_selection

# Prefix of the load_dataset names that load through TensorFlow Datasets.
TFDS_PREFIX = "tfds:"
# Datasets that load_tfds accepts, by their TFDS names.
TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "gaussian_mixture",
) + tuple(f"{TFDS_PREFIX}{name}" for name in TFDS_DATASETS)

# Pixel mean and std of the 60,000 MNIST training images scaled to [0, 1], the
# values PyTorch MNIST code commonly passes to transforms.Normalize.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST_NUM_CLASSES = 10
MNIST_IMAGE_SIZE = 28

# Pixel mean and std of the 60,000 Fashion-MNIST training images scaled to
# [0, 1], as commonly quoted for transforms.Normalize (not recomputed here).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

# Per-channel (R, G, B) pixel mean and std of the 50,000 CIFAR-10 training
# images scaled to [0, 1], as commonly quoted (not recomputed here).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_NUM_CLASSES = 10
CIFAR10_IMAGE_SIZE = 32
# Layout of cifar-10-python.tar.gz: one directory of pickled batches.
CIFAR10_DIR_NAME = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

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
    return _load_idx_dataset(
        _MNIST,
        data_dir,
        image_size=image_size,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Load Fashion-MNIST from IDX files, resized and normalised.

    Fashion-MNIST uses MNIST's file names and format, so ``data_dir`` is read
    as in ``load_mnist``, including the division of the ``t10k-*`` files when
    no ``train-*`` files exist. Pixels are scaled to [0, 1], resized bilinearly
    to ``image_size``, then normalised with mean 0.2860 and std 0.3530.

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
    return _load_idx_dataset(
        _FASHION_MNIST,
        data_dir,
        image_size=image_size,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )


def load_cifar10(
    data_dir: str | os.PathLike[str], *, image_size: int = CIFAR10_IMAGE_SIZE
) -> Dataset:
    """Load CIFAR-10 from the pickled batches of its python version.

    ``data_dir`` is the ``cifar-10-batches-py`` directory extracted from
    ``cifar-10-python.tar.gz``, or a directory containing it. Its
    ``data_batch_1`` to ``data_batch_5`` form the training split (50,000
    images) and ``test_batch`` the test split (10,000). ``batches.meta``, which
    contains the class names, is not read.

    Each batch is unpickled by an unpickler that builds only builtins and
    numeric numpy arrays and rejects every other global, so a tampered file
    raises ``DataError`` instead of running code.

    Pixels are scaled to [0, 1], resized bilinearly to ``image_size`` (32 keeps
    the original size), then normalised per channel with means (0.4914, 0.4822,
    0.4465) and stds (0.2470, 0.2435, 0.2616).

    Args:
      data_dir: the ``cifar-10-batches-py`` directory or its parent.
      image_size: side of the square output images.

    Returns:
      A ``Dataset`` with images of shape ``(N, image_size, image_size, 3)``.

    Raises:
      DataError: naming the path, if the directory or a batch is missing or a
        batch is not a valid CIFAR-10 batch.
    """
    _check_image_size(image_size)
    batches_dir = _find_cifar10_dir(Path(data_dir))

    train_batches = [
        _read_cifar10_batch(batches_dir / name) for name in CIFAR10_TRAIN_BATCHES
    ]
    train_images = np.concatenate([images for images, _ in train_batches])
    train_labels = np.concatenate([labels for _, labels in train_batches])
    test_images, test_labels = _read_cifar10_batch(batches_dir / CIFAR10_TEST_BATCH)

    return Dataset(
        name="cifar10",
        x_train=_preprocess_cifar10_images(train_images, image_size),
        y_train=train_labels,
        x_test=_preprocess_cifar10_images(test_images, image_size),
        y_test=test_labels,
        num_classes=CIFAR10_NUM_CLASSES,
    )


def load_tfds(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int = 32,
) -> Dataset:
    """Load mnist, fashion_mnist or cifar10 through TensorFlow Datasets.

    The dataset is read through ``builder.as_data_source``, TFDS's
    random-access reader of ArrayRecord files, which needs no TensorFlow. If it
    is not prepared in ``data_dir``, it is downloaded and prepared there in the
    ArrayRecord format when ``download`` is true. TFDS's preparation code for
    these three datasets calls TensorFlow (checked for tensorflow-datasets
    4.9.10), so that step needs ``tensorflow`` installed. A dataset prepared
    elsewhere by ``tfds build NAME --file_format=array_record`` loads without
    it.

    The TFDS train and test splits are used as they are (60,000 and 10,000
    images for mnist and fashion_mnist, 50,000 and 10,000 for cifar10), with
    the preprocessing of ``load_mnist``, ``load_fashion_mnist`` and
    ``load_cifar10``.

    Args:
      name: the TFDS name, one of ``TFDS_DATASETS``.
      data_dir: the TFDS data directory. ``None`` uses TFDS's default,
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
      download: whether to download and prepare a dataset missing from
        ``data_dir``. With false, a missing dataset raises ``DataError``.
      image_size: side of the square output images.

    Returns:
      A ``Dataset`` named ``name`` with images of shape
      ``(N, image_size, image_size, C)``, C = 1 for mnist and fashion_mnist and
      3 for cifar10.

    Raises:
      DataError: if tensorflow-datasets is not installed, ``name`` is unknown,
        the dataset is missing and ``download`` is false, preparing it needs
        TensorFlow, it is stored in a format without random access, or its
        examples have an unexpected shape or label.
    """
    _check_image_size(image_size)
    if name not in TFDS_DATASETS:
        raise DataError(
            f"unknown TFDS dataset {name!r}; expected one of:"
            f" {', '.join(TFDS_DATASETS)}"
        )
    tfds = _import_tfds()

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"TFDS dataset {name!r} not found in {builder.data_dir}; pass"
                " download=True to download and prepare it, or a data_dir that"
                " contains it"
            )
        builder = _prepare_tfds_dataset(tfds, name, data_dir)

    try:
        train_source, test_source = builder.as_data_source(split=["train", "test"])
    except NotImplementedError:
        raise DataError(
            f"TFDS dataset {name!r} in {builder.data_dir} has no random-access"
            " files; expected the array_record format, as written by"
            f" `tfds build {name} --file_format=array_record`"
        ) from None

    if name == "cifar10":
        image_shape = (CIFAR10_IMAGE_SIZE, CIFAR10_IMAGE_SIZE, 3)
        num_classes = CIFAR10_NUM_CLASSES
    else:
        image_shape = (MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE, 1)
        num_classes = MNIST_NUM_CLASSES
    train_images, train_labels = _read_tfds_split(
        train_source, f"TFDS {name} train split", image_shape, num_classes
    )
    test_images, test_labels = _read_tfds_split(
        test_source, f"TFDS {name} test split", image_shape, num_classes
    )

    return Dataset(
        name=name,
        x_train=_preprocess_tfds_images(name, train_images, image_size),
        y_train=train_labels,
        x_test=_preprocess_tfds_images(name, test_images, image_size),
        y_test=test_labels,
        num_classes=num_classes,
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

    ``mnist``, ``fashion_mnist`` and ``cifar10`` read local files from
    ``data_dir``. The names ``tfds:mnist``, ``tfds:fashion_mnist`` and
    ``tfds:cifar10`` load the same datasets through ``load_tfds``, which
    downloads them when needed, with the same preprocessing but the full TFDS
    train and test splits.

    Args:
      name: one of ``DATASETS``.
      data_dir: for ``mnist`` and ``fashion_mnist``, the directory with the IDX
        files, and for ``cifar10`` the ``cifar-10-batches-py`` directory or its
        parent. Each of the three requires it. For the ``tfds:`` names it is the
        TFDS data directory, and ``None`` uses TFDS's default.
      samples_per_class: if given, the training split is cut to this many
        examples per class by ``balanced_subset``. The test split is never cut.
        For ``gaussian_mixture`` it is the number of training samples drawn
        per class instead (default 1,000), so it may exceed 1,000.
      seed: seed of that subset. The train/test split itself uses a fixed seed
        of 0, so the test set does not change with ``seed``. The Gaussian
        mixture is always drawn with seed 0, so every run uses the same data.
      image_size: side of the output images. ``None`` keeps each dataset's
        default, 8 for digits and 32 for the other image datasets. The
        Gaussian mixture has no images and accepts only ``None``.

    Returns:
      The loaded ``Dataset``.

    Raises:
      DataError: for an unknown name, a missing ``data_dir`` for a dataset read
        from local files, or any error of the loaders and of
        ``balanced_subset``.
    """
    size_kwargs = {} if image_size is None else {"image_size": image_size}
    file_loaders = {
        "mnist": load_mnist,
        "fashion_mnist": load_fashion_mnist,
        "cifar10": load_cifar10,
    }
    if name == "digits":
        dataset = load_digits(**size_kwargs)
    elif name in file_loaders:
        if data_dir is None:
            expected = (
                _expected_cifar10_files()
                if name == "cifar10"
                else _expected_mnist_names("t10k")
            )
            raise DataError(
                f"dataset {name!r} requires --data_dir, a directory containing"
                f" {expected}"
            )
        dataset = file_loaders[name](data_dir, **size_kwargs)
    elif name.startswith(TFDS_PREFIX) and name in DATASETS:
        dataset = load_tfds(
            name.removeprefix(TFDS_PREFIX), data_dir=data_dir, **size_kwargs
        )
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
    """Resize ``(N, H, W)`` or ``(N, H, W, C)`` images to a square of ``image_size``.

    The output is float32 of shape ``(N, image_size, image_size)`` or ``(N,
    image_size, image_size, C)``. The interpolation is bilinear and leaves the
    channels apart. ``jax.image.resize`` applies an antialiasing filter when it
    shrinks an image and none when it enlarges one. Each call resizes at most
    ``RESIZE_CHUNK_SIZE`` images.
    """
    trailing_shape = tuple(images.shape[3:])
    chunks = []
    for start in range(0, len(images), RESIZE_CHUNK_SIZE):
        chunk = jnp.asarray(images[start : start + RESIZE_CHUNK_SIZE], jnp.float32)
        target_shape = (chunk.shape[0], image_size, image_size, *trailing_shape)
        resized = jax.image.resize(chunk, target_shape, method="linear")
        chunks.append(np.asarray(resized))
    if not chunks:
        return np.zeros((0, image_size, image_size, *trailing_shape), dtype=np.float32)
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


class _IdxDataset(NamedTuple):
    """A dataset stored as IDX files with MNIST's names and layout."""

    name: str  # the Dataset name
    title: str  # the name in messages
    mean: float  # pixel mean and std of the training images scaled to [0, 1]
    std: float


_MNIST = _IdxDataset("mnist", "MNIST", MNIST_MEAN, MNIST_STD)
_FASHION_MNIST = _IdxDataset(
    "fashion_mnist", "Fashion-MNIST", FASHION_MNIST_MEAN, FASHION_MNIST_STD
)


def _load_idx_dataset(
    source: _IdxDataset,
    data_dir: str | os.PathLike[str],
    *,
    image_size: int,
    test_fraction: float,
    split_seed: int,
) -> Dataset:
    """Load MNIST or Fashion-MNIST as described in ``load_mnist``."""
    _check_image_size(image_size)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"{source.title} directory not found: {data_dir}; expected a"
            f" directory containing {_expected_mnist_names('t10k')}, and"
            f" optionally {_expected_mnist_names('train')}"
        )

    test_images, test_labels = _read_mnist_pair(data_dir, "t10k", source.title)
    if _find_mnist_pair(data_dir, "train", source.title) is not None:
        train_images, train_labels = _read_mnist_pair(data_dir, "train", source.title)
    else:
        full_images, full_labels = test_images, test_labels
        train_index, test_index = _stratified_split(
            full_labels, test_fraction, split_seed
        )
        train_images, train_labels = full_images[train_index], full_labels[train_index]
        test_images, test_labels = full_images[test_index], full_labels[test_index]
        logging.info(
            "Found only the %s test split in %s, so divided its %d images into"
            " %d for training and %d for testing (stratified, test_fraction=%g,"
            " split_seed=%d).",
            source.title,
            data_dir,
            len(full_labels),
            len(train_labels),
            len(test_labels),
            test_fraction,
            split_seed,
        )

    def preprocess(images: np.ndarray) -> np.ndarray:
        return _preprocess_grayscale_images(
            images, image_size, mean=source.mean, std=source.std
        )

    return Dataset(
        name=source.name,
        x_train=preprocess(train_images),
        y_train=train_labels,
        x_test=preprocess(test_images),
        y_test=test_labels,
        num_classes=MNIST_NUM_CLASSES,
    )


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


def _find_mnist_pair(
    data_dir: Path, prefix: str, title: str
) -> tuple[Path, Path] | None:
    """Return the images and labels files of one split, or None if neither exists."""
    images_stem, labels_stem = _mnist_stems(prefix)
    images_path = _find_file(data_dir, images_stem)
    labels_path = _find_file(data_dir, labels_stem)
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        missing = images_stem if images_path is None else labels_stem
        raise DataError(
            f"{data_dir}: found one of the {title} {prefix} files but not"
            f" {missing}[.gz]; expected both {_expected_mnist_names(prefix)}"
        )
    return images_path, labels_path


def _read_mnist_pair(
    data_dir: Path, prefix: str, title: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate the uint8 images and int32 labels of one split."""
    paths = _find_mnist_pair(data_dir, prefix, title)
    if paths is None:
        raise DataError(
            f"{title} files not found in {data_dir}; expected"
            f" {_expected_mnist_names(prefix)}"
        )
    images_path, labels_path = paths

    images = read_idx(images_path, expected_ndim=3)
    if images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: {title} pixels have type {images.dtype};"
            " expected unsigned bytes (type 0x08)"
        )
    labels = read_idx(labels_path, expected_ndim=1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: {title} labels have type {labels.dtype};"
            " expected an integer type"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{title} {prefix} files disagree: {images_path} has {len(images)}"
            f" images but {labels_path} has {len(labels)} labels"
        )
    _check_labels(labels, MNIST_NUM_CLASSES, source=labels_path)
    return images, labels.astype(np.int32)


def _preprocess_grayscale_images(
    images: np.ndarray, image_size: int, *, mean: float, std: float
) -> np.ndarray:
    """Scale ``(N, H, W)`` uint8 pixels to [0, 1], resize, normalise and add the channel axis."""
    scaled = images.astype(np.float32) / 255.0
    if scaled.shape[1:] != (image_size, image_size):
        scaled = resize_images(scaled, image_size)
    normalised = (scaled - mean) / std
    return normalised[..., None].astype(np.float32)


def _preprocess_cifar10_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Scale ``(N, H, W, 3)`` uint8 pixels to [0, 1], resize and normalise per channel."""
    scaled = images.astype(np.float32) / 255.0
    if scaled.shape[1:3] != (image_size, image_size):
        scaled = resize_images(scaled, image_size)
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)
    std = np.asarray(CIFAR10_STD, dtype=np.float32)
    return ((scaled - mean) / std).astype(np.float32)


def _expected_cifar10_files() -> str:
    return (
        f"{CIFAR10_DIR_NAME}, or its batches {CIFAR10_TRAIN_BATCHES[0]} to"
        f" {CIFAR10_TRAIN_BATCHES[-1]} and {CIFAR10_TEST_BATCH}"
    )


def _find_cifar10_dir(data_dir: Path) -> Path:
    """Return ``data_dir``, or its ``cifar-10-batches-py`` subdirectory if it has one."""
    nested = data_dir / CIFAR10_DIR_NAME
    if nested.is_dir():
        return nested
    if not data_dir.is_dir():
        raise DataError(
            f"CIFAR-10 directory not found: {data_dir}; expected a directory"
            f" containing {_expected_cifar10_files()}"
        )
    return data_dir


# Values of a CIFAR-10 pixel row: 1,024 red, then 1,024 green, then 1,024 blue
# values, each channel in row-major order.
_CIFAR10_ROW_SIZE = 3 * CIFAR10_IMAGE_SIZE * CIFAR10_IMAGE_SIZE

# Exceptions that unpickling a corrupt or hostile file can raise. The Python
# documentation of pickle.UnpicklingError names AttributeError, EOFError,
# ImportError and IndexError, and adds that others are possible.
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    AttributeError,
    EOFError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled batch into ``(N, 32, 32, 3)`` uint8 images and int32 labels."""
    expected = (
        "expected a pickled dict with b'data', an (N, 3072) uint8 array, and"
        " b'labels', N integers, as in cifar-10-python.tar.gz"
    )
    try:
        with path.open("rb") as file:
            batch = _CifarUnpickler(file, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(
            f"CIFAR-10 batch not found: {path}; expected {path.parent} to contain"
            f" {_expected_cifar10_files()}"
        ) from None
    except OSError as error:
        raise DataError(f"failed to read CIFAR-10 batch {path}: {error}") from None
    except _UNPICKLING_ERRORS as error:
        raise DataError(
            f"{path}: invalid CIFAR-10 batch ({type(error).__name__}: {error});"
            f" {expected}"
        ) from None

    if not isinstance(batch, dict):
        raise DataError(
            f"{path}: invalid CIFAR-10 batch: the file contains"
            f" {_describe_value(batch)}; {expected}"
        )
    missing = [repr(key) for key in (b"data", b"labels") if key not in batch]
    if missing:
        raise DataError(
            f"{path}: invalid CIFAR-10 batch: missing {', '.join(missing)};"
            f" {expected}"
        )

    data = batch[b"data"]
    if isinstance(data, _PickledArray):
        data = data.array
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _CIFAR10_ROW_SIZE
    ):
        raise DataError(
            f"{path}: invalid CIFAR-10 batch: b'data' is {_describe_value(data)};"
            f" {expected}"
        )

    labels = batch[b"labels"]
    if isinstance(labels, _PickledArray):
        labels = labels.array
    elif isinstance(labels, list) and all(_is_integer(label) for label in labels):
        try:
            labels = np.asarray(labels, dtype=np.int64)
        except OverflowError:
            raise DataError(
                f"{path}: invalid CIFAR-10 batch: a label exceeds the int64"
                f" range; expected labels in [0, {CIFAR10_NUM_CLASSES})"
            ) from None
    if not (
        isinstance(labels, np.ndarray)
        and labels.ndim == 1
        and np.issubdtype(labels.dtype, np.integer)
    ):
        raise DataError(
            f"{path}: invalid CIFAR-10 batch: b'labels' is"
            f" {_describe_value(labels)}; {expected}"
        )
    if len(labels) != len(data):
        raise DataError(
            f"{path}: invalid CIFAR-10 batch: {len(data)} images but"
            f" {len(labels)} labels; {expected}"
        )
    _check_labels(labels, CIFAR10_NUM_CLASSES, source=path)

    side = CIFAR10_IMAGE_SIZE
    images = data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} of {value.dtype}"
    return f"a {type(value).__name__}"


class _PickledDtype:
    """Stand-in for a pickled ``numpy.dtype`` that keeps its type string and byte order.

    Pickle builds a dtype as ``numpy.dtype(spec, align, copy)`` followed by
    ``__setstate__((version, byteorder, ...))``. Only ``to_numpy`` creates a
    real dtype, and only a numeric one.
    """

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        del align, copy  # They change nothing for the numeric dtypes accepted.
        if isinstance(spec, bytes):
            spec = spec.decode("ascii")
        if not isinstance(spec, str):
            raise pickle.UnpicklingError(
                f"dtype {spec!r} is invalid; expected a type string such as 'u1'"
            )
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        byteorder = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
        if isinstance(byteorder, bytes):
            byteorder = byteorder.decode("ascii")
        if byteorder not in ("<", ">", "=", "|"):
            raise pickle.UnpicklingError(
                f"dtype byte order {byteorder!r} is invalid; expected <, >, = or |"
            )
        self.byteorder = byteorder

    def to_numpy(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        if dtype.kind not in "biuf":
            raise pickle.UnpicklingError(
                f"dtype {self.spec!r} is not allowed; expected a boolean, integer"
                " or floating-point type"
            )
        if self.byteorder in ("<", ">"):
            dtype = dtype.newbyteorder(self.byteorder)
        return dtype


class _PickledArray:
    """Stand-in for a pickled ``numpy.ndarray``, rebuilt from its raw bytes.

    Pickle builds an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by
    ``__setstate__((version, shape, dtype, is_fortran, raw_bytes))``. The array
    is made with ``np.frombuffer`` only when the dtype is numeric and the byte
    count matches the shape, so numpy never unpickles anything itself.
    """

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError(
                "numpy array state is invalid; expected (version, shape, dtype,"
                " is_fortran, raw bytes)"
            )
        _, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _PickledDtype):
            raise pickle.UnpicklingError(
                f"numpy array dtype {dtype!r} is invalid; expected a pickled dtype"
            )
        numpy_dtype = dtype.to_numpy()
        if not (
            isinstance(shape, tuple)
            and all(_is_integer(size) and size >= 0 for size in shape)
        ):
            raise pickle.UnpicklingError(
                f"numpy array shape {shape!r} is invalid; expected a tuple of"
                " non-negative integers"
            )
        if not isinstance(raw, bytes):
            raise pickle.UnpicklingError(
                f"numpy array data is {type(raw).__name__}; expected raw bytes"
            )
        expected_bytes = math.prod(shape) * numpy_dtype.itemsize
        if len(raw) != expected_bytes:
            raise pickle.UnpicklingError(
                f"numpy array has {len(raw)} data bytes; expected {expected_bytes}"
                f" for shape {shape} of {numpy_dtype}"
            )
        order = "F" if is_fortran else "C"
        flat = np.frombuffer(raw, dtype=numpy_dtype)
        self.array = flat.reshape(shape, order=order).astype(
            numpy_dtype.newbyteorder("="), order="C"
        )


def _reconstruct_array(subtype: Any, shape: Any, dtype_code: Any) -> _PickledArray:
    del shape, dtype_code  # The array state sets both.
    if subtype is not _PickledArray:
        raise pickle.UnpicklingError(
            f"array subtype {subtype!r} is not allowed; expected numpy.ndarray"
        )
    return _PickledArray()


def _encode_latin1(text: Any, encoding: Any) -> bytes:
    """Rebuild bytes that Python 3 pickled at protocol 2 as ``_codecs.encode(text, 'latin1')``."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f"_codecs.encode with encoding {encoding!r} is not allowed; expected"
            " 'latin1'"
        )
    return text.encode("latin-1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtins and numeric numpy arrays.

    ``find_class`` returns stand-ins for the globals that a pickled numpy array
    of numbers needs (``_reconstruct`` under its numpy 1.x and 2.x module
    names, ``ndarray`` and ``dtype``) and for ``_codecs.encode``, which Python
    3 uses for bytes at protocol 2. It raises for every other global, so a file
    cannot call a function of its choice.
    """

    _ALLOWED_GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
        ("numpy", "ndarray"): _PickledArray,
        ("numpy", "dtype"): _PickledDtype,
        ("_codecs", "encode"): _encode_latin1,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed; a CIFAR-10 batch may"
                " contain only builtins and numeric numpy arrays"
            ) from None


def _import_tfds() -> Any:
    """Import tensorflow_datasets, an optional dependency needed only by ``load_tfds``."""
    # Imported here so that ncjax imports without it.
    try:
        import tensorflow_datasets
    except ImportError as error:
        raise DataError(
            f"load_tfds requires tensorflow-datasets, which failed to import"
            f" ({error}); install it with `pip install 'ncjax[tfds]'`"
        ) from None
    return tensorflow_datasets


def _prepare_tfds_dataset(
    tfds: Any, name: str, data_dir: str | os.PathLike[str] | None
) -> Any:
    """Download and prepare a TFDS dataset as ArrayRecord files and return its builder."""
    # NOTE: tests run this only under tfds.testing.mock_data, which makes
    # download_and_prepare a no-op, so the download and the TensorFlow
    # requirement below are known from the tfds 4.9.10 source, not from a run.
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    logging.info(
        "Downloading and preparing TFDS dataset %r in %s.", name, builder.data_dir
    )
    try:
        builder.download_and_prepare()
    except ModuleNotFoundError as error:
        # Without TensorFlow, tfds 4.9.10 fails on the first module the
        # download step needs: tensorflow itself, or importlib_resources,
        # which is seen here.
        raise DataError(
            f"preparing TFDS dataset {name!r} failed: module {error.name!r} is not"
            " installed. Preparing needs TensorFlow: install it with `pip install"
            " tensorflow`, or prepare the dataset where it is installed with `tfds"
            f" build {name} --file_format=array_record --data_dir=DIR` and pass DIR"
            " as data_dir"
        ) from None
    except OSError as error:
        raise DataError(
            f"downloading TFDS dataset {name!r} to {builder.data_dir} failed ({error});"
            " check the network connection, or pass a data_dir that contains the"
            " prepared dataset"
        ) from None
    return builder


def _read_tfds_split(
    source: Any, description: str, image_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read a TFDS data source of {"image", "label"} examples into numpy arrays."""
    # Reads one example at a time, because the batched __getitems__ of
    # tfds.testing.mock_data fails in tensorflow-datasets 4.9.10.
    examples = [source[index] for index in range(len(source))]
    if not examples:
        raise DataError(f"{description} is empty; expected at least one example")
    images = np.stack([example["image"] for example in examples])
    labels = np.asarray([example["label"] for example in examples])

    if images.shape[1:] != image_shape or images.dtype != np.uint8:
        raise DataError(
            f"{description}: images have shape {images.shape[1:]} of"
            f" {images.dtype}; expected {image_shape} of uint8"
        )
    _check_labels(labels, num_classes, source=description)
    return images, labels.astype(np.int32)


def _preprocess_tfds_images(
    name: str, images: np.ndarray, image_size: int
) -> np.ndarray:
    if name == "cifar10":
        return _preprocess_cifar10_images(images, image_size)
    source = _MNIST if name == "mnist" else _FASHION_MNIST
    return _preprocess_grayscale_images(
        images[..., 0], image_size, mean=source.mean, std=source.std
    )
