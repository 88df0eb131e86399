"""The look shared by the report's figures: colours, markers, series, intervals, figure size and PNG output.

This module owns how every plot of a report is drawn, so that the paper-figure plots (``figures``), the
diversity plot (``uncertainty``) and the sampling-cost plot (``sampling_cost``) read alike. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend switch) and are saved without the 'Software'
tag, so a PNG depends only on the data and the installed matplotlib.

Colour tells the models apart (one colour per model, or per run, sampler, step count or resolution where a
report compares those: the varying fields, :func:`varying_fields`); marker and line style tell the guidance
kinds apart (classifier-free: circles and solid lines, CLIP guidance: squares and dashed lines, unguided: a
star, or a dotted horizontal line on scale axes). The legend lists each model once (a coloured line) and each
guidance kind once (its marker and line style). Every metric is drawn with its 95 % interval (the
``<metric>_lo`` / ``<metric>_hi`` columns) as an error bar where the run has one (:func:`interval_err`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

KIND_NAMES = {"cfg": "classifier-free", "clip": "CLIP guidance", "none": "unguided"}
KIND_MARKERS = {"cfg": "o", "clip": "s", "none": "*"}
KIND_LINESTYLES = {"cfg": "-", "clip": "--", "none": ":"}
EXTRA_MARKERS = ("^", "D", "v", "P", "X")
EXTRA_LINESTYLES = ("-.", (0, (5, 1, 1, 1)), (0, (1, 2)))
# one colour per model (matplotlib's tab10, colour-blind-friendlier order)
CURVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")  # fmt: skip
KIND_ENTRY_COLOUR = "#444444"  # the legend's guidance-kind entries when colour names several models
SERIES_FIELDS = ("run", "model", "sampler", "steps", "resolution")
# below the 2048-d Inception feature size FID's covariance is singular: the report warns and plots KID instead.
# Equal to glidebench.metrics.FID_MIN_SAMPLES (a test checks it), kept here so rendering does not import torch.
MIN_FID_SAMPLES = 2048
# (column, axis label) for the metrics-vs-scale panel, in the order they are drawn.
METRICS: tuple[tuple[str, str], ...] = (
    ("fid", "FID (lower is better)"),
    ("sfid", "sFID (lower is better)"),
    ("kid_mean", "KID (lower is better)"),
    ("is_mean", "Inception score (higher is better)"),
    ("precision", "precision (higher is better)"),
    ("recall", "recall (higher is better)"),
    ("clip_score", "CLIP score (higher is better)"),
    # embedded set only: caption agreement judged by the attribute classifier (glidebench.data.attributes)
    ("colour_acc", "colour accuracy, one-object captions"),
    ("shape_acc", "shape accuracy, one-object captions"),
    ("position_acc", "position accuracy, multi-object captions"),
)
Writer = Callable[[str, bytes], str]  # (file stem, PNG bytes) -> the file name written beside the report
RC = {"font.size": 9, "axes.titlesize": 10, "figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True}


@dataclass(frozen=True)
class Plot:
    """A written figure: its file name (beside the report), a title and a one-line description."""

    file: str
    title: str
    description: str
    wide: bool = False  # shown across the whole page width


def has(df: pd.DataFrame, col: str) -> bool:
    """True when ``df`` has column ``col`` with at least one number in it."""
    return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()


def varying_fields(df: pd.DataFrame) -> list[str]:
    """The fields among run/model/sampler/steps/resolution that take more than one value in ``df``, less
    those the run already determines (a run of one model needs no model in its legend). Runs of several
    models are named by their model (first), and by the run only where two runs share a model."""
    fields = [f for f in SERIES_FIELDS if f in df.columns and df[f].astype(str).nunique() > 1]
    if "run" in fields:
        fields = [f for f in fields if f == "run" or (df.groupby("run")[f].nunique(dropna=False) > 1).any()]
        if "model" in df.columns and df["model"].astype(str).nunique() > 1:
            shared = (df.groupby("model")["run"].nunique() > 1).any()
            fields = ["model"] + [f for f in fields if f != "model" and (f != "run" or shared)]
    return fields


def series_words(fields: Sequence[str], values: Sequence[object]) -> str:
    """A model's (series') legend entry: the values of the varying fields ("glide-base", "ddim, steps 25")."""
    bare = ("run", "model", "sampler")  # and "_..." fields: a plot's own series column
    return ", ".join(f"{v}" if f in bare or f.startswith("_") else f"{f} {v}" for f, v in zip(fields, values))


def series_label(kind: str, fields: Sequence[str], values: Sequence[object]) -> str:
    """One curve in words: the guidance kind, then the values of the varying fields."""
    extra = series_words(fields, values)
    return KIND_NAMES.get(kind, kind) + (f" ({extra})" if extra else "")


class Styler:
    """Colour by model (the combination of the varying fields), marker and line style by guidance kind."""

    def __init__(self, df: pd.DataFrame, fields: Sequence[str], palette: pd.DataFrame | None = None) -> None:
        """``palette``: the rows whose models share out the colours (default ``df``). A plot that leaves some
        runs out (the cost plot: no evaluation count for a folder of images) passes every row, so each model
        keeps the colour it has in the report's other plots; its legend names only the models in ``df``."""
        self.fields = tuple(fields)
        combos = sorted({tuple(str(r[f]) for f in fields) for _, r in df.iterrows()})
        every = (
            combos
            if palette is None
            else sorted({tuple(str(r[f]) for f in fields) for _, r in palette.iterrows()})
        )
        index = {c: i for i, c in enumerate(every)}
        self.combo_index = {c: index[c] for c in combos}
        self.kinds = sorted({str(k) for k in df["guidance"]}, key=lambda k: (k not in KIND_MARKERS, k))
        extra = [k for k in self.kinds if k not in KIND_MARKERS]
        self.kind_marker = dict(KIND_MARKERS) | {k: EXTRA_MARKERS[i % 5] for i, k in enumerate(extra)}
        self.kind_line = dict(KIND_LINESTYLES) | {k: EXTRA_LINESTYLES[i % 3] for i, k in enumerate(extra)}

    def colour(self, combo: tuple[str, ...]) -> str:
        return CURVE_COLOURS[self.combo_index.get(combo, 0) % len(CURVE_COLOURS)]

    def style(self, kind: str, combo: tuple[str, ...]) -> dict[str, Any]:
        return {
            "color": self.colour(combo),
            "marker": self.kind_marker.get(kind, "o"),
            "linestyle": self.kind_line.get(kind, "-"),
        }

    def legend(self) -> tuple[list[Line2D], list[str]]:
        """One entry per model (its colour) when there are several, then one per guidance kind (its marker
        and line style)."""
        handles, labels = [], []
        several = len(self.combo_index) > 1
        if several:
            for combo in self.combo_index:
                handles.append(Line2D([], [], color=self.colour(combo), linewidth=3))
                labels.append(series_words(self.fields, combo))
        kind_colour = KIND_ENTRY_COLOUR if several else self.colour(next(iter(self.combo_index), ()))
        for kind in self.kinds:
            st = {"marker": self.kind_marker[kind], "linestyle": self.kind_line[kind]}
            handles.append(Line2D([], [], color=kind_colour, markersize=10 if kind == "none" else 6, **st))
            labels.append(KIND_NAMES.get(kind, kind))
        return handles, labels


def interval_err(sub: pd.DataFrame, col: str) -> np.ndarray | None:
    """The 95 % interval of ``col`` as matplotlib error-bar lengths ``[2, N]`` (NaN where a row has none:
    no bar), or None when ``sub`` has no ``<col>_lo`` / ``<col>_hi``."""
    if f"{col}_lo" not in sub.columns or f"{col}_hi" not in sub.columns:
        return None
    v = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
    lo = pd.to_numeric(sub[f"{col}_lo"], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(sub[f"{col}_hi"], errors="coerce").to_numpy(float)
    if np.isnan(lo).all() or np.isnan(hi).all():
        return None
    return np.vstack([v - lo, hi - v]).clip(min=0)


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (inches)."""
    fig = Figure(figsize=(width, height))  # fixed margins: constrained layout costs seconds per figure
    FigureCanvasAgg(fig)
    return fig


def legend_below(fig: Figure, legend: tuple[list[Line2D], list[str]], fontsize: float = 8) -> None:
    """Put the legend (handles, labels) under the axes (never over the data), growing the figure to fit."""
    handles, labels = legend
    uniq = dict(zip(labels, handles))
    # two columns only when the labels fit half the width (about 48 characters at 7-8 pt on a 6.4 in figure)
    ncol = 2 if len(uniq) > 3 and max(len(k) for k in uniq) <= 48 else 1
    rows = math.ceil(len(uniq) / ncol)
    axes_h = fig.get_figheight()
    height = axes_h + 0.2 * rows
    fig.set_figheight(height)
    fig.legend(
        list(uniq.values()),
        list(uniq.keys()),
        loc="lower center",
        ncols=ncol,
        fontsize=fontsize,
        frameon=False,
    )
    fig.subplots_adjust(left=0.11, right=0.97, top=1 - 0.35 / height, bottom=(0.6 + 0.2 * rows) / height)


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` with no metadata that changes between runs (no Software tag, no dates)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def kind_groups(
    df: pd.DataFrame, fields: Sequence[str]
) -> Iterator[tuple[str, tuple[str, ...], pd.DataFrame]]:
    """(guidance kind, values of ``fields``, rows sorted by scale) per curve, in a stable order."""
    keys = ["guidance", *fields]
    for key, sub in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield str(key[0]), tuple(str(v) for v in key[1:]), sub.sort_values("scale", kind="stable")
