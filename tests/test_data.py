"""Tests for ncjax.data against real dataset files and scikit-learn's digits.

The MNIST tests read the original IDX files from the shared data folder next to
the repository (or from $NCJAX_SHARED_DATA) and skip when it is absent. The
Fashion-MNIST and CIFAR-10 tests write files of those datasets' formats into
tmp_path, and the TFDS tests run under tfds.testing.mock_data and skip when
tensorflow-datasets is not installed.
"""

import gzip
import io
import logging
import os
import pickle
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from ncjax import data

SHARED_DATA = Path(
    os.environ.get(
        "NCJAX_SHARED_DATA",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    )
)
MNIST_DIR = SHARED_DATA / "mnist"
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

IMAGES_NAME = "t10k-images-idx3-ubyte"
LABELS_NAME = "t10k-labels-idx1-ubyte"

# Type byte of each IDX element type, written independently of ncjax.data.
IDX_TYPE_BYTES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def encode_idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_BYTES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    content = encode_idx(array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def write_mnist_pair(
    directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


def require_mnist() -> None:
    if not (MNIST_DIR / f"{IMAGES_NAME}.gz").is_file():
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR}")


@pytest.fixture(scope="module")
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    require_mnist()
    images = data.read_idx(MNIST_DIR / f"{IMAGES_NAME}.gz")
    labels = data.read_idx(MNIST_DIR / f"{LABELS_NAME}.gz")
    return images, labels


@pytest.fixture(scope="module")
def real_mnist() -> data.Dataset:
    require_mnist()
    return data.load_mnist(MNIST_DIR)


@pytest.fixture
def mnist_sample(mnist_arrays) -> tuple[np.ndarray, np.ndarray]:
    """The first 300 real MNIST images and labels, which contain every class."""
    images, labels = mnist_arrays
    return images[:300], labels[:300]


# Real MNIST files.


def test_read_idx_real_mnist_shapes(mnist_arrays):
    images, labels = mnist_arrays
    assert images.shape == (10_000, 28, 28)
    assert images.dtype == np.uint8
    assert labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == MNIST_TEST_CLASS_COUNTS


def test_load_mnist_real_split_shapes(real_mnist):
    assert real_mnist.name == "mnist"
    assert real_mnist.num_classes == 10
    assert real_mnist.x_train.shape == (8_000, 32, 32, 1)
    assert real_mnist.x_test.shape == (2_000, 32, 32, 1)
    assert real_mnist.x_train.dtype == np.float32
    assert real_mnist.x_test.dtype == np.float32
    assert real_mnist.y_train.dtype == np.int32
    assert real_mnist.y_test.dtype == np.int32


def test_load_mnist_real_split_stratified(real_mnist):
    test_counts = np.bincount(real_mnist.y_test, minlength=10)
    train_counts = np.bincount(real_mnist.y_train, minlength=10)
    expected_test = 0.2 * np.array(MNIST_TEST_CLASS_COUNTS)
    # A stratified split rounds each class's share, so it may be one off.
    assert np.all(np.abs(test_counts - expected_test) <= 1)
    assert (train_counts + test_counts).tolist() == MNIST_TEST_CLASS_COUNTS


def test_load_mnist_real_normalisation(real_mnist):
    # The constants 0.1307 and 0.3081 are the pixel statistics of the 60,000
    # training images. The 10,000 test images have mean 0.1325 and std 0.3105,
    # so normalised they have mean about 0.006. Bilinear enlargement to 32x32
    # keeps the mean but smooths the images, and lowers the std to about 0.95.
    assert abs(float(real_mnist.x_train.mean())) < 0.05
    assert 0.85 < float(real_mnist.x_train.std()) < 1.1
    assert float(real_mnist.x_train.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


# IDX format, on files built in tmp_path.


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trip(tmp_path, mnist_sample, compress):
    images, labels = mnist_sample
    images_path = write_idx(tmp_path / "images", images, compress=compress)
    labels_path = write_idx(tmp_path / "labels", labels, compress=compress)

    np.testing.assert_array_equal(data.read_idx(images_path), images)
    np.testing.assert_array_equal(data.read_idx(labels_path), labels)


def test_read_idx_detects_gzip_by_magic(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gzip_without_suffix = write_idx(tmp_path / "images", array, compress=True)
    raw_with_suffix = write_idx(tmp_path / "images.gz", array, compress=False)

    np.testing.assert_array_equal(data.read_idx(gzip_without_suffix), array)
    np.testing.assert_array_equal(data.read_idx(raw_with_suffix), array)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_read_idx_other_element_types(tmp_path, dtype):
    array = (np.arange(-6, 6).reshape(3, 4) * 3).astype(dtype)
    result = data.read_idx(write_idx(tmp_path / "array", array))

    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_truncated_file(tmp_path, mnist_sample):
    images, _ = mnist_sample
    path = tmp_path / IMAGES_NAME
    path.write_bytes(encode_idx(images)[:-10])

    with pytest.raises(data.DataError) as error:
        data.read_idx(path)
    message = str(error.value)
    assert str(path) in message
    assert "truncated" in message
    assert f"expected {images.size} data bytes" in message
    assert f"found {images.size - 10}" in message


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(encode_idx(np.zeros(5, np.uint8)) + b"\x00\x00")

    with pytest.raises(data.DataError, match="2 trailing bytes") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(b"\x01\x02" + encode_idx(np.zeros((2, 2, 2), np.uint8))[2:])

    with pytest.raises(data.DataError, match="invalid IDX magic number") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)
    assert "0x01020803" in str(error.value)


def test_read_idx_unknown_type_byte(tmp_path):
    path = tmp_path / "images"
    content = bytearray(encode_idx(np.zeros(4, np.uint8)))
    content[2] = 0x0A
    path.write_bytes(bytes(content))

    with pytest.raises(data.DataError, match="unknown IDX type byte 0x0a") as error:
        data.read_idx(path)
    assert "0x08" in str(error.value)


def test_read_idx_wrong_dims(tmp_path, mnist_sample):
    _, labels = mnist_sample
    path = write_idx(tmp_path / IMAGES_NAME, labels)

    with pytest.raises(data.DataError) as error:
        data.read_idx(path, expected_ndim=3)
    message = str(error.value)
    assert str(path) in message
    assert "declares 1 dimensions" in message
    assert "expected 3" in message


@pytest.mark.parametrize("damage", ["garbled", "cut"])
def test_read_idx_corrupt_gzip(tmp_path, mnist_sample, damage):
    images, _ = mnist_sample
    compressed = bytearray(gzip.compress(encode_idx(images)))
    if damage == "garbled":
        middle = len(compressed) // 2
        compressed[middle : middle + 64] = bytes(64)
    else:
        compressed = compressed[: len(compressed) // 2]
    path = tmp_path / f"{IMAGES_NAME}.gz"
    path.write_bytes(bytes(compressed))

    with pytest.raises(data.DataError, match="invalid gzip data") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(data.DataError, match="IDX file not found") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


# load_mnist on files built in tmp_path.


def test_load_mnist_train_and_test_files(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_mnist_pair(tmp_path, "train", images[:200], labels[:200])
    write_mnist_pair(tmp_path, "t10k", images[200:], labels[200:])

    dataset = data.load_mnist(tmp_path, image_size=28)

    assert dataset.x_train.shape == (200, 28, 28, 1)
    assert dataset.x_test.shape == (100, 28, 28, 1)
    np.testing.assert_array_equal(dataset.y_train, labels[:200])
    np.testing.assert_array_equal(dataset.y_test, labels[200:])
    expected = (images[:200, :, :, None] / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(dataset.x_train, expected, atol=1e-6)


def test_load_mnist_reads_gzip_pair(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_idx(tmp_path / f"{IMAGES_NAME}.gz", images, compress=True)
    write_idx(tmp_path / f"{LABELS_NAME}.gz", labels, compress=True)

    dataset = data.load_mnist(tmp_path, image_size=16, test_fraction=0.5)

    assert dataset.x_train.shape == (150, 16, 16, 1)
    assert dataset.x_test.shape == (150, 16, 16, 1)


def test_load_mnist_logs_divided_test_split(tmp_path, mnist_sample, caplog):
    write_mnist_pair(tmp_path, "t10k", *mnist_sample)

    with caplog.at_level(logging.INFO, logger="absl"):
        data.load_mnist(tmp_path, image_size=28)

    assert "divided its 300 images into 240 for training and 60 for testing" in (
        caplog.text
    )


def test_load_mnist_mismatched_counts(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_mnist_pair(tmp_path, "t10k", images, labels[:-1])

    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    message = str(error.value)
    assert "300 images" in message
    assert "299 labels" in message
    assert IMAGES_NAME in message
    assert LABELS_NAME in message


def test_load_mnist_labels_out_of_range(tmp_path, mnist_sample):
    images, labels = mnist_sample
    bad_labels = labels.copy()
    bad_labels[7] = 12
    write_mnist_pair(tmp_path, "t10k", images, bad_labels)

    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    message = str(error.value)
    assert LABELS_NAME in message
    assert "label 12" in message
    assert "[0, 10)" in message


def test_load_mnist_images_with_wrong_dims(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_mnist_pair(tmp_path, "t10k", images.reshape(300, 784), labels)

    with pytest.raises(data.DataError, match="declares 2 dimensions; expected 3"):
        data.load_mnist(tmp_path)


def test_load_mnist_rejects_non_byte_pixels(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_mnist_pair(tmp_path, "t10k", images.astype(np.float32), labels)

    with pytest.raises(data.DataError, match="expected unsigned bytes"):
        data.load_mnist(tmp_path)


def test_load_mnist_missing_directory(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(data.DataError) as error:
        data.load_mnist(missing)
    message = str(error.value)
    assert str(missing) in message
    assert "t10k-images-idx3-ubyte[.gz]" in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message


def test_load_mnist_directory_without_files(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.load_mnist(tmp_path)
    message = str(error.value)
    assert "not found" in message
    assert str(tmp_path) in message
    assert "t10k-images-idx3-ubyte[.gz]" in message


def test_load_mnist_incomplete_train_pair(tmp_path, mnist_sample):
    images, labels = mnist_sample
    write_mnist_pair(tmp_path, "t10k", images, labels)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)

    with pytest.raises(data.DataError, match="not train-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


# Fashion-MNIST, whose IDX files have MNIST's names and format.


def synthetic_idx_pair(num_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random 28x28 uint8 images with labels cycling through the ten classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_images, 28, 28), dtype=np.uint8)
    labels = (np.arange(num_images) % 10).astype(np.uint8)
    return images, labels


def test_load_fashion_mnist_synthetic_files(tmp_path):
    images, labels = synthetic_idx_pair(60)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:40], compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:40], compress=True)
    write_mnist_pair(tmp_path, "t10k", images[40:], labels[40:])

    dataset = data.load_fashion_mnist(tmp_path, image_size=28)

    assert dataset.name == "fashion_mnist"
    assert dataset.num_classes == 10
    assert dataset.x_train.shape == (40, 28, 28, 1)
    assert dataset.x_test.shape == (20, 28, 28, 1)
    assert dataset.x_train.dtype == np.float32
    assert dataset.y_train.dtype == np.int32
    np.testing.assert_array_equal(dataset.y_train, labels[:40])
    np.testing.assert_array_equal(dataset.y_test, labels[40:])
    expected = (images[:40, :, :, None] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(dataset.x_train, expected, atol=1e-6)


def test_load_fashion_mnist_real_idx_files(tmp_path, real_mnist):
    # Fashion-MNIST's files are not on this machine. Its IDX files have the
    # same names and format as MNIST's, so the real MNIST t10k files, copied
    # unchanged into a Fashion-MNIST directory, are genuine files of that
    # format. Only the normalisation may then differ from load_mnist's.
    fashion_dir = tmp_path / "fashion_mnist"
    fashion_dir.mkdir()
    for name in (IMAGES_NAME, LABELS_NAME):
        shutil.copy(MNIST_DIR / f"{name}.gz", fashion_dir)

    dataset = data.load_fashion_mnist(fashion_dir)

    assert dataset.name == "fashion_mnist"
    assert dataset.x_train.shape == (8_000, 32, 32, 1)
    assert dataset.x_test.shape == (2_000, 32, 32, 1)
    np.testing.assert_array_equal(dataset.y_train, real_mnist.y_train)
    np.testing.assert_array_equal(dataset.y_test, real_mnist.y_test)
    fashion_pixels = dataset.x_test * 0.3530 + 0.2860
    mnist_pixels = real_mnist.x_test * 0.3081 + 0.1307
    np.testing.assert_allclose(fashion_pixels, mnist_pixels, atol=1e-5)
    assert float(dataset.x_train.min()) == pytest.approx(-0.2860 / 0.3530, abs=1e-5)


def test_load_fashion_mnist_missing_directory(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(data.DataError) as error:
        data.load_fashion_mnist(missing)
    message = str(error.value)
    assert message.startswith("Fashion-MNIST directory not found")
    assert str(missing) in message
    assert "t10k-images-idx3-ubyte[.gz]" in message


def test_load_fashion_mnist_mismatched_counts(tmp_path):
    images, labels = synthetic_idx_pair(30)
    write_mnist_pair(tmp_path, "t10k", images, labels[:-2])

    with pytest.raises(data.DataError) as error:
        data.load_fashion_mnist(tmp_path)
    message = str(error.value)
    assert "Fashion-MNIST t10k files disagree" in message
    assert "30 images" in message
    assert "28 labels" in message


# CIFAR-10 from the pickled batches of its python version.

CIFAR_TRAIN_NAMES = [f"data_batch_{index}" for index in range(1, 6)]
CIFAR_IMAGES_PER_BATCH = 20
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616])
CIFAR_LABEL_NAMES = [
    b"airplane", b"automobile", b"bird", b"cat", b"deer",
    b"dog", b"frog", b"horse", b"ship", b"truck",
]


def cifar_batch(seed: int, num_images: int = CIFAR_IMAGES_PER_BATCH) -> dict:
    """A batch with the keys and types of cifar-10-python.tar.gz, random pixels.

    Each row of b"data" contains the red, then green, then blue 32x32 plane,
    and the labels cycle through the ten classes.
    """
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(label) for label in (np.arange(num_images) + seed) % 10],
        b"data": rng.integers(0, 256, (num_images, 3072), dtype=np.uint8),
        b"filenames": [f"image_{seed}_{index}.png".encode() for index in range(num_images)],
    }


def write_pickle(path: Path, value: object) -> Path:
    # Protocol 2 is the highest protocol of Python 2, which pickled the official
    # batches (their protocol is not checked here, because they are not on this
    # machine). At protocol 2, Python 3 writes bytes through _codecs.encode.
    path.write_bytes(pickle.dumps(value, protocol=2))
    return path


def write_cifar10_dir(directory: Path) -> dict[str, dict]:
    """Write cifar-10-batches-py with small batches and return them by file name."""
    directory.mkdir(parents=True)
    batches = {}
    for seed, name in enumerate([*CIFAR_TRAIN_NAMES, "test_batch"]):
        batches[name] = cifar_batch(seed)
        write_pickle(directory / name, batches[name])
    meta = {
        b"num_cases_per_batch": CIFAR_IMAGES_PER_BATCH,
        b"label_names": CIFAR_LABEL_NAMES,
        b"num_vis": 3072,
    }
    write_pickle(directory / "batches.meta", meta)
    return batches


def to_nhwc(batch_data: np.ndarray) -> np.ndarray:
    return batch_data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


class Python2Pickler(pickle._Pickler):
    """Pickler that writes what Python 2 and numpy 1.x wrote for the batches.

    Python 2 stored bytes and text alike as str (SHORT_BINSTRING and BINSTRING
    opcodes) and numpy 1.x named its array constructor
    numpy.core.multiarray._reconstruct. The pure-Python pickle._Pickler is
    subclassed because its dispatch table can be changed.
    """

    dispatch = pickle._Pickler.dispatch.copy()
    GLOBAL_NAMES = {
        np.ndarray: ("numpy", "ndarray"),
        np.dtype: ("numpy", "dtype"),
        np.ndarray.__reduce__(np.zeros(1))[0]: ("numpy.core.multiarray", "_reconstruct"),
    }

    def save_python2_str(self, value):
        if isinstance(value, str):
            value = value.encode("latin-1")
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(value)) + value)
        self.memoize(value)

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_python2_str

    def save_global(self, value, name=None):
        module, name = self.GLOBAL_NAMES[value]
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(value)


def write_python2_pickle(path: Path, value: object) -> None:
    with path.open("wb") as file:
        Python2Pickler(file, protocol=2).dump(value)


@pytest.fixture
def cifar_dir(tmp_path) -> tuple[Path, dict[str, dict]]:
    directory = tmp_path / "cifar-10-batches-py"
    return directory, write_cifar10_dir(directory)


def test_load_cifar10_shapes_and_labels(cifar_dir):
    directory, batches = cifar_dir

    dataset = data.load_cifar10(directory)

    assert dataset.name == "cifar10"
    assert dataset.num_classes == 10
    assert dataset.x_train.shape == (100, 32, 32, 3)
    assert dataset.x_test.shape == (20, 32, 32, 3)
    assert dataset.x_train.dtype == np.float32
    assert dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == np.int32
    assert dataset.y_test.dtype == np.int32
    expected_train_labels = sum((batches[name][b"labels"] for name in CIFAR_TRAIN_NAMES), [])
    np.testing.assert_array_equal(dataset.y_train, expected_train_labels)
    np.testing.assert_array_equal(dataset.y_test, batches["test_batch"][b"labels"])


def test_load_cifar10_normalised_nhwc(cifar_dir):
    directory, batches = cifar_dir

    dataset = data.load_cifar10(directory)

    train_data = np.concatenate([batches[name][b"data"] for name in CIFAR_TRAIN_NAMES])
    expected = (to_nhwc(train_data) / 255.0 - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(dataset.x_train, expected, atol=1e-5)
    # One pixel by the layout of a row: channel c, row y and column x sit at
    # c * 1024 + y * 32 + x.
    test_data = batches["test_batch"][b"data"]
    blue_value = test_data[3, 2 * 1024 + 5 * 32 + 7] / 255.0
    assert dataset.x_test[3, 5, 7, 2] == pytest.approx(
        (blue_value - 0.4465) / 0.2616, abs=1e-5
    )


def test_load_cifar10_accepts_parent_directory(cifar_dir):
    directory, _ = cifar_dir

    from_parent = data.load_cifar10(directory.parent)
    direct = data.load_cifar10(directory)

    np.testing.assert_array_equal(from_parent.x_train, direct.x_train)


def test_load_cifar10_python2_pickles(cifar_dir):
    directory, batches = cifar_dir
    expected = data.load_cifar10(directory)
    for name, batch in batches.items():
        write_python2_pickle(directory / name, batch)
    assert b"numpy.core.multiarray\n_reconstruct" in (directory / "test_batch").read_bytes()

    dataset = data.load_cifar10(directory)

    np.testing.assert_array_equal(dataset.x_train, expected.x_train)
    np.testing.assert_array_equal(dataset.y_train, expected.y_train)
    np.testing.assert_array_equal(dataset.x_test, expected.x_test)


def test_load_cifar10_resized(cifar_dir):
    directory, _ = cifar_dir

    dataset = data.load_cifar10(directory, image_size=16)

    assert dataset.x_train.shape == (100, 16, 16, 3)
    assert dataset.x_test.shape == (20, 16, 16, 3)


class MkdirOnLoad:
    """Pickles as a call of os.mkdir, which a plain unpickler runs."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_load_cifar10_rejects_code_in_pickle(cifar_dir, tmp_path):
    directory, _ = cifar_dir
    marker = tmp_path / "created_by_unpickling"
    batch = cifar_batch(seed=2)
    batch[b"filenames"] = MkdirOnLoad(marker)
    path = write_pickle(directory / "data_batch_3", batch)

    with pytest.raises(data.DataError) as error:
        data.load_cifar10(directory)
    message = str(error.value)
    assert str(path) in message
    assert f"global {os.mkdir.__module__}.mkdir is not allowed" in message
    assert not marker.exists()
    # The same file does run the call under a plain unpickler.
    pickle.loads(path.read_bytes(), encoding="bytes")
    assert marker.is_dir()


def test_load_cifar10_rejects_object_array(cifar_dir):
    directory, _ = cifar_dir
    batch = cifar_batch(seed=0)
    batch[b"data"] = batch[b"data"].astype(object)
    write_pickle(directory / "data_batch_1", batch)

    with pytest.raises(data.DataError, match="dtype 'O8' is not allowed"):
        data.load_cifar10(directory)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda batch: [batch], "the file contains a list"),
        (lambda batch: {b"data": batch[b"data"]}, "missing b'labels'"),
        (lambda batch: {**batch, b"data": batch[b"data"][:, :1024]}, r"b'data' is an array of shape \(20, 1024\) of uint8"),
        (lambda batch: {**batch, b"data": batch[b"data"].astype(np.float32)}, r"b'data' is an array of shape \(20, 3072\) of float32"),
        (lambda batch: {**batch, b"labels": batch[b"labels"][:-1]}, "20 images but 19 labels"),
        (lambda batch: {**batch, b"labels": [10] * 20}, r"label 10 is out of range; expected labels in \[0, 10\)"),
        (lambda batch: {**batch, b"labels": [0.5] * 20}, "b'labels' is a list"),
    ],
    ids=["not_dict", "missing_labels", "short_rows", "float_pixels", "label_count", "label_range", "float_labels"],
)
def test_load_cifar10_invalid_batch(cifar_dir, change, message):
    directory, batches = cifar_dir
    path = write_pickle(directory / "data_batch_2", change(batches["data_batch_2"]))

    with pytest.raises(data.DataError, match=message) as error:
        data.load_cifar10(directory)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("cut", ["truncated", "not_pickle"])
def test_load_cifar10_corrupt_file(cifar_dir, cut):
    directory, _ = cifar_dir
    path = directory / "test_batch"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if cut == "truncated" else b"\x00" * 64)

    with pytest.raises(data.DataError) as error:
        data.load_cifar10(directory)
    message = str(error.value)
    assert message.startswith(f"{path}: invalid CIFAR-10 batch")
    assert "expected a pickled dict with b'data'" in message
    assert "\n" not in message


def test_load_cifar10_missing_batch(cifar_dir):
    directory, _ = cifar_dir
    (directory / "data_batch_4").unlink()

    with pytest.raises(data.DataError) as error:
        data.load_cifar10(directory)
    message = str(error.value)
    assert message.startswith(f"CIFAR-10 batch not found: {directory / 'data_batch_4'}")
    assert "data_batch_1 to data_batch_5 and test_batch" in message


def test_load_cifar10_missing_directory(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(data.DataError) as error:
        data.load_cifar10(missing)
    message = str(error.value)
    assert message.startswith(f"CIFAR-10 directory not found: {missing}")
    assert "cifar-10-batches-py" in message


# load_tfds under tfds.testing.mock_data.

TFDS_CASES = [
    ("mnist", 1, np.array([0.1307]), np.array([0.3081])),
    ("fashion_mnist", 1, np.array([0.2860]), np.array([0.3530])),
    ("cifar10", 3, CIFAR_MEAN, CIFAR_STD),
]


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name, channels, mean, std", TFDS_CASES, ids=[case[0] for case in TFDS_CASES])
def test_load_tfds_mock_data(tfds, tmp_path, name, channels, mean, std):
    # mock_data replaces the download, which this machine cannot reach. It
    # serves random uint8 images and labels with each dataset's real feature
    # shapes and class count, and the same 24 examples in train and test.
    with tfds.testing.mock_data(num_examples=24):
        dataset = data.load_tfds(name, data_dir=tmp_path)

    assert dataset.name == name
    assert dataset.num_classes == 10
    assert dataset.x_train.shape == (24, 32, 32, channels)
    assert dataset.x_test.shape == (24, 32, 32, channels)
    assert dataset.x_train.dtype == np.float32
    assert dataset.y_train.dtype == np.int32
    assert dataset.y_test.dtype == np.int32
    assert dataset.y_train.min() >= 0
    assert dataset.y_train.max() < 10
    # Pixels in [0, 1] normalise into [-mean / std, (1 - mean) / std] per
    # channel. Bilinear enlargement from 28x28 stays inside that range.
    channel_min = dataset.x_train.min(axis=(0, 1, 2))
    channel_max = dataset.x_train.max(axis=(0, 1, 2))
    assert np.all(channel_min >= -mean / std - 1e-5)
    assert np.all(channel_max <= (1 - mean) / std + 1e-5)
    # Random pixels come close to both ends of that range, which a wrong
    # scale or offset would move.
    assert np.all(channel_min < (0.1 - mean) / std)
    assert np.all(channel_max > (0.9 - mean) / std)


def test_load_tfds_native_size_keeps_pixels(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=8):
        dataset = data.load_tfds("cifar10", data_dir=tmp_path)

    # At 32x32 nothing is resized, so every value maps back to a whole pixel
    # value in 0..255.
    pixels = (dataset.x_train * CIFAR_STD + CIFAR_MEAN) * 255.0
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)


def test_load_dataset_tfds_name(tfds, tmp_path):
    with tfds.testing.mock_data(num_examples=16):
        dataset = data.load_dataset("tfds:fashion_mnist", data_dir=tmp_path, image_size=28)

    assert dataset.name == "fashion_mnist"
    assert dataset.x_train.shape == (16, 28, 28, 1)
    pixels = (dataset.x_train * 0.3530 + 0.2860) * 255.0
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)


def prepare_small_tfds_mnist(tfds, data_dir: Path, images: np.ndarray, labels: np.ndarray):
    """Prepare ArrayRecord files of an 'mnist' with these images in train and the first 10 in test.

    The builder is TFDS's own MNIST builder with its download replaced by
    PNG-encoded in-memory images, so tfds writes the same files, metadata and
    directory layout as for the real dataset, without TensorFlow.
    """

    def generate(split_images, split_labels):
        for index, (image, label) in enumerate(zip(split_images, split_labels)):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            yield index, {"image": png.getvalue(), "label": int(label)}

    class SmallMnist(tfds.image_classification.MNIST, skip_registration=True):
        name = "mnist"

        def _split_generators(self, dl_manager):
            return {
                "train": generate(images, labels),
                "test": generate(images[:10], labels[:10]),
            }

    builder = SmallMnist(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()


def test_load_tfds_reads_prepared_array_record(tfds, tmp_path):
    images, labels = synthetic_idx_pair(30)
    prepare_small_tfds_mnist(tfds, tmp_path, images, labels)

    dataset = data.load_tfds("mnist", data_dir=tmp_path, download=False, image_size=28)

    assert dataset.x_train.shape == (30, 28, 28, 1)
    assert dataset.x_test.shape == (10, 28, 28, 1)
    # tfds shuffles the examples when it writes them, so each loaded image is
    # matched to the image it came from.
    pixels = np.round((dataset.x_train[..., 0] * 0.3081 + 0.1307) * 255).astype(np.uint8)
    for loaded_image, loaded_label in zip(pixels, dataset.y_train):
        sources = np.flatnonzero((images == loaded_image).all(axis=(1, 2)))
        assert len(sources) == 1
        assert loaded_label == labels[sources[0]]


def test_load_tfds_missing_without_download(tfds, tmp_path):
    with pytest.raises(data.DataError) as error:
        data.load_tfds("mnist", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert message.startswith("TFDS dataset 'mnist' not found in")
    assert str(tmp_path) in message
    assert "download=True" in message


# tfds 4.9.10 without TensorFlow fails on the first module its preparation
# needs: tensorflow, or importlib_resources in the download step.
@pytest.mark.parametrize("module", ["tensorflow", "importlib_resources"])
def test_load_tfds_prepare_needs_tensorflow(tfds, tmp_path, monkeypatch, module):
    # The stand-in raises at once, because the real preparation would try to
    # download the dataset, which this machine cannot reach.
    def prepare_without_module(self, *args, **kwargs):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", prepare_without_module
    )

    with pytest.raises(data.DataError) as error:
        data.load_tfds("cifar10", data_dir=tmp_path)
    message = str(error.value)
    assert f"module '{module}' is not installed" in message
    assert "Preparing needs TensorFlow" in message
    assert "tfds build cifar10 --file_format=array_record" in message


def test_load_tfds_download_failure(tfds, tmp_path, monkeypatch):
    # Stands in for the network failure of a real download.
    def prepare_offline(self, *args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", prepare_offline)

    with pytest.raises(data.DataError) as error:
        data.load_tfds("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "downloading TFDS dataset 'mnist'" in message
    assert "connection refused" in message


def test_load_tfds_unknown_name():
    with pytest.raises(data.DataError) as error:
        data.load_tfds("svhn_cropped")
    assert str(error.value) == (
        "unknown TFDS dataset 'svhn_cropped'; expected one of: mnist,"
        " fashion_mnist, cifar10"
    )


def test_load_tfds_without_tensorflow_datasets(monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)

    with pytest.raises(data.DataError) as error:
        data.load_tfds("mnist")
    message = str(error.value)
    assert "requires tensorflow-datasets" in message
    assert "pip install 'ncjax[tfds]'" in message


# scikit-learn digits and balanced_subset.


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load_digits()


def test_load_digits_sizes(digits):
    assert digits.name == "digits"
    assert digits.num_classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1_797
    assert digits.x_train.shape[1:] == (8, 8, 1)
    assert digits.x_test.shape[1:] == (8, 8, 1)
    assert digits.x_train.dtype == np.float32
    assert digits.y_train.dtype == np.int32
    assert set(np.unique(digits.y_train)) == set(range(10))


def test_load_digits_standardised_on_train(digits):
    assert float(digits.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-5)


def test_load_digits_split_deterministic(digits):
    again = data.load_digits()
    other_seed = data.load_digits(split_seed=1)

    np.testing.assert_array_equal(again.y_test, digits.y_test)
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    assert not np.array_equal(other_seed.x_test, digits.x_test)


def test_load_digits_split_stratified(digits):
    total = np.bincount(digits.y_train) + np.bincount(digits.y_test)
    assert np.all(np.abs(np.bincount(digits.y_test) - 0.2 * total) <= 1)


def test_load_digits_resized():
    dataset = data.load_digits(image_size=16)
    assert dataset.x_train.shape[1:] == (16, 16, 1)
    assert dataset.x_train.dtype == np.float32


def test_balanced_subset_exact_per_class(digits):
    x, y = data.balanced_subset(digits.x_train, digits.y_train, 7, seed=0)
    assert np.bincount(y).tolist() == [7] * 10
    assert x.shape == (70, 8, 8, 1)


def test_balanced_subset_keeps_pairs():
    labels = np.repeat(np.arange(3), 5)
    inputs = np.arange(15) * 10
    x, y = data.balanced_subset(inputs, labels, 2, seed=3)
    np.testing.assert_array_equal(labels[x // 10], y)


def test_balanced_subset_deterministic_per_seed(digits):
    first = data.balanced_subset(digits.x_train, digits.y_train, 5, seed=4)
    again = data.balanced_subset(digits.x_train, digits.y_train, 5, seed=4)
    other = data.balanced_subset(digits.x_train, digits.y_train, 5, seed=5)

    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_balanced_subset_too_many(digits):
    smallest_class = int(np.argmin(np.bincount(digits.y_train)))
    available = int(np.bincount(digits.y_train)[smallest_class])
    with pytest.raises(data.DataError) as error:
        data.balanced_subset(digits.x_train, digits.y_train, available + 1, seed=0)
    message = str(error.value)
    assert f"samples_per_class={available + 1} is invalid" in message
    assert f"class {smallest_class} has only {available} examples" in message
    assert f"expected a value <= {available}" in message


@pytest.mark.parametrize("samples_per_class", [0, -3])
def test_balanced_subset_nonpositive(samples_per_class):
    with pytest.raises(data.DataError, match="at least 1"):
        data.balanced_subset(
            np.zeros(4), np.array([0, 0, 1, 1]), samples_per_class, seed=0
        )


def test_balanced_subset_absent_class():
    with pytest.raises(data.DataError, match="class 2 has only 0 examples"):
        data.balanced_subset(
            np.zeros(4), np.array([0, 0, 1, 1]), 1, seed=0, num_classes=3
        )


# load_dataset.


def test_load_dataset_digits_subset_train_only(digits):
    dataset = data.load_dataset("digits", samples_per_class=5, seed=1)

    assert np.bincount(dataset.y_train).tolist() == [5] * 10
    np.testing.assert_array_equal(dataset.x_test, digits.x_test)


def test_load_dataset_mnist(tmp_path, mnist_sample):
    write_mnist_pair(tmp_path, "t10k", *mnist_sample)

    dataset = data.load_dataset(
        "mnist", data_dir=tmp_path, samples_per_class=3, image_size=28
    )

    assert dataset.x_train.shape == (30, 28, 28, 1)
    assert len(dataset.y_test) == 60


def test_load_dataset_fashion_mnist(tmp_path):
    write_mnist_pair(tmp_path, "t10k", *synthetic_idx_pair(100))

    dataset = data.load_dataset(
        "fashion_mnist", data_dir=tmp_path, samples_per_class=4, image_size=28
    )

    assert dataset.name == "fashion_mnist"
    assert np.bincount(dataset.y_train).tolist() == [4] * 10
    assert dataset.x_train.shape == (40, 28, 28, 1)
    assert len(dataset.y_test) == 20


def test_load_dataset_cifar10(cifar_dir):
    directory, _ = cifar_dir

    dataset = data.load_dataset("cifar10", data_dir=directory.parent, samples_per_class=3)

    assert dataset.name == "cifar10"
    assert np.bincount(dataset.y_train).tolist() == [3] * 10
    assert dataset.x_train.shape == (30, 32, 32, 3)
    assert dataset.x_test.shape == (20, 32, 32, 3)


@pytest.mark.parametrize("name", ["svhn", "tfds:svhn", "tfds:", "tfds:digits"])
def test_load_dataset_unknown_name(name):
    with pytest.raises(data.DataError) as error:
        data.load_dataset(name)
    assert str(error.value) == (
        f"unknown dataset {name!r}; expected one of: digits, mnist,"
        " fashion_mnist, cifar10, gaussian_mixture, tfds:mnist,"
        " tfds:fashion_mnist, tfds:cifar10"
    )


def test_load_dataset_mnist_needs_data_dir():
    with pytest.raises(data.DataError, match="requires --data_dir"):
        data.load_dataset("mnist")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fashion_mnist", "t10k-images-idx3-ubyte[.gz]"),
        ("cifar10", "cifar-10-batches-py, or its batches data_batch_1 to data_batch_5"),
    ],
)
def test_load_dataset_file_datasets_need_data_dir(name, expected):
    with pytest.raises(data.DataError) as error:
        data.load_dataset(name)
    message = str(error.value)
    assert message.startswith(f"dataset {name!r} requires --data_dir")
    assert expected in message


# load_gaussian_mixture.


def test_gaussian_mixture_shapes_and_counts():
    dataset = data.load_gaussian_mixture(
        samples_per_class=30, num_classes=4, dim=20, test_samples_per_class=7
    )

    assert dataset.name == "gaussian_mixture"
    assert dataset.num_classes == 4
    assert dataset.x_train.shape == (120, 20)
    assert dataset.x_test.shape == (28, 20)
    assert dataset.x_train.dtype == np.float32
    assert dataset.y_train.dtype == np.int32
    assert np.bincount(dataset.y_train).tolist() == [30] * 4
    assert np.bincount(dataset.y_test).tolist() == [7] * 4


def test_gaussian_mixture_defaults():
    dataset = data.load_gaussian_mixture()

    assert dataset.x_train.shape == (10_000, 784)
    assert np.bincount(dataset.y_train).tolist() == [1000] * 10


def test_gaussian_mixture_class_means_and_spread():
    dataset = data.load_gaussian_mixture(
        samples_per_class=2000, num_classes=3, dim=5, std=0.1
    )

    for k in range(3):
        samples = dataset.x_train[dataset.y_train == k].astype(np.float64)
        # The mean of 2,000 draws has std 0.1 / sqrt(2000) = 0.0022 per
        # coordinate, so 0.01 is over four standard deviations.
        np.testing.assert_allclose(samples.mean(axis=0), np.eye(3, 5)[k], atol=0.01)
        np.testing.assert_allclose(samples.std(axis=0), 0.1, rtol=0.1)


def test_gaussian_mixture_zero_std_is_basis():
    dataset = data.load_gaussian_mixture(samples_per_class=2, num_classes=3, dim=4, std=0.0)

    np.testing.assert_array_equal(dataset.x_train, np.eye(3, 4)[dataset.y_train])


def test_gaussian_mixture_same_seed_same_data():
    first = data.load_gaussian_mixture(samples_per_class=5, dim=30, seed=3)
    second = data.load_gaussian_mixture(samples_per_class=5, dim=30, seed=3)

    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.x_test, second.x_test)


def test_gaussian_mixture_other_seed_other_data():
    first = data.load_gaussian_mixture(samples_per_class=5, dim=30, seed=3)
    second = data.load_gaussian_mixture(samples_per_class=5, dim=30, seed=4)

    assert not np.array_equal(first.x_train, second.x_train)
    assert not np.array_equal(first.x_test, second.x_test)


def test_gaussian_mixture_test_split_ignores_train_size():
    small = data.load_gaussian_mixture(samples_per_class=5, dim=30)
    large = data.load_gaussian_mixture(samples_per_class=50, dim=30)

    np.testing.assert_array_equal(small.x_test, large.x_test)


def test_gaussian_mixture_test_split_independent_of_train():
    dataset = data.load_gaussian_mixture(
        samples_per_class=5, num_classes=2, dim=30, test_samples_per_class=5
    )

    assert not np.array_equal(dataset.x_train, dataset.x_test)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samples_per_class": 0}, "samples_per_class=0 is invalid; expected an integer >= 1"),
        ({"test_samples_per_class": -1}, "test_samples_per_class=-1 is invalid"),
        ({"dim": 0}, "dim=0 is invalid"),
        ({"num_classes": 1}, r"num_classes=1 is invalid; expected an integer in \[2, dim=784\]"),
        ({"num_classes": 5, "dim": 4}, r"num_classes=5 is invalid; expected an integer in \[2, dim=4\]"),
        ({"std": -0.5}, "std=-0.5 is invalid; expected a value >= 0"),
        ({"std": float("nan")}, "std=nan is invalid"),
    ],
)
def test_gaussian_mixture_invalid_arguments(kwargs, message):
    with pytest.raises(data.DataError, match=message):
        data.load_gaussian_mixture(**kwargs)


def test_load_dataset_gaussian_mixture_samples_per_class():
    dataset = data.load_dataset("gaussian_mixture", samples_per_class=20, seed=5)

    assert dataset.x_train.shape == (200, 784)
    assert np.bincount(dataset.y_train).tolist() == [20] * 10
    expected = data.load_gaussian_mixture(samples_per_class=20, seed=0)
    np.testing.assert_array_equal(dataset.x_train, expected.x_train)


def test_load_dataset_gaussian_mixture_default_size():
    dataset = data.load_dataset("gaussian_mixture")

    assert dataset.x_train.shape == (10_000, 784)


def test_load_dataset_gaussian_mixture_rejects_image_size():
    with pytest.raises(data.DataError, match="image_size=32 is invalid"):
        data.load_dataset("gaussian_mixture", image_size=32)
