"""The stages of a generate-and-measure run (the runner of the coco-fid and attributes suites).

A run is a sequence of stages, one direction, every stage resumable:

    RunOptions (options.py: suite profile < preset < flags) -> RunPlan (plan.py: data source; models;
    RunSpec -> run dir)
      1. init the run dir (spec.json, prompts.json, settings.json; checked on every resume), check every
         reference image, take the worker's lock                                                (rundir.py)
      2. generate the missing images (chunk-aligned; shards / torchrun ranks own chunks k % workers; on the
         CPU at the thread count of the run's first sampling session)                           (generate.py)
      3. [barrier] rank 0, once every image exists: every feature file the metrics read (Inception and
         evaluator CLIP, cached), on the run's device; ``--features-only`` stops here          (featurepass.py)
      4. measure each setting from the cached features                                            (measure.py)
      5. write results.csv/json, results.md, provenance.json (atomic) and the report                (measure.py)

CPU threads: the CLI chooses them per stage (``RunOptions.stage_threads``, :mod:`glidebench.runner.threads`:
sampling and features on the CPUs the load average leaves free, up to one per physical core; the metric stage
on one, as docs/performance.md "Threads" measured); ``--threads N`` sets every stage.

Data: ``--coco-root`` (or ``GLIDEBENCH_COCO``) selects MS-COCO, else the embedded caption-image set (both are
:class:`glidebench.data.sources.DataSource`). Models: ``--model`` defaults to the official GLIDE (filtered)
weights when the data is MS-COCO and they are in glide's cache, else the embedded family (see
:mod:`glidebench.models`). The first line printed says which, loudly.

Scale-out: ``torchrun --nproc-per-node N -m glidebench run coco-fid ...`` (gloo process group, used only
for barriers; rank/world from the environment) and ``--shard i/n`` for job arrays compose: worker =
shard * world + rank. With shards, the last shard to finish finds every image present and computes the
metrics; ``--merge`` computes them from the images already there (an error when some are missing).
Re-running the same command is always safe: it resumes and never regenerates an image that exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import models as M
from ..features import InceptionExtractor
from ..generators.glide import GlideGenerator
from ..profile import profile_run_models
from ..provenance import now_iso
from ..store import atomic_write_json
from .featurepass import feature_pass
from .generate import clean_leftovers, generate_setting, run_sampling, sampling_options
from .measure import measure, write_outputs
from .options import RunOptions
from .plan import RunPlan, first_line, resolve_plan
from .progress import progress_of, run_progress
from .rundir import (
    Dist,
    IncompleteRun,
    RunDirError,
    RunLock,
    RunLog,
    check_reference_set,
    init_run_dir,
    missing_counts,
    pin_sampling_threads,
    record_sampling_session,
)
from .threads import use_threads

__all__ = ["IncompleteRun", "RunDirError", "RunOptions", "execute", "make_inception"]


def make_inception(source: str, device: torch.device, resize: str = "tf-bilinear", spatial: bool = False):
    """The Inception feature extractor of a run (a module-level factory, so tests can swap in a cheap one);
    ``spatial``: also sFID's spatial features."""

    return InceptionExtractor(source, device=device, resize=resize, spatial=spatial)


def run_inception(plan: RunPlan) -> object:
    """The run's Inception extractor on ``plan.device`` (``make_inception``, so tests swap in a cheap one),
    with sFID's spatial features when the spec's ``sfid`` is on (only the options that differ are passed)."""
    resize = {"resize": plan.spec.fid_resize} if plan.spec.fid_resize != "tf-bilinear" else {}
    spatial = {"spatial": True} if plan.spec.sfid else {}
    return make_inception(plan.spec.inception, plan.device, **resize, **spatial)


def execute(options: RunOptions, contract: Any = None) -> Path | None:
    """One run; returns its run directory once the results are written (None for a dry run, a rank other than
    0, a shard that left images to others, or ``--features-only``). ``contract``: a prompts file's
    (:class:`glidebench.runner.prompts.PromptsContract`) that the planned run must equal."""

    t0, started = time.monotonic(), now_iso()
    dist = Dist.from_env()
    log = RunLog(dist.rank, dist.world, options.quiet)
    try:
        plan = resolve_plan(options, dist)
        if contract is not None:
            from .prompts import check_contract

            check_contract(plan, contract)
        check_glide_options(plan)
        announce(plan, log)
        if options.dry_run:
            log.main(json.dumps(plan.spec.record(), indent=2))
            return None
        init_stage(plan, dist)
        plan.source.validate(options.progress)
        check_reference_set(plan.run_dir, plan.source, plan.spec.resolution, plan.reference_stats)
        with RunLock(plan.run_dir, plan.worker) as lock, run_progress(plan, log, dist.rank) as log:
            if lock.previous:
                log(f"  note: took over the lock of a process that did not finish ({lock.previous})")
            use_threads(options.stage_threads, "sampling")
            generate_stage(plan, log)
            dist.barrier()
            if dist.rank != 0 or not all_images_present(plan, log):
                return None
            if options.profile:
                profile_stage(plan, log)
            extractor = run_inception(plan)
            feature_pass(plan, extractor, log)
            if options.features_only:
                log.close()
                log.main(
                    "features-only: stopped after the feature stage (no metrics, no report); the same command "
                    "without --features-only computes the metrics from these files, here or on another machine "
                    "that shares the run directory and the feature cache"
                )
                return None
            use_threads(options.stage_threads, "metrics")
            measured = measure(plan, extractor, log)
            log.close()  # the results and the report print below a finished bar
            write_outputs(plan, measured, started, t0, log)
            return plan.run_dir
    finally:
        dist.close()


def check_glide_options(plan: RunPlan) -> None:
    """GLIDE's sampling flags given with another generator: refused (one line, before any work) when its
    description says it does not read them, noted when it does not describe its sampling."""
    from ..generators import GLIDE_OPTIONS, GeneratorError, glide_options_note, unread_glide_options

    given = [f for f in GLIDE_OPTIONS if getattr(plan.options, f, None) not in (None, False)]
    options = sampling_options(plan.spec, plan.device.type)
    refusal = unread_glide_options(plan.generator, given, options)
    if refusal:
        raise GeneratorError(refusal)
    note = glide_options_note(plan.generator, given, options)
    if note:
        plan.notes.append(note)


def announce(plan: RunPlan, log: RunLog) -> None:
    """The first line (which data, which models), the notes, how the generator samples and the run's shape."""

    spec, device, worker = plan.spec, plan.device, plan.worker
    sampling = run_sampling(plan.generator, spec, device.type)
    log.main(first_line(plan))
    for note in plan.notes:
        log.main(f"  note: {note}")
    if not isinstance(plan.generator, GlideGenerator):
        log.main(f"  sampling: {sampling.text()}")
    log.main(
        f"  run dir {plan.run_dir} | {len(spec.settings)} settings ({', '.join(s.setting_id for s in spec.settings)})"
        f" x {spec.total_samples} samples | {sampling.short() or 'its own sampling'} | {spec.resolution} px | chunk {spec.batch_size}"
        f" | device {device} {spec.dtype}"
        + (f" {spec.attention}" if spec.attention != "einsum" else "")
        + (" fast path" if spec.fast else "")
        + (f" ({_threads_note(plan)})" if device.type == "cpu" or plan.options.stage_threads else "")
        + (f" | worker {worker.index}/{worker.count}" if worker.count > 1 else "")
    )


def _threads_note(plan: RunPlan) -> str:
    threads = plan.options.stage_threads
    return threads.describe() if threads is not None else f"{torch.get_num_threads()} threads"


def init_stage(plan: RunPlan, dist: Dist) -> None:
    """Rank 0 writes (or checks) the run's spec files; the other ranks then check what it wrote."""
    prompts = plan.source.prompts
    if dist.rank == 0:
        init_run_dir(plan.run_dir, plan.spec, prompts)
    dist.barrier()
    if dist.rank != 0:
        init_run_dir(plan.run_dir, plan.spec, prompts)


def generate_stage(plan: RunPlan, log: RunLog) -> None:
    """Sample this worker's missing images of every setting (nothing with --merge or when none is missing)."""
    spec, run_dir, worker = plan.spec, plan.run_dir, plan.worker
    for s in spec.settings:
        clean_leftovers(run_dir, spec, s, worker)
    if plan.options.merge or not any(missing_counts(run_dir, spec, worker).values()):
        return  # nothing to sample: another --threads changes only the later stages' speed
    threads, note = pin_sampling_threads(run_dir, plan.device.type, plan.options.stage_threads)
    if note:
        log.main(f"  note: {note}")
    use_threads(threads, "sampling")
    for note in record_sampling_session(run_dir, spec, worker, plan.generator, plan.device.type):
        log.main(f"  note: {note}")
    try:
        for s in spec.settings:
            progress_of(log).begin("generate", s.setting_id)
            stats = generate_setting(
                plan.generator, spec, s, plan.source.captions, run_dir, worker, log=log,
                progress=plan.options.progress, device=str(plan.device),
                on_chunk=lambda n, sid=s.setting_id: progress_of(log).advance("generate", sid, n),
            )  # fmt: skip
            log(
                f"[{s.setting_id}] generation: {stats.images_written} images written "
                f"({stats.chunks_done} chunks {getattr(plan.generator, 'verb', 'sampled')}, "
                f"{stats.chunks_skipped} already complete)"
            )
    finally:
        plan.generator.close()


def all_images_present(plan: RunPlan, log: RunLog) -> bool:
    """True when every image of the run exists; else say who computes the metrics (--merge: an error)."""
    remaining = missing_counts(plan.run_dir, plan.spec)
    if not any(remaining.values()):
        return True
    total = sum(remaining.values())
    msg = (
        f"{total} images are still missing ({', '.join(f'{k}: {v}' for k, v in remaining.items() if v)}); "
        "the metrics are computed by the run that completes them"
    )
    if plan.options.merge:
        raise IncompleteRun(f"--merge: {msg}. Finish the other shards first (or run without --shard)")
    log.main(f"shard {plan.shard.index}/{plan.shard.count} done; {msg} (the last shard, or `--merge`).")
    return False


def profile_stage(plan: RunPlan, log: RunLog) -> None:
    """``--profile``: time one evaluation of each generator of this run (throughput suite's measurement, on the
    run's own weights, chunk size, dtype, attention and device) into RUN_DIR/throughput.json for the report."""

    spec = plan.spec
    if not isinstance(plan.generator, GlideGenerator):
        log.main(f"  note: --profile times GLIDE's models; generator {plan.generator.name} is not profiled")
        return
    loaded = M.load_models(plan.models, plan.device, spec.dtype, spec.attention)
    rows = profile_run_models(
        loaded.base,
        loaded.upsampler if spec.upsample else None,
        loaded.noised_clip if any(s.guidance == "clip" for s in spec.settings) else None,
        spec.batch_size,
        spec.dtype,
        spec.attention,
        plan.device,
        base_resolution=spec.base_resolution,
        fast=spec.fast,
    )
    doc = {
        "rows": rows,
        "measured": "one model evaluation per generator of this run, on its own weights, chunk size, dtype, "
        "attention and device (warm-up 1, median of 3; the base model at its classifier-free batch of 2 x chunk "
        "rows); end-to-end images/s per setting are in the results",
    }
    atomic_write_json(plan.run_dir / "throughput.json", doc)
    for r in rows:
        log(f"profile: {r['model']} x{r['batch_size']} {r['dtype']} {r['attention']}: {r['ms_per_eval']:.1f} ms "
            f"per evaluation, {r['gflop_per_eval']:.1f} GFLOP")  # fmt: skip
