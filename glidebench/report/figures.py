"""The report's plots: the paper's Figure 6 Pareto curves, metrics against guidance scale, and the plots
section that draws them (with FID against model evaluations from ``sampling_cost``).

This module owns which plots a report has and why one is skipped. Points are labelled by guidance scale as
in the paper's Figure 6; the look is ``figstyle``'s.
"""

from __future__ import annotations

import math

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
    kind_groups,
    legend_below,
    new_figure,
    series_label,
    varying_fields,
)
from .sampling_cost import fid_vs_evals


def pareto_plot(df: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, title: str) -> bytes | None:
    """One curve per guidance kind (and varying field), points labelled by scale; None without data."""
    if not (has(df, x) and has(df, y)):
        return None

    data = df[pd.to_numeric(df[x], errors="coerce").notna() & pd.to_numeric(df[y], errors="coerce").notna()]
    fields = varying_fields(data)
    styler = Styler(data, fields)
    with rc_context(RC):
        fig = new_figure(6.4, 4.3)
        ax = fig.add_subplot()
        for kind, combo, sub in kind_groups(data, fields):
            st = styler.style(kind, combo)
            xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
            label = series_label(kind, fields, combo)
            if kind == "none":
                ax.plot(xs, ys, linestyle="none", marker="*", markersize=12, color=st["color"], label=label)
                for xi, yi in zip(xs, ys):
                    ax.annotate(
                        "unguided",
                        (xi, yi),
                        textcoords="offset points",
                        xytext=(0, -14),
                        fontsize=8,
                        ha="center",
                    )
                continue
            ax.plot(xs, ys, label=label, **st)
            for xi, yi, s in zip(xs, ys, sub["scale"].to_numpy(float)):
                ax.annotate(f"{s:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.margins(x=0.1, y=0.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        legend_below(fig, ax)
        return figure_png(fig)


def metrics_vs_scale(df: pd.DataFrame) -> bytes | None:
    """Each available metric against the guidance scale, one panel per metric."""
    metrics = [(c, lab, err) for c, lab, err in METRICS if has(df, c)]
    if not metrics:
        return None

    fields = varying_fields(df)
    styler = Styler(df, fields)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    with rc_context(RC):
        fig = new_figure(4.0 * ncols, 3.1 * nrows + 0.9)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (col, label, err) in zip(axes, metrics):
            for kind, combo, sub in kind_groups(df, fields):
                sub = sub[pd.to_numeric(sub[col], errors="coerce").notna()]
                if sub.empty:
                    continue
                st = styler.style(kind, combo)
                name = series_label(kind, fields, combo)
                if kind == "none":
                    for v in sub[col].to_numpy(float):
                        ax.axhline(v, color=st["color"], linestyle="--", linewidth=1, label=name)
                    continue
                yerr = sub[err].to_numpy(float) if err and has(sub, err) else None
                ax.errorbar(
                    sub["scale"].to_numpy(float),
                    sub[col].to_numpy(float),
                    yerr=yerr,
                    label=name,
                    capsize=2,
                    **st,
                )
            ax.set_xlabel("guidance scale")
            ax.set_title(label)
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ncol = min(3, len(uniq))
        legend_h = 0.25 * math.ceil(len(uniq) / max(ncol, 1)) + 0.15  # inches
        height = fig.get_figheight()
        fig.legend(
            list(uniq.values()), list(uniq.keys()), loc="lower center", ncols=ncol, fontsize=8, frameon=False
        )
        fig.subplots_adjust(
            left=0.07,
            right=0.98,
            top=1 - 0.3 / height,
            bottom=(legend_h + 0.45) / height,
            hspace=0.45,
            wspace=0.25,
        )
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
        made.append(Plot(write(stem, png), title, "One curve per guidance kind, as in Figure 6."))
    png = metrics_vs_scale(combined)
    if png is None:
        skipped.append("Metrics against guidance scale: no metric was measured.")
    else:
        made.append(
            Plot(
                write("metrics-vs-scale", png),
                "Metrics against guidance scale",
                "Error bars: standard deviation over splits/subsets where reported.",
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
                "One curve per sampler and guidance setting; points labelled by step count.",
            )
        )
    return made, skipped
