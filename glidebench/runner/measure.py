"""The metrics stage of a generate-and-measure run (rank 0, after every image exists) and its outputs.

Owns: the reference set's Inception features (cached in the user cache, keyed by the extractor and the data
source's reference fingerprint), each setting's Inception and evaluator-CLIP features (cached in the run
directory, keyed by the image set's content), the metrics of each setting (generic ones from
:func:`glidebench.runner.results.setting_metrics`, dataset-specific ones from the data source), and the result files:
``provenance.json``, ``results.csv`` / ``results.json``, ``results.md`` (each written atomically), then the
report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glide.diffusion.schedules import space_timesteps

from .. import models as M
from ..clip_eval import count_truncated
from ..features import cache_root, feature_cache_path, features_for
from ..provenance import build_provenance
from ..refstats import check_extractor, stats_setting_metrics
from ..spec import Setting, format_interval
from ..store import ImageStore, atomic_write_json, remove_stale_tmp
from ..tracking import log_run, write_config
from .generate import expected_evals_per_image, read_timing, run_sampling
from .options import diversity_groups
from .plan import RunPlan
from .progress import progress_of
from .results import check_sample_counts, setting_metrics, write_differences, write_markdown, write_results
from .rundir import RunLog
from .threads import pairwise_threads
from .uncertainty import (
    Draws,
    comparison_pairs,
    differences,
    point_precision_recall,
    setting_uncertainty,
    source_items,
)


@dataclass
class Measured:
    """What the metrics stage hands to the writers."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    feature_files: dict[str, Any] = field(default_factory=dict)
    extractor: Any = None
    embedder: Any = None  # the evaluator CLIP (None: CLIP score skipped)
    draws: Any = None  # glidebench.runner.uncertainty.Draws (None: --bootstrap-resamples 0)
    groups: list[list[int]] = field(default_factory=list)  # the diversity captions' image indices
    replicates: dict[str, Any] = field(default_factory=dict)  # setting id -> metric -> bootstrap replicates
    differences: list[dict[str, Any]] = field(default_factory=list)  # paired differences (differences.csv)
    interval_seconds: float = 0.0  # time spent on the intervals and diversity
    clip_truncated: int | None = None  # captions longer than the evaluator CLIP's text context (truncated)
    reference_cache: dict[Any, Any] = field(default_factory=dict)  # reference-only point-metric work, per run


def _coupling(source: Any, n: int, n_ref: int) -> list[int] | None:
    """The reference image of each of the first ``n`` captions (the data source's), or None."""
    index = getattr(source, "caption_reference_index", None)
    if index is None or len(index) < n or any(i >= n_ref for i in index[:n]):
        return None
    return list(index[:n])


def feature_batch_size(plan: RunPlan) -> int:
    """Small batches on CPU: big activations are mmap'ed per op by glibc (millions of page faults at batch
    32)."""
    return int(plan.options.feature_batch_size or (64 if plan.device.type == "cuda" else 8))


def _interval_applies(plan: RunPlan, s: Setting) -> bool:
    return plan.spec.cfg_interval is not None and s.guidance == "cfg" and s.scale != 1.0


def analytic_evals(plan: RunPlan, s: Setting) -> float:
    """Model evaluations per image of setting ``s`` from the plan (when no timing record says)."""

    spec = plan.spec
    if "base" not in plan.models.configs:  # a generator other than GLIDE that did not report its evaluations
        return float("nan")
    kept = space_timesteps(plan.models.configs["base"].diffusion_steps, spec.steps)
    n_up = 0
    if spec.upsample:
        n_up = len(space_timesteps(plan.models.configs["upsample"].diffusion_steps, spec.up_steps))
    guided = None
    if _interval_applies(plan, s):
        lo, hi = spec.cfg_interval
        guided = sum(lo <= t <= hi for t in kept)
    return expected_evals_per_image(spec, s, len(kept), n_up, guided)


def measure(plan: RunPlan, extractor: Any, log: RunLog) -> Measured:
    """Features (cached) and metrics of every setting of ``plan``; one result row per setting."""

    run_dir, spec = plan.run_dir, plan.spec
    for d in (run_dir, run_dir / "features"):
        remove_stale_tmp(d)  # a killed metrics process's temp files (old ones only: another may be writing)
    fbatch, progress = feature_batch_size(plan), plan.options.progress
    log.main(
        f"metrics: Inception {extractor.name} ({extractor.source}); reference set of {plan.source.reference_count} "
        "images"
    )
    ref, ref_fp, t_ref = None, None, time.monotonic()
    if plan.reference_stats is not None:  # --reference-stats: FID from mu / sigma, no reference image read
        check_extractor(plan.reference_stats, extractor)
        log.main(
            f"  reference statistics: {plan.reference_stats.path} (sha256 {plan.reference_stats.sha256[:16]})"
        )
    else:
        ref_fp = plan.source.reference_fingerprint(spec.resolution)
        ref = features_for(
            extractor, ref_fp, plan.source.reference_batches(spec.resolution, fbatch), plan.source.reference_count,
            cache_root() / "features", fbatch, progress,
        )  # fmt: skip
        log.main(
            f"  reference features: {len(ref['pool3'])} x {ref['pool3'].shape[1]} ({time.monotonic() - t_ref:.1f} s)"
        )
    note = plan.models.eval_clip_note()
    if note:
        log.main(f"  {note}")
    embedder, clip_warning = M.load_eval_clip(plan.models, plan.device)
    warnings = plan.run_warnings
    if clip_warning:
        warnings.append(clip_warning)
        log.main(f"  {clip_warning}")
    out = Measured(extractor=extractor, embedder=embedder)
    out.feature_files = {
        "reference": feature_cache_path(extractor, ref_fp, cache_root() / "features").name if ref_fp else None
    }
    out.feature_files["settings"] = {}
    text_emb = (
        embedder.embed_texts(plan.source.captions[: spec.num_samples]) if embedder is not None else None
    )
    if embedder is not None:
        out.clip_truncated = count_truncated(embedder, plan.source.captions[: spec.num_samples])

    out.groups = diversity_groups(spec.num_samples, spec.samples_per_prompt, spec.diversity_prompts)
    if (
        spec.bootstrap_resamples and ref is not None
    ):  # a statistics file has no reference features to resample
        out.draws = Draws.make(
            spec.num_samples,
            len(ref["pool3"]),
            len(out.groups),
            spec.bootstrap_resamples,
            spec.seed,
            method=spec.intervals,
            coupling=_coupling(plan.source, spec.num_samples, len(ref["pool3"])),
        )
    for s in spec.settings:
        out.rows.append(_measure_setting(plan, s, out, ref, text_emb, warnings, log))
    if out.draws is not None:
        pairs = comparison_pairs(spec.settings)
        out.differences = differences(pairs, out.replicates, out.draws)
        log.main(f"  intervals and diversity: {out.interval_seconds:.1f} s ({out.draws.describe()})")
    return out


def _intervals(
    plan: RunPlan,
    s: Setting,
    out: Measured,
    store: ImageStore,
    gen: dict,
    ref: dict,
    clip: tuple,
    log: RunLog,
) -> dict[str, Any]:
    """One setting's interval columns (its replicates kept in ``out``). Run before the point metrics: the
    jackknife's pass over the pairwise tiles also gives the point precision and recall."""

    spec, n, fbatch = plan.spec, plan.spec.num_samples, feature_batch_size(plan)
    check_sample_counts(n, len(ref["pool3"]), spec.prc_k)
    t_u = time.monotonic()
    items = source_items(plan.source, store, list(range(n)), fbatch)
    cols, out.replicates[s.setting_id] = setting_uncertainty(
        out.draws, gen, ref, n, spec.prc_k, clip if clip[0] is not None else None, items, out.groups,
        device=plan.device, pair_threads=pairwise_threads(plan.options.stage_threads),
    )  # fmt: skip
    out.interval_seconds += time.monotonic() - t_u
    progress_of(log).advance("intervals", s.setting_id, n)
    return cols | {"samples_per_prompt": spec.samples_per_prompt, "diversity_prompts": len(out.groups)}


def _measure_setting(
    plan: RunPlan, s: Setting, out: Measured, ref: dict, text_emb: Any, warnings: list[str], log: RunLog
) -> dict[str, Any]:

    t_s = time.monotonic()
    progress_of(log).begin("metrics", s.setting_id, reset=False)  # the run's progress: measuring this setting
    spec, run_dir, fbatch = plan.spec, plan.run_dir, feature_batch_size(plan)
    indices, n = list(range(spec.total_samples)), spec.num_samples  # the protocol's images are the first n
    store = ImageStore.of(run_dir, s.setting_id)
    fp = store.fingerprint(indices)
    out.feature_files["settings"][s.setting_id] = feature_cache_path(
        out.extractor, fp, run_dir / "features"
    ).name

    def features(extractor: Any) -> dict:
        return features_for(
            extractor, fp, lambda: store.batches(indices, fbatch), len(indices), run_dir / "features", fbatch,
            plan.options.progress,
        )  # fmt: skip

    gen = features(out.extractor)  # every index; the protocol's metrics use the first n rows
    clip_all = features(out.embedder)["clip_image"] if out.embedder is not None else None
    clip_pair = (clip_all[:n], text_emb) if clip_all is not None else None
    interval_cols = (
        _intervals(plan, s, out, store, gen, ref, (clip_all, text_emb), log) if out.draws is not None else {}
    )
    if ref is None:  # --reference-stats (glidebench.refstats): FID from the file; KID, P&R not measured
        metrics, notes = stats_setting_metrics(
            {k: v[:n] for k, v in gen.items()}, plan.reference_stats, clip_pair
        )
    else:
        prc = (
            point_precision_recall(out.draws, out.replicates[s.setting_id]) if out.draws is not None else None
        )
        metrics, notes = setting_metrics(
            {k: v[:n] for k, v in gen.items()}, ref, k=spec.prc_k, kid_subset_size=spec.kid_subset_size,
            seed=spec.seed, clip_pair=clip_pair, reference_cache=out.reference_cache, prc=prc,
        )  # fmt: skip
    if out.clip_truncated is not None and clip_pair is not None:
        metrics["clip_truncated"] = out.clip_truncated
    metrics |= plan.source.setting_metrics(store, indices[:n], fbatch) | interval_cols
    progress_of(log).advance("metrics", s.setting_id, n)
    timing = read_timing(run_dir, s.setting_id, spec.total_samples, spec.batch_size)
    evals = timing.evals_per_image
    if evals is None:
        evals = analytic_evals(plan, s)
    if timing.chunks_timed < timing.chunks_total:
        notes.append(
            f"timing covers {timing.chunks_timed} of {timing.chunks_total} chunks (the rest were written by an "
            "interrupted process)"
        )
    log.main(
        f"  [{s.setting_id}] FID {metrics['fid']:.2f}  "
        + (f"sFID {metrics['sfid']:.2f}  " if "sfid" in metrics else "")
        + f"KID {metrics['kid_mean']:.4f}  P {metrics['precision']:.3f}  "
        f"R {metrics['recall']:.3f}  CLIP {metrics['clip_score']:.2f}{plan.source.metric_summary(metrics)}  "
        f"({time.monotonic() - t_s:.1f} s)"
    )
    interval = {"cfg_interval": format_interval(spec.cfg_interval)} if _interval_applies(plan, s) else {}
    sampling = run_sampling(plan.generator, spec, plan.device.type)  # the generator's own words
    return {
        "setting_id": s.setting_id, "model": spec.model_label, "guidance": s.guidance, "scale": s.scale,
        "sampler": sampling.sampler, "steps": sampling.steps, "resolution": spec.resolution,
        "n_samples": spec.num_samples,
        **interval, "evals_per_image": evals, **metrics,
        "wall_s": timing.seconds if timing.chunks_timed else float("nan"),
        "images_per_s": timing.images / timing.seconds if timing.seconds > 0 else float("nan"),
        "warnings": "; ".join(warnings + notes), "data": spec.data,
        "n_reference": len(ref["pool3"]) if ref is not None else spec.reference_size,
    }  # fmt: skip


def write_outputs(plan: RunPlan, m: Measured, started: str, t0: float, log: RunLog) -> None:
    """provenance.json, results.csv/json and results.md (each atomic), printed, then the report."""
    from .rundir import sampling_sessions

    spec, extractor, embedder = plan.spec, m.extractor, m.embedder
    sampling = run_sampling(plan.generator, spec, plan.device.type)
    checkpoints = {
        f"{spec.model_label}/{role}": ident for role, ident in sorted(plan.models.identities.items())
    }
    feature_record = {
        "inception": extractor.name,
        "inception_source": extractor.source,
        "inception_fingerprint": extractor.fingerprint,
        "clip": getattr(embedder, "name", None),
        "clip_fingerprint": getattr(embedder, "fingerprint", None),
        "clip_score_definition": "100 x mean cosine(image, caption), no clamp; clamped variant max(cos, 0); "
        "clip_score_2p5: CLIPScore (Hessel et al. 2021), 2.5 x mean max(cos, 0); captions longer than the text "
        "context are truncated (clip_truncated counts them)",
        "fid_resize": spec.fid_resize,
        **(
            {"sfid": "FID of Inception's mixed_6/conv[:7] features (2023-d, HWC), the ADM evaluator's sFID"}
            if spec.sfid
            else {}
        ),
        "fid_reference": plan.reference_stats.record()
        if plan.reference_stats is not None
        else "reference images",
        "prc": f"k={spec.prc_k}, the whole reference set (n_reference in the results) against the generated set",
        "intervals": m.draws.record() if m.draws is not None else "none (--bootstrap-resamples 0)",
        "diversity": (
            f"{spec.samples_per_prompt} images for each of the first {len(m.groups)} captions (indices "
            f"{spec.num_samples}..{spec.total_samples - 1} are the extra draws, seed + index); mean pairwise "
            "Euclidean distance of pool3, mean pairwise cosine distance of the evaluator CLIP's image embeddings, "
            "Vendi score (cosine kernel) of each"
        )
        if m.groups
        else "none (--samples-per-prompt 1)",
        "kid": f"polynomial kernel degree 3, subsets of min({spec.kid_subset_size}, N), 100 subsets",
        # Inception feature files: the reference set's in the user cache (features/), each setting's in the run
        "files": m.feature_files,
    }
    provenance = build_provenance(
        started, t0, time.monotonic(), plan.device, checkpoints, plan.source.record, feature_record,
        extra={"spec_fingerprint": spec.fingerprint, "model_cards": plan.models.cards, "notes": plan.notes,
               "sampling": sampling.record(), "sampling_sessions": sampling_sessions(plan.run_dir),
               "chunking": f"chunks of {spec.batch_size} indices, each always sampled whole"},
    )  # fmt: skip
    atomic_write_json(plan.run_dir / "provenance.json", provenance)
    if m.draws is not None:
        write_differences(plan.run_dir, m.differences)
    df = write_results(plan.run_dir, m.rows)

    logged = log_run(plan.options.log_to, plan, write_config(plan, m.rows, feature_record))
    if logged:
        log.main(f"logged the metrics and config to {logged}")
    header = [
        f"# {spec.suite} results: {spec.model_label} on {spec.data} ({spec.split}), {spec.resolution} px",
        "",
        f"{spec.num_samples} samples per setting, {sampling.short()}, seed {spec.seed}, "
        f"Inception: {extractor.name}, CLIP score: {getattr(embedder, 'name', None) or 'skipped'}.",
    ]
    if spec.model == "plugin":  # not GLIDE: how this generator samples, in its own words
        header += ["", f"Sampling: {sampling.text()}."]
    if plan.models.random_init:
        header.insert(1, "\n**RANDOM-INITIALISED MODEL: these numbers are a plumbing check, not a result.**")
    md = write_markdown(plan.run_dir, df, header, m.differences, spec.intervals)
    log.main(f"results: {plan.run_dir / 'results.csv'} (+ results.json, provenance.json, {md.name})")
    print(md.read_text(), flush=True)
    if not plan.options.no_report:
        render_report(plan.run_dir, log)


def render_report(run_dir: Path, log: RunLog) -> None:
    """The run's HTML/Markdown report; a failure here is a warning (the results are complete)."""
    try:
        from ..report import render_report as render
    except ImportError:
        return
    try:
        index = render([run_dir], run_dir / "report")
        log.main(f"report: {index}")
    except Exception as e:  # the results are complete; a report failure must not hide them
        log.main(
            f"WARNING: the report could not be rendered ({type(e).__name__}: {e}); the results are complete in "
            f"{run_dir}. Retry with `glidebench report {run_dir}`"
        )
