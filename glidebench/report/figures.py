"""The report's plots: the paper's Figure 6 Pareto curves, metrics against guidance scale, and the plots
section that draws them (with FID against model evaluations from ``sampling_cost``).

This module owns which plots a report has and why one is skipped. Points are labelled by guidance scale as
in the paper's Figure 6, each with its 95 % interval as an error bar (on both axes of a Pareto plot) where the
run has one; the look (colour per model, marker and line style per guidance kind) is ``figstyle``'s.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib import rc_context

from .figstyle import (
    METRICS,
    RC,
    Plot,
    Styler,
    Writer,
    figure_png,
    has,
    interval_err,
    kind_groups,
    legend_below,
    new_figure,
    series_label,
    varying_fields,
)
from .sampling_cost import fid_vs_evals

INTERVAL_WORDS = "error bars: 95 % intervals (none for the Inception score, which has none)"


def _unguided_points(ax: Any, sub: pd.DataFrame, x: str, y: str, st: dict, label: str) -> None:
    xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
    ax.errorbar(
        xs, ys, xerr=interval_err(sub, x), yerr=interval_err(sub, y), linestyle="none", marker="*",
        markersize=12, color=st["color"], capsize=2, label=label,
    )  # fmt: skip
    for xi, yi in zip(xs, ys):
        ax.annotate(
            "unguided", (xi, yi), textcoords="offset points", xytext=(0, -14), fontsize=8, ha="center"
        )


def pareto_plot(df: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, title: str) -> bytes | None:
    """One curve per model and guidance kind, points labelled by scale, 95 % intervals as error bars on both
    axes; None without data."""
    if not (has(df, x) and has(df, y)):
        return None
    fields = varying_fields(df)
    styler = Styler(df, fields)  # of every row: a model keeps its colour in every plot
    data = df[pd.to_numeric(df[x], errors="coerce").notna() & pd.to_numeric(df[y], errors="coerce").notna()]
    with rc_context(RC):
        fig = new_figure(6.4, 4.3)
        ax = fig.add_subplot()
        for kind, combo, sub in kind_groups(data, fields):
            st = styler.style(kind, combo)
            label = series_label(kind, fields, combo)
            if kind == "none":
                _unguided_points(ax, sub, x, y, st, label)
                continue
            xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
            ax.errorbar(
                xs, ys, xerr=interval_err(sub, x), yerr=interval_err(sub, y), capsize=2, label=label, **st
            )
            for xi, yi, s in zip(xs, ys, sub["scale"].to_numpy(float)):
                ax.annotate(f"{s:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.margins(x=0.1, y=0.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        legend_below(fig, styler.legend())
        return figure_png(fig)


def _scale_panel(ax: Any, df: pd.DataFrame, col: str, fields: list[str], styler: Styler) -> None:
    """One metric against the guidance scale: a curve per model and kind with its intervals; unguided
    settings as a dotted line with their interval shaded."""
    for kind, combo, sub in kind_groups(df, fields):
        sub = sub[pd.to_numeric(sub[col], errors="coerce").notna()]
        if sub.empty:
            continue
        st = styler.style(kind, combo)
        name = series_label(kind, fields, combo)
        if kind == "none":
            err = interval_err(sub, col)
            for i, v in enumerate(sub[col].to_numpy(float)):
                ax.axhline(v, color=st["color"], linestyle=":", linewidth=1.2, label=name)
                if err is not None and not math.isnan(err[0, i] + err[1, i]):
                    ax.axhspan(v - err[0, i], v + err[1, i], color=st["color"], alpha=0.08, linewidth=0)
            continue
        xs, ys = sub["scale"].to_numpy(float), sub[col].to_numpy(float)
        ax.errorbar(xs, ys, yerr=interval_err(sub, col), label=name, capsize=2, **st)


def metrics_vs_scale(df: pd.DataFrame) -> bytes | None:
    """Each available metric against the guidance scale, one panel per metric, with 95 % intervals."""
    metrics = [(c, lab) for c, lab in METRICS if has(df, c)]
    if not metrics:
        return None
    fields = varying_fields(df)
    styler = Styler(df, fields)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    with rc_context(RC):
        fig = new_figure(4.0 * ncols, 3.1 * nrows + 0.9)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (col, label) in zip(axes, metrics):
            _scale_panel(ax, df, col, fields, styler)
            ax.set_xlabel("guidance scale")
            ax.set_title(label)
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        handles, labels = styler.legend()
        ncol = min(4, len(labels))
        legend_h = 0.25 * math.ceil(len(labels) / max(ncol, 1)) + 0.15  # inches
        height = fig.get_figheight()
        fig.legend(handles, labels, loc="lower center", ncols=ncol, fontsize=8, frameon=False)
        fig.subplots_adjust(
            left=0.07, right=0.98, top=1 - 0.3 / height, bottom=(legend_h + 0.45) / height, hspace=0.45,
            wspace=0.25,
        )  # fmt: skip
        return figure_png(fig)


def make_plots(combined: pd.DataFrame, write: Writer) -> tuple[list[Plot], list[str]]:
    """Figure 6's Pareto plots, metrics against scale and FID against evaluations, where data allows;
    returns the plots written and one line per plot skipped (with the reason)."""
    made: list[Plot] = []
    skipped: list[str] = []
    pareto = [
        ("fig6-clip-score-vs-fid", "clip_score", "fid", "CLIP score", "FID", "CLIP score vs FID"),
        ("fig6-precision-vs-recall", "recall", "precision", "recall", "precision", "Precision vs recall"),
    ]
    if has(combined, "is_mean"):
        y = "fid" if has(combined, "fid") else "kid_mean"  # KID stands in when FID is missing
        name = "FID" if y == "fid" else "KID"
        pareto.append(
            (
                f"fig6-{name.lower()}-vs-is",
                "is_mean",
                y,
                "Inception score",
                name,
                f"{name} vs Inception score",
            )
        )
    else:
        skipped.append("FID vs IS: no Inception score in these runs.")
    for stem, x, y, xl, yl, title in pareto:
        png = pareto_plot(combined, x, y, xl, yl, f"{title} (points labelled by guidance scale)")
        if png is None:
            skipped.append(f"{title}: {x} or {y} was not measured.")
            continue
        made.append(
            Plot(
                write(stem, png),
                title,
                f"One curve per model and guidance kind, as in Figure 6; {INTERVAL_WORDS}.",
            )
        )
    png = metrics_vs_scale(combined)
    if png is None:
        skipped.append("Metrics against guidance scale: no metric was measured.")
    else:
        made.append(
            Plot(
                write("metrics-vs-scale", png),
                "Metrics against guidance scale",
                f"Colour: model; marker and line: guidance kind; {INTERVAL_WORDS}; an accuracy from fewer than "
                "10 captions has none.",
                wide=True,
            )
        )
    res = fid_vs_evals(combined)
    if res is not None:
        png, metric = res
        made.append(
            Plot(
                write(f"{metric.split('_')[0]}-vs-evals", png),
                f"{metric.split('_')[0].upper()} against model evaluations per image",
                "One curve per model, sampler and guidance setting; points labelled by step count; error bars: "
                "95 % intervals.",
            )
        )
    return made, skipped
