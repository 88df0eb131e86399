"""The report's sampling-cost plot: FID (or KID) against model evaluations per image.

This module owns how runs of different samplers and step counts (the nfe suite writes one run per entry)
become curves: one curve per model, sampler, step spacing and guidance interval, each guidance kind at its best
scale among those run with every sampler of the group; points are labelled by step count and carry their 95 %
intervals. Colour tells the (model, sampler) curves apart, marker and line style the guidance kinds; the
legend names the model whenever the report holds several. The sampler is the one the results record (the
generator's own description, ``loading`` fills it from provenance.json's ``sampling`` record where needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib import rc_context
from matplotlib.ticker import ScalarFormatter

from .figstyle import (
    KIND_NAMES,
    MIN_FID_SAMPLES,
    RC,
    Styler,
    figure_png,
    has,
    interval_err,
    legend_below,
    new_figure,
    varying_fields,
)


def best_scales(df: pd.DataFrame, metric: str, fields: Sequence[str]) -> pd.DataFrame:
    """Per (fields, guidance kind): the rows at the one scale with the lowest mean ``metric``, among the
    scales that were run with every sampler and step count of that group (so curves compare like with like)."""
    keep = []
    for _, sub in df.groupby([*fields, "guidance"], sort=True, dropna=False):
        if sub["scale"].isna().all():  # unguided settings may record no scale
            keep.append(sub)
            continue
        n_pairs = len(sub[["sampler", "steps"]].drop_duplicates())
        by_scale = sub.groupby("scale")
        complete = [s for s, g in by_scale if len(g[["sampler", "steps"]].drop_duplicates()) == n_pairs]
        candidates = complete or list(by_scale.groups)
        means = by_scale[metric].mean().loc[candidates]
        keep.append(sub[sub["scale"] == means.idxmin()])
    return pd.concat(keep) if keep else df.iloc[:0]


def _names_the_sweep_entry(data: pd.DataFrame, field: str) -> bool:
    """True when ``field`` only names the (sampler, steps[, guidance interval]) entry it belongs to (one run
    per entry, as the nfe suite writes): a series per value of it would split every curve into single points."""
    entry = data["sampler"].astype(str) + "|" + data["steps"].astype(str)
    if "cfg_interval" in data.columns:
        entry = entry + "|" + data["cfg_interval"].fillna("").astype(str)
    values = data[field].astype(str)
    return bool((values.groupby(entry).nunique() == 1).all()) and values.nunique() == entry.nunique()


def _curve_names(data: pd.DataFrame) -> pd.Series:
    """A curve per sampler, step spacing and guidance interval: "quadN" (time-quadratic) runs are not points of
    the "N" curve, and guidance in a limited interval is its own curve."""
    spacing = data["steps"].astype(str).str.startswith("quad").map({True: " (quadratic spacing)", False: ""})
    curve = data["sampler"].astype(str) + spacing
    if "cfg_interval" in data.columns:
        iv = data["cfg_interval"].fillna("").astype(str)
        curve = curve + iv.map(lambda v: f", guidance at t {v}" if v else "")
    return curve


def _cost_axes(ax, data: pd.DataFrame, metric: str) -> None:
    ax.set_xscale("log")
    values = pd.to_numeric(data[metric], errors="coerce")
    if bool((values > 0).all()) and values.max() > 10 * values.min():  # a log axis keeps the best apart
        ax.set_yscale("log")
    ticks: list[float] = []
    for v in sorted({float(v) for v in data["evals_per_image"]}):
        if not ticks or math.log10(v / ticks[-1]) >= 0.06:  # 24 and 25 would print over each other
            ticks.append(v)
    if len(ticks) <= 8:
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter("")
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("model evaluations per image (both halves of a classifier-free batch count)")
    label = "FID" if metric == "fid" else "KID"
    ax.set_ylabel(f"{label} (lower is better)")
    ax.set_title(f"{label} against sampling cost (at each kind's best scale)")


def _cost_metric(df: pd.DataFrame) -> str | None:
    """FID, or KID when FID is missing or a setting has fewer than 2,048 samples (FID is then biased and
    unstable: the results carry that warning)."""
    few = has(df, "n_samples") and pd.to_numeric(df["n_samples"], errors="coerce").min() < MIN_FID_SAMPLES
    if has(df, "kid_mean") and (few or not has(df, "fid")):
        return "kid_mean"
    return "fid" if has(df, "fid") else None


def fid_vs_evals(df: pd.DataFrame) -> tuple[bytes, str] | None:
    """FID against model evaluations per image (KID below 2,048 samples), one curve per model, sampler and
    guidance kind at that kind's best scale, with 95 % intervals; points labelled by step count. None unless
    several samplers or step counts were run."""
    pairs = df[["sampler", "steps"]].astype(str).drop_duplicates()
    metric = _cost_metric(df)
    if len(pairs) < 2 or metric is None or not has(df, "evals_per_image"):
        return None
    measured = df[pd.to_numeric(df[metric], errors="coerce").notna()]
    data = measured[measured["evals_per_image"].notna()]
    fields = [f for f in varying_fields(data) if f not in ("sampler", "steps", "cfg_interval")]
    # a run per sweep entry (the nfe suite) names no curve of its own; a model always does (the legend says it)
    fields = [f for f in fields if f == "model" or not _names_the_sweep_entry(data, f)]
    data = best_scales(data, metric, fields)
    data = data.assign(_curve=_curve_names(data))
    # a colour per model and sampler curve, shared out over every run (those without an evaluation count too)
    palette = measured.assign(_curve=_curve_names(measured))
    styler = Styler(data, [*fields, "_curve"], palette=palette)
    with rc_context(RC):
        fig = new_figure(6.4, 4.3)
        ax = fig.add_subplot()
        for key, sub in data.groupby(["guidance", *fields, "_curve"], sort=True):
            kind, *rest, sampler = (str(k) for k in key)
            sub = sub.sort_values("evals_per_image", kind="stable")
            st = styler.style(kind, (*rest, sampler))
            name = ", ".join([*rest, sampler, KIND_NAMES.get(kind, kind)])
            name += "" if kind == "none" else f" {float(sub['scale'].iloc[0]):g}"
            ax.errorbar(
                sub["evals_per_image"].to_numpy(float), sub[metric].to_numpy(float),
                yerr=interval_err(sub, metric), label=name, capsize=2, **st,
            )  # fmt: skip
            for xe, ye, steps in zip(sub["evals_per_image"], sub[metric], sub["steps"]):
                ax.annotate(str(steps), (xe, ye), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _cost_axes(ax, data, metric)
        legend_below(fig, styler.legend(), fontsize=7)
        return figure_png(fig), metric
