"""The look shared by the report's figures: colours, markers, series, figure size and PNG output.

This module owns how every plot of a report is drawn, so that the paper-figure plots (``figures``) and the
sampling-cost plot (``sampling_cost``) read alike. Plots use matplotlib's Agg canvas directly (no pyplot,
no global backend switch) and are saved without the 'Software' tag, so a PNG depends only on the data and
the installed matplotlib.

Every plot draws one curve per guidance kind (classifier-free, CLIP guidance) and, when a report compares
several runs, models, samplers, step counts or resolutions, one curve per combination of those. Unguided
settings are a single black star (or a dashed horizontal line on scale axes), the point both guided curves
start from.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

KIND_NAMES = {"cfg": "classifier-free", "clip": "CLIP guidance", "none": "unguided"}
KIND_COLOURS = {"cfg": "#1f77b4", "clip": "#d95f02", "none": "#222222"}
EXTRA_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# one colour per curve when a plot has one guidance kind (matplotlib's tab10, colour-blind-friendlier order)
CURVE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")  # fmt: skip
LINESTYLES = ("-", "--", ":", "-.")
SERIES_FIELDS = ("run", "model", "sampler", "steps", "resolution")
# below the 2048-d Inception feature size FID's covariance is singular: the report warns and plots KID instead.
# Equal to glidebench.metrics.FID_MIN_SAMPLES (a test checks it), kept here so rendering does not import torch.
MIN_FID_SAMPLES = 2048
# (column, axis label) for the metrics-vs-scale panel, in the order they are drawn.
METRICS: tuple[tuple[str, str, str | None], ...] = (
    ("fid", "FID (lower is better)", None),
    ("kid_mean", "KID (lower is better)", "kid_std"),
    ("is_mean", "Inception score (higher is better)", "is_std"),
    ("precision", "precision (higher is better)", None),
    ("recall", "recall (higher is better)", None),
    ("clip_score", "CLIP score (higher is better)", None),
    # embedded set only: caption agreement judged by the attribute classifier (glidebench.data.attributes)
    ("colour_acc", "colour accuracy, one-object captions", None),
    ("shape_acc", "shape accuracy, one-object captions", None),
    ("position_acc", "position accuracy, multi-object captions", None),
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


def series_label(kind: str, fields: Sequence[str], values: Sequence[object]) -> str:
    """A curve's legend entry: the guidance kind, then the values of the varying fields."""
    name = KIND_NAMES.get(kind, kind)
    extra = [f"{v}" if f in ("run", "model", "sampler") else f"{f} {v}" for f, v in zip(fields, values)]
    return name + (f" ({', '.join(extra)})" if extra else "")


class Styler:
    """Colour by guidance kind, marker and line style by the other varying fields (stable order)."""

    def __init__(self, df: pd.DataFrame, fields: Sequence[str]) -> None:
        combos = sorted({tuple(str(r[f]) for f in fields) for _, r in df.iterrows()})
        self.combo_index = {c: i for i, c in enumerate(combos)}
        kinds = sorted({str(k) for k in df["guidance"]} - set(KIND_COLOURS))
        self.kind_colour = dict(KIND_COLOURS)
        for i, k in enumerate(kinds):
            self.kind_colour[k] = EXTRA_COLOURS[i % len(EXTRA_COLOURS)]

    def style(self, kind: str, combo: tuple[str, ...]) -> dict[str, object]:
        i = self.combo_index.get(combo, 0)
        return {
            "color": self.kind_colour.get(kind, "#444444"),
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
        }


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (inches)."""
    fig = Figure(figsize=(width, height))  # fixed margins: constrained layout costs seconds per figure
    FigureCanvasAgg(fig)
    return fig


def legend_below(fig: Figure, ax: Any, fontsize: float = 8) -> None:
    """Put the legend under the axes (never over the data), growing the figure to fit it."""
    handles, labels = ax.get_legend_handles_labels()
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
