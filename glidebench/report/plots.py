"""The report's figures: the paper's Figure 6 Pareto curves, metrics against guidance scale, FID against
model evaluations per image, and sample grids.

This module owns every PNG in a report. Plots use matplotlib's Agg canvas directly (no pyplot, no global
backend switch) and are saved without the 'Software' tag, so a PNG depends only on the data and the
installed matplotlib; grids are tiled with PIL from ``images/<setting_id>/<index:06d>.png``.

Every plot draws one curve per guidance kind (classifier-free, CLIP guidance) and, when a report compares
several runs, models, samplers, step counts or resolutions, one curve per combination of those; points are
labelled by guidance scale as in the paper's Figure 6. Unguided settings are a single black star (or a
dashed horizontal line on scale axes), the point both guided curves start from.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from PIL import Image, ImageDraw, ImageFont

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


def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()


def varying_fields(df: pd.DataFrame) -> list[str]:
    """The fields among run/model/sampler/steps/resolution that take more than one value in ``df``, less
    those the run already determines (a run of one model needs no model in its legend)."""
    fields = [f for f in SERIES_FIELDS if f in df.columns and df[f].astype(str).nunique() > 1]
    if "run" in fields:
        fields = [f for f in fields if f == "run" or (df.groupby("run")[f].nunique(dropna=False) > 1).any()]
    return fields


def _series_label(kind: str, fields: Sequence[str], values: Sequence[object]) -> str:
    name = KIND_NAMES.get(kind, kind)
    extra = [f"{v}" if f in ("run", "model", "sampler") else f"{f} {v}" for f, v in zip(fields, values)]
    return name + (f" ({', '.join(extra)})" if extra else "")


class _Styler:
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


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))  # fixed margins: constrained layout costs seconds per figure
    FigureCanvasAgg(fig)
    return fig


def _legend_below(fig: Figure, ax, fontsize: float = 8) -> None:
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


def _groups(df: pd.DataFrame, fields: Sequence[str]):
    keys = ["guidance", *fields]
    for key, sub in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield str(key[0]), tuple(str(v) for v in key[1:]), sub.sort_values("scale", kind="stable")


def pareto_plot(df: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, title: str) -> bytes | None:
    """One curve per guidance kind (and varying field), points labelled by scale; None without data."""
    if not (_has(df, x) and _has(df, y)):
        return None

    data = df[pd.to_numeric(df[x], errors="coerce").notna() & pd.to_numeric(df[y], errors="coerce").notna()]
    fields = varying_fields(data)
    styler = _Styler(data, fields)
    with rc_context(RC):
        fig = _new_figure(6.4, 4.3)
        ax = fig.add_subplot()
        for kind, combo, sub in _groups(data, fields):
            st = styler.style(kind, combo)
            xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
            label = _series_label(kind, fields, combo)
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
        _legend_below(fig, ax)
        return figure_png(fig)


def metrics_vs_scale(df: pd.DataFrame) -> bytes | None:
    """Each available metric against the guidance scale, one panel per metric."""
    metrics = [(c, lab, err) for c, lab, err in METRICS if _has(df, c)]
    if not metrics:
        return None

    fields = varying_fields(df)
    styler = _Styler(df, fields)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    with rc_context(RC):
        fig = _new_figure(4.0 * ncols, 3.1 * nrows + 0.9)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (col, label, err) in zip(axes, metrics):
            for kind, combo, sub in _groups(df, fields):
                sub = sub[pd.to_numeric(sub[col], errors="coerce").notna()]
                if sub.empty:
                    continue
                st = styler.style(kind, combo)
                name = _series_label(kind, fields, combo)
                if kind == "none":
                    for v in sub[col].to_numpy(float):
                        ax.axhline(v, color=st["color"], linestyle="--", linewidth=1, label=name)
                    continue
                yerr = sub[err].to_numpy(float) if err and _has(sub, err) else None
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


def fid_vs_evals(df: pd.DataFrame) -> tuple[bytes, str] | None:
    """FID against model evaluations per image (KID when FID is missing or a setting has fewer than 2,048
    samples), one curve per sampler and guidance kind at that kind's best scale; points labelled by step
    count. None unless several samplers or step counts were run."""
    pairs = df[["sampler", "steps"]].astype(str).drop_duplicates()
    # below 2,048 samples FID is biased and unstable (the results carry that warning): draw KID there instead
    few = _has(df, "n_samples") and pd.to_numeric(df["n_samples"], errors="coerce").min() < MIN_FID_SAMPLES
    if _has(df, "kid_mean") and (few or not _has(df, "fid")):
        metric = "kid_mean"
    else:
        metric = "fid" if _has(df, "fid") else None
    if len(pairs) < 2 or metric is None or not _has(df, "evals_per_image"):
        return None
    data = df[pd.to_numeric(df[metric], errors="coerce").notna() & df["evals_per_image"].notna()]
    fields = [f for f in varying_fields(data) if f not in ("sampler", "steps", "cfg_interval")]
    fields = [f for f in fields if not _names_the_sweep_entry(data, f)]
    data = best_scales(data, metric, fields)
    # one curve per sampler and step spacing: "quadN" (time-quadratic) runs are not points of the "N" curve
    spacing = data["steps"].astype(str).str.startswith("quad").map({True: " (quadratic spacing)", False: ""})
    curve = data["sampler"].astype(str) + spacing
    if "cfg_interval" in data.columns:  # guidance in a limited interval: its own curve
        iv = data["cfg_interval"].fillna("").astype(str)
        curve = curve + iv.map(lambda v: f", guidance at t {v}" if v else "")
    data = data.assign(_curve=curve)
    samplers = sorted(data["_curve"].unique())
    styler = _Styler(data, fields)
    one_kind = data["guidance"].nunique() == 1
    with rc_context(RC):
        fig = _new_figure(6.4, 4.3)
        ax = fig.add_subplot()
        for key, sub in data.groupby(["guidance", *fields, "_curve"], sort=True):
            kind, *rest, sampler = (str(k) for k in key)
            sub = sub.sort_values("evals_per_image", kind="stable")
            j = samplers.index(sampler)
            st = styler.style(kind, tuple(rest))
            if one_kind:  # one guidance kind: colour tells the curves apart (else it tells the kinds apart)
                st["color"] = CURVE_COLOURS[j % len(CURVE_COLOURS)]
            name = f"{sampler}, {KIND_NAMES.get(kind, kind)}"
            name += "" if kind == "none" else f" {float(sub['scale'].iloc[0]):g}"
            name += "".join(f", {v}" for v in rest)
            ax.plot(
                sub["evals_per_image"].to_numpy(float),
                sub[metric].to_numpy(float),
                label=name,
                color=st["color"],
                marker=MARKERS[(j // len(CURVE_COLOURS) + j) % len(MARKERS)]
                if one_kind
                else MARKERS[j % len(MARKERS)],
                linestyle=st["linestyle"],
            )
            for xe, ye, steps in zip(sub["evals_per_image"], sub[metric], sub["steps"]):
                ax.annotate(str(steps), (xe, ye), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        values = pd.to_numeric(data[metric], errors="coerce")
        wide = bool((values > 0).all()) and values.max() > 10 * values.min()
        if wide:  # a log axis keeps the best entries apart
            ax.set_yscale("log")
        ticks = []
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
        _legend_below(fig, ax, fontsize=7)
        return figure_png(fig), metric


# ----------------------------------------------------------------------------------------------- grids
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _cell_size(native: int, target: int = 80, largest: int = 128) -> int:
    """Grid cell side: tiny images are enlarged by an integer factor (crisp pixels), big ones shrunk."""
    if native >= target:
        return min(native, largest)
    return native * max(1, round(target / native))


def _fit(img: Image.Image, cell: int) -> Image.Image:
    img = img.convert("RGB")
    if img.size == (cell, cell):
        return img
    up = img.width < cell
    return img.resize((cell, cell), Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS)


def tile_grid(
    cells: Sequence[Sequence[Path | None]], col_labels: Sequence[str], row_labels: Sequence[str]
) -> bytes:
    """Tile images (rows x columns; None draws an empty cell) under column labels, beside row labels."""
    if not cells or not cells[0]:
        raise ValueError("tile_grid needs at least one row and one column")
    first = next((p for row in cells for p in row if p is not None), None)
    native = Image.open(first).width if first is not None else 64
    cell = _cell_size(native)
    pad, head, side = 4, 22, 28
    ncols = len(cells[0])
    font = _font(12)
    width = side + ncols * (cell + pad) + pad
    height = head + len(cells) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, lab in enumerate(col_labels):
        x0 = side + pad + j * (cell + pad)
        text = _shorten(draw, lab, font, cell)
        tw = draw.textlength(text, font=font)
        draw.text((x0 + (cell - tw) / 2, 4), text, fill=(0, 0, 0), font=font)
    for i, row in enumerate(cells):
        y0 = head + i * (cell + pad)
        draw.text((4, y0 + cell / 2 - 7), row_labels[i], fill=(0, 0, 0), font=font)
        for j, p in enumerate(row):
            x0 = side + pad + j * (cell + pad)
            if p is None:
                draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(200, 200, 200))
                draw.line([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(200, 200, 200))
                continue
            with Image.open(p) as im:
                canvas.paste(_fit(im, cell), (x0, y0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _shorten(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def common_indices(dirs: Sequence[Path], limit: int) -> list[int]:
    """The first ``limit`` sample indices that have an image in every one of ``dirs``."""
    sets = []
    for d in dirs:
        names = {p.stem for p in d.glob("*.png")} if d.is_dir() else set()
        sets.append({int(s) for s in names if s.isdigit()})
    common = set.intersection(*sets) if sets else set()
    return sorted(common)[:limit]


INPAINT_ORDER = ("source", "image", "original", "mask", "masked", "sample", "result", "output", "upsampled")


def _part_order(name: str) -> tuple[int, str]:
    """Inpainting columns in reading order: source, mask, result; unknown parts after, alphabetically."""
    low = name.lower()
    return (INPAINT_ORDER.index(low) if low in INPAINT_ORDER else len(INPAINT_ORDER), low)


def inpaint_layout(root: Path, limit: int = 6) -> tuple[list[list[Path | None]], list[str], list[str]] | None:
    """Rows and columns of inpainting examples under ``root``.

    Two layouts are understood: subfolders (one column per subfolder, e.g. ``source/``, ``mask/``,
    ``result/``; one row per file stem they share), or flat files named ``<row>_<column>.png`` (for example
    ``000003_source.png``, ``000003_result.png``). Anything else is shown one image per row.
    """
    if not root.is_dir():
        return None
    subdirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and any(d.glob("*.png"))), key=lambda d: _part_order(d.name)
    )
    if subdirs:
        stems = sorted({p.stem for d in subdirs for p in d.glob("*.png")})[:limit]
        cells = [[(d / f"{s}.png") if (d / f"{s}.png").exists() else None for d in subdirs] for s in stems]
        return cells, [d.name for d in subdirs], stems
    files = sorted(root.glob("*.png"))
    if not files:
        return None
    if all("_" in p.stem for p in files):
        rows = sorted({p.stem.split("_", 1)[0] for p in files})[:limit]
        cols = sorted({p.stem.split("_", 1)[1] for p in files}, key=_part_order)
        cells = [
            [(root / f"{r}_{c}.png") if (root / f"{r}_{c}.png").exists() else None for c in cols]
            for r in rows
        ]
        return cells, cols, rows
    files = files[:limit]
    return [[p] for p in files], ["example"], [p.stem for p in files]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def as_array(data: bytes) -> np.ndarray:
    """Decode PNG bytes (used by tests and to check a grid before it is written)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------------------ report sections
def make_plots(combined: pd.DataFrame, write: Writer) -> tuple[list[Plot], list[str]]:
    """Figure 6's Pareto plots, metrics against scale and FID against evaluations, where data allows;
    returns the plots written and one line per plot skipped (with the reason)."""
    made: list[Plot] = []
    skipped: list[str] = []
    pareto = [
        ("fig6-clip-score-vs-fid", "clip_score", "fid", "CLIP score", "FID", "CLIP score vs FID"),
        ("fig6-precision-vs-recall", "recall", "precision", "recall", "precision", "Precision vs recall"),
    ]
    if _has(combined, "is_mean"):
        y = "fid" if _has(combined, "fid") else "kid_mean"  # KID stands in when FID is missing
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


def _group_words(key: tuple, varying: Sequence[str]) -> str:
    model, sampler, steps, resolution = key
    words = {
        "model": str(model),
        "sampler": f"{sampler} {steps}".strip(),
        "resolution": f"{int(resolution)} px",
    }
    return ", ".join(words[f] for f in ("model", "sampler", "resolution") if f in varying)


def make_grids(
    runs: Sequence[Any], write: Writer, multi: bool, max_rows: int = 8
) -> tuple[list[dict], list[str]]:
    """Sample grids, in sets that share their rows: per run and (model, sampler, steps, resolution), one grid
    per guidance kind (columns: unguided, then increasing scale), all on the same captions; then the
    inpainting examples of each run."""
    sets: list[dict] = []
    notes: list[str] = []
    for run in runs:
        captions = {int(p["index"]): p for p in run.prompts if "index" in p}
        keys = ["model", "sampler", "steps", "resolution"]
        df = run.results.assign(resolution=run.results["resolution"].fillna(0))
        groups = list(df.groupby(keys, sort=True, dropna=False))
        varying = [k if k != "steps" else "sampler" for k in keys if df[k].astype(str).nunique() > 1]
        if not (run.path / "images").is_dir():
            notes.append(f"{run.label}: no images/ directory, so no sample grids.")
            groups = []
        for key, sub in groups:
            dirs_all = [run.path / "images" / sid for sid in sub["setting_id"]]
            rows = common_indices(dirs_all, max_rows)
            words = _group_words(key, varying)
            title = ", ".join(w for w in (run.label if multi else "", words) if w)
            if not rows:
                notes.append(
                    f"{title or run.label}: no sample index has an image in every setting, so no grid."
                )
                continue
            unguided = sub[sub["guidance"] == "none"].sort_values("scale").head(1)
            grids = []
            for kind in sorted(k for k in sub["guidance"].unique() if k != "none") or ["none"]:
                cols = sub[sub["guidance"] == kind].sort_values("scale", kind="stable")
                cols = cols if kind == "none" else pd.concat([unguided, cols])
                labels = [
                    "unguided" if g == "none" else f"scale {sc:g}"
                    for g, sc in zip(cols["guidance"], cols["scale"])
                ]
                cells = [
                    [run.path / "images" / sid / f"{i:06d}.png" for sid in cols["setting_id"]] for i in rows
                ]
                png = tile_grid(cells, labels, [str(n + 1) for n in range(len(rows))])
                stem = "-".join(["grid", *([run.label] if multi else []), *([words] if words else []), kind])
                grids.append(
                    {"file": write(stem, png), "title": KIND_NAMES.get(kind, kind), "columns": labels}
                )
            sets.append(
                {
                    "title": title,
                    "grids": grids,
                    "rows": [
                        {
                            "n": n + 1,
                            "label": f"[{i}]",
                            "caption": str(captions.get(i, {}).get("caption", "(caption not recorded)")),
                        }
                        for n, i in enumerate(rows)
                    ],
                }
            )
        layout = inpaint_layout(run.path / "inpaint")
        if layout is not None:
            cells, cols, stems = layout
            png = tile_grid(cells, cols, [str(n + 1) for n in range(len(stems))])
            name = "Inpainting examples" + (f" ({run.label})" if multi else "")
            sets.append(
                {
                    "title": "",
                    "grids": [
                        {
                            "file": write("inpaint-" + run.label if multi else "inpaint", png),
                            "title": name,
                            "columns": cols,
                        }
                    ],
                    "rows": [
                        {"n": n + 1, "label": "", "caption": f"example {s}"} for n, s in enumerate(stems)
                    ],
                }
            )
    return sets, notes
