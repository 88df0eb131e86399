"""Comparison reports (HTML + Markdown + PNG plots) built from finished run directories alone.

This package owns the last stage of the pipeline: it reads one or several finished run directories (the
run-directory contract: ``spec.json``, ``prompts.json``, ``images/<setting_id>/<index:06d>.png``,
``settings.json``, ``results.csv``/``results.json``, ``provenance.json`` and optionally ``throughput.json`` and
``inpaint/``) and never reaches back into generation or metrics. ``render_report`` writes

- ``index.html``: one self-contained file (plots and grids embedded as base64 data URIs, inline CSS, no
  script, nothing fetched from the network);
- ``report.md`` with the PNG plots and grids beside it;
- ``results.csv``: the results of all runs, unrounded, with a ``run`` column.

Modules, by job: ``loading`` (``RunData``, ``load_run``), ``context`` (``build_context``: overview, warnings,
results table, paper comparison, throughput, provenance), ``figures`` (Figure 6 and metrics against scale),
``sampling_cost`` (FID against model evaluations), ``figstyle`` (the look all plots share), ``grids``
(sample grids), ``paper`` (the paper's reference numbers), ``html`` and ``markdown`` (rendering through the
jinja2 templates in ``templates/``). Columns and number formats are ``glidebench.schema``'s.
"""

from __future__ import annotations

from pathlib import Path

from ..schema import RESULT_COLUMNS
from ..store import atomic_write_bytes
from .context import build_context
from .html import render_html
from .loading import RunData, load_run, unique_labels
from .markdown import render_markdown

__all__ = ["RunData", "load_run", "build_context", "render_report", "RESULT_COLUMNS"]

# Name prefixes of the PNGs a report writes (a re-render removes its own stale ones, nothing else).
OWN_PNG_PREFIXES = ("fig6-", "metrics-vs-scale", "fid-vs-evals", "kid-vs-evals", "grid-", "inpaint")


def render_report(run_dirs: list[Path], out_dir: Path, title: str | None = None) -> Path:
    """Render the comparison report of ``run_dirs`` into ``out_dir``; return the path of ``index.html``.

    Writes ``index.html`` (self-contained), ``report.md``, the PNG plots and sample grids it links, and the
    combined ``results.csv``. Rendering is deterministic: the same runs give byte-identical files. PNGs an
    earlier render of this report left behind (same name patterns, not written now) are removed.
    """
    if not run_dirs:
        raise ValueError("render_report needs at least one run directory")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, unique_labels(paths))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = build_context(runs, out_dir, title)
    combined = ctx["combined"]
    atomic_write_bytes(out_dir / "results.csv", combined.to_csv(index=False).encode())
    atomic_write_bytes(out_dir / "report.md", render_markdown(ctx).encode("utf-8"))
    index = out_dir / "index.html"
    atomic_write_bytes(index, render_html(ctx, out_dir).encode("utf-8"))
    written = {p.file for p in ctx["plots"]} | {g["file"] for s in ctx["grid_sets"] for g in s["grids"]}
    for stale in out_dir.glob("*.png"):
        if stale.name not in written and stale.name.startswith(OWN_PNG_PREFIXES):
            stale.unlink()
    return index
