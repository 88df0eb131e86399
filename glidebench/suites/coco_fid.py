"""The coco-fid suite: zero-shot MS-COCO FID / CLIP score of classifier-free vs CLIP guidance (GLIDE, sec. 5).

Owns the run orchestration, one direction, every stage resumable (DESIGN.md):

    options (suite profile < preset < flags) -> RunSpec (fingerprint -> run dir)
      -> prompts (COCO captions or the embedded test split; seed + index per sample)
      -> generate (chunk-aligned, only missing images; shards / torchrun ranks own chunks k % workers)
      -> [barrier] -> rank 0: features (cached) -> metrics -> results.csv/json + provenance.json (atomic)
      -> results.md and the report

Data and models are chosen like this: ``--coco-root`` (or ``GLIDEBENCH_COCO``) selects MS-COCO, else the
embedded caption-image set; ``--model`` defaults to the official GLIDE (filtered) weights when the data is
COCO and they are in glide's cache, else the embedded family (random-initialised until trained files exist;
see :mod:`glidebench.models`). The first line printed says which, loudly.

Scale-out: ``torchrun --nproc-per-node N -m glidebench run coco-fid ...`` (gloo process group, used only
for barriers; rank/world from the environment) and ``--shard i/n`` for job arrays compose: worker =
shard * world + rank. With shards, the last shard to finish finds every image present and computes the
metrics; ``--merge`` computes them from the images already there (an error when some are missing).
Re-running the same command is always safe: it resumes and never regenerates an image that exists.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..generate import (
    chunk_bounds,
    clean_leftovers,
    expected_evals_per_image,
    generate_setting,
    owned_chunks,
    read_timing,
)
from ..spec import RunSpec, Shard, Worker, format_interval, make_settings, parse_interval, parse_scales
from ..store import ImageStore, atomic_write_json, read_json, remove_stale_tmp, to_json
from . import SuiteDef, load_suite
from .embedded_protocol import (
    Prompt,
    embedded_attribute_metrics,
    embedded_prompts,
    embedded_reference_image,
    prompt_scenes,
)

SUITE = "coco-fid"


class RunDirError(RuntimeError):
    """A run directory that holds another run's files."""


class IncompleteRun(RuntimeError):
    """--merge found images missing."""


# ----------------------------------------------------------------------------------------------------------
# Distributed context


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised: bool = False

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        d = cls(rank, world, local)
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # gloo: barriers only (works for CPU and GPU ranks); long timeout because ranks may finish
                # generation hours apart.
                dist.init_process_group(
                    "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(hours=72)
                )
            d.initialised = True
        return d

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False


# ----------------------------------------------------------------------------------------------------------
# Options -> spec


def _options(args: argparse.Namespace, suite: SuiteDef, data: str) -> dict[str, Any]:
    opts = suite.options(data, getattr(args, "preset", None))
    flag_map = {
        "captions": "captions", "num_samples": "num_samples", "reference_size": "reference_size", "seed": "seed",
        "sampler": "sampler", "steps": "steps", "resolution": "resolution", "up_sampler": "up_sampler",
        "up_steps": "up_steps", "upsample_temp": "upsample_temp", "batch_size": "batch_size", "dtype": "dtype",
        "inception": "inception",
    }  # fmt: skip
    for attr, key in flag_map.items():
        v = getattr(args, attr, None)
        if v is not None:
            opts[key] = v
    if data == "coco" and getattr(args, "coco_split", None):
        opts["split"] = args.coco_split
    if getattr(args, "embedded_split", None):
        if data != "embedded":
            raise ValueError("--embedded-split applies to the embedded set; for MS-COCO use --coco-split")
        opts["split"] = args.embedded_split
    opts["cfg"] = (
        parse_scales(args.cfg, "--cfg") if getattr(args, "cfg", None) is not None else list(opts["cfg"])
    )
    opts["clip_explicit"] = getattr(args, "clip", None) is not None
    opts["clip"] = parse_scales(args.clip, "--clip") if opts["clip_explicit"] else list(opts["clip"])
    if getattr(args, "cfg_interval", None) is not None:
        opts["cfg_interval"] = args.cfg_interval or None  # '' = every step
    if opts.get("cfg_interval") is not None:
        opts["cfg_interval"] = parse_interval(opts["cfg_interval"], "--cfg-interval")
    if getattr(args, "attention", None) is not None:
        opts["attention"] = args.attention
    opts["caption_style"] = getattr(args, "caption_style", None) or opts.get("caption_style", "exact")
    if data != "embedded" and opts["caption_style"] != "exact":
        raise ValueError("--caption-style short is for the embedded set; MS-COCO captions are people's own")
    if getattr(args, "limit", None):
        opts["num_samples"] = min(int(opts["num_samples"]), int(args.limit))
    return opts


def _resolution_arg(value: Any, family: str) -> int | None:
    """'base' -> None (the base model's size), 'up' -> the upsampler's size, an int -> itself."""
    from ..models import upsampler_resolution

    if value is None or value == "base":
        return None
    if value == "up":
        return upsampler_resolution(family)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--resolution {value!r}: give a number of pixels (e.g. 64 or 256), 'base' or 'up'"
        ) from None


def _write_or_check(path: Path, obj: Any) -> None:
    want = json.loads(to_json(obj))
    if path.exists():
        have = read_json(path)
        if have != want:
            raise RunDirError(
                f"{path} was written by a different run (its content differs from this run's). Remove the "
                f"directory {path.parent} or choose another --out"
            )
        return
    atomic_write_json(path, obj)


def init_run_dir(run_dir: Path, spec: RunSpec, prompts: list[Prompt]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_or_check(run_dir / "spec.json", spec.record())
    _write_or_check(run_dir / "prompts.json", [p.to_dict() for p in prompts])
    _write_or_check(run_dir / "settings.json", {s.setting_id: spec.setting_record(s) for s in spec.settings})


def missing_counts(run_dir: Path, spec: RunSpec, worker: Worker | None = None) -> dict[str, int]:
    """Missing images per setting (only in ``worker``'s chunks when given)."""
    chunks = chunk_bounds(spec.num_samples, spec.batch_size)
    ks = owned_chunks(len(chunks), worker) if worker is not None else range(len(chunks))
    out = {}
    for s in spec.settings:
        store = ImageStore(run_dir / "images" / s.setting_id)
        out[s.setting_id] = sum(len(store.missing(range(*chunks[k]))) for k in ks)
    return out


# ----------------------------------------------------------------------------------------------------------
# The run


class _Log:
    def __init__(self, rank: int, world: int, quiet: bool) -> None:
        self.rank, self.world, self.quiet = rank, world, quiet

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        prefix = f"[rank {self.rank}] " if self.world > 1 else ""
        print(prefix + msg, flush=True)

    def main(self, msg: str) -> None:
        if self.rank == 0:
            print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    """`glidebench run coco-fid` (and the suites that share its runner): returns the exit code (errors raise;
    the CLI turns them into messages)."""
    execute(args)
    return 0


def execute(args: argparse.Namespace) -> Path | None:
    """One run of the suite ``args.suite``; returns its run directory once the results are written (None for
    a dry run, a rank other than 0, or a shard that left images to others)."""
    from .. import models as M
    from ..data.coco import CocoCaptions, CocoError, resolve_root
    from ..provenance import now_iso

    t0, started = time.monotonic(), now_iso()
    dist_ctx = Dist.from_env()
    log = _Log(dist_ctx.rank, dist_ctx.world, bool(getattr(args, "quiet", False)))
    try:
        suite = load_suite(getattr(args, "suite", None) or SUITE)
        coco_root = resolve_root(getattr(args, "coco_root", None))
        data = data_kind(args, coco_root)
        if data == "coco" and coco_root is None:
            raise CocoError("--data coco needs the dataset: pass --coco-root DIR or set GLIDEBENCH_COCO")
        if data == "coco" and getattr(args, "captions", None) == "single-object":
            raise ValueError(
                "--captions single-object is for the embedded set; MS-COCO takes one-per-image or random"
            )
        opts = _options(args, suite, data)
        family = getattr(args, "model", None)
        if family is None:
            res_probe = opts["resolution"]
            official_ok = M.official_available(256 if res_probe in ("up", 256, "256") else 64)
            family = "official" if data == "coco" and official_ok else "embedded"
        resolution = _resolution_arg(opts["resolution"], family)

        # CLIP guidance: explicit scales always; the profile's scales only with a trained noised CLIP.
        clip_scales = opts["clip"]
        notes: list[str] = []
        if not opts["clip_explicit"] and clip_scales:
            files = M.embedded_files(caption_style=opts["caption_style"]) if family == "embedded" else {}
            has_clip = (
                ("noised-clip" in files and "base" in files)
                if family == "embedded"
                else all(M.is_cached(n) for n in M.OFFICIAL_NAMES["noised-clip"])
            )
            if not has_clip:
                notes.append("CLIP-guidance settings skipped: no trained noised CLIP for this model family")
                clip_scales = []
        plan = M.plan_models(
            family, resolution, want_noised_clip=bool(clip_scales), data=data,
            caption_style=opts["caption_style"],
        )  # fmt: skip
        notes = plan.notes + notes

        if data == "embedded":
            prompts, records, data_record, data_id = embedded_prompts(opts)
            coco = None
        else:
            coco = CocoCaptions(coco_root, opts["split"])
            chosen = coco.select(int(opts["num_samples"]), opts["captions"], int(opts["seed"]))
            prompts = [Prompt(i, c.caption, int(opts["seed"]) + i, c.source) for i, c in enumerate(chosen)]
            records = coco.reference_files(int(opts["reference_size"]), int(opts["seed"]))
            coco.check_files(records)
            data_record = coco.selection_record(len(prompts), opts["captions"], int(opts["seed"]))
            data_record |= {
                "reference_size": len(records),
                "reference_preprocess": "center crop, PIL bicubic",
            }
            data_id = coco.annotations_sha256[:16]

        device = torch.device(
            getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        if device.type == "cuda" and dist_ctx.world > 1:
            device = torch.device("cuda", dist_ctx.local_rank)
        settings = make_settings(opts["cfg"], clip_scales, bool(getattr(args, "unguided", False)))
        spec = RunSpec(
            suite=suite.name, suite_version=suite.version, model=family, model_label=plan.label,
            weights=tuple(plan.identities.items()), data=data, split=opts["split"], data_id=data_id,
            captions=opts["captions"], num_samples=int(opts["num_samples"]), reference_size=len(records),
            seed=int(opts["seed"]), settings=settings, sampler=opts["sampler"], steps=str(opts["steps"]),
            resolution=resolution or plan.base_resolution, base_resolution=plan.base_resolution,
            up_sampler=opts["up_sampler"], up_steps=str(opts["up_steps"]), upsample_temp=float(opts["upsample_temp"]),
            batch_size=int(opts["batch_size"]), dtype=opts["dtype"], device_type=device.type,
            inception=opts["inception"], kid_subset_size=int(opts["kid_subset_size"]), prc_k=int(opts["prc_k"]),
            random_init=plan.random_init, cfg_interval=opts.get("cfg_interval"),
            attention=opts.get("attention", "einsum"), caption_style=opts["caption_style"],
        )  # fmt: skip
        shard = Shard.parse(getattr(args, "shard", None))
        worker = Worker.make(shard, dist_ctx.rank, dist_ctx.world)
        out = Path(getattr(args, "out", None) or "runs")
        run_dir = spec.run_dir(out)

        log.main(_first_line(data, family, plan, opts, coco_root, suite.name))
        for note in notes:
            log.main(f"  note: {note}")
        log.main(
            f"  run dir {run_dir} | {len(settings)} settings ({', '.join(s.setting_id for s in settings)}) x "
            f"{spec.num_samples} samples | {spec.sampler} {spec.steps} | {spec.resolution} px | chunk {spec.batch_size}"
            f" | device {device} {spec.dtype}"
            + (f" {spec.attention}" if spec.attention != "einsum" else "")
            + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else "")
            + (f" | worker {worker.index}/{worker.count}" if worker.count > 1 else "")
        )

        if getattr(args, "dry_run", False):
            log.main(json.dumps(spec.record(), indent=2))
            return None
        if dist_ctx.rank == 0:
            init_run_dir(run_dir, spec, prompts)
        dist_ctx.barrier()
        if dist_ctx.rank != 0:
            init_run_dir(run_dir, spec, prompts)  # verifies what rank 0 wrote

        captions = [p.caption for p in prompts]
        merge = bool(getattr(args, "merge", False))
        for s in spec.settings:
            clean_leftovers(run_dir, spec, s, worker)
        if not merge and any(missing_counts(run_dir, spec, worker).values()):
            loaded = M.load_models(plan, device, spec.dtype, spec.attention)
            pipeline = loaded.pipeline(device, spec.dtype)
            for s in spec.settings:
                stats = generate_setting(
                    pipeline,
                    spec,
                    s,
                    captions,
                    run_dir,
                    worker,
                    log=log,
                    progress=bool(getattr(args, "progress", False)),
                )
                log(
                    f"[{s.setting_id}] generation: {stats.images_written} images written "
                    f"({stats.chunks_done} chunks sampled, {stats.chunks_skipped} already complete)"
                )
            del pipeline, loaded
        dist_ctx.barrier()
        if dist_ctx.rank != 0:
            return None

        remaining = missing_counts(run_dir, spec)
        if any(remaining.values()):
            total = sum(remaining.values())
            msg = (
                f"{total} images are still missing ({', '.join(f'{k}: {v}' for k, v in remaining.items() if v)}); "
                "the metrics are computed by the run that completes them"
            )
            if merge:
                raise IncompleteRun(f"--merge: {msg}. Finish the other shards first (or run without --shard)")
            log.main(f"shard {shard.index}/{shard.count} done; {msg} (the last shard, or `--merge`).")
            return None

        if getattr(args, "profile", False):
            _profile(plan, spec, device, run_dir, log)
        _metrics_and_results(args, spec, plan, prompts, records, coco, data_record, run_dir, device, notes, log,
                             started, t0)  # fmt: skip
        return run_dir
    finally:
        dist_ctx.close()


def _profile(plan, spec: RunSpec, device: torch.device, run_dir: Path, log) -> None:
    """``--profile``: time one evaluation of each generator of this run (throughput suite's measurement, on the
    run's own weights, chunk size, dtype, attention and device) into RUN_DIR/throughput.json for the report."""
    from .. import models as M
    from .throughput import profile_run_models

    loaded = M.load_models(plan, device, spec.dtype, spec.attention)
    rows = profile_run_models(
        loaded.base,
        loaded.upsampler if spec.upsample else None,
        loaded.noised_clip if any(s.guidance == "clip" for s in spec.settings) else None,
        spec.batch_size,
        spec.dtype,
        spec.attention,
        device,
        base_resolution=spec.base_resolution,
    )
    doc = {
        "rows": rows,
        "measured": "one model evaluation per generator of this run, on its own weights, chunk size, dtype, "
        "attention and device (warm-up 1, median of 3; the base model at its classifier-free batch of 2 x chunk "
        "rows); end-to-end images/s per setting are in the results",
    }
    atomic_write_json(run_dir / "throughput.json", doc)
    for r in rows:
        log(f"profile: {r['model']} x{r['batch_size']} {r['dtype']} {r['attention']}: {r['ms_per_eval']:.1f} ms "
            f"per evaluation, {r['gflop_per_eval']:.1f} GFLOP")  # fmt: skip


def data_kind(args: argparse.Namespace, coco_root: Path | None) -> str:
    """``--data`` when given, else MS-COCO when a COCO root is known (``--coco-root`` / ``GLIDEBENCH_COCO``)."""
    return getattr(args, "data", None) or ("coco" if coco_root else "embedded")


def make_inception(source: str, device: torch.device):
    """The Inception feature extractor of a run (a module-level factory, so tests can swap in a cheap one)."""
    from ..features import InceptionExtractor

    return InceptionExtractor(source, device=device)


def _first_line(
    data: str, family: str, plan: Any, opts: dict[str, Any], coco_root: Path | None, suite: str = SUITE
) -> str:
    if data == "embedded":
        where = (
            f"no MS-COCO given (--coco-root / GLIDEBENCH_COCO): running the {suite} protocol on the EMBEDDED "
        )
        where += f"caption-image set ({opts['split']} split, {opts.get('caption_style', 'exact')} captions)"
    else:
        where = f"MS-COCO {opts['split']} from {coco_root}"
    if family == "embedded":
        who = "with the EMBEDDED models"
        if plan.random_init:
            who += (
                " -- RANDOM-INITIALISED (no trained weights found in "
                f"{os.environ.get('GLIDEBENCH_MODELS') or 'glidebench/assets/models'}): numbers are a plumbing "
                "check, not a result"
            )
    else:
        who = "with the official GLIDE (filtered) checkpoints"
    return f"glidebench {suite}: {where} {who}."


def _reference_batches(spec: RunSpec, records: list[Any], batch: int):
    if spec.data == "embedded":
        from ..data.embedded import EmbeddedConfig

        native = EmbeddedConfig().size

        def gen():
            for lo in range(0, len(records), batch):
                arr = np.stack(
                    [
                        embedded_reference_image(r.scene, spec.resolution, native)
                        for r in records[lo : lo + batch]
                    ]
                )
                yield torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

        fp = f"embedded:{spec.data_id}:{spec.split}:{len(records)}:{spec.resolution}:render{native}+box:v1"
        return gen, fp
    from ..data.coco import reference_batches

    return (lambda: reference_batches(records, spec.resolution, batch)), None


def _metrics_and_results(
    args,
    spec: RunSpec,
    plan,
    prompts,
    records,
    coco,
    data_record,
    run_dir: Path,
    device,
    notes,
    log,
    started,
    t0,
) -> None:
    """Rank 0: features (cached), metrics per setting, then every result file, each written atomically."""
    from .. import models as M
    from ..features import feature_cache_path
    from ..provenance import build_provenance
    from ..results import cache_root, features_for, setting_metrics, write_markdown, write_results

    for d in (run_dir, run_dir / "features"):
        remove_stale_tmp(d)  # a killed metrics process's temp files (old ones only: another may be writing)
    progress = bool(getattr(args, "progress", False))
    # Small batches on CPU: big activations are mmap'ed per op by glibc (millions of page faults at batch 32).
    fbatch = int(getattr(args, "feature_batch_size", None) or (64 if device.type == "cuda" else 8))
    extractor = make_inception(spec.inception, device)
    log.main(
        f"metrics: Inception {extractor.name} ({extractor.source}); reference set of {len(records)} images"
    )
    ref_batches, ref_fp = _reference_batches(spec, records, fbatch)
    if ref_fp is None:
        ref_fp = coco.reference_fingerprint(records, spec.resolution)
    t_ref = time.monotonic()
    ref = features_for(
        extractor, ref_fp, ref_batches, len(records), cache_root() / "features", fbatch, progress
    )
    log.main(
        f"  reference features: {len(ref['pool3'])} x {ref['pool3'].shape[1]} ({time.monotonic() - t_ref:.1f} s)"
    )

    if isinstance(plan.sources.get("eval-clip"), tuple):
        log.main("  CLIP score: loading OpenAI CLIP ViT-B/16 through open_clip (downloaded on first use)")
    embedder, clip_warning = M.load_eval_clip(plan, device)
    run_warnings = []
    if plan.random_init:
        run_warnings.append(
            "RANDOM-INITIALISED embedded model (no trained weights): a plumbing check, not a result"
        )
    if spec.data == "embedded":
        run_warnings.append(
            "embedded caption-image set, not MS-COCO: not comparable with the paper's numbers"
        )
    run_warnings += [n for n in notes if n.startswith("CLIP-guidance settings skipped")]
    if clip_warning:
        run_warnings.append(clip_warning)
        log.main(f"  {clip_warning}")
    captions = [p.caption for p in prompts]
    text_emb = embedder.embed_texts(captions) if embedder is not None else None
    indices = list(range(spec.num_samples))
    scenes = prompt_scenes(prompts, records) if spec.data == "embedded" else None
    rows = []
    feature_files = {
        "reference": feature_cache_path(extractor, ref_fp, cache_root() / "features").name,
        "settings": {},
    }
    for s in spec.settings:
        t_s = time.monotonic()
        store = ImageStore(run_dir / "images" / s.setting_id)
        fp = store.fingerprint(indices)
        feature_files["settings"][s.setting_id] = feature_cache_path(extractor, fp, run_dir / "features").name
        gen = features_for(
            extractor, fp, lambda store=store: store.batches(indices, fbatch), len(indices), run_dir / "features",
            fbatch, progress,
        )  # fmt: skip
        clip_pair = None
        if embedder is not None:
            img = features_for(
                embedder, fp, lambda store=store: store.batches(indices, fbatch), len(indices), run_dir / "features",
                fbatch, progress,
            )["clip_image"]  # fmt: skip
            clip_pair = (img, text_emb)
        metrics, setting_notes = setting_metrics(
            gen, ref, k=spec.prc_k, kid_subset_size=spec.kid_subset_size, seed=spec.seed, clip_pair=clip_pair
        )
        if scenes is not None:
            stated = captions if spec.caption_style == "short" else None
            metrics |= embedded_attribute_metrics(store, indices, scenes, fbatch, stated)
        timing = read_timing(run_dir, s.setting_id, spec.num_samples, spec.batch_size)
        evals = timing.evals_per_image
        if evals is None:
            evals = _analytic_evals(spec, s, plan)
        if timing.chunks_timed < timing.chunks_total:
            setting_notes.append(
                f"timing covers {timing.chunks_timed} of {timing.chunks_total} chunks (the rest were written by an "
                "interrupted process)"
            )
        rows.append(
            {
                "setting_id": s.setting_id,
                "model": spec.model_label,
                "guidance": s.guidance,
                "scale": s.scale,
                "sampler": spec.sampler,
                "steps": spec.steps,
                "resolution": spec.resolution,
                "n_samples": spec.num_samples,
                **(
                    {"cfg_interval": format_interval(spec.cfg_interval)} if _interval_applies(spec, s) else {}
                ),
                "evals_per_image": evals,
                **metrics,
                "wall_s": timing.seconds if timing.chunks_timed else float("nan"),
                "images_per_s": timing.images / timing.seconds if timing.seconds > 0 else float("nan"),
                "warnings": "; ".join(run_warnings + setting_notes),
                "data": spec.data,
                "n_reference": len(ref["pool3"]),
            }
        )
        attrs = (
            f"  colour {metrics['colour_acc']:.2f} shape {metrics['shape_acc']:.2f} position {metrics['position_acc']:.2f}"
            if scenes is not None
            else ""
        )
        log.main(
            f"  [{s.setting_id}] FID {metrics['fid']:.2f}  KID {metrics['kid_mean']:.4f}  P {metrics['precision']:.3f}  "
            f"R {metrics['recall']:.3f}  CLIP {metrics['clip_score']:.2f}{attrs}  ({time.monotonic() - t_s:.1f} s)"
        )

    checkpoints = {f"{spec.model_label}/{role}": ident for role, ident in sorted(plan.identities.items())}
    feature_record = {
        "inception": extractor.name,
        "inception_source": extractor.source,
        "inception_fingerprint": extractor.fingerprint,
        "clip": getattr(embedder, "name", None),
        "clip_fingerprint": getattr(embedder, "fingerprint", None),
        "clip_score_definition": "100 x mean cosine(image, caption), no clamp; clamped variant max(cos, 0)",
        "prc": f"k={spec.prc_k}, reference subset of the generated set's size (seeded)",
        "kid": f"polynomial kernel degree 3, subsets of min({spec.kid_subset_size}, N), 100 subsets",
        # Inception feature files: the reference set's in the user cache (features/), each setting's in the run
        "files": feature_files,
    }
    provenance = build_provenance(
        started, t0, time.monotonic(), device, checkpoints, data_record, feature_record,
        extra={"spec_fingerprint": spec.fingerprint, "model_cards": plan.cards, "notes": notes,
               "chunking": f"chunks of {spec.batch_size} indices, each always sampled whole"},
    )  # fmt: skip
    atomic_write_json(run_dir / "provenance.json", provenance)
    df = write_results(run_dir, rows)
    header = [
        f"# {spec.suite} results: {spec.model_label} on {spec.data} ({spec.split}), {spec.resolution} px",
        "",
        f"{spec.num_samples} samples per setting, {spec.sampler} {spec.steps}, seed {spec.seed}, "
        f"Inception: {extractor.name}, CLIP score: {getattr(embedder, 'name', None) or 'skipped'}.",
    ]
    if plan.random_init:
        header.insert(1, "\n**RANDOM-INITIALISED MODEL: these numbers are a plumbing check, not a result.**")
    md = write_markdown(run_dir, df, header)
    log.main(f"results: {run_dir / 'results.csv'} (+ results.json, provenance.json, {md.name})")
    print(md.read_text(), flush=True)
    if not getattr(args, "no_report", False):
        _render_report(run_dir, log)


def _interval_applies(spec: RunSpec, s) -> bool:
    return spec.cfg_interval is not None and s.guidance == "cfg" and s.scale != 1.0


def _analytic_evals(spec: RunSpec, s, plan) -> float:
    from glide.diffusion.schedules import space_timesteps

    base = plan.configs["base"]
    kept = space_timesteps(base.diffusion_steps, spec.steps)
    n_base = len(kept)
    n_up = 0
    if spec.upsample:
        up = plan.configs["upsample"]
        n_up = len(space_timesteps(up.diffusion_steps, spec.up_steps))
    guided = None
    if _interval_applies(spec, s):
        lo, hi = spec.cfg_interval
        guided = sum(lo <= t <= hi for t in kept)
    return expected_evals_per_image(spec, s, n_base, n_up, guided)


def _render_report(run_dir: Path, log) -> None:
    try:
        from ..report import render_report
    except ImportError:
        return
    try:
        index = render_report([run_dir], run_dir / "report")
        log.main(f"report: {index}")
    except Exception as e:  # the results are complete; a report failure must not hide them
        log.main(
            f"WARNING: the report could not be rendered ({type(e).__name__}: {e}); the results are complete in "
            f"{run_dir}. Retry with `glidebench report {run_dir}`"
        )
