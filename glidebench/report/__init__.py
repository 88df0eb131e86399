"""Comparison reports (HTML + Markdown + PNG plots) built from finished run directories alone.

This package owns the last stage of the pipeline: it reads one or several finished run directories (the
run-directory contract: ``spec.json``, ``prompts.json``, ``images/<setting_id>/<index:06d>.png``,
``settings.json``, ``results.csv``/``results.json``, ``provenance.json`` and optionally ``throughput.json`` and
``inpaint/``) and never reaches back into generation or metrics. ``render_report`` writes

- ``index.html``: one self-contained file (plots and grids embedded as base64 data URIs, inline CSS, no
  script, nothing fetched from the network);
- ``report.md`` with the PNG plots and grids beside it;
- ``results.csv``: the results of all runs, unrounded, with a ``run`` column.

Modules: ``plots`` (matplotlib figures and PIL sample grids), ``paper`` (the paper's reference numbers),
``html`` and ``markdown`` (rendering through the jinja2 templates in ``templates/``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import paper, plots
from .html import render_html
from .markdown import render_markdown

__all__ = ["RunData", "load_run", "render_report", "RESULT_COLUMNS"]

RESULT_COLUMNS: tuple[str, ...] = (
    "setting_id", "model", "guidance", "scale", "sampler", "steps", "resolution", "n_samples",
    "evals_per_image", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
    "clip_score", "clip_score_clamped", "wall_s", "images_per_s", "warnings",
)  # fmt: skip
REQUIRED_COLUMNS = ("setting_id", "guidance", "scale")
TEXT_COLUMNS = ("setting_id", "model", "guidance", "sampler", "steps", "warnings")
NUMERIC_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in TEXT_COLUMNS)
# The results table on the page: identity and metrics first (what a reader compares), then how it was run.
DISPLAY_ORDER: tuple[str, ...] = (
    "run", "setting_id", "guidance", "scale", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision",
    "recall", "clip_score", "clip_score_clamped", "colour_acc", "shape_acc", "object_acc", "position_acc",
    "n_samples", "model", "sampler", "steps", "cfg_interval", "resolution",
    "evals_per_image", "wall_s", "images_per_s",
)  # fmt: skip
# Name prefixes of the PNGs a report writes (a re-render removes its own stale ones, nothing else).
OWN_PNG_PREFIXES = ("fig6-", "metrics-vs-scale", "fid-vs-evals", "kid-vs-evals", "grid-", "inpaint")


@dataclass(frozen=True)
class RunData:
    """One finished run directory, read and validated. Optional parts are None/empty when absent."""

    path: Path
    label: str
    spec: dict[str, Any]
    settings: dict[str, dict[str, Any]]
    results: pd.DataFrame
    prompts: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    throughput: Any = None
    missing: tuple[str, ...] = ()  # names of contract files that were absent

    @property
    def captions(self) -> dict[int, str]:
        return {int(p["index"]): str(p.get("caption", "")) for p in self.prompts if "index" in p}

    @property
    def data_kind(self) -> str:
        """'embedded', 'MS-COCO' or 'unknown', from the prompts' sources (then the provenance data record)."""
        sources = {str(p.get("source", "")).split(":", 1)[0] for p in self.prompts}
        if "embedded" in sources:
            return "embedded"
        if "coco" in sources:
            return "MS-COCO"
        blob = json.dumps(self.provenance.get("data", {})).lower()
        if "embedded" in blob:
            return "embedded"
        if "coco" in blob:
            return "MS-COCO"
        return "unknown"

    @property
    def models(self) -> tuple[str, ...]:
        vals = self.results["model"].dropna().astype(str) if "model" in self.results else []
        return tuple(sorted({v for v in vals if v}))

    @property
    def random_model(self) -> bool:
        """True when the run says its model has random weights (model name, spec or checkpoint record)."""
        if any("random" in m.lower() for m in self.models):
            return True
        for name, digest in (self.provenance.get("checkpoints") or {}).items():
            if "random" in str(name).lower() or str(digest).lower() in ("random", "random-init"):
                return True
        return _spec_says_random(self.spec)


def _spec_says_random(obj: Any) -> bool:
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = str(k).lower()
            if key in ("random_init", "random_weights", "random_model") and v is True:
                return True
            if (
                key in ("init", "weights", "checkpoint")
                and isinstance(v, str)
                and v.lower().startswith("random")
            ):
                return True
            if _spec_says_random(v):
                return True
    elif isinstance(obj, list):
        return any(_spec_says_random(v) for v in obj)
    return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); rerun the stage that writes it or delete the run"
        ) from e


def _read_results(run_dir: Path) -> pd.DataFrame:
    csv_path, json_path = run_dir / "results.csv", run_dir / "results.json"
    if csv_path.exists():
        df = pd.read_csv(
            csv_path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""]
        )
    elif json_path.exists():
        data = _read_json(json_path)
        rows = data.get("rows", data.get("results")) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ValueError(f"{json_path} must hold a list of result rows (or {{'rows': [...]}})")
        df = pd.DataFrame(rows)
    else:
        raise FileNotFoundError(
            f"{run_dir} has no results.csv or results.json: it is not a finished run. "
            "Finish it with `glidebench run` (runs resume) or pass a finished run directory."
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{run_dir}/results table lacks the columns {missing}; it does not follow the run-directory "
            "contract. Regenerate it with the current `glidebench run`."
        )
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = "" if c in TEXT_COLUMNS else np.nan
    for c in TEXT_COLUMNS:
        df[c] = df[c].where(df[c].notna(), "").astype(str)
    for c in NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    extras = [c for c in df.columns if c not in RESULT_COLUMNS]
    return df[list(RESULT_COLUMNS) + extras].reset_index(drop=True)


def load_run(run_dir: str | Path, label: str | None = None) -> RunData:
    """Read a finished run directory. Raises with the fix when required parts are missing or malformed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"run directory {run_dir} does not exist; pass the directory `glidebench run` wrote"
        )
    missing: list[str] = []

    def optional_json(name: str, default: Any) -> Any:
        p = run_dir / name
        if not p.exists():
            missing.append(name)
            return default
        return _read_json(p)

    results = _read_results(run_dir)
    spec = optional_json("spec.json", {})
    settings = optional_json("settings.json", {})
    prompts = optional_json("prompts.json", [])
    provenance = optional_json("provenance.json", {})
    throughput = _read_json(run_dir / "throughput.json") if (run_dir / "throughput.json").exists() else None
    if not isinstance(settings, dict) or not isinstance(prompts, list) or not isinstance(provenance, dict):
        raise ValueError(
            f"{run_dir}: settings.json must be an object, prompts.json a list and provenance.json an object "
            "(see the run-directory contract); regenerate the run"
        )
    # settings.json fills columns the results table left empty (older or partial tables).
    for i, sid in enumerate(results["setting_id"]):
        for key, value in (settings.get(sid) or {}).items():
            if key in results.columns and _is_blank(results.at[i, key]):
                results.at[i, key] = value if key in TEXT_COLUMNS else _to_float(value)
    return RunData(
        path=run_dir,
        label=label or run_dir.name,
        spec=spec if isinstance(spec, dict) else {"spec": spec},
        settings=settings,
        results=results,
        prompts=prompts,
        provenance=provenance,
        throughput=throughput,
        missing=tuple(missing),
    )


def _is_blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v == "")


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _unique_labels(paths: Sequence[Path]) -> list[str]:
    """Run labels: the directory name, prefixed by its parent's name when two runs share a name."""
    names = [p.resolve().name for p in paths]
    labels = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ formatting
DECIMALS = {
    "fid": 2, "kid_mean": 4, "kid_std": 4, "is_mean": 2, "is_std": 2, "precision": 3, "recall": 3,
    "clip_score": 2, "clip_score_clamped": 2, "wall_s": 1, "images_per_s": 3,
}  # fmt: skip
INTEGER_COLUMNS = ("resolution", "n_samples")
MISSING = "—"


def format_value(column: str, value: Any) -> str:
    """One results cell as text: fixed decimals per metric, integers as integers, missing as an em dash."""
    if column in TEXT_COLUMNS or column == "run":
        return "" if _is_blank(value) else str(value)
    if _is_blank(value):
        return MISSING
    v = _to_float(value)
    if math.isnan(v) and isinstance(value, str):  # a text value in a column beyond the contract
        return value
    if math.isnan(v):
        return MISSING
    if column in DECIMALS:
        return f"{v:.{DECIMALS[column]}f}"
    if column in INTEGER_COLUMNS or (column == "evals_per_image" and v.is_integer()):
        return f"{int(round(v))}"
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.6g}"


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ``df`` formatted with ``format_value`` (strings only, ready for HTML or Markdown)."""
    return pd.DataFrame(
        {c: [format_value(c, v) for v in df[c]] for c in df.columns}, columns=list(df.columns)
    )


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


# --------------------------------------------------------------------------------------------- context
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
        ckpts = prov.get("checkpoints") or {}
        put("Checkpoints (SHA-256)", lab, "; ".join(f"{k}: {v}" for k, v in ckpts.items()) or "none recorded")
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
            "Resolution",
            lab,
            ", ".join(f"{int(r)} px" for r in sorted(df["resolution"].dropna().unique())) or "?",
        )
        put("Samples per setting", lab, _join_range(df["n_samples"].tolist()))
        fe = prov.get("feature_extractor") or {}
        put("Inception features", lab, str(fe.get("inception", "not recorded")))
        put("CLIP for the CLIP score", lab, str(fe.get("clip", "not recorded")))
        put("Device", lab, str(prov.get("device", "not recorded")))
        dur = _to_float(prov.get("duration_s"))
        put("Time taken", lab, "not recorded" if math.isnan(dur) else f"{dur:,.1f} s")
    out = pd.DataFrame.from_dict(table, orient="index").fillna("")
    out.index.name = "" if len(runs) > 1 else "fact"
    return out.reset_index()


def _warnings(run: RunData) -> list[str]:
    """Plain-words warnings: things a reader must know before trusting any number of this run."""
    out: list[str] = []
    kind = run.data_kind
    if kind == "embedded":
        out.append(
            "This run used the embedded toy set (simple rendered shapes with generated captions), not MS-COCO. "
            "Its FID, precision and recall are measured against those shapes and cannot be compared with the "
            "paper's or any COCO number."
        )
    elif kind == "unknown":
        out.append("The run does not record where its captions and reference images came from.")
    if run.random_model:
        out.append(
            "The model has random weights: the samples are noise, and the metrics only show that the "
            "harness runs end to end."
        )
    elif not (run.provenance.get("checkpoints") or {}):
        out.append(
            "No checkpoint hashes are recorded, so the weights behind these numbers cannot be identified."
        )
    ns = run.results["n_samples"]
    small = run.results[ns < plots.MIN_FID_SAMPLES]
    if len(small):
        out.append(
            f"{len(small)} of {len(run.results)} settings have fewer than {plots.MIN_FID_SAMPLES} samples (as few as "
            f"{int(small['n_samples'].min()):,}). With 2048-dimensional Inception features the covariance is "
            "then singular: FID, KID and precision/recall are smoke-test numbers, not measurements."
        )
    if ns.isna().any():
        out.append("Some settings do not record how many samples they used.")
    for name in run.missing:
        out.append(
            f"{name} is missing from the run directory; the parts of the report that need it are empty."
        )
    per_warning: dict[str, list[str]] = {}
    for sid, text in zip(run.results["setting_id"], run.results["warnings"]):
        for w in (t.strip() for t in str(text).split(";")):
            if w:
                per_warning.setdefault(w, []).append(sid)
    for w, sids in per_warning.items():
        where = "all settings" if len(sids) == len(run.results) else "settings " + ", ".join(sids)
        out.append(f"Harness warning ({where}): {w}")
    return out


def _slug(text: str) -> str:
    s = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text).strip("-.")
    return "-".join(p for p in s.split("-") if p)[:60] or "x"


class _Files:
    """Unique, deterministic file names for the PNGs written beside the report."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir, self.used = out_dir, set()

    def write(self, stem: str, data: bytes) -> str:
        name, i = f"{_slug(stem)}.png", 1
        while name in self.used:
            i += 1
            name = f"{_slug(stem)}-{i}.png"
        self.used.add(name)
        atomic_write_bytes(self.out_dir / name, data)
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
    ckpts = prov.get("checkpoints") or {}
    return {
        "label": run.label,
        "facts": pd.DataFrame(
            [
                ("run directory", str(run.path)),
                ("git commit", str(prov.get("git_commit", "not recorded"))),
                ("device", str(prov.get("device", "not recorded"))),
                ("started", str(prov.get("started", "not recorded"))),
                ("finished", str(prov.get("finished", "not recorded"))),
                ("duration (s)", _generic_cell(_to_float(prov.get("duration_s")))),
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
        "spec": json.dumps(run.spec, indent=2, sort_keys=True, default=str) if run.spec else "",
        "missing": list(run.missing),
    }


def build_context(runs: Sequence[RunData], out_dir: Path, title: str | None) -> dict[str, Any]:
    """Everything the templates show, with plots and grids written into ``out_dir``."""
    multi = len(runs) > 1
    frames = [r.results.assign(run=r.label) for r in runs]
    combined = pd.concat(frames, ignore_index=True)
    combined = combined[["run"] + [c for c in combined.columns if c != "run"]]
    present = [c for c in combined.columns if c in TEXT_COLUMNS or c == "run" or combined[c].notna().any()]
    not_measured = [c for c in RESULT_COLUMNS if c not in present]
    shown = [c for c in DISPLAY_ORDER if c in present and (multi or c != "run")]
    shown += [c for c in present if c not in DISPLAY_ORDER and c != "warnings"]  # columns beyond the contract
    files = _Files(out_dir)
    made, skipped = plots.make_plots(combined, files.write)
    grid_sets, grid_notes = plots.make_grids(runs, files.write, multi)
    ours = [
        paper.OurRun(
            label=r.label,
            results=r.results,
            data_kind=r.data_kind,
            models=r.models,
            clip_model=(r.provenance.get("feature_extractor") or {}).get("clip"),
            random_model=r.random_model,
        )
        for r in runs
    ]
    return {
        "title": title or "glidebench report: " + ", ".join(r.label for r in runs),
        "multi": multi,
        "runs": [{"label": r.label, "warnings": _warnings(r)} for r in runs],
        "overview": _overview(runs),
        "combined": combined,
        "results_table": format_table(combined[shown]),
        "not_measured": not_measured,
        "plots": made,
        "plots_skipped": skipped,
        "grid_sets": grid_sets,
        "grid_notes": grid_notes,
        "paper": {
            "source": paper.SOURCE,
            "comparison": paper.comparison_table(ours),
            "table2": paper.table2_with_ours(ours),
            "elo": pd.DataFrame(
                [(w, f"{a:.1f}", f"{b:.1f}") for w, a, b in paper.ELO],
                columns=["setting (256x256)", "photorealism Elo", "caption match Elo"],
            ),
            "findings": paper.FIGURE6_FINDINGS,
            "caveats": [{"label": o.label, "items": paper.caveats(o)} for o in ours],
            "released": paper.RELEASED_MODEL,
            "notebook": paper.NOTEBOOK_SETTINGS,
        },
        "throughput": [t for t in (_throughput(r) for r in runs) if t is not None],
        "provenance": [_provenance(r) for r in runs],
    }


def render_report(run_dirs: list[Path], out_dir: Path, title: str | None = None) -> Path:
    """Render the comparison report of ``run_dirs`` into ``out_dir``; return the path of ``index.html``.

    Writes ``index.html`` (self-contained), ``report.md``, the PNG plots and sample grids it links, and the
    combined ``results.csv``. Rendering is deterministic: the same runs give byte-identical files. PNGs an
    earlier render of this report left behind (same name patterns, not written now) are removed.
    """
    if not run_dirs:
        raise ValueError("render_report needs at least one run directory")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, _unique_labels(paths))]
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
