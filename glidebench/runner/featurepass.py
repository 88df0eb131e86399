"""The feature stage of a generate-and-measure run: every feature file the metrics stage reads, on the run's device.

Owns which image sets a run embeds and with what: the reference set's Inception features (user cache,
``cache_root()/features``) and each setting's Inception and evaluator-CLIP image features (``RUN_DIR/features``),
keyed exactly as the metrics stage (:mod:`glidebench.runner.measure`) reads them, through the same functions
(:func:`glidebench.features.features_for`, :func:`glidebench.features.feature_cache_path`,
:func:`glidebench.runner.measure.feature_batch_size`). It runs in the process that generated, on ``plan.device``,
in batches, after generation and before the metrics:

- a plain run computes here what is not cached yet; the metrics stage then finds every file;
- ``run coco-fid --features-only`` (e.g. on a GPU node) stops after this stage: no metrics, no report. A later
  plain run of the same command (e.g. on a CPU node) resumes, finds every image and every feature file, and
  extracts nothing again. Caption (text) embeddings are not cached: the metrics stage computes them.

Each set's line in the run log says whether its file was computed or found, how many rows, and the seconds.

sFID (:func:`spatial_features`, the spec's ``sfid``): the run's Inception also gives its spatial features
(``spatial``, 2023-d, :mod:`glidebench.metrics.sfid`) with ``--sfid``, and by itself when ``--reference-stats``
is an ADM batch that brings sFID's statistics (``mu_s`` / ``sigma_s``). They come from the same Inception pass
and are stored in feature files of their own (the extractor's fingerprint says ``spatial``), the reference
set's too. ``sfid`` is part of the run's identity, so ``--sfid`` makes a new run directory (docs/reproducing.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import models as M
from ..features import cache_root, feature_cache_path, features_for
from ..spec import Setting
from ..store import ImageStore, remove_stale_tmp
from .plan import RunPlan
from .progress import progress_of
from .rundir import RunLog

__all__ = ["FeaturePass", "feature_pass"]


@dataclass
class FeaturePass:
    """What the feature stage did: per image set and extractor, its file and whether it was computed."""

    files: dict[str, str] = field(default_factory=dict)  # "reference/inception", "cfg-3/clip" -> file name
    computed: list[str] = field(default_factory=list)  # the keys of ``files`` computed by this pass
    seconds: float = 0.0


def _one(
    done: FeaturePass, key: str, extractor: Any, fingerprint: str, batches: Any, total: int, cache_dir: Any,
    plan: RunPlan, log: RunLog,
) -> dict:  # fmt: skip
    from .measure import feature_batch_size

    path = feature_cache_path(extractor, fingerprint, cache_dir)
    cached, t0 = path.is_file(), time.monotonic()
    fbatch = feature_batch_size(plan)
    progress = progress_of(log)
    batches = progress.counting("features", key, batches)  # each embedded batch moves the run's progress
    feats = features_for(extractor, fingerprint, batches, total, cache_dir, fbatch, plan.options.progress)
    progress.finish_stage("features", key)  # found in the cache: done at once
    done.files[key] = path.name
    if not cached:
        done.computed.append(key)
    rows = next(iter(feats.values()))
    spatial = f" + {feats['spatial'].shape[1]} spatial" if "spatial" in feats else ""
    log.main(
        f"  features {key}: {rows.shape[0]} x {rows.shape[1]}{spatial} {'found in the cache' if cached else 'computed'} "
        f"({extractor.name}, {time.monotonic() - t0:.1f} s) -> {path.name}"
    )
    return feats


def _setting(done: FeaturePass, plan: RunPlan, s: Setting, extractors: dict[str, Any], log: RunLog) -> None:
    from .measure import feature_batch_size

    spec, run_dir, fbatch = plan.spec, plan.run_dir, feature_batch_size(plan)
    indices = list(range(spec.total_samples))  # every index, as the metrics stage embeds them
    store = ImageStore.of(run_dir, s.setting_id)
    fp = store.fingerprint(indices)
    for name, extractor in extractors.items():
        _one(done, f"{s.setting_id}/{name}", extractor, fp, lambda: store.batches(indices, fbatch), len(indices),
             run_dir / "features", plan, log)  # fmt: skip


def feature_pass(plan: RunPlan, extractor: Any, log: RunLog, embedder: Any = None) -> FeaturePass:
    """Compute (or find) every feature file of ``plan``'s metrics stage with ``extractor`` (Inception) and
    the run's evaluator CLIP (``embedder``; loaded on ``plan.device`` when None, skipped with the metrics
    stage's warning when it cannot be loaded)."""
    from .measure import feature_batch_size

    spec, t0, done = plan.spec, time.monotonic(), FeaturePass()
    remove_stale_tmp(plan.run_dir / "features")  # a killed feature process's temp files (old ones only)
    log.main(f"features: on {plan.device}, batches of {feature_batch_size(plan)}")
    if plan.reference_stats is None:
        fbatch = feature_batch_size(plan)
        _one(
            done, "reference/inception", extractor, plan.source.reference_fingerprint(spec.resolution),
            plan.source.reference_batches(spec.resolution, fbatch), plan.source.reference_count,
            cache_root() / "features", plan, log,
        )  # fmt: skip
    else:
        log.main("  reference features: none (--reference-stats gives FID its statistics)")
    if embedder is None:
        embedder, warning = M.load_eval_clip(plan.models, plan.device)
        if warning:
            log.main(f"  {warning}")
    extractors = {"inception": extractor} | ({"clip": embedder} if embedder is not None else {})
    if embedder is None:  # no evaluator CLIP: its stages have nothing to do
        for s in spec.settings:
            progress_of(log).finish_stage("features", f"{s.setting_id}/clip")
    for s in spec.settings:
        _setting(done, plan, s, extractors, log)
    done.seconds = time.monotonic() - t0
    log.main(
        f"features: {len(done.computed)} of {len(done.files)} files computed, the rest found, in "
        f"{done.seconds:.1f} s on {plan.device}"
    )
    return done
