"""Run result files: written atomically, read back for tables and figures.

A run directory contains `config.json` (the resolved configuration),
`metrics.jsonl` (one JSON object per evaluation) and `summary.json` (status
and final metrics), the last written only when the run has ended. Each file
is written to a temporary name in the same directory and renamed, so a crash
never leaves a half-written file behind.
"""

from collections.abc import Iterable, Mapping
import json
import math
import os
from pathlib import Path
import tempfile
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def to_json_value(value: Any) -> Any:
    """Convert numbers and arrays to JSON values; non-finite floats become None.

    Strict JSON has no NaN or infinity, so a diverged metric is stored as null.
    """
    if isinstance(value, Mapping):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    if hasattr(value, "tolist"):  # numpy and jax arrays and scalars
        return to_json_value(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write one JSON document atomically."""
    text = json.dumps(to_json_value(value), indent=2, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Write JSON lines atomically, one row per line."""
    lines = [json.dumps(to_json_value(row), allow_nan=False) for row in rows]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]
