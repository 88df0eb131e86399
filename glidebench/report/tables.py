"""The report's results tables: the compact main table, the caption-agreement table with its caption counts,
and the full table folded below them.

This module owns what a reader sees first of the numbers: one row per (model, run, setting) with the metrics a
reader compares and their 95 % intervals (``summary_table``), so the page is no wider than the screen; the
attribute accuracies of the embedded set with the number of captions each is measured on
(``attribute_table``); and the rule that an accuracy from fewer than ``MIN_CAPTIONS`` captions shows no
interval anywhere, in the tables or the plots (``without_small_intervals``).

Where the counts live: results.csv's ``n_single_object`` (the one-object captions the colour, shape, size,
background and object accuracies are measured on) and ``n_multi_object`` (the multi-object captions whose
position is judged), written by the embedded data source. With short captions an attribute counts only the
captions that state it, so for those runs the one-object count is an upper bound of the colour, shape, size
and background counts (``object`` and ``position`` stay exact). A run whose results lack the columns says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..schema import MISSING, format_value, format_with_interval, to_float
from .figstyle import KIND_NAMES

MIN_CAPTIONS = 10  # below this many captions an accuracy's interval is not shown (nor drawn)
# accuracy column -> (results column holding its caption count, what it counts)
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "colour_acc": ("n_single_object", "one-object"),
    "shape_acc": ("n_single_object", "one-object"),
    "size_acc": ("n_single_object", "one-object"),
    "background_acc": ("n_single_object", "one-object"),
    "object_acc": ("n_single_object", "one-object"),
    "position_acc": ("n_multi_object", "multi-object"),
}
STATED_ONLY = ("colour_acc", "shape_acc", "size_acc", "background_acc")  # short captions: subsets
# the compact table's metrics, in order, with their headers
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("fid", "FID"),
    ("sfid", "sFID"),
    ("kid_mean", "KID"),
    ("is_mean", "IS"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("clip_score", "CLIP score"),
    ("vendi_clip", "Vendi (CLIP)"),
)


def caption_counts(df: pd.DataFrame, col: str) -> pd.Series:
    """The number of captions each row's accuracy ``col`` is measured on (NaN: not recorded)."""
    source = ATTRIBUTES[col][0]
    if source not in df.columns:
        return pd.Series(math.nan, index=df.index)
    return pd.to_numeric(df[source], errors="coerce")


def without_small_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose accuracy intervals are blank where the accuracy comes from fewer than
    ``MIN_CAPTIONS`` captions (what the tables print and the plots draw; results.csv keeps them)."""
    out = df.copy()
    for col in ATTRIBUTES:
        if f"{col}_lo" not in out.columns or f"{col}_hi" not in out.columns:
            continue
        few = (caption_counts(out, col) < MIN_CAPTIONS).to_numpy()
        out.loc[few, [f"{col}_lo", f"{col}_hi"]] = math.nan
    return out


def setting_words(guidance: object, scale: object) -> str:
    """'classifier-free 3', 'CLIP guidance 2' or 'unguided'."""
    kind = str(guidance)
    if kind == "none":
        return "unguided"
    s = to_float(scale)
    return KIND_NAMES.get(kind, kind) + ("" if math.isnan(s) else f" {s:g}")


def identity_columns(df: pd.DataFrame) -> dict[str, list[str]]:
    """The columns that name a row in a compact table: model (several models), run (where runs share a model
    or there is no model), the setting in words, and the sampler where it varies."""
    out: dict[str, list[str]] = {}
    models = df["model"].astype(str) if "model" in df.columns else pd.Series("", index=df.index)
    several_models = models.replace("", pd.NA).dropna().nunique() > 1
    if several_models:
        out["model"] = models.tolist()
    runs = df["run"].astype(str) if "run" in df.columns else pd.Series("", index=df.index)
    if runs.nunique() > 1 and (not several_models or (df.groupby(models)["run"].nunique() > 1).any()):
        out["run"] = runs.tolist()
    out["setting"] = [setting_words(g, s) for g, s in zip(df["guidance"], df["scale"])]
    samplers = (df["sampler"].astype(str) + " " + df["steps"].astype(str)).str.strip()
    if samplers.nunique() > 1 and not (several_models and _one_per(models, samplers)):
        out["sampler"] = samplers.tolist()
    return out


def _one_per(models: pd.Series, samplers: pd.Series) -> bool:
    """True when each model has one sampler (the model column already names it; the overview says which)."""
    return bool((samplers.groupby(models).nunique() <= 1).all())


def _cell(col: str, row: pd.Series) -> str:
    """``value [lo, hi]`` whose bracket stays whole (a no-break space after its comma): a narrow window wraps
    the interval under its value, never inside it."""
    return format_with_interval(col, row).replace(", ", ",\u00a0")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """The compact main table: identity, samples per setting, then each compared metric the runs have as
    ``value [lo, hi]``."""
    cols = identity_columns(df)
    if "n_samples" in df.columns:
        cols["samples"] = [format_value("n_samples", v) for v in df["n_samples"]]
    rows = [row for _, row in df.iterrows()]
    for col, header in SUMMARY_METRICS:
        if col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any():
            cols[header] = [_cell(col, r) for r in rows]
    return pd.DataFrame(cols)


def _count_words(n: float, col: str, short: bool) -> str:
    if math.isnan(n):
        return "n not recorded"
    bound = "≤" if short and col in STATED_ONLY else "="
    return f"n{bound}{int(n)}"


def attribute_table(df: pd.DataFrame, caption_styles: Mapping[str, str]) -> pd.DataFrame | None:
    """Caption agreement (the embedded set's attribute accuracies): identity, then per attribute
    ``value [lo, hi]`` with its caption count (``n=51``, in the header when the whole column shares it, else in
    each cell); no interval below ``MIN_CAPTIONS`` captions. None without accuracies."""
    present = [
        c for c in ATTRIBUTES if c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()
    ]
    if not present:
        return None
    table = identity_columns(df)
    runs = df["run"].astype(str) if "run" in df.columns else pd.Series("", index=df.index)
    short = [caption_styles.get(r, "") == "short" for r in runs]
    for col in present:
        values = [_cell(col, row) for _, row in df.iterrows()]
        counts = [_count_words(n, col, sh) for n, sh in zip(caption_counts(df, col), short)]
        name = col.removesuffix("_acc")
        if len(set(counts)) == 1:  # one count for the column: said once, in its header
            table[f"{name} ({counts[0]})"] = values
        else:
            table[name] = [v if v == MISSING else f"{v} ({n})" for v, n in zip(values, counts)]
    return pd.DataFrame(table)


def _counts_by_run(df: pd.DataFrame, source: str) -> str:
    """'51' when every row counts alike, else '51 in A; 30 in B' ('not recorded' where absent)."""
    runs = df["run"].astype(str) if "run" in df.columns else pd.Series("", index=df.index)
    per_run: dict[str, str] = {}
    values = (
        pd.to_numeric(df[source], errors="coerce") if source in df.columns else pd.Series(math.nan, df.index)
    )
    for run, sub in values.groupby(runs, sort=False):
        vals = sorted({int(v) for v in sub.dropna()})
        per_run[str(run)] = "not recorded" if not vals else "/".join(f"{v:,}" for v in vals)
    if len(set(per_run.values())) == 1:
        return next(iter(per_run.values()))
    return "; ".join(f"{v} in {r}" for r, v in per_run.items())


def attribute_notes(df: pd.DataFrame, caption_styles: Mapping[str, str]) -> list[str]:
    """Plain sentences: what each accuracy counts, how many captions, and the no-interval rule."""
    if attribute_table(df, caption_styles) is None:
        return []
    out = [
        "Caption agreement is judged by the attribute classifier (embedded set only). Colour, shape, size, "
        "background and object accuracy count the one-object captions ("
        + _counts_by_run(df, "n_single_object")
        + "); position accuracy counts the multi-object captions whose relations are judged ("
        + _counts_by_run(df, "n_multi_object")
        + ").",
        f"No interval is shown or drawn for an accuracy from fewer than {MIN_CAPTIONS} captions: it would "
        "claim a precision the count does not have.",
    ]
    short = sorted({r for r, s in caption_styles.items() if s == "short"})
    if short:
        out.append(
            "With short captions ("
            + ", ".join(short)
            + ") an attribute counts only the captions that state it: n≤ gives the one-object count, an upper "
            "bound (results.csv records no per-attribute count)."
        )
    return out


def full_table_note(shown: Sequence[str]) -> str:
    """The summary line of the folded full table."""
    return f"All {len(shown)} columns, one row per setting"
