"""A small finished run directory, written by hand to the run-directory contract, for the report tests.

The metrics are invented (smooth functions of the guidance scale, shaped like the paper's Figure 6:
classifier-free reaches the lower FID, CLIP guidance the higher CLIP score); the images are tiny solid
tiles whose colour is unique per (setting, index), so a test can find each one inside a sample grid.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = (
    "a small red circle on a grey background",
    "a large blue square above a small yellow triangle on a white background",
    "a small green cross left of a large purple circle on a black background",
    "a large orange triangle on a grey background",
    "a small white square below a large red cross on a black background",
    "a large yellow circle right of a small blue square on a grey background",
    "a small purple triangle on a white background",
    "a large green square on a black background",
)
COLUMNS = (
    "setting_id", "model", "guidance", "scale", "sampler", "steps", "resolution", "n_samples",
    "evals_per_image", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
    "clip_score", "clip_score_clamped", "wall_s", "images_per_s", "warnings",
)  # fmt: skip


def tile_colour(setting_index: int, index: int) -> tuple[int, int, int]:
    """A colour unique to (setting, image index) for up to 40 settings x 40 images."""
    return (20 + 5 * setting_index, 20 + 5 * index, 200 - 3 * setting_index)


def _metrics(kind: str, s: float, offset: float, steps: int) -> dict[str, float]:
    step_penalty = 60.0 / steps
    if kind == "cfg":
        fid = 20.0 + 2.5 * (s - 1.5) ** 2
        clip, prec, rec, is_ = 24.0 + 0.9 * s, 0.55 + 0.06 * s, 0.62 - 0.07 * s, 12.0 + 2.0 * s
    elif kind == "clip":
        fid = 28.0 + 1.7 * s
        clip, prec, rec, is_ = 25.0 + 1.6 * s, 0.50 + 0.03 * s, 0.58 - 0.04 * s, 11.0 + 1.1 * s
    else:
        fid, clip, prec, rec, is_ = 34.0, 22.5, 0.48, 0.64, 9.5
    fid += offset + step_penalty
    return {
        "fid": fid,
        "kid_mean": fid / 1000.0 + 0.000123,
        "kid_std": 0.00042 + s / 10000.0,
        "is_mean": is_,
        "is_std": 0.1 + 0.01 * s,
        "precision": prec,
        "recall": rec,
        "clip_score": clip,
        "clip_score_clamped": math.nan,
    }


INTERVAL_METRICS = ("fid", "kid_mean", "precision", "recall", "clip_score")


def _add_intervals(row: dict, intervals: bool, attributes: tuple[int, int] | None, s: float) -> None:
    """Interval columns (and attribute accuracies with their caption counts) for one fixture row."""
    if attributes is not None:
        row["colour_acc"], row["shape_acc"] = 0.4 + 0.05 * s, 0.5 + 0.04 * s
        row["position_acc"] = 1.0
        row["n_single_object"], row["n_multi_object"] = attributes
    if not intervals:
        return
    names = INTERVAL_METRICS + (("colour_acc", "shape_acc", "position_acc") if attributes else ())
    for m in names:
        v = row[m]
        row[f"{m}_lo"], row[f"{m}_hi"] = v - 0.05 * abs(v) - 1e-6, v + 0.05 * abs(v) + 1e-6


def write_run_dir(
    root: Path,
    name: str = "run",
    *,
    kinds: Sequence[str] = ("cfg", "clip"),
    scales: Sequence[float] = (1.0, 2.0, 4.0),
    samplers: Sequence[tuple[str, str]] = (("ddim", "25"),),
    unguided: bool = False,
    n_images: int = 8,
    size: int = 16,
    captions: Sequence[str] | None = None,
    model: str = "tiny-base",
    fid_offset: float = 0.0,
    n_samples: int | None = None,
    throughput: bool = True,
    inpaint: bool = False,
    results_json_only: bool = False,
    omit: Sequence[str] = (),
    warnings: str = "fewer than 2048 samples: FID is a smoke test",
    intervals: bool = False,
    attributes: tuple[int, int] | None = None,
) -> Path:
    """Write a finished run directory ``root/name`` and return it.

    ``omit`` names contract parts to leave out (``"prompts.json"``, ``"provenance.json"``, ``"images"``, ...).
    ``intervals``: add the ``<metric>_lo`` / ``<metric>_hi`` columns (a 95 % interval of +-5 % around each
    metric); ``attributes`` = (one-object, multi-object caption counts): add the attribute accuracies with
    their intervals and the ``n_single_object`` / ``n_multi_object`` counts.
    """
    run = root / name
    run.mkdir(parents=True)
    captions = list(captions if captions is not None else CAPTIONS[:n_images])
    if len(captions) < n_images:
        captions += [CAPTIONS[i % len(CAPTIONS)] for i in range(len(captions), n_images)]
    n_samples = n_images if n_samples is None else n_samples
    settings: dict[str, dict] = {}
    rows: list[dict] = []
    grid = [(k, s) for k in kinds for s in scales] + ([("none", 1.0)] if unguided else [])
    for sampler, steps in samplers:
        for kind, s in grid:
            sid = f"{kind}-{s:g}-{sampler}{steps}" if kind != "none" else f"none-{sampler}{steps}"
            settings[sid] = {
                "guidance": kind,
                "scale": s,
                "sampler": sampler,
                "steps": steps,
                "resolution": 64,
                "model": model,
            }
            evals = int(steps) * (2 if kind == "cfg" else 1)
            wall = 1.5 * evals * n_samples / 100.0
            rows.append(
                {
                    "setting_id": sid,
                    "model": model,
                    "guidance": kind,
                    "scale": s,
                    "sampler": sampler,
                    "steps": steps,
                    "resolution": 64,
                    "n_samples": n_samples,
                    "evals_per_image": evals,
                    **_metrics(kind, s, fid_offset, int(steps)),
                    "wall_s": wall,
                    "images_per_s": n_samples / wall,
                    "warnings": warnings,
                }
            )
            _add_intervals(rows[-1], intervals, attributes, s)
    if "images" not in omit:
        for si, sid in enumerate(settings):
            d = run / "images" / sid
            d.mkdir(parents=True)
            for i in range(n_images):
                tile = np.zeros((size, size, 3), np.uint8)
                tile[:] = tile_colour(si, i)
                Image.fromarray(tile).save(d / f"{i:06d}.png")
    prompts = [
        {"index": i, "caption": c, "seed": 1000 + i, "source": f"embedded:eval:{i}"}
        for i, c in enumerate(captions)
    ]
    files: dict[str, object] = {
        "spec.json": {
            "spec_version": 1, "suite": "coco-fid", "fingerprint": f"fp-{name}-0123456789ab",
            "model": {"name": model, "checkpoint": "tiny-base.safetensors"},
            "samplers": [{"name": s, "steps": st} for s, st in samplers],
            "guidance": {k: list(scales) for k in kinds}, "n_samples": n_samples, "seed": 1000,
        },
        "prompts.json": prompts,
        "settings.json": settings,
        "results.json": rows,
        "provenance.json": {
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "versions": {"torch": "2.14.1", "numpy": "2.1.0", "glidebench": "0.1.0"},
            "device": "cpu (test fixture)",
            "started": "2025-01-01T00:00:00+00:00",
            "finished": "2025-01-01T00:01:40+00:00",
            "duration_s": 100.0,
            "checkpoints": {model: "ab" * 32},
            "data": {"source": "embedded", "split": "eval", "n_captions": n_images, "seed": 1000},
            "feature_extractor": {"inception": "inception-v3-compat", "clip": "ViT-B/16 (openai)"},
        },
    }  # fmt: skip
    if throughput:
        files["throughput.json"] = [
            {"sampler": s, "steps": int(st), "batch_size": 4, "images_per_s": 12.5, "peak_mem_mb": 512.0}
            for s, st in samplers
        ]
    for fname, data in files.items():
        if fname not in omit:
            (run / fname).write_text(json.dumps(data, indent=1, allow_nan=True))
    if not results_json_only and "results.csv" not in omit:
        with open(run / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    if inpaint:
        for j, part in enumerate(("source", "mask", "result")):
            d = run / "inpaint" / part
            d.mkdir(parents=True)
            for i in range(2):
                tile = np.full((size, size, 3), (250 - 40 * j, 30 + 100 * i, 90), np.uint8)
                Image.fromarray(tile).save(d / f"{i:06d}.png")
    return run


def _segments(collections) -> int:
    """Error bars actually drawn: finite segments of non-zero length."""
    n = 0
    for col in collections:
        for seg in col.get_segments():
            seg = np.asarray(seg, float)
            n += bool(np.isfinite(seg).all() and np.ptp(seg, axis=0).max() > 0)
    return n


def figure_record(fig) -> dict:
    """What a drawn figure shows: its legend labels and, per visible axes, its title and every error-bar
    container (label, colour, marker, line style, and how many y and x interval bars it drew)."""
    from matplotlib.colors import to_hex

    axes = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        curves = []
        for c in ax.containers:
            if not hasattr(c, "has_yerr"):
                continue
            line, _caps, bars = c.lines
            ybars = _segments(bars[-1:]) if c.has_yerr else 0
            xbars = _segments(bars[:1]) if c.has_xerr else 0
            curves.append({
                "label": c.get_label(), "colour": to_hex(line.get_color()), "marker": line.get_marker(),
                "linestyle": line.get_linestyle(), "ybars": ybars, "xbars": xbars,
            })  # fmt: skip
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "curves": curves})
    labels = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    title = fig._suptitle.get_text() if fig._suptitle is not None else axes[0]["title"]
    return {"labels": labels, "axes": axes, "title": title}


def spy_figures(monkeypatch) -> list[dict]:
    """Record every figure the report draws (figures, sampling_cost, uncertainty) as ``figure_record``."""
    from glidebench.report import figures, sampling_cost, uncertainty

    seen: list[dict] = []
    for mod in (figures, sampling_cost, uncertainty):
        real = mod.figure_png

        def spy(fig, real=real):
            seen.append(figure_record(fig))
            return real(fig)

        monkeypatch.setattr(mod, "figure_png", spy)
    return seen
