"""Comparison reports (HTML + Markdown + PNG plots) built from finished run directories alone.

This package owns the last stage of the pipeline: it reads one or several finished run directories (the
run-directory contract: ``spec.json``, ``prompts.json``, ``images/<setting_id>/<index:06d>.png``,
``settings.json``, ``results.csv``/``results.json``, ``provenance.json`` and optionally ``throughput.json`` and
``inpaint/``) and never reaches back into generation or metrics. ``render_report`` writes a folder:

- the PNG plots and sample grids, each stored once;
- ``index.html``, which links those PNGs by file name (inline CSS, no script, nothing fetched from the
  network), and ``report.md``, which links the same files;
- ``results.csv``: the results of all runs, unrounded, with a ``run`` column;
- ``.glidebench-report.json``: the manifest of the files it wrote.

With ``single_file`` it writes one self-contained ``index.html`` instead (the PNGs embedded as base64
``data:`` URIs, no PNG file and no ``report.md``, which needs them), with ``results.csv`` and the manifest.
The folder suits committed and browsable reports and Markdown; the single file suits mail and CI artifacts.

Modules, by job: ``loading`` (``RunData``, ``load_run``), ``context`` (``build_context``: overview, results,
paper comparison, throughput, provenance), ``notes`` ("Read this first", once for all runs; checkpoints apart
from a generator's arguments), ``tables`` (the compact main table, caption agreement with its counts),
``figures`` (Figure 6 and metrics against scale), ``sampling_cost`` (FID against model evaluations),
``uncertainty`` (paired differences, diversity against fidelity), ``figstyle`` (the look all plots share: a
colour per model, a marker per guidance kind, 95 % intervals as error bars), ``grids`` and ``compare`` (sample
grids, models side by side, protocol differences), ``paper`` (the paper's reference numbers), ``html`` and
``markdown`` (rendering through the jinja2 templates in ``templates/``). Columns and number formats are
``glidebench.schema``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..schema import RESULT_COLUMNS
from ..store import atomic_write_bytes, atomic_write_json, ensure_under
from .context import build_context
from .html import render_html
from .loading import RunData, load_run, unique_labels
from .markdown import render_markdown

__all__ = ["RunData", "load_run", "build_context", "render_report", "RESULT_COLUMNS", "ReportFolderError"]

# Name prefixes of the PNGs a report writes (recognises a report folder written before manifests existed).
OWN_PNG_PREFIXES = ("fig6-", "metrics-vs-scale", "fid-vs-evals", "kid-vs-evals", "grid-", "inpaint")
MANIFEST = ".glidebench-report.json"  # in the report folder: the files the last render wrote
_OWN_FILES = ("index.html", "report.md", "results.csv")  # what a folder report writes besides its PNGs
_LEGACY_MARK = "A glidebench report of "  # report.md's second paragraph, before manifests


class ReportFolderError(ValueError):
    """A report folder holding files the report did not write (without ``force``)."""


def _manifest_names(out_dir: Path) -> set[str] | None:
    """The plain file names the manifest lists (None: no manifest, or not a readable one)."""
    try:
        doc = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list):
        return None
    return {
        f
        for f in files
        if isinstance(f, str) and f and "/" not in f and "\\" not in f and f not in (".", "..")
    }


def _is_legacy_report(out_dir: Path, names: list[str]) -> bool:
    """A folder written by a report before manifests existed: its report.md says so and every file in it has
    one of the names a report writes."""
    try:
        head = (out_dir / "report.md").read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return False
    own = all(n in _OWN_FILES or (n.endswith(".png") and n.startswith(OWN_PNG_PREFIXES)) for n in names)
    return _LEGACY_MARK in head and own


def check_report_folder(out_dir: Path, force: bool = False) -> set[str]:
    """Check that rendering into ``out_dir`` touches nothing the report did not write; return the names the
    previous render wrote (which this one may remove when it no longer writes them).

    An absent or empty folder, or one whose every file is in the manifest (``.glidebench-report.json``) of an
    earlier render, is the report's own; so is a report folder written before manifests (report.md says so and
    all names are the report's). Anything else is refused unless ``force``: the report then overwrites files
    of the names it writes, and still deletes nothing it did not write."""
    if not out_dir.exists():
        return set()
    if not out_dir.is_dir():
        raise ReportFolderError(f"report folder {out_dir} is a file; choose another --out")
    names = sorted(
        p.name for p in out_dir.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))
    )
    names = [n for n in names if n != MANIFEST]
    listed = _manifest_names(out_dir)
    if listed is None and _is_legacy_report(out_dir, names):
        # its PNGs may be a user's look-alikes: overwritten by name at most, never deleted
        return set(_OWN_FILES)
    foreign = [n for n in names if listed is None or n not in listed]
    if foreign and not force:
        why = f"no {MANIFEST}" if listed is None else f"not listed in its {MANIFEST}"
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ReportFolderError(
            f"report folder {out_dir} holds files not written by a glidebench report ({why}): {shown}. The report "
            "never overwrites or deletes them: choose a new or empty --out, or pass --force to write beside them "
            "(files of the report's own names are then overwritten; nothing else is touched)"
        )
    return listed or set()


def render_report(
    run_dirs: list[Path],
    out_dir: Path,
    title: str | None = None,
    force: bool = False,
    single_file: bool = False,
) -> Path:
    """Render the comparison report of ``run_dirs`` into ``out_dir``; return the path of ``index.html``.

    Writes the PNG plots and sample grids, ``index.html`` and ``report.md`` (both linking those PNGs), the
    combined ``results.csv`` and the manifest ``.glidebench-report.json`` (what it wrote). With
    ``single_file``: ``index.html`` with the PNGs embedded as data URIs, ``results.csv`` and the manifest, and
    no PNG or ``report.md``. Rendering is deterministic: the same runs give byte-identical files. A folder
    holding files the report did not write is refused unless ``force`` (:func:`check_report_folder`); files an
    earlier render listed in its manifest and this one does not write are removed, nothing else ever is.
    """
    if not run_dirs:
        raise ValueError("render_report needs at least one run directory")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, unique_labels(paths))]
    out_dir = Path(out_dir)
    previous = check_report_folder(out_dir, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = build_context(runs, out_dir, title, single_file=single_file)
    combined = ctx["combined"]
    atomic_write_bytes(out_dir / "results.csv", combined.to_csv(index=False).encode())
    written = {"index.html", "results.csv"} | set(ctx["written"])
    if not single_file:  # the Markdown links the PNGs beside it
        atomic_write_bytes(out_dir / "report.md", render_markdown(ctx).encode("utf-8"))
        written.add("report.md")
    index = out_dir / "index.html"
    page = render_html(ctx, out_dir, ctx["images"] if single_file else None)
    atomic_write_bytes(index, page.encode("utf-8"))
    atomic_write_json(
        out_dir / MANIFEST,
        {"format": "glidebench report manifest", "version": 1, "files": sorted(written)},
    )
    for name in sorted(previous - written):
        stale = ensure_under(out_dir, out_dir / name)
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return index
