"""Results: one row of metrics per setting, from cached features, written as CSV + JSON + Markdown.

Owns how the results table of the run-directory contract is computed and written (one row per model x
guidance kind x scale x sampler x steps x resolution; its columns and how a cell prints are defined once, in
``glidebench.schema``, for this writer and the report alike). Each number comes from feature arrays:

- ``fid``: Frechet distance of Inception pool3 statistics (generated vs reference set), torch-fidelity's
  formula; fewer than 2,048 samples in either set add a warning (the covariance is rank-deficient).
- ``kid_mean`` / ``kid_std``: unbiased KID (cubic polynomial kernel), subsets of min(kid_subset_size, N).
- ``is_mean`` / ``is_std``: Inception Score over min(10, N) splits; only when the extractor gives logits
  (torch-fidelity's Inception; the offline fid-helper copy has no classifier head, so IS is NaN + warning).
- ``precision`` / ``recall``: Kynkaanniemi et al. k-NN manifolds (k = spec.prc_k) on pool3, generated vs the
  whole reference set (its size is ``n_reference``; docs/uncertainty.md says what unequal sizes do); fewer
  than ``PRC_MIN_SAMPLES`` images in either set add a warning.
- ``<metric>_lo`` / ``<metric>_hi`` and the diversity columns: ``glidebench.runner.uncertainty``.
- ``clip_score``: 100 x mean cosine(image, caption) with no clamp (the paper's), ``clip_score_clamped`` with
  max(cos, 0) (torchmetrics-style), ``clip_score_2p5`` = CLIPScore (Hessel et al. 2021: 2.5 x mean max(cos, 0)),
  from the evaluator CLIP of the data (``--clip-score-model`` on MS-COCO); ``clip_truncated``: captions longer
  than its text context, truncated before encoding.

Features are cached (``glidebench.features.cached_features``) keyed by the extractor's fingerprint and the
image set's fingerprint: reference sets in the user cache (shared between runs), generated sets in the run.
"""

from __future__ import annotations

import math
import warnings as _warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..metrics import clip_score, fid_report, inception_score, kid_from_features, precision_recall
from ..metrics.fid import feature_probe
from ..metrics.prc import knn_sq_radii
from ..metrics.sfid import sfid_from_features
from ..schema import (
    DIFFERENCE_COLUMNS,
    EXTRA_COLUMNS,
    INTERVAL_NOTES,
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    RESULTS_MD_COLUMNS,
    format_value,
    format_with_interval,
)
from ..store import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "EXTRA_COLUMNS", "METRIC_COLUMNS", "PRC_MIN_SAMPLES", "RESULT_COLUMNS", "TABLE_COLUMNS", "MetricsError",
    "check_sample_counts", "differences_frame", "differences_markdown",
    "markdown_table", "results_frame", "setting_metrics", "write_differences",
    "write_markdown", "write_results",
]  # fmt: skip
TABLE_COLUMNS = RESULTS_MD_COLUMNS  # the columns of results.md
# Below this many images in the generated or the reference set, precision/recall rows carry a warning: the
# k-NN radii of a small set are large (Kynkaanniemi et al. 2019 use 50k images per set), so precision
# saturates and recall collapses (16 references gave P = 1.000, R = 0.000 on every setting).
PRC_MIN_SAMPLES = 1000


class MetricsError(RuntimeError):
    """A metric cannot be computed from what the run has (e.g. too few samples); the message says why."""


def check_sample_counts(n_fake: int, n_real: int, k: int | None = None) -> None:
    """Raise ``MetricsError`` unless both sets have the two images FID needs at the very least (and, with
    ``k``, the k + 1 images of precision/recall's k-NN balls)."""
    if n_fake < 2 or n_real < 2:
        raise MetricsError(
            f"FID needs at least 2 generated and 2 reference images (got {n_fake} and {n_real}); use "
            "--num-samples >= 2 (>= 2048 for a stable FID) and a larger reference set"
        )
    if k is not None and min(n_fake, n_real) <= k:
        raise MetricsError(
            f"precision/recall with k={k} needs more than {k} images per set; use more samples"
        )


def setting_metrics(
    gen: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    k: int = 3,
    kid_subset_size: int = 1000,
    seed: int = 0,
    clip_pair: tuple[np.ndarray, np.ndarray] | None = None,
    reference_cache: dict[Any, Any] | None = None,
    prc: tuple[float, float] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """All metrics of one setting from its features (and optional CLIP embeddings). Returns (metrics, warnings).

    ``prc``: the setting's (precision, recall) when already computed over the same sets with the same ``k``
    (the jackknife's pass over the pairwise tiles gives them: ``uncertainty.point_precision_recall``).

    ``reference_cache``: a dict kept for the run (one reference set): what depends on the reference set
    alone (its k-NN radii, O(n_ref^2 d)) is computed on the first call, stored there and reused by the
    others, with the same numbers."""

    fake, real = gen["pool3"], ref["pool3"]
    n_fake, n_real = len(fake), len(real)
    check_sample_counts(n_fake, n_real, k)
    notes: list[str] = []
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)  # the few-samples warning goes into the table instead
        fid = fid_report(fake, real)
    if fid.few_samples:
        notes.append(
            f"FID from {min(n_fake, n_real)} < 2048 samples: biased and unstable, compare KID instead "
            "(the protocol uses 30k)"
        )
    kid_mean, kid_std = kid_from_features(
        fake, real, subset_size=min(kid_subset_size, n_fake, n_real), seed=seed
    )
    if prc is None:
        radii = _reference_radii(real, k, reference_cache)  # computed once per run with a cache
        pr = precision_recall(
            real, fake, k=k, real_sq_radii=radii
        )  # whole reference set (docs/uncertainty.md)
    else:
        pr = {"precision": prc[0], "recall": prc[1]}
    if min(n_fake, n_real) < PRC_MIN_SAMPLES:
        notes.append(
            f"precision/recall from {n_fake} generated and {n_real} reference images (< {PRC_MIN_SAMPLES} "
            f"in a set): the k={k} nearest-neighbour balls are wide, so precision is biased up and recall "
            "down (16 references give P = 1, R = 0): read them with their intervals and use >= 1000 images "
            "per set"
        )
    out = {
        "fid": fid.fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "precision": pr["precision"],
        "recall": pr["recall"],
        "is_mean": math.nan,
        "is_std": math.nan,
        "clip_score": math.nan,
        "clip_score_clamped": math.nan,
        "clip_score_2p5": math.nan,
    }
    if "logits" in gen:
        out["is_mean"], out["is_std"] = inception_score(gen["logits"], splits=min(10, n_fake))
    else:
        notes.append("IS not computed: the offline Inception (fid-helper) has no logits head")
    if clip_pair is not None:
        cs = clip_score(*clip_pair)
        out["clip_score"], out["clip_score_clamped"] = cs["clip_score"], cs["clip_score_clamped"]
        out["clip_score_2p5"] = cs["clip_score_2p5"]
    if "spatial" in gen and "spatial" in ref:  # sFID, when the extractor gives spatial features
        out["sfid"] = sfid_from_features(gen["spatial"], ref["spatial"])
    return out, notes


def _reference_radii(real: np.ndarray, k: int, cache: dict[Any, Any] | None) -> torch.Tensor | None:
    """The reference set's squared k-NN radii from ``cache`` (computed and stored on a miss); None without
    a cache (precision_recall computes them). Keyed by k and the set's shape and a sample of its values, so
    a cache handed another reference set recomputes instead of reusing the wrong radii."""
    if cache is None:
        return None

    key = ("prc_sq_radii", int(k), *feature_probe(real))
    if key not in cache:
        cache[key] = knn_sq_radii(real, k=k)
    return cache[key]


def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table with every contract column (NaN where a row lacks it), extra columns after."""
    df = pd.DataFrame(list(rows))
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    extras = [c for c in df.columns if c not in RESULT_COLUMNS]
    return df[list(RESULT_COLUMNS) + extras]


def write_results(run_dir: Path, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """results.json then results.csv (each atomic; the CSV, written last, marks a finished run).

    NaN is an empty CSV cell and a JSON null.
    """
    df = results_frame(rows)
    atomic_write_json(run_dir / "results.json", df.to_dict(orient="records"))
    atomic_write_bytes(run_dir / "results.csv", df.to_csv(index=False).encode("utf-8"))
    return df


def markdown_table(df: pd.DataFrame, columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A GFM table of ``df``'s ``columns`` (those it has), each cell printed by ``schema.format_value``, with
    its 95 % interval ``[lo, hi]`` where the row has ``<column>_lo`` / ``_hi``."""
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(format_with_interval(c, row) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def differences_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The paired differences (``glidebench.runner.uncertainty.differences``) with their columns in order."""

    return pd.DataFrame(list(rows), columns=list(DIFFERENCE_COLUMNS))


def write_differences(run_dir: Path, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """RUN_DIR/differences.json and differences.csv (atomic): one row per compared pair of settings and
    metric: value_b - value_a, its paired 95 % interval and ``resolved`` (it excludes 0)."""
    df = differences_frame(rows)
    atomic_write_json(run_dir / "differences.json", df.to_dict(orient="records"))
    atomic_write_bytes(run_dir / "differences.csv", df.to_csv(index=False).encode("utf-8"))
    return df


def differences_markdown(df: pd.DataFrame) -> str:
    """The paired differences as a GFM table: difference [lo, hi] and resolved yes / no."""
    lines = ["| metric | b - a | difference [95 % interval] | resolved |", "|---|---|---|---|"]
    for _, r in df.iterrows():
        m = str(r["metric"])
        d = format_value(m, r["difference"])
        lo, hi = format_value(m, r["difference_lo"]), format_value(m, r["difference_hi"])
        verdict = "yes" if r["resolved"] else "no"
        lines.append(f"| {m} | {r['setting_b']} - {r['setting_a']} | {d} [{lo}, {hi}] | {verdict} |")
    return "\n".join(lines) + "\n"


def write_markdown(
    run_dir: Path,
    df: pd.DataFrame,
    header: Sequence[str],
    differences: Sequence[dict[str, Any]] = (),
    intervals: str = "jackknife",
) -> Path:
    """RUN_DIR/results.md (atomic): ``header`` lines, the results table (values with their 95 % intervals,
    computed by the method ``intervals``), the paired differences between settings when given, then the
    harness's warnings."""
    warnings = sorted({w for ws in df["warnings"].fillna("") for w in str(ws).split("; ") if w})
    text = "\n".join(header) + "\n\n" + markdown_table(df)
    if any(c.endswith("_lo") for c in df.columns):
        text += f"\nBrackets: {INTERVAL_NOTES[intervals]} (docs/uncertainty.md).\n"
    if len(differences):
        text += (
            "\nPaired differences (same captions and seeds; resolved: the 95 % interval excludes 0):\n\n"
            + differences_markdown(differences_frame(differences))
        )
    if warnings:
        text += "\nWarnings:\n\n" + "\n".join(f"- {w}" for w in warnings) + "\n"
    path = run_dir / "results.md"
    atomic_write_text(path, text)
    return path
