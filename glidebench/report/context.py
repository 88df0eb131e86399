"""The report's content: everything the templates show, built from loaded runs (``build_context``).

This module owns the report's sections apart from the figures: the overview of what was evaluated and
how, the results (the compact table, caption agreement and the full table from ``tables``; columns and cells as
``glidebench.schema`` defines them; the warnings a reader must see first from ``notes``), the comparison with
the paper (numbers from ``paper``; its notes on the released GLIDE only for GLIDE runs), throughput and
provenance. Figures and sample grids are written beside the report through ``_Files`` (``figures`` and
``grids`` draw them), or, for a single-file report, kept in memory to be embedded in the page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..schema import (
    INTERVAL_NOTES,
    MISSING,
    REPORT_COLUMNS,
    RESULT_COLUMNS,
    TEXT_COLUMNS,
    format_table,
    to_float,
)
from ..store import atomic_write_bytes, ensure_under
from . import compare, notes, paper, tables
from . import uncertainty as unc
from .figures import make_plots
from .grids import make_grids
from .loading import RunData


def _generic_cell(v: Any) -> str:
    if isinstance(v, float):
        return MISSING if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else str(v)


def _join_range(values: Sequence[float]) -> str:
    vals = sorted({int(v) for v in values if not math.isnan(v)})
    if not vals:
        return "not recorded"
    return f"{vals[0]:,}" if len(vals) == 1 else f"{vals[0]:,} to {vals[-1]:,}"


def _flat(record: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(record, dict):
        out: list[tuple[str, str]] = []
        for k, v in record.items():
            out += _flat(v, f"{prefix}{k}." if isinstance(v, dict) and v else f"{prefix}{k}")
        return out
    value = json.dumps(record, sort_keys=True) if isinstance(record, (list, dict)) else str(record)
    return [(prefix.rstrip("."), value)]


def _data_words(run: RunData) -> str:
    return {
        "embedded": "embedded synthetic shapes (bundled toy set, not MS-COCO)",
        "MS-COCO": "MS-COCO captions and images",
        "unknown": "not recorded",
    }[run.data_kind]


def _guidance_words(df: pd.DataFrame) -> str:
    parts = []
    for kind, sub in df.groupby("guidance", sort=True):
        name = paper.KIND_NAMES.get(str(kind), str(kind))
        if kind == "none":
            parts.append(name)
        else:
            parts.append(f"{name}: " + ", ".join(f"{s:g}" for s in sorted(sub["scale"].dropna().unique())))
    return "; ".join(parts) or "none recorded"


def _overview(runs: Sequence[RunData]) -> pd.DataFrame:
    """What was evaluated and how: one column per run, one row per fact."""
    table: dict[str, dict[str, str]] = {}

    def put(row: str, label: str, value: str) -> None:
        table.setdefault(row, {})[label] = value

    for run in runs:
        df, prov, lab = run.results, run.provenance, run.label
        put("Run directory", lab, run.path.name)
        put("Suite", lab, str(run.spec.get("suite", "not recorded")))
        put("Spec fingerprint", lab, str(run.spec.get("fingerprint", "not recorded")))
        put("Model", lab, ", ".join(run.models) or "not recorded")
        ckpts, generator = notes.split_checkpoints(run)
        if ckpts or run.is_glide:  # another generator that hashes no weights has its own row below
            put(
                "Checkpoints (SHA-256)",
                lab,
                "; ".join(f"{k}: {v}" for k, v in ckpts.items()) or "none recorded",
            )
        if generator or not run.is_glide:
            put(
                "Generator and its arguments",
                lab,
                "; ".join(f"{k}: {v}" for k, v in generator.items()) or "-",
            )
        put("Data", lab, _data_words(run))
        data = prov.get("data")
        put(
            "Caption selection",
            lab,
            "; ".join(f"{k}={v}" if k else v for k, v in _flat(data)) if data else "not recorded",
        )
        put("Captions", lab, f"{len(run.prompts):,}" if run.prompts else "not recorded")
        put("Guidance (scales)", lab, _guidance_words(df))
        samplers = sorted({f"{r.sampler} {r.steps}".strip() for r in df.itertuples()})
        put("Sampler and steps", lab, ", ".join(s for s in samplers if s) or "not recorded")
        put(
            "Sampling (the generator's words)",
            lab,
            str((prov.get("sampling") or {}).get("text", "not recorded")),
        )
        put(
            "Resolution",
            lab,
            ", ".join(f"{int(r)} px" for r in sorted(df["resolution"].dropna().unique())) or "?",
        )
        put("Samples per setting", lab, _join_range(df["n_samples"].tolist()))
        fe = prov.get("feature_extractor") or {}
        put("Inception features", lab, str(fe.get("inception", "not recorded")))
        put("CLIP for the CLIP score", lab, str(fe.get("clip", "not recorded")))
        put("Device", lab, str(prov.get("device", "not recorded")))
        dur = to_float(prov.get("duration_s"))
        put("Time taken", lab, "not recorded" if math.isnan(dur) else f"{dur:,.1f} s")
    out = pd.DataFrame.from_dict(table, orient="index").fillna("")
    out.index.name = "" if len(runs) > 1 else "fact"
    return out.reset_index()


def _slug(text: str) -> str:
    s = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text).strip("-.")
    return "-".join(p for p in s.split("-") if p)[:60] or "x"


class _Files:
    """Unique, deterministic file names for the report's PNGs: written beside the report, or (``keep``: a
    single-file report) only kept in memory by name, to be embedded in the page."""

    def __init__(self, out_dir: Path, keep: bool = False) -> None:
        self.out_dir, self.keep, self.used = out_dir, keep, set()
        self.images: dict[str, bytes] = {}

    @property
    def written(self) -> set[str]:
        """The names of the PNGs written into ``out_dir`` (none when they are kept in memory)."""
        return set() if self.keep else set(self.used)

    def write(self, stem: str, data: bytes) -> str:
        name, i = f"{_slug(stem)}.png", 1
        while name in self.used:
            i += 1
            name = f"{_slug(stem)}-{i}.png"
        self.used.add(name)
        target = ensure_under(self.out_dir, self.out_dir / name)  # checked in either mode
        if self.keep:
            self.images[name] = data
        else:
            atomic_write_bytes(target, data)
        return name


def _throughput(run: RunData) -> dict | None:
    data = run.throughput
    if data is None:
        return None
    rows = data.get("rows") if isinstance(data, dict) else data
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        df = pd.DataFrame(rows)
        table = pd.DataFrame(
            {c: [_generic_cell(v) for v in df[c]] for c in df.columns}, columns=list(df.columns)
        )
        extra = {k: v for k, v in data.items() if k != "rows"} if isinstance(data, dict) else {}
        return {"label": run.label, "table": table, "extra": json.dumps(extra, indent=2) if extra else ""}
    return {"label": run.label, "table": None, "extra": json.dumps(data, indent=2)}


def _provenance(run: RunData) -> dict:
    prov = run.provenance
    versions = prov.get("versions") or {}
    ckpts, generator = notes.split_checkpoints(run)
    return {
        "label": run.label,
        "facts": pd.DataFrame(
            [
                ("run directory", str(run.path)),
                ("git commit", str(prov.get("git_commit", "not recorded"))),
                ("device", str(prov.get("device", "not recorded"))),
                ("started", str(prov.get("started", "not recorded"))),
                ("finished", str(prov.get("finished", "not recorded"))),
                ("duration (s)", _generic_cell(to_float(prov.get("duration_s")))),
                *[
                    (f"feature extractor: {k}", str(v))
                    for k, v in (prov.get("feature_extractor") or {}).items()
                ],
                *[(f"data: {k}", v) for k, v in _flat(prov.get("data") or {}) if k],
            ],
            columns=["item", "value"],
        ),
        "versions": pd.DataFrame(sorted(versions.items()), columns=["package", "version"])
        if versions
        else None,
        "checkpoints": pd.DataFrame(list(ckpts.items()), columns=["checkpoint", "sha256"]) if ckpts else None,
        "generator": pd.DataFrame(list(generator.items()), columns=["item", "value"]) if generator else None,
        "spec": json.dumps(run.spec, indent=2, sort_keys=True, default=str) if run.spec else "",
        "spec_note": _spec_note(run),
        "missing": list(run.missing),
    }


def _spec_note(run: RunData) -> str:
    """For a run whose images GLIDE did not make: its spec's GLIDE sampling fields were not used."""
    if run.spec.get("model") != "plugin":
        return ""
    sampling = (run.provenance.get("sampling") or {}).get("text")
    return (
        "The spec's sampler, steps, up_sampler, up_steps and upsample_temp are GLIDE's defaults, recorded but not "
        "used by this generator" + (f" (it samples as: {sampling})." if sampling else ".")
    )


def _shown_columns(combined: pd.DataFrame, multi: bool) -> tuple[list[str], list[str]]:
    """(the full table's columns, the contract's columns not measured in any setting)."""
    present = [c for c in combined.columns if c in TEXT_COLUMNS or c == "run" or combined[c].notna().any()]
    not_measured = [c for c in RESULT_COLUMNS if c not in present]
    shown = [c for c in REPORT_COLUMNS if c in present and (multi or c != "run")]
    shown += [c for c in present if c not in REPORT_COLUMNS and c != "warnings"]  # beyond the contract
    if "kid_mean_lo" in shown:  # KID's interval is the uncertainty shown; kid_std stays in results.csv
        shown.remove("kid_std")
    return shown, not_measured


def _results(runs: Sequence[RunData], shown_df: pd.DataFrame, shown: list[str]) -> dict[str, Any]:
    """The results section: the compact table, caption agreement with its counts, the full table."""
    styles = {r.label: r.caption_style for r in runs}
    full = format_table(shown_df[shown], intervals=True)  # an interval prints in its metric's cell
    return {
        "summary_table": tables.summary_table(shown_df),
        "attribute_table": tables.attribute_table(shown_df, styles),
        "attribute_notes": tables.attribute_notes(shown_df, styles),
        "results_table": full,
        "full_table_note": tables.full_table_note(list(full.columns)),
        "has_intervals": any(str(c).endswith("_lo") for c in shown_df.columns),
        "interval_note": _interval_note(runs),
        "differences": unc.differences_table(runs),
        "diversity_findings": unc.diversity_findings(runs),
    }


def _paper(runs: Sequence[RunData]) -> dict[str, Any]:
    """The paper section; its notes on the released GLIDE apply only when a run is a GLIDE run."""
    ours = [
        paper.OurRun(
            label=r.label, results=r.results, data_kind=r.data_kind, models=r.models,
            clip_model=(r.provenance.get("feature_extractor") or {}).get("clip"), random_model=r.random_model,
            glide=r.is_glide,
        )
        for r in runs
    ]  # fmt: skip
    elo = pd.DataFrame(
        [(w, f"{a:.1f}", f"{b:.1f}") for w, a, b in paper.ELO],
        columns=["setting (256x256)", "photorealism Elo", "caption match Elo"],
    )
    return {
        "source": paper.SOURCE,
        "comparison": paper.comparison_table(ours),
        "table2": paper.table2_with_ours(ours),
        "elo": elo,
        "findings": paper.FIGURE6_FINDINGS,
        "caveats": [{"label": o.label, "items": paper.caveats(o)} for o in ours],
        "glide": notes.glide_notes_apply(runs),
        "released": paper.RELEASED_MODEL,
        "notebook": paper.NOTEBOOK_SETTINGS,
    }


def build_context(
    runs: Sequence[RunData], out_dir: Path, title: str | None, single_file: bool = False
) -> dict[str, Any]:
    """Everything the templates show, with plots and grids written into ``out_dir`` (``single_file``: kept in
    memory instead, as ``images``, to be embedded in the page)."""
    multi = len(runs) > 1
    combined = pd.concat([r.results.assign(run=r.label) for r in runs], ignore_index=True)
    combined = combined[["run"] + [c for c in combined.columns if c != "run"]]
    shown, not_measured = _shown_columns(combined, multi)
    combined, shown = compare.group_by_model(combined, shown)  # several models: grouped, model first
    shown_df = tables.without_small_intervals(combined)  # what tables print and plots draw
    files = _Files(out_dir, keep=single_file)
    made, skipped = make_plots(shown_df, files.write)
    div_made, div_skipped = unc.diversity_plots(shown_df, files.write)  # beside Figure 6's
    made, skipped = made[:2] + div_made + made[2:], skipped + div_skipped
    grid_sets, grid_notes = make_grids(runs, files.write, multi)
    side = compare.side_by_side(runs, files.write)
    grid_sets = ([side] if side else []) + grid_sets
    return {
        "title": title or "glidebench report: " + ", ".join(r.label for r in runs),
        "multi": multi,
        "runs": [{"label": r.label} for r in runs],
        "warnings": notes.merged_warnings(runs),  # "Read this first", once for the whole report
        "protocol": compare.protocol_warnings(runs),  # how the runs' protocols differ (empty: they do not)
        "overview": _overview(runs),
        "combined": combined,  # results.csv: unrounded, every interval kept
        **_results(runs, shown_df, shown),
        "not_measured": not_measured,
        "missing": MISSING,
        "plots": made,
        "plots_skipped": skipped,
        "grid_sets": grid_sets,
        "grid_notes": grid_notes,
        "paper": _paper(runs),
        "throughput": [t for t in (_throughput(r) for r in runs) if t is not None],
        "provenance": [_provenance(r) for r in runs],
        "written": files.written,  # the PNGs written (the report's manifest lists them)
        "images": files.images,  # a single-file report's PNGs by name (empty when they are written)
    }


def _interval_note(runs: Sequence[Any]) -> str:
    """What the brackets are: the runs' interval method (``intervals`` in spec.json; absent: the jackknife)."""

    methods = sorted({str(r.spec.get("intervals", "jackknife")) for r in runs})
    notes = [INTERVAL_NOTES.get(m, m) for m in methods]
    if len(notes) == 1:
        return f"Brackets: {notes[0]} (docs/uncertainty.md)."
    return (
        "Brackets: " + "; ".join(f"{m} runs: {n}" for m, n in zip(methods, notes)) + " (docs/uncertainty.md)."
    )
