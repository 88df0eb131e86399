"""Reading a finished run directory for the report: ``RunData`` and ``load_run``.

This module owns what the report reads from a run directory (the run-directory contract) and how it checks
it: ``results.csv`` (or ``results.json``) read into the columns of ``glidebench.schema``, ``spec.json``,
``settings.json``, ``prompts.json``, ``provenance.json`` and the optional ``throughput.json``. A missing
optional file is recorded in ``RunData.missing``; a malformed one raises with the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..schema import NUMERIC_COLUMNS, REQUIRED_COLUMNS, RESULT_COLUMNS, TEXT_COLUMNS, is_blank, to_float


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
    def is_glide(self) -> bool:
        """True unless the run says another generator made its images (``model: plugin`` in spec.json): the
        paper's GLIDE notes and GLIDE's checkpoints apply to GLIDE runs only."""
        return self.spec.get("model") != "plugin"

    @property
    def caption_style(self) -> str:
        """'exact', 'short' or '' (not recorded), from spec.json, else provenance.json's data record."""
        style = self.spec.get("caption_style") or (self.provenance.get("data") or {}).get("caption_style")
        return str(style or "")

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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); rerun the stage that writes it or delete the run"
        ) from e


def read_results(run_dir: Path) -> pd.DataFrame:
    csv_path, json_path = run_dir / "results.csv", run_dir / "results.json"
    if csv_path.exists():
        raw = csv_path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raise ValueError(
                f"{csv_path} is truncated (its last line is incomplete); copy the whole file again or rerun "
                "`glidebench run` (runs resume and rewrite it)"
            )
        try:
            df = pd.read_csv(
                csv_path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""]
            )
        except (ValueError, pd.errors.ParserError) as e:  # EmptyDataError ("No columns to parse") too
            raise ValueError(
                f"{csv_path} is not a readable results table ({type(e).__name__}: {e}); copy the whole file "
                "again or rerun `glidebench run`"
            ) from e
    elif json_path.exists():
        data = read_json(json_path)
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
    table = csv_path if csv_path.exists() else json_path
    if df.empty:
        raise ValueError(
            f"{table} holds no result rows: it is truncated or its run did not finish; rerun `glidebench run` "
            "(runs resume)"
        )
    for sid in df["setting_id"].dropna().astype(str):
        check_setting_id(sid, table)
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = "" if c in TEXT_COLUMNS else np.nan
    for c in TEXT_COLUMNS:
        df[c] = df[c].where(df[c].notna(), "").astype(str)
    for c in NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    extras = [c for c in df.columns if c not in RESULT_COLUMNS]
    return df[list(RESULT_COLUMNS) + extras].reset_index(drop=True)


def check_setting_id(sid: str, table: Path) -> None:
    """Refuse a setting id that is not one plain folder name: the report reads ``images/<setting_id>/``, and a
    crafted ``../../x`` would embed images from outside the run."""
    if sid in (".", "..") or any(c in sid for c in "/\\\0"):
        raise ValueError(
            f"{table}: setting_id {sid!r} is not a plain folder name (the report would read images outside "
            "the run's images/); it was not written by `glidebench run`: regenerate the results"
        )


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
        return read_json(p)

    results = read_results(run_dir)
    spec = optional_json("spec.json", {})
    settings = optional_json("settings.json", {})
    prompts = optional_json("prompts.json", [])
    provenance = optional_json("provenance.json", {})
    throughput = read_json(run_dir / "throughput.json") if (run_dir / "throughput.json").exists() else None
    if not isinstance(settings, dict) or not isinstance(prompts, list) or not isinstance(provenance, dict):
        raise ValueError(
            f"{run_dir}: settings.json must be an object, prompts.json a list and provenance.json an object "
            "(see the run-directory contract); regenerate the run"
        )
    # settings.json fills columns the results table left empty (older or partial tables).
    for i, sid in enumerate(results["setting_id"]):
        for key, value in (settings.get(sid) or {}).items():
            if key in results.columns and is_blank(results.at[i, key]):
                results.at[i, key] = value if key in TEXT_COLUMNS else to_float(value)
    _own_sampler(results, spec, provenance)
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


def _own_sampler(results: pd.DataFrame, spec: Any, provenance: dict[str, Any]) -> None:
    """A run of another generator (``model: plugin``) is labelled by its own sampler and steps, as its
    provenance.json's ``sampling`` record gives them (older results recorded GLIDE's spec defaults there)."""
    sampling = provenance.get("sampling")
    if not (isinstance(spec, dict) and spec.get("model") == "plugin" and isinstance(sampling, dict)):
        return
    if sampling.get("sampler"):
        results["sampler"] = str(sampling["sampler"])
        results["steps"] = str(sampling.get("steps") or "")


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """Run labels: the directory name, prefixed by its parent's name when two runs share a name."""
    names = [p.resolve().name for p in paths]
    labels = [f"{p.resolve().parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out
