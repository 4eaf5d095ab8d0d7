"""Command-line plumbing shared by the experiment entry points."""

import logging
import os
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


class _DropOrbaxInfo(logging.Filter):
    """Drop Orbax's INFO records, about ten per checkpoint; warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_orbax = f"{os.sep}orbax{os.sep}" in record.pathname
        return not (from_orbax and record.levelno < logging.WARNING)


def quiet_jax_logging() -> None:
    """Hide JAX's INFO line about a missing TPU and Orbax's INFO lines.

    Orbax logs through absl like the experiments do, so its records are
    filtered by source file rather than by logger name.
    """
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    logging.getLogger("absl").addFilter(_DropOrbaxInfo())


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
