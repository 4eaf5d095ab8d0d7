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
    """Run an absl `main` with one-line flag errors and quiet JAX logging.

    Arguments that are not flags are rejected before `main` is called.
    """

    def checked_main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {' '.join(argv[1:])!r}; all options are --flags")
        quiet_jax_logging()
        main(argv)

    app.run(checked_main, flags_parser=parse_flags)
