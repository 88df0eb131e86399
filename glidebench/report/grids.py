"""The report's sample grids: generated images side by side by guidance scale, and inpainting examples.

This module owns every grid PNG of a report. Grids are tiled with PIL from the run directory's
``images/<setting_id>/<index:06d>.png`` (one row per caption, the same captions in every grid of a set;
columns: unguided, then increasing scale) and from ``inpaint/``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..images_io import to_rgb
from .figstyle import KIND_NAMES, Writer


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

    img = to_rgb(img)
    if img.size == (cell, cell):
        return img
    up = img.width < cell
    return img.resize((cell, cell), Image.Resampling.NEAREST if up else Image.Resampling.LANCZOS)


def wrap_full(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> list[str]:
    """``text`` in as many lines of at most ``width`` pixels as it needs, broken after '-' or ' ' where
    possible, inside a word only where one word is wider than ``width``: every character is kept."""
    tokens = [t for t in re.split(r"(?<=[- ])", text) if t]
    lines: list[str] = []
    line = ""
    for tok in tokens:
        if draw.textlength((line + tok).rstrip(), font=font) <= width:
            line += tok
            continue
        if line:
            lines.append(line.rstrip())
            line = ""
        while len(tok) > 1 and draw.textlength(tok.rstrip(), font=font) > width:
            k = 1
            while k < len(tok) and draw.textlength(tok[: k + 1], font=font) <= width:
                k += 1
            lines.append(tok[:k])
            tok = tok[k:]
        line = tok
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return lines


def row_label_width(draw: ImageDraw.ImageDraw, labels: Sequence[str], font: Any) -> int:
    """The left margin that holds every row label whole."""
    return int(max([draw.textlength(lab, font=font) for lab in labels] + [16.0])) + 10


def tile_grid(
    cells: Sequence[Sequence[Path | None]], col_labels: Sequence[str], row_labels: Sequence[str]
) -> bytes:
    """Tile images (rows x columns; None draws an empty cell) under column labels (wrapped, never cut),
    beside row labels."""
    if not cells or not cells[0]:
        raise ValueError("tile_grid needs at least one row and one column")
    first = next((p for row in cells for p in row if p is not None), None)
    native = Image.open(first).width if first is not None else 64
    cell = _cell_size(native)
    font = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [wrap_full(probe, lab, font, cell) for lab in col_labels]
    pad, side = 4, row_label_width(probe, row_labels, font)
    head = 8 + 14 * max([len(w) for w in wrapped] + [1])
    ncols = len(cells[0])
    width = side + ncols * (cell + pad) + pad
    height = head + len(cells) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(wrapped):
        x0 = side + pad + j * (cell + pad)
        for k, text in enumerate(lines):
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (cell - tw) / 2, 4 + 14 * k), text, fill=(0, 0, 0), font=font)
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
                png = tile_grid(cells, labels, [str(i) for i in rows])
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
                            "label": str(i),  # the caption's index, as on the grid's rows
                            "caption": str(captions.get(i, {}).get("caption", "(caption not recorded)")),
                        }
                        for i in rows
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
                    "rows": [{"label": str(n + 1), "caption": f"example {s}"} for n, s in enumerate(stems)],
                }
            )
    return sets, notes
