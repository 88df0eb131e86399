"""The results schema: which columns a results table has and how each value is printed.

This module owns the one definition that the results writer (``glidebench.runner.results``: results.csv/json and
results.md) and the report (``glidebench.report``: index.html, report.md) share:

- the columns of the run-directory contract, in order (``RESULT_COLUMNS``), and which of them hold text,
  numbers or integers;
- the columns each table shows and their order (``RESULTS_MD_COLUMNS`` for results.md, ``REPORT_COLUMNS``
  for the report's results table);
- the number of decimals per column and ``MISSING``, the one marker of a value that was not measured;
- ``format_value`` / ``format_table``, which print a cell or a table with them.

Formatting only changes how numbers are shown: results.csv and results.json always hold the unrounded values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

# ------------------------------------------------------------------------------------------------ columns
# The results table of the run-directory contract, one row per setting (model x guidance kind x scale x
# sampler x steps x resolution). Suites may append columns of their own after these.
RESULT_COLUMNS: tuple[str, ...] = (
    "setting_id", "model", "guidance", "scale", "sampler", "steps", "resolution", "n_samples",
    "evals_per_image", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
    "clip_score", "clip_score_clamped", "clip_score_2p5", "clip_truncated", "wall_s", "images_per_s", "warnings",
)  # fmt: skip
EXTRA_COLUMNS: tuple[str, ...] = ("data", "n_reference")
# Uncertainty (docs/uncertainty.md): ``<metric>_lo`` / ``<metric>_hi``, the 95 % interval (jackknife, or the
# percentile bootstrap of --intervals bootstrap) of each metric below that a row has (the attribute accuracies,
# ``*_acc``, get theirs too), and the intra-caption diversity columns (rows of runs with K > 1 images per caption). KID's interval is the one
# shown; ``kid_std`` (the spread over KID's subsets, not an uncertainty of the mean) stays in the CSV only.
# ``sfid`` (sFID, with ``--sfid``) is a column beyond the contract: only rows that measured it have it.
INTERVAL_METRICS: tuple[str, ...] = ("fid", "sfid", "kid_mean", "precision", "recall", "clip_score")
DIVERSITY_COLUMNS: tuple[str, ...] = ("diversity_pool3", "diversity_clip", "vendi_pool3", "vendi_clip")
INTERVAL_SUFFIXES: tuple[str, str] = ("_lo", "_hi")
INTERVAL_COLUMNS: tuple[str, ...] = tuple(
    m + s for m in INTERVAL_METRICS + DIVERSITY_COLUMNS for s in INTERVAL_SUFFIXES
)
METRIC_COLUMNS: tuple[str, ...] = (
    "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "clip_score", "clip_score_clamped",
    "clip_score_2p5",
)  # fmt: skip
# Without these a table cannot be read as results at all (the report refuses it).
REQUIRED_COLUMNS: tuple[str, ...] = ("setting_id", "guidance", "scale")
TEXT_COLUMNS: tuple[str, ...] = ("setting_id", "model", "guidance", "sampler", "steps", "warnings")
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in RESULT_COLUMNS if c not in TEXT_COLUMNS)
INTEGER_COLUMNS: tuple[str, ...] = ("resolution", "n_samples", "clip_truncated")

# The embedded set's caption-agreement accuracies (per image: 1 hit, 0 miss, NaN not judged).
ATTRIBUTE_COLUMNS: tuple[str, ...] = (
    "colour_acc", "shape_acc", "size_acc", "background_acc", "object_acc", "position_acc",
)  # fmt: skip
# differences.csv (docs/uncertainty.md): one row per metric and pair of settings, and its metrics in order (those
# both settings have).
# the metrics of differences.csv, in order (those both settings have)
DIFFERENCE_METRICS: tuple[str, ...] = (
    *INTERVAL_METRICS, *ATTRIBUTE_COLUMNS,
    *DIVERSITY_COLUMNS,
)  # fmt: skip
DIFFERENCE_COLUMNS: tuple[str, ...] = (
    "metric", "setting_a", "setting_b", "comparison", "value_a", "value_b", "difference", "difference_lo",
    "difference_hi", "resolved", "resamples",
)  # fmt: skip
# The columns of differences.csv that the report reads (runs before the paired values were written lack the rest).
DIFFERENCES_READ: tuple[str, ...] = (
    "metric", "setting_a", "setting_b", "comparison", "difference", "difference_lo", "difference_hi", "resolved",
)  # fmt: skip
# The interval methods' one-line descriptions under a results table.
INTERVAL_NOTES = {
    "jackknife": "95 % intervals: delete-one-block jackknife over captions and references (split samples for "
    "precision and recall), centred on the estimate",
    "bootstrap": "95 % bootstrap intervals over caption indices, centred on the estimate (too wide for FID)",
}

# results.md: one line per setting, the numbers a reader compares (columns a table lacks are left out).
RESULTS_MD_COLUMNS: tuple[str, ...] = (
    "setting_id", "n_samples", "evals_per_image", "fid", "sfid", "kid_mean", "is_mean", "precision", "recall",
    "clip_score", "colour_acc", "shape_acc", "size_acc", "background_acc", "position_acc", *DIVERSITY_COLUMNS,
    "images_per_s",
)  # fmt: skip
# The report's results table: identity and metrics first (what a reader compares), then how it was run.
REPORT_COLUMNS: tuple[str, ...] = (
    "run", "setting_id", "guidance", "scale", "fid", "sfid", "kid_mean", "kid_std", "is_mean", "is_std", "precision",
    "recall", "clip_score", "clip_score_clamped", "clip_score_2p5", "colour_acc", "shape_acc", "object_acc", "position_acc",
    *DIVERSITY_COLUMNS, "n_samples", "model", "sampler", "steps", "cfg_interval", "resolution",
    "evals_per_image", "wall_s", "images_per_s",
)  # fmt: skip

# ------------------------------------------------------------------------------------------------ numbers
DECIMALS: dict[str, int] = {
    "fid": 2, "sfid": 2, "kid_mean": 4, "kid_std": 4, "is_mean": 2, "is_std": 2, "precision": 3, "recall": 3,
    "clip_score": 2, "clip_score_clamped": 2, "clip_score_2p5": 4, "wall_s": 1, "images_per_s": 3,
    "kid_vs_ref_se": 2,  # the nfe summary's jackknife standard error of kid_vs_ref
    "diversity_pool3": 2, "diversity_clip": 3, "vendi_pool3": 2, "vendi_clip": 2,
}  # fmt: skip
# Families of columns suites add (attribute accuracies, the nfe summary's relative differences).
DECIMAL_SUFFIXES: tuple[tuple[str, int], ...] = (("_acc", 3), ("_vs_ref", 3))
MISSING = "—"  # a value that was not measured (an empty CSV cell, a JSON null)


def decimals(column: str) -> int | None:
    """Fixed decimals of ``column``'s numbers, or None where a number is printed as it is (``:g``)."""
    if column in DECIMALS:
        return DECIMALS[column]
    base = interval_base(column)
    if base is not None:
        return decimals(base)
    return next((n for suffix, n in DECIMAL_SUFFIXES if column.endswith(suffix)), None)


def interval_base(column: str) -> str | None:
    """``fid`` for ``fid_lo`` / ``fid_hi`` (an interval bound's metric), else None."""
    for s in INTERVAL_SUFFIXES:
        if column.endswith(s) and len(column) > len(s):
            return column[: -len(s)]
    return None


def is_interval_column(column: str, columns: Any) -> bool:
    """True for ``<metric>_lo`` / ``<metric>_hi`` when ``columns`` also holds ``<metric>``."""
    base = interval_base(column)
    return base is not None and base in columns


def format_with_interval(column: str, row: Any) -> str:
    """``column``'s cell of ``row`` (a mapping or Series), followed by its interval ``[lo, hi]`` when the row
    has finite bounds: ``12.34 [10.02, 15.10]``."""
    text = format_value(column, row.get(column))
    lo, hi = to_float(row.get(column + "_lo")), to_float(row.get(column + "_hi"))
    if text == MISSING or math.isnan(lo) or math.isnan(hi):
        return text
    return f"{text} [{format_value(column, lo)}, {format_value(column, hi)}]"


def is_blank(value: Any) -> bool:
    """None, NaN or the empty string: a value the table does not have."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and value == "")
    )


def to_float(value: Any) -> float:
    """``value`` as a float, NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_value(column: str, value: Any) -> str:
    """One results cell as text: fixed decimals per metric, integers as integers, booleans as True/False, a
    missing number as ``MISSING`` (a missing text as the empty string)."""
    if column in TEXT_COLUMNS or column == "run":
        return "" if is_blank(value) else str(value)
    if is_blank(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    v = to_float(value)
    if math.isnan(v):
        return value if isinstance(value, str) else MISSING  # a text value in a column beyond the contract
    places = decimals(column)
    if places is not None:
        return f"{v:.{places}f}"
    if column in INTEGER_COLUMNS or (column == "evals_per_image" and v.is_integer()):
        return f"{int(round(v))}"
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.6g}"


def format_table(df: pd.DataFrame, intervals: bool = False) -> pd.DataFrame:
    """Every cell of ``df`` formatted with ``format_value`` (strings only, ready for HTML or Markdown).

    ``intervals``: a metric with ``_lo`` / ``_hi`` columns prints ``value [lo, hi]`` and the bound columns are
    left out."""
    if not intervals:
        return pd.DataFrame(
            {c: [format_value(c, v) for v in df[c]] for c in df.columns}, columns=list(df.columns)
        )
    cols = [c for c in df.columns if not is_interval_column(c, df.columns)]
    rows = [row for _, row in df.iterrows()]
    return pd.DataFrame({c: [format_with_interval(c, r) for r in rows] for c in cols}, columns=cols)
