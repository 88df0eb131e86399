"""Comparing runs of different models in one report: protocol differences, grouping and side-by-side samples.

This module owns what a report over several runs adds when the runs hold different models:

- :func:`protocol_differences`: whether the runs were evaluated under one protocol (``RunSpec``'s
  ``protocol_fingerprint``: captions, seeds, data and references, evaluation resolution, sample count, settings,
  metric options, suite version), and if not, each difference in words (shown at the top of the report);
- :func:`group_by_model`: the results table grouped by model (model column first; rows by model, guidance,
  scale);
- :func:`side_by_side`: a sample grid with the same caption indices in rows and one column per (model,
  setting), so the models' images of one caption and seed sit next to each other.

Runs of one model (two samplers, two step counts) get none of the grouping and no side-by-side grid: the
report shows them as before. Figures give each model its own colour (``figstyle.varying_fields``,
``figstyle.Styler``). Grid headings are written whole (``grids.wrap_full``) and rows are numbered by the
caption's index in prompts.json.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw

from ..spec import PROTOCOL_FIELDS, RunSpec
from .figstyle import KIND_NAMES, Writer
from .grids import _cell_size, _fit, _font, common_indices, row_label_width, wrap_full
from .loading import RunData

# Each protocol field in one group of differences, as a reader names them (a test checks every field is here).
GROUPS: dict[str, tuple[str, ...]] = {
    "captions": ("captions", "caption_style", "seed"),
    "data": ("data", "split", "data_id", "reference_size", "reference_stats", "reference_protocol"),
    "resolution": ("resolution",),
    "samples": ("num_samples", "samples_per_prompt", "diversity_prompts"),
    "settings": ("settings",),
    "metrics": ("inception", "kid_subset_size", "prc_k", "intervals", "bootstrap_resamples", "fid_resize")
    + ("kid_seed",),
    "suite": ("suite", "suite_version", "spec_version"),
}
# protocol fields added later and not yet in a group are still named (a test asks for each to be grouped)
GROUPS["other"] = tuple(f for f in PROTOCOL_FIELDS if not any(f in names for names in GROUPS.values()))
_CONSEQUENCE = {
    "captions": "the same image index was not prompted alike, so the runs' images and CLIP scores do not answer "
    "the same captions",
    "data": "FID, KID, precision and recall are measured against different reference images",
    "resolution": "Inception features (FID, KID, IS, precision/recall) and CLIP scores depend on the "
    "resolution",
    "samples": "FID and KID are biased by the sample count (FID falls as it grows)",
    "settings": "only the settings every run has are comparable",
    "metrics": "the metrics themselves are computed differently",
    "suite": "the protocol itself changed between these versions",
    "other": "the runs were evaluated differently",
}
_TITLE = {
    "captions": "Different captions or seeds",
    "data": "Different data or reference images",
    "resolution": "Different evaluation resolution",
    "samples": "Different sample counts",
    "settings": "Different guidance settings",
    "metrics": "Different metric options",
    "suite": "Different suite or spec versions",
    "other": "Other protocol differences",
}
_FIELD_WORDS = {
    "captions": "caption selection", "caption_style": "caption style", "seed": "seed", "data": "data",
    "split": "split", "data_id": "data identity", "reference_size": "reference images",
    "resolution": "evaluation resolution", "num_samples": "images per setting", "inception": "Inception source",
    "kid_subset_size": "KID subset size", "prc_k": "precision/recall k", "suite": "suite",
    "suite_version": "suite version", "spec_version": "spec version",
    "samples_per_prompt": "images per caption", "diversity_prompts": "captions sampled several times",
    "bootstrap_resamples": "bootstrap resamples", "reference_stats": "reference statistics",
    "fid_resize": "FID resize", "intervals": "interval method",
    "reference_protocol": "protocol of the reference statistics", "kid_seed": "KID subset seed",
}  # fmt: skip
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.default is not dataclasses.MISSING}


@dataclass(frozen=True)
class Difference:
    """One way the runs' protocols differ: ``kind`` is a key of :data:`GROUPS` (or ``unknown``)."""

    kind: str
    text: str


def protocol_fingerprint(spec: dict[str, Any]) -> str | None:
    """The protocol fingerprint of a spec.json, or None when it is not a spec this glidebench reads."""
    try:
        return RunSpec.from_dict(spec).protocol_fingerprint
    except (KeyError, TypeError, ValueError):
        return None


def _value(spec: dict[str, Any], name: str) -> Any:
    """A protocol field of a spec.json (fields left out at their default read as the default); None when the
    spec does not record it."""
    if name in spec:
        v = spec[name]
    elif name in _DEFAULTS and "suite_version" in spec:  # a real spec that left the field at its default
        v = _DEFAULTS[name]
    else:
        return None
    if name == "settings" and isinstance(v, list):
        ids = []
        for s in v:
            if isinstance(s, dict) and "guidance" in s:
                ids.append("none" if s["guidance"] == "none" else f"{s['guidance']}-{float(s['scale']):g}")
            else:
                ids.append(json.dumps(s, sort_keys=True))
        return tuple(sorted(ids))
    return v


def _words(name: str, v: Any) -> str:
    if name == "settings":
        return ", ".join(v) or "none"
    if name == "resolution":
        return f"{v} px"
    if name == "data_id":
        return str(v)[:16]
    return str(v)


def _per_run(name: str, values: Sequence[Any], labels: Sequence[str]) -> str:
    """'32 px in A; 64 px in B' (runs sharing a value listed together, in run order)."""
    order: list[Any] = []
    for v in values:
        if v not in order:
            order.append(v)
    parts = [
        f"{_words(name, v)} in {', '.join(lab for lab, w in zip(labels, values) if w == v)}" for v in order
    ]
    return "; ".join(parts)


def _prompt_differences(runs: Sequence[RunData]) -> str | None:
    """How the runs' prompts.json differ on the caption indices they share (caption or seed), else None."""
    if any(not r.prompts for r in runs):
        return None
    tables = [
        {int(p["index"]): (p.get("caption"), p.get("seed")) for p in r.prompts if "index" in p} for r in runs
    ]
    shared = sorted(set.intersection(*(set(t) for t in tables)))
    differ = [i for i in shared if any(t[i] != tables[0][i] for t in tables[1:])]
    if not differ:
        return None
    seeds = sum(any(t[i][1] != tables[0][i][1] for t in tables[1:]) for i in differ)
    caps = sum(any(t[i][0] != tables[0][i][0] for t in tables[1:]) for i in differ)
    return (
        f"prompts.json differs at {len(differ)} of the {len(shared)} caption indices the runs share "
        f"({caps} captions, {seeds} seeds), e.g. index {differ[0]}"
    )


def protocol_differences(runs: Sequence[RunData]) -> list[Difference]:
    """Each way the runs' protocols differ, in words (empty when they share one protocol fingerprint)."""
    if len(runs) < 2:
        return []
    out: list[Difference] = []
    without = [r.label for r in runs if not r.spec]
    if without:
        out.append(
            Difference(
                "unknown",
                f"No spec.json in {', '.join(without)}: whether its protocol matches the others' cannot be "
                "checked.",
            )
        )
    runs = [r for r in runs if r.spec]
    if len(runs) < 2:
        return out
    labels = [r.label for r in runs]
    fingerprints = [protocol_fingerprint(r.spec) for r in runs]
    if None not in fingerprints and len(set(fingerprints)) == 1:
        return out
    for kind, names in GROUPS.items():
        parts = []
        for name in names:
            values = [_value(r.spec, name) for r in runs]
            if None in values or len({json.dumps(v, sort_keys=True, default=str) for v in values}) == 1:
                continue  # not recorded by every run (a hand-written spec), or equal
            if name == "settings":
                common = set.intersection(*(set(v) for v in values))
                shared = f" (shared: {', '.join(sorted(common))})" if common else " (none shared)"
                parts.append(f"settings {_per_run(name, values, labels)}{shared}")
            else:
                parts.append(f"{_FIELD_WORDS.get(name, name)} {_per_run(name, values, labels)}")
        if kind == "captions":
            prompts = _prompt_differences(runs)
            if prompts:
                parts.append(prompts)
        if parts:
            out.append(
                Difference(kind, f"{_TITLE[kind]}: {'; '.join(parts)}. Consequence: {_CONSEQUENCE[kind]}.")
            )
    if not out or all(d.kind == "unknown" for d in out):
        if None in fingerprints:
            return out  # hand-written or older specs that record no difference we can name
        out.append(
            Difference(
                "unknown", "The runs' protocol fingerprints differ, in a field this report cannot name."
            )
        )
    return out


def protocol_warnings(runs: Sequence[RunData]) -> list[str]:
    """:func:`protocol_differences` as plain sentences for the top of the report."""
    return [d.text for d in protocol_differences(runs)]


def several_models(df: pd.DataFrame) -> bool:
    """True when ``df`` (results rows) holds more than one model."""
    return "model" in df.columns and df["model"].astype(str).replace("", pd.NA).dropna().nunique() > 1


def group_by_model(combined: pd.DataFrame, shown: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """With several models: rows sorted by model, guidance, scale (run order kept within ties) and the model
    column first; else both unchanged."""
    if not several_models(combined):
        return combined, shown
    combined = combined.sort_values(["model", "guidance", "scale"], kind="stable").reset_index(drop=True)
    return combined, ["model"] + [c for c in shown if c != "model"]


def _widest_word(draw: ImageDraw.ImageDraw, text: str, font: Any) -> float:
    return max(draw.textlength(w, font=font) for w in re.split(r"(?<=[- ])", text) if w.strip())


def _layout(draw: Any, groups: Sequence[tuple[str, int]], cell: int, x0: int, font: Any) -> tuple[list, list]:
    """(x of each column, (x0, x1) of each group): a group is at least as wide as its label's widest word,
    its columns centred in it, so the heading wraps whole words and is never cut."""
    pad, gap = 4, 10
    xs: list[int] = []
    spans: list[tuple[int, int]] = []
    x = x0
    for label, n in groups:
        tiles = n * (cell + pad) - pad
        width = max(tiles, int(_widest_word(draw, label, font)) + 2)
        first = x + (width - tiles) // 2
        xs += [first + k * (cell + pad) for k in range(n)]
        spans.append((x, x + width))
        x += width + pad + gap
    return xs, spans


def tile_side_by_side(
    cells: Sequence[Sequence[Any]],
    groups: Sequence[tuple[str, int]],
    names: Sequence[str],
    row_labels: Sequence[str],
) -> bytes:
    """Tile images (rows x columns, None: an empty cell) under a two-level header: ``groups`` = (setting
    label, number of columns) spanning their columns, ``names`` (the model of each column) below; both in
    full, wrapped over as many lines as they need."""
    first = next((p for row in cells for p in row if p is not None), None)
    native = Image.open(first).width if first is not None else 64
    cell = _cell_size(native)
    font, small = _font(12), _font(10)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, side = 4, row_label_width(probe, row_labels, font)
    xs, spans = _layout(probe, groups, cell, side + pad, font)
    heads = [wrap_full(probe, label, font, x1 - x0) for (label, _), (x0, x1) in zip(groups, spans)]
    named = [wrap_full(probe, name, small, cell) for name in names]
    top = 4 + 14 * max(len(h) for h in heads)
    head = top + 4 + 12 * max(len(n) for n in named) + 6
    width, height = spans[-1][1] + pad, head + len(cells) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for lines, (x0, x1) in zip(heads, spans):
        for k, text in enumerate(lines):
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (x1 - x0 - tw) / 2, 2 + 14 * k), text, fill=(0, 0, 0), font=font)
        draw.line([x0, top, x1 - 1, top], fill=(120, 120, 120))
    for j, lines in enumerate(named):
        for k, line in enumerate(lines):
            tw = draw.textlength(line, font=small)
            draw.text((xs[j] + (cell - tw) / 2, top + 3 + 12 * k), line, fill=(40, 40, 40), font=small)
    for i, row in enumerate(cells):
        y0 = head + i * (cell + pad)
        draw.text((4, y0 + cell / 2 - 7), row_labels[i], fill=(0, 0, 0), font=font)
        for j, p in enumerate(row):
            if p is None:
                draw.rectangle([xs[j], y0, xs[j] + cell - 1, y0 + cell - 1], outline=(200, 200, 200))
                draw.line([xs[j], y0, xs[j] + cell - 1, y0 + cell - 1], fill=(200, 200, 200))
                continue
            with Image.open(p) as im:
                canvas.paste(_fit(im, cell), (xs[j], y0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _setting_words(guidance: str, scale: float) -> str:
    return "unguided" if guidance == "none" else f"{KIND_NAMES.get(guidance, guidance)} {scale:g}"


def side_by_side(runs: Sequence[RunData], write: Writer, max_rows: int = 8) -> dict | None:
    """The "models side by side" grid set (``make_grids``' format), or None unless the runs hold several
    models. Rows: the first ``max_rows`` caption indices with an image in every column; columns: per guidance
    setting (unguided, then by kind and scale), one per (run, model, sampler) that has it, in run order."""
    frames = [r.results.assign(_run=n) for n, r in enumerate(runs)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty or not several_models(df):
        return None
    df = df.assign(_order=df["guidance"].map({"none": 0}).fillna(1))
    groups: list[tuple[str, int]] = []
    columns: list[tuple[Any, str]] = []  # (images dir, column name)
    for (_, kind, scale), sub in df.groupby(["_order", "guidance", "scale"], sort=True):
        sub = sub.sort_values(["_run", "model", "sampler", "steps"], kind="stable")
        base = [str(m) for m in sub["model"]]
        named = [
            m if base.count(m) == 1 else f"{m} {s} {st}".strip()
            for m, s, st in zip(base, sub["sampler"], sub["steps"])
        ]
        named = [n if named.count(n) == 1 else f"{n} ({runs[r].label})" for n, r in zip(named, sub["_run"])]
        for r, sid, name in zip(sub["_run"], sub["setting_id"], named):
            columns.append((runs[r].path / "images" / str(sid), name))
        groups.append((_setting_words(str(kind), float(scale)), len(sub)))
    dirs = [d for d, _ in columns if d.is_dir()]
    rows = common_indices(dirs, max_rows) if dirs else []
    if not rows:
        return None
    cells = [
        [(d / f"{i:06d}.png") if (d / f"{i:06d}.png").exists() else None for d, _ in columns] for i in rows
    ]
    names = [n for _, n in columns]
    png = tile_side_by_side(cells, groups, names, [str(i) for i in rows])
    captions = [r.captions for r in runs]
    out_rows = []
    for i in rows:
        texts = [c.get(i) for c in captions]
        known = [t for t in texts if t is not None]
        if len(set(known)) <= 1:
            caption = known[0] if known else "(caption not recorded)"
        else:
            caption = "; ".join(f"{r.label}: {t}" for r, t in zip(runs, texts) if t is not None)
            caption = "captions differ between the runs: " + caption
        out_rows.append({"label": str(i), "caption": caption})  # the caption's index, as on the grid
    labels, j = [], 0
    for g, k in groups:
        labels += [f"{g}: {names[j + m]}" for m in range(k)]
        j += k
    return {
        "title": "Models side by side",
        "grids": [
            {
                "file": write("grid-models-side-by-side", png),
                "title": "Same captions and seeds",
                "columns": labels,
            }
        ],
        "rows": out_rows,
    }
