"""The nfe suite: sample quality against model evaluations per image, one run per (sampler, steps).

    python -m glidebench run nfe                 # the embedded set; --coco-root for MS-COCO
    python -m glidebench report runs/nfe/summary-*/  (the summary directory holds a report already)

Each entry of the suite's ``sweep`` is an ordinary coco-fid-style run (same captions, seeds, guidance scale
and reference set; its own fingerprinted run directory, so an interrupted sweep resumes entry by entry and
a finished entry is never sampled again). When every entry is done, a summary directory holds the combined
table, each entry's KID and CLIP score relative to the ``reference`` entry (250-step ancestral sampling by
default: the paper's base-model sampler) and a report with the FID/KID-against-evaluations curves.

Model evaluations per image count both halves of a classifier-free batch (2 x steps at scale != 1), as
everywhere in glidebench.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.coco import resolve_root
from ..data.sources import data_kind
from ..features import cache_root
from ..metrics import paired_kid_jackknife
from ..runner.options import RunOptions
from ..runner.results import markdown_table
from ..spec import SAMPLERS, format_interval, parse_interval
from ..store import atomic_write_bytes, atomic_write_json, atomic_write_text
from . import SuiteError, load_suite

SUITE = "nfe"
TOLERANCE = 0.10  # "within 10%" of the reference entry's KID and CLIP score


Entry = tuple[str, str, str]  # (sampler, steps, cfg_interval as "lo-hi", or "" for guidance at every step)


def parse_sweep(value: Any, where: str) -> list[Entry]:
    """``[[sampler, steps], [sampler, steps, "lo,hi"], ...]`` from the suite file, validated (a named error for
    each bad entry); the optional third element limits classifier-free guidance to timesteps lo..hi."""

    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: 'sweep' must be a non-empty list of [sampler, steps] pairs")
    out = []
    for entry in value:
        if not (isinstance(entry, list | tuple) and len(entry) in (2, 3)):
            raise SuiteError(
                f'{where}: sweep entry {entry!r} is not a [sampler, steps] pair or a [sampler, steps, "lo,hi"] triple'
            )
        sampler, steps = str(entry[0]), str(entry[1])
        if sampler not in SAMPLERS:
            raise SuiteError(f"{where}: sweep entry {entry!r}: sampler must be one of {SAMPLERS}")
        interval = ""
        if len(entry) == 3:
            try:
                interval = format_interval(parse_interval(entry[2], "cfg_interval"))
            except ValueError as e:
                raise SuiteError(f"{where}: sweep entry {entry!r}: {e}") from None
        out.append((sampler, steps, interval))
    if len(set(out)) != len(out):
        raise SuiteError(f"{where}: the sweep lists an entry twice")
    return out


def entry_name(entry: tuple[str, ...]) -> str:
    """'dpm++2m-sde quad16' or 'dpm++2m-sde quad16, guidance at t 111-750'."""
    name = f"{entry[0]} {entry[1]}"
    return name + (f", guidance at t {entry[2]}" if len(entry) > 2 and entry[2] else "")


def _as_entry(entry: tuple[str, ...]) -> Entry:
    return (str(entry[0]), str(entry[1]), str(entry[2]) if len(entry) > 2 else "")


def _interval_column(df: pd.DataFrame) -> pd.Series:
    if "cfg_interval" not in df.columns:
        return pd.Series([""] * len(df), index=df.index)
    return df["cfg_interval"].fillna("").astype(str)


def _is_entry(df: pd.DataFrame, entry: tuple[str, ...]) -> pd.Series:
    sampler, steps, interval = _as_entry(entry)
    return (
        (df["sampler"] == sampler) & (df["steps"].astype(str) == steps) & (_interval_column(df) == interval)
    )


def relative_to_reference(
    df: pd.DataFrame, reference: tuple[str, ...], tol: float = TOLERANCE
) -> pd.DataFrame:
    """Add ``kid_vs_ref``, ``clip_vs_ref`` (relative differences) and ``within_tol`` per guidance setting.

    ``within_tol`` is true when both the KID and the CLIP score are within ``tol`` (relative) of the
    reference entry's, or the KID is not above the reference's (a lower KID is never a failure).
    """
    df = df.copy()
    ref_rows = df[_is_entry(df, reference)]
    if ref_rows.empty:
        raise SuiteError(f"the reference entry {list(reference)} is not in the sweep")
    ref = ref_rows.set_index("setting_id")
    kid_rel, clip_rel, ok = [], [], []
    for _, row in df.iterrows():
        r = ref.loc[row["setting_id"]]
        k = (row["kid_mean"] - r["kid_mean"]) / abs(r["kid_mean"]) if r["kid_mean"] else math.nan
        c = (row["clip_score"] - r["clip_score"]) / abs(r["clip_score"]) if r["clip_score"] else math.nan
        kid_rel.append(k)
        clip_rel.append(c)
        ok.append(bool((k <= tol) and abs(c) <= tol))
    df["kid_vs_ref"] = kid_rel
    df["clip_vs_ref"] = clip_rel
    df["within_tol"] = ok
    return df


def run(args: argparse.Namespace) -> int:
    from ..runner.stages import execute

    options = RunOptions.from_args(args)
    for flag in ("sampler", "steps"):
        if getattr(options, flag) is not None:
            raise SuiteError(
                f"--{flag} does not apply to the nfe suite: it runs every (sampler, steps) of its sweep "
                f"(glidebench/suites/{SUITE}.json); edit the sweep, or use `run coco-fid --{flag}`"
            )
    suite = load_suite(options.suite or SUITE)
    data = data_kind(options.data, resolve_root(options.coco_root))
    opts = suite.options(data, options.preset)
    where = f"{suite.path} (profile {data})"
    sweep = parse_sweep(opts.get("sweep"), where)
    reference = _as_entry(tuple(str(v) for v in opts.get("reference") or sweep[0][:2]))
    if reference not in sweep:
        raise SuiteError(f"{where}: reference {list(reference)} is not one of the sweep's entries")

    run_dirs: list[Path] = []
    unfinished: list[str] = []
    for i, entry in enumerate(sweep):
        sampler, steps, interval = entry
        print(f"== nfe sweep {i + 1}/{len(sweep)}: {entry_name(entry)}", flush=True)
        entry_options = dataclasses.replace(
            options, sampler=sampler, steps=steps, cfg_interval=interval, no_report=True
        )
        run_dir = execute(entry_options)
        if run_dir is None:  # a dry run, a rank other than 0, or a shard whose peers still have images to do:
            unfinished.append(entry_name(entry))  # go on with this process's part of the next entries
            continue
        run_dirs.append(run_dir)
    if options.dry_run:
        return 0
    if unfinished:
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # rank 0 of the same torchrun job summarises
        print(
            f"nfe: {len(unfinished)} of {len(sweep)} entries ({', '.join(unfinished)}) have no results from this "
            "process (other shards or ranks still had images to make, or compute them); once every shard is done, "
            "rerun the same command without --shard to compute what is left and summarise"
        )
        return 0
    summarise(run_dirs, reference, Path(options.out or "runs"))
    return 0


def _feature_file(run_dir: Path, setting_id: str) -> tuple[Path, Path] | None:
    """(generated, reference) Inception feature files of one setting, from the run's provenance (None when the
    run predates that record or a file is gone, e.g. the reference cache of another machine)."""

    try:
        files = json.loads((run_dir / "provenance.json").read_text())["feature_extractor"]["files"]
        gen = run_dir / "features" / files["settings"][setting_id]
        ref = cache_root() / "features" / files["reference"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return (gen, ref) if gen.is_file() and ref.is_file() else None


def kid_vs_reference_se(df: pd.DataFrame, run_dirs: list[Path], reference: tuple[str, ...]) -> list[float]:
    """Per row, the jackknife standard error of its KID relative to the reference entry's (the same setting),
    pairing sample i of both runs (same caption and seed); NaN where the features cannot be found."""

    dirs = {d.name: d for d in run_dirs}
    ref_runs = df[_is_entry(df, reference)].set_index("setting_id")["run"]
    out = []
    for _, row in df.iterrows():
        mine = _feature_file(dirs[row["run"]], row["setting_id"])
        theirs = _feature_file(dirs[ref_runs[row["setting_id"]]], row["setting_id"])
        if mine is None or theirs is None or mine[1] != theirs[1]:
            out.append(math.nan)
            continue
        with np.load(mine[0]) as g, np.load(theirs[0]) as r, np.load(mine[1]) as real:
            if len(g["pool3"]) != len(r["pool3"]):
                out.append(math.nan)
                continue
            out.append(paired_kid_jackknife(r["pool3"], g["pool3"], real["pool3"])["rel_se"])
    return out


def summarise(run_dirs: list[Path], reference: tuple[str, ...], out_root: Path) -> Path:
    """Combined table, relative KID / CLIP score, and the report, in ``OUT/nfe/summary-<hash>/`` (atomic)."""
    frames = []
    for d in run_dirs:
        df = pd.read_json(d / "results.json", orient="records", dtype={"steps": str})
        frames.append(df.assign(run=d.name))
    df = pd.concat(frames, ignore_index=True)
    df["cfg_interval"] = _interval_column(df)
    df = relative_to_reference(df, reference)
    df["kid_vs_ref_se"] = kid_vs_reference_se(df, run_dirs, reference)
    df = df.sort_values(["setting_id", "evals_per_image"], kind="stable").reset_index(drop=True)
    key = hashlib.sha256(json.dumps(sorted(d.name for d in run_dirs)).encode()).hexdigest()[:12]
    out = out_root / SUITE / f"summary-{key}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "summary.json",
        {"reference": list(_as_entry(reference)), "tolerance": TOLERANCE, "runs": [str(d) for d in run_dirs],
         "rows": json.loads(df.to_json(orient="records"))},
    )  # fmt: skip
    atomic_write_bytes(out / "summary.csv", df.to_csv(index=False).encode("utf-8"))
    cols = [
        "setting_id", "sampler", "steps", *(["cfg_interval"] if (df["cfg_interval"] != "").any() else []),
        "evals_per_image", "fid", "kid_mean", "kid_std", "precision", "recall",
        "clip_score", "kid_vs_ref", "kid_vs_ref_se", "clip_vs_ref", "within_tol", "images_per_s",
    ]  # fmt: skip
    table = markdown_table(df, cols)
    best = _cheapest_within(df, reference)
    lines = [
        f"# nfe summary: quality against model evaluations per image ({len(run_dirs)} runs)",
        "",
        f"Reference entry: {entry_name(reference)}. kid_vs_ref and clip_vs_ref are relative differences "
        f"from it; within_tol: KID at most {TOLERANCE:.0%} above the reference's and CLIP score within "
        f"{TOLERANCE:.0%}. kid_vs_ref_se: the jackknife standard error of kid_vs_ref over the shared captions "
        "(full-set KID; a difference smaller than about two of these is within the caption draw's noise). "
        "Evaluations per image count both halves of a classifier-free batch. cfg_interval (where present): "
        "classifier-free guidance only at those timesteps, the conditional model alone at the others "
        "(Kynkaanniemi et al. 2024; not GLIDE's guidance).",
        "",
        table,
        "",
        *best,
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    try:
        from ..report import render_report

        index = render_report(run_dirs, out / "report", title="Quality against sampling cost (nfe suite)")
        print(f"report: {index}")
    except Exception as e:  # the summary is complete; a report failure must not hide it
        print(
            f"WARNING: the report could not be rendered ({type(e).__name__}: {e}); see {out / 'summary.md'}"
        )
    print(f"summary: {out / 'summary.md'}", flush=True)
    return out


def _cheapest_within(df: pd.DataFrame, reference: tuple[str, ...]) -> list[str]:
    lines = []
    for setting, sub in df.groupby("setting_id", sort=True):
        ref = sub[_is_entry(sub, reference)].iloc[0]
        ok = sub[sub["within_tol"] & ~_is_entry(sub, reference)].sort_values("evals_per_image", kind="stable")
        if ok.empty:
            lines.append(f"- {setting}: no entry other than the reference is within tolerance.")
            continue
        r = ok.iloc[0]
        lines.append(
            f"- {setting}: cheapest within tolerance: {entry_name((r['sampler'], str(r['steps']), r['cfg_interval']))} "
            f"at {r['evals_per_image']:g} "
            f"evaluations per image (KID {r['kid_mean']:.4f} vs {ref['kid_mean']:.4f}, CLIP score "
            f"{r['clip_score']:.2f} vs {ref['clip_score']:.2f}; the reference takes {ref['evals_per_image']:g})."
        )
    return lines
