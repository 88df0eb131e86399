"""The report's uncertainty sections: paired differences between settings and the diversity-vs-fidelity plot.

Owns what the report shows of ``differences.csv`` (each compared pair and metric, its 95 % interval and
whether it is resolved, i.e. the interval excludes 0), the sentence that says whether intra-caption diversity
falls with the guidance scale, and the plot of intra-caption diversity against fidelity (the Vendi score of
the K images of a caption against CLIP score and FID, with the 95 % intervals as error bars) drawn
beside Figure 6's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib import rc_context

from ..schema import DIFFERENCES_READ, format_value
from .figstyle import (
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
from .loading import RunData


def read_differences(run: RunData) -> pd.DataFrame | None:
    """The run's differences.csv (None when the run has none)."""
    path = run.path / "differences.csv"
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as e:  # EmptyDataError too
        raise ValueError(
            f"{path} is not a readable table ({type(e).__name__}: {e}); delete it (the report then shows no "
            "paired differences) or rerun `glidebench run`"
        ) from e
    missing = [c for c in DIFFERENCES_READ if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the columns {missing}; it was not written by `glidebench run`: delete it (the report "
            "then shows no paired differences) or rerun the run"
        )
    for c in ("difference", "difference_lo", "difference_hi"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["resolved"] = df["resolved"].astype(str).str.lower().isin(("true", "1"))
    return df


def differences_table(runs: Sequence[RunData]) -> pd.DataFrame | None:
    """One line per run, compared pair and metric: ``difference [lo, hi]`` and resolved / not resolved."""
    rows = []
    for run in runs:
        df = read_differences(run)
        if df is None:
            continue
        for _, r in df.iterrows():
            m = str(r["metric"])
            rows.append({
                **({"run": run.label} if len(runs) > 1 else {}),
                "metric": m, "b - a": f"{r['setting_b']} - {r['setting_a']}", "comparison": r["comparison"],
                "difference [95 % interval]": f"{format_value(m, r['difference'])} "
                f"[{format_value(m, r['difference_lo'])}, {format_value(m, r['difference_hi'])}]",
                "resolved": "resolved" if r["resolved"] else "not resolved",
            })  # fmt: skip
    return pd.DataFrame(rows) if rows else None


def diversity_findings(runs: Sequence[RunData]) -> list[str]:
    """Plain sentences: does intra-caption diversity (Vendi score of CLIP embeddings) fall with the scale?"""
    out = []
    for run in runs:
        df = read_differences(run)
        if df is None:
            continue
        sub = df[(df["metric"] == "vendi_clip") & (df["comparison"] == "neighbouring scales")]
        for _, r in sub.iterrows():
            d, lo, hi = (
                format_value("vendi_clip", r[c]) for c in ("difference", "difference_lo", "difference_hi")
            )
            if r["resolved"] and r["difference"] < 0:
                verdict = "falls (resolved)"
            elif r["resolved"]:
                verdict = "rises (resolved)"
            else:
                verdict = "does not change resolvably"
            out.append(
                f"{run.label}: from {r['setting_a']} to {r['setting_b']} intra-caption "
                f"diversity (Vendi, CLIP) "
                f"{verdict}: {d} [{lo}, {hi}]."
            )
    return out


def _errorbar(ax: Any, sub: pd.DataFrame, x: str, y: str, style: dict, label: str) -> None:
    xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
    ax.errorbar(xs, ys, xerr=interval_err(sub, x), yerr=interval_err(sub, y), capsize=2, label=label, **style)
    for xi, yi, s in zip(xs, ys, sub["scale"].to_numpy(float)):
        ax.annotate(f"{s:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)


def diversity_plot(df: pd.DataFrame) -> bytes | None:
    """Intra-caption diversity (Vendi score of CLIP and of pool3 embeddings) against CLIP score and FID, one
    curve per model and guidance kind, points labelled by scale, 95 % intervals as error bars; None without
    data."""
    panels = [
        (x, y, xl, yl)
        for x, y, xl, yl in (
            ("vendi_clip", "clip_score", "intra-caption diversity: Vendi score (CLIP)", "CLIP score"),
            ("vendi_pool3", "fid", "intra-caption diversity: Vendi score (pool3)", "FID"),
        )
        if has(df, x) and has(df, y)
    ]
    if not panels:
        return None
    fields = varying_fields(df)
    styler = Styler(df, fields)
    with rc_context(RC):
        fig = new_figure(6.4 * len(panels), 4.3)
        axes = fig.subplots(1, len(panels), squeeze=False).ravel()
        for ax, (x, y, xl, yl) in zip(axes, panels):
            data = df[
                pd.to_numeric(df[x], errors="coerce").notna() & pd.to_numeric(df[y], errors="coerce").notna()
            ]
            for kind, combo, sub in kind_groups(data, fields):
                style = styler.style(kind, combo) | ({"linestyle": "none"} if kind == "none" else {})
                _errorbar(ax, sub, x, y, style, series_label(kind, fields, combo))
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.margins(x=0.1, y=0.1)
        fig.suptitle("Diversity vs fidelity per caption (points labelled by guidance scale)")
        legend_below(fig, styler.legend())
        return figure_png(fig)


def diversity_plots(combined: pd.DataFrame, write: Writer) -> tuple[list[Plot], list[str]]:
    """The diversity-vs-fidelity plot (or why it is not drawn)."""
    png = diversity_plot(combined)
    if png is None:
        return [], [
            "Diversity vs fidelity: no intra-caption diversity in these runs (--samples-per-prompt 1)."
        ]
    return [
        Plot(
            write("diversity-vs-fidelity", png),
            "Intra-caption diversity vs fidelity",
            "Vendi score of the K images of each caption (mean over the diversity captions) against CLIP "
            "score "
            "and FID; error bars: 95 % intervals. Beside Figure 6: guidance should trade this "
            "diversity for fidelity.",
            wide=True,
        )
    ], []
