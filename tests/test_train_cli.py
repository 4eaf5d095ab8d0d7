"""Tests of `python -m experiments.train` as a user runs it, in subprocesses."""

import os
from pathlib import Path
import struct
import subprocess
import sys

import numpy as np
import pytest

from ncjax import results

REPO = Path(__file__).resolve().parents[1]


def run_train(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def write_idx(path, array, magic_type=0x08):
    array = np.asarray(array, np.uint8)
    header = struct.pack(">BBBB", 0, 0, magic_type, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())


def write_mnist_like(directory, labels=None):
    """Write small t10k IDX files: 60 random 28x28 images, 6 per class."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6) if labels is None else np.asarray(labels)
    images = rng.integers(0, 256, (labels.size, 28, 28))
    write_idx(directory / "t10k-images-idx3-ubyte", images)
    write_idx(directory / "t10k-labels-idx1-ubyte", labels)
    return directory


def assert_usage_error(result, *fragments):
    """Exit status 2, one line on stderr naming the value, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--optimizer=rmsprop"], ["rmsprop", "sgd, sgdw, adam"]),
        (["--optimizer=adam,adam"], ["adam", "more than once"]),
        (["--dataset=imagenet"], ["imagenet", "digits, mnist"]),
        (["--model=resnet"], ["resnet", "mlp"]),
        (["--learning_rate=-0.1"], ["-0.1", ">= 0"]),
        (["--weight_decay=-1"], ["-1", ">= 0"]),
        (["--momentum=1.0"], ["momentum=1.0", "[0, 1)"]),
        (["--momentum=-0.5"], ["momentum=-0.5", "[0, 1)"]),
        (["--epochs=abc"], ["abc"]),
        (["--no_such_flag=1"], ["no_such_flag"]),
        (["--dataset=mnist"], ["data_dir"]),
        (["--dataset=mnist", "--data_dir=/nonexistent/mnist"], ["/nonexistent/mnist"]),
        (["--coupled_weight_decay=0.1", "--optimizer=adam"], ["coupled_weight_decay", "adam_adamw"]),
    ],
)
def test_bad_flag_is_one_line_exit_2(tmp_path, args, fragments):
    workdir = tmp_path / "run"
    result = run_train(*args, f"--workdir={workdir}", "--epochs=1")
    assert_usage_error(result, *fragments)
    assert not workdir.exists()


def test_truncated_idx_file(tmp_path):
    data_dir = write_mnist_like(tmp_path / "mnist")
    images = data_dir / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    result = run_train("--dataset=mnist", f"--data_dir={data_dir}", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, "t10k-images-idx3-ubyte")
    assert not (tmp_path / "run").exists()


def test_wrong_magic_idx_file(tmp_path):
    data_dir = write_mnist_like(tmp_path / "mnist")
    labels = data_dir / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x12\x34" + labels.read_bytes()[2:])
    result = run_train("--dataset=mnist", f"--data_dir={data_dir}", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, "t10k-labels-idx1-ubyte")


def test_label_out_of_range(tmp_path):
    labels = np.repeat(np.arange(10), 6)
    labels[5] = 12
    data_dir = write_mnist_like(tmp_path / "mnist", labels)
    result = run_train("--dataset=mnist", f"--data_dir={data_dir}", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, "12")


def test_short_run_writes_metrics_and_figure(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(
        "--optimizer=adam,adamw", "--epochs=2", "--eval_every=1",
        "--hidden_sizes=32,16", f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr
    for name in ("adam", "adamw"):
        rows = results.read_jsonl(workdir / name / results.METRICS_FILE)
        assert [row["epoch"] for row in rows] == [0, 1, 2]
        config = results.read_json(workdir / name / results.CONFIG_FILE)
        assert config["optimizer"] == name
        assert config["dataset"] == "digits"
    # Several optimizers without explicit hyperparameters take the study's best settings.
    assert results.read_json(workdir / "adamw" / results.CONFIG_FILE)["weight_decay"] == 5.0
    assert (workdir / "nc_over_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| adamw |" in result.stdout

    again = run_train(
        "--optimizer=adam,adamw", "--epochs=2", "--eval_every=1",
        "--hidden_sizes=32,16", f"--workdir={workdir}",
    )
    assert again.returncode == 0, again.stderr
    assert "skipping" in again.stderr


def test_mix_takes_coupled_weight_decay(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(
        "--optimizer=adam_adamw", "--weight_decay=0.01", "--coupled_weight_decay=0.004",
        "--epochs=1", "--hidden_sizes=16", f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr
    config = results.read_json(workdir / "adam_adamw" / results.CONFIG_FILE)
    assert config["coupled_weight_decay"] == 0.004
    assert config["weight_decay"] == 0.01


def test_data_dir_with_digits_rejected(tmp_path):
    result = run_train(f"--data_dir={tmp_path}", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, f"--data_dir={tmp_path}", "applies to mnist, fashion_mnist, cifar10")
    assert not (tmp_path / "run").exists()


def test_workdir_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    result = run_train(f"--workdir={afile}")
    assert_usage_error(result, str(afile), "not a directory")
    nested = run_train(f"--workdir={afile / 'run'}")
    assert_usage_error(nested, str(afile))


def test_other_config_in_run_folder_needs_rerun(tmp_path):
    workdir = tmp_path / "run"
    common = ("--optimizer=sgd", "--epochs=1", "--hidden_sizes=16", f"--workdir={workdir}")
    assert run_train(*common).returncode == 0
    before = (workdir / "sgd" / results.METRICS_FILE).read_bytes()

    changed = run_train(*common, "--learning_rate=0.5")
    assert_usage_error(changed, str(workdir / "sgd"), "learning_rate 0.01 -> 0.5", "--rerun")
    assert (workdir / "sgd" / results.METRICS_FILE).read_bytes() == before

    replaced = run_train(*common, "--learning_rate=0.5", "--rerun")
    assert replaced.returncode == 0, replaced.stderr
    assert results.read_json(workdir / "sgd" / results.CONFIG_FILE)["learning_rate"] == 0.5


def test_model_that_cannot_take_the_images(tmp_path):
    # VGG9's four 2x2 pools need sides divisible by 16; digits are 8x8.
    result = run_train("--model=vgg9", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, "--model=vgg9 cannot train on --dataset=digits", "multiples of 16")
    assert not (tmp_path / "run").exists()


def test_negative_checkpoint_interval(tmp_path):
    result = run_train("--checkpoint_every=-1", f"--workdir={tmp_path / 'run'}")
    assert_usage_error(result, "--checkpoint_every=-1 is invalid; expected an integer >= 0")
    assert not (tmp_path / "run").exists()
