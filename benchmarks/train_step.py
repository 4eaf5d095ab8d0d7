r"""Measure ResNet9 training throughput in ncjax against the same network in PyTorch.

Both sides train the study's ResNet9 with Adam and coupled weight decay, on
random 32x32 images with 3 channels and 10 classes, batch 128. The PyTorch
network rebuilds ``ncjax.models.ResNet9`` layer by layer: 3x3 convolutions
without bias, BatchNorm (momentum 0.1 in PyTorch's convention), ReLU, 2x2
max-pools, two residual pairs, a global max-pool and a linear classifier. The JAX side
runs the epoch function that ``ncjax.training.train_and_evaluate`` uses
(one jitted call per step on CPU, one ``lax.scan`` elsewhere); PyTorch runs
the usual ``zero_grad``, forward, ``backward``, ``step`` loop.

Throughput is images per second over one timed epoch of ``--steps`` steps,
after untimed epochs of the same steps that include compilation. The script prints both and the
ratio ncjax / PyTorch (target >= 1.0 on CPU). On a GPU it also projects the
time of the study's 200 epochs at FashionMNIST size (60,000 images) from
the measured throughput.

Run from the repository root:

  python benchmarks/train_step.py                 # full width, 5 steps
  python benchmarks/train_step.py --width=0.25    # narrow, quicker on CPU

PyTorch is optional (``pip install torch``); without it only the ncjax
throughput is printed.
"""

import argparse
import datetime
import os
import platform
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ncjax import models
from ncjax import training

IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
LEARNING_RATE = 0.005
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# The study's FashionMNIST training split and epochs, for the GPU projection.
STUDY_TRAIN_IMAGES = 60_000
STUDY_EPOCHS = 200
TARGET_CPU_RATIO = 1.0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0, help="ResNet9 width multiplier (default 1.0)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--steps", type=int, default=5, help="steps of the timed epoch (default 5)")
    parser.add_argument("--warmup-epochs", type=int, default=1,
                        help="untimed epochs of the same steps before timing, which include compilation (default 1)")
    args = parser.parse_args(argv)
    if not args.width > 0:
        parser.error(f"--width={args.width} is invalid; expected a value > 0")
    for flag in ("batch_size", "warmup_epochs", "steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} is invalid; expected an integer >= 1")
    return args


def random_images(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_images, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, num_images).astype(np.int32)
    return images, labels


def time_ncjax(args, images, labels) -> tuple[float, int]:
    """Return (images per second, parameter count) of ncjax's training epoch."""
    config = training.TrainConfig(
        model="resnet9", width=args.width, optimizer="adam", learning_rate=LEARNING_RATE,
        momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=args.batch_size, epochs=1,
    )
    model = models.create_model("resnet9", images.shape[1:], NUM_CLASSES, seed=0, width=args.width)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = training.build_optimizer(config, args.steps, model)
    opt_state = tx.init(params)
    stepwise = training.uses_stepwise_epochs(config)

    epoch = training.make_train_epoch(graphdef, tx, args.steps, args.batch_size, stepwise=stepwise)
    x = jnp.asarray(images[: args.steps * args.batch_size])
    y = jnp.asarray(labels[: args.steps * args.batch_size])
    # The untimed warm-up epoch compiles the step (stepwise) or the epoch
    # program, which the timed epoch then reuses.
    for _ in range(args.warmup_epochs):
        jax.block_until_ready(epoch(params, rest, opt_state, x, y, jax.random.key(0)))
    start = time.perf_counter()
    jax.block_until_ready(epoch(params, rest, opt_state, x, y, jax.random.key(1)))
    seconds = time.perf_counter() - start
    return args.steps * args.batch_size / seconds, models.count_parameters(model)


def torch_resnet9(torch, width: float):
    nn = torch.nn

    def channels(base):
        return max(1, round(base * width))

    def block(cin, cout, pool=False):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch = nn.Sequential(block(c, c), block(c, c))

        def forward(self, x):
            return x + self.branch(x)

    class ResNet9(nn.Module):
        def __init__(self):
            super().__init__()
            c64, c128, c256, c512 = (channels(base) for base in (64, 128, 256, 512))
            self.body = nn.Sequential(
                block(CHANNELS, c64), block(c64, c128, pool=True), Residual(c128),
                block(c128, c256, pool=True), block(c256, c512, pool=True), Residual(c512),
            )
            self.classifier = nn.Linear(c512, NUM_CLASSES)

        def forward(self, x):
            return self.classifier(torch.amax(self.body(x), dim=(2, 3)))

    return ResNet9()


def time_torch(torch, args, images, labels) -> tuple[float, int]:
    """Return (images per second, parameter count) of the PyTorch training loop."""
    torch.manual_seed(0)
    model = torch_resnet9(torch, args.width)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(MOMENTUM, 0.999),
                                 weight_decay=WEIGHT_DECAY)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype(np.int64))

    def steps(count):
        for step in range(count):
            batch = slice(step * args.batch_size, (step + 1) * args.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()

    for _ in range(args.warmup_epochs):
        steps(args.steps)
    start = time.perf_counter()
    steps(args.steps)
    seconds = time.perf_counter() - start
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return args.steps * args.batch_size / seconds, parameters


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    threads = len(os.sched_getaffinity(0))
    if torch is not None:
        torch.set_num_threads(threads)

    print("# ResNet9 training throughput")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    versions = [f"python {platform.python_version()}", f"jax {jax.__version__}", f"numpy {np.__version__}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__} ({threads} threads)")
    print("versions: " + ", ".join(versions))
    print(f"JAX backend: {jax.default_backend()}, devices: {jax.devices()}")
    print(f"ResNet9 width {args.width:g}, {IMAGE_SIZE}x{IMAGE_SIZE}x{CHANNELS} images, batch {args.batch_size},"
          f" Adam with coupled decay, {args.warmup_epochs} untimed and 1 timed epoch of {args.steps} steps")
    print(f"load average at start: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")

    images, labels = random_images(args.steps * args.batch_size, seed=0)
    print("[ncjax] timing", file=sys.stderr, flush=True)
    ncjax_rate, ncjax_parameters = time_ncjax(args, images, labels)
    print(f"ncjax: {ncjax_rate:.1f} images/s ({ncjax_parameters:,} parameters)")
    if torch is None:
        print("torch: skipped, PyTorch is not installed (pip install torch)")
    else:
        print("[torch] timing", file=sys.stderr, flush=True)
        torch_rate, torch_parameters = time_torch(torch, args, images, labels)
        print(f"torch: {torch_rate:.1f} images/s ({torch_parameters:,} parameters)")
        ratio = ncjax_rate / torch_rate
        if jax.default_backend() == "cpu":
            verdict = "PASS" if ratio >= TARGET_CPU_RATIO else "FAIL"
            print(f"ratio ncjax / torch: {ratio:.2f}x (target >= {TARGET_CPU_RATIO:g}x on CPU: {verdict})")
        else:
            print(f"ratio ncjax / torch: {ratio:.2f}x")
    if jax.default_backend() != "cpu":
        minutes = STUDY_TRAIN_IMAGES * STUDY_EPOCHS / ncjax_rate / 60
        print(f"projected time of {STUDY_EPOCHS} epochs of {STUDY_TRAIN_IMAGES:,} images (training steps only):"
              f" {minutes:.1f} min")
    print(f"load average after: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
