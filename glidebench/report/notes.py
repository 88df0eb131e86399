"""The report's "Read this first" notes and what a run records as its checkpoints.

This module owns the plain-words warnings a reader must see before any number: each run's warnings
(``run_warnings``), merged into one list for the whole report (``merged_warnings``) in which a warning every
run shares is stated once and one that only some runs have names them, so that a report of several runs shows
the box once and its per-run differences in words. It also tells a run's checkpoint hashes apart from the
generator and its arguments that a plug-in run records beside them (``split_checkpoints``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .figstyle import MIN_FID_SAMPLES
from .loading import RunData

# a checkpoint record's value: a SHA-256 (or a prefix of one), or the random initialisation's seed record
_HASH = re.compile(r"^(sha256[:=])?[0-9a-f]{12,64}$|^random", re.I)
# harness warnings the report's own first notes already say in plain words
_SAID = ("embedded caption-image set, not MS-COCO",)


def split_checkpoints(run: RunData) -> tuple[dict[str, str], dict[str, str]]:
    """(checkpoints, generator record): provenance.json's ``checkpoints`` entries whose value is a hash, and
    the others (a plug-in's generator, its arguments, sampler and steps), keys without the model prefix."""
    ckpts: dict[str, str] = {}
    generator: dict[str, str] = {}
    for key, value in (run.provenance.get("checkpoints") or {}).items():
        text = str(value)
        (ckpts if _HASH.match(text) else generator)[str(key)] = text
    models = run.models
    if len(models) == 1:  # "model/base" -> "base": the model is named once, in its own row
        prefix = models[0] + "/"
        generator = {k.removeprefix(prefix): v for k, v in generator.items()}
    return ckpts, generator


def run_warnings(run: RunData) -> list[str]:
    """Plain-words warnings: things a reader must know before trusting any number of this run."""
    out: list[str] = []
    kind = run.data_kind
    if kind == "embedded":
        out.append(
            "The embedded toy set (simple rendered shapes with generated captions) was used, not MS-COCO: FID, "
            "precision and recall are measured against those shapes and cannot be compared with the paper's or "
            "any COCO number."
        )
    elif kind == "unknown":
        out.append("The run does not record where its captions and reference images came from.")
    if run.random_model:
        out.append(
            "The model has random weights: the samples are noise, and the metrics only show that the "
            "harness runs end to end."
        )
    elif run.is_glide and not split_checkpoints(run)[0]:
        out.append(
            "No checkpoint hashes are recorded, so the weights behind these numbers cannot be identified."
        )
    ns = run.results["n_samples"]
    small = run.results[ns < MIN_FID_SAMPLES]
    if len(small):
        out.append(
            f"{len(small)} of {len(run.results)} settings have fewer than {MIN_FID_SAMPLES} samples (as few as "
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
            if w and not (kind == "embedded" and w.startswith(_SAID)):
                per_warning.setdefault(w, []).append(sid)
    for w, sids in per_warning.items():
        where = "all settings" if len(sids) == len(run.results) else "settings " + ", ".join(sids)
        out.append(f"Harness warning ({where}): {w}")
    return out


def merged_warnings(runs: Sequence[RunData]) -> list[str]:
    """Every run's warnings in one list, in first-seen order: a warning all runs share once, as it is; one
    only some runs have, prefixed by the runs it applies to ('Only in A, B: ...')."""
    per_run = [run_warnings(r) for r in runs]
    order: list[str] = []
    where: dict[str, list[str]] = {}
    for run, warnings in zip(runs, per_run):
        for w in warnings:
            if w not in where:
                order.append(w)
                where[w] = []
            where[w].append(run.label)
    if len(runs) < 2:
        return order
    return [w if len(where[w]) == len(runs) else f"Only in {', '.join(where[w])}: {w}" for w in order]


def glide_notes_apply(runs: Sequence[Any]) -> bool:
    """True when some run is a GLIDE run (its spec does not name another generator)."""
    return any(r.is_glide for r in runs)
