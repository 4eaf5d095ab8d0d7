"""Tables of run results: grouping, filtering and summary statistics."""

from collections.abc import Iterable, Mapping, Sequence
import math
from typing import Any

import numpy as np


def mean_and_std_by(
    rows: Iterable[Mapping[str, Any]],
    group_keys: Sequence[str],
    metrics: Sequence[str],
) -> dict[tuple, dict[str, tuple[float, float, int]]]:
    """Group rows by `group_keys` and return (mean, std, count) per metric.

    The std is the sample standard deviation (ddof 1), and 0 for a group of
    one. Missing and non-finite values are left out of their metric, so a
    count can be smaller than the group.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in group_keys), []).append(row)

    summary = {}
    for group, members in sorted(groups.items()):
        by_metric = {}
        for metric in metrics:
            values = np.asarray(
                [row[metric] for row in members
                 if row.get(metric) is not None and math.isfinite(row[metric])],
                dtype=np.float64,
            )
            if values.size == 0:
                by_metric[metric] = (math.nan, math.nan, 0)
                continue
            std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            by_metric[metric] = (float(values.mean()), std, int(values.size))
        summary[group] = by_metric
    return summary
