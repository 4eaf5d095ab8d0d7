"""Command-line plumbing shared by the experiment entry points."""

import logging
import sys

from absl import app
from absl import flags


def fail(message: str) -> None:
    """Print one error line and exit with status 2 (a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """Parse flags, turning a bad flag into one error line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))


def quiet_jax_logging() -> None:
    """Hide JAX's INFO line about a missing TPU, which is noise on CPU and GPU."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


def run(main) -> None:
    """Run an absl `main` with the one-line flag errors above."""
    app.run(main, flags_parser=parse_flags)
