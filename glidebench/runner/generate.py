"""Generation: chunk-aligned sampling of a setting into the ImageStore, resumable and shardable.

Owns the rule that makes images independent of how a run is executed:

    global indices 0..N-1 are grouped into fixed chunks [k*C, (k+1)*C) (C = spec.batch_size);
    a chunk is ALWAYS sampled whole, in one batch, with per-row generators seeded ``seed + index``.

Per-row seeds already make a sample independent of its batch mates in exact arithmetic, but CPU kernels may
round differently for different batch shapes (~1e-7, enough to move a uint8 level now and then). Sampling the
same chunk with the same shape everywhere removes that: an uninterrupted run, a resumed run (a chunk with
only some files missing is regenerated whole and only the missing files are written), ``--shard i/n`` job
arrays and torchrun ranks all produce byte-identical PNGs. Chunk ``k`` belongs to worker ``k % n_workers``
(workers = shards x ranks), so work is balanced and no two workers ever write the same file.

Per chunk a timing record ``RUN_DIR/timing/<setting_id>/chunk_<k>.json`` (seconds, images written, model
evaluations per image) is written after the chunk's images; results sum them into wall time and images/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from glide.pipeline import SamplingError

from ..generators import (
    GeneratorError,
    SamplingDescription,
    SamplingOptions,
    as_uint8_images,
    describe_sampling,
)
from ..spec import RunSpec, Setting, Worker
from ..store import ImageStore, atomic_write_json, read_json, remove_stale_tmp


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[(lo, hi)] of the fixed chunks covering 0..n-1."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]


def owned_chunks(n_chunks: int, worker: Worker) -> list[int]:
    return [k for k in range(n_chunks) if k % worker.count == worker.index]


def timing_dir(run_dir: Path, setting_id: str) -> Path:
    return run_dir / "timing" / setting_id


def clean_leftovers(run_dir: Path, spec: RunSpec, setting: Setting, worker: Worker) -> int:
    """Remove a killed writer's temp files (images and timing records) in ``worker``'s chunks only: other
    workers may be writing theirs right now."""
    chunks = chunk_bounds(spec.total_samples, spec.batch_size)
    mine = owned_chunks(len(chunks), worker)
    store = ImageStore.of(run_dir, setting.setting_id)
    n = store.clean(i for k in mine for i in range(*chunks[k]))
    names = [f"chunk_{k:06d}.json" for k in mine]
    return n + remove_stale_tmp(timing_dir(run_dir, setting.setting_id), max_age_s=0, names=names)


@dataclass
class GenerationStats:
    setting_id: str
    chunks_done: int = 0
    chunks_skipped: int = 0
    images_written: int = 0
    seconds: float = 0.0
    resized: bool = False  # the generator's images were brought to the evaluation resolution


def expected_evals_per_image(
    spec: RunSpec, setting: Setting, base_steps: int, up_steps: int, guided_steps: int | None = None
) -> float:
    """Model evaluations per image: base steps x (2 for a classifier-free batch) + upsampler steps.

    ``guided_steps``: with a guidance interval, how many of the base steps are guided (the rest cost one).
    """
    guided = setting.guidance == "cfg" and setting.scale != 1.0
    extra = (base_steps if guided_steps is None else guided_steps) if guided else 0
    return float(base_steps + extra + (up_steps if spec.upsample else 0))


def sampling_options(spec: RunSpec, device: str = "cpu", progress: bool = False) -> SamplingOptions:
    """What a generator is told about the run's sampling (from the spec)."""
    return SamplingOptions(
        sampler=spec.sampler, steps=spec.steps, resolution=spec.resolution, dtype=spec.dtype, device=device,
        upsample=spec.upsample, up_sampler=spec.up_sampler, up_steps=spec.up_steps,
        upsample_temp=spec.upsample_temp, cfg_interval=spec.cfg_interval, progress=progress,
    )  # fmt: skip


def run_sampling(generator, spec: RunSpec, device: str = "cpu") -> SamplingDescription:
    """How ``generator`` samples under ``spec`` (its own description: the run's header, results and report)."""
    return describe_sampling(generator, sampling_options(spec, device))


def generate_setting(
    generator,
    spec: RunSpec,
    setting: Setting,
    captions: Sequence[str],
    run_dir: Path,
    worker: Worker,
    log: Callable[[str], None] = print,
    progress: bool = False,
    device: str = "cpu",
    on_chunk: Callable[[int], None] | None = None,
) -> GenerationStats:
    """Sample every chunk of ``setting`` that ``worker`` owns and that has a missing image, with ``generator``
    (a :class:`glidebench.generators.Generator`); its output is checked and brought to the evaluation
    resolution by :func:`glidebench.generators.as_uint8_images` before anything is written. ``on_chunk(n)``
    is called after each sampled chunk with its number of images (the run's progress display)."""
    options = sampling_options(spec, device, progress)
    store = ImageStore.of(run_dir, setting.setting_id)
    store.root.mkdir(parents=True, exist_ok=True)
    tdir = timing_dir(run_dir, setting.setting_id)
    seeds = spec.seeds()
    chunks = chunk_bounds(spec.total_samples, spec.batch_size)
    mine = owned_chunks(len(chunks), worker)
    clean_leftovers(run_dir, spec, setting, worker)
    stats = GenerationStats(setting.setting_id)
    for n_done, k in enumerate(mine):
        lo, hi = chunks[k]
        missing = store.missing(range(lo, hi))
        if not missing:
            stats.chunks_skipped += 1
            continue
        t0 = time.perf_counter()
        where = f"setting {setting.setting_id}, images {lo}..{hi - 1}"
        try:
            images = generator.generate(list(captions[lo:hi]), seeds[lo:hi], setting, options)
        except Exception as e:
            raise _chunk_error(e, where, generator.name) from e
        seconds = time.perf_counter() - t0
        arrays, resized = as_uint8_images(images, hi - lo, spec.resolution, where)
        if resized and not stats.resized:
            stats.resized = True
            log(
                f"[{setting.setting_id}] note: {generator.name} gives other sizes than {spec.resolution} px; "
                "images are center-cropped and resized with PIL bicubic (the protocol's rule)"
            )
        for i in missing:
            store.write(i, arrays[i - lo])
        evals = dict(getattr(generator, "evals_per_image", None) or {})
        atomic_write_json(
            tdir / f"chunk_{k:06d}.json",
            {
                "chunk": k,
                "lo": lo,
                "hi": hi,
                "written": len(missing),
                "sampled": hi - lo,
                "seconds": seconds,
                "evals_per_image": evals,
                "worker": f"{worker.index}/{worker.count}",
            },
        )
        stats.chunks_done += 1
        stats.images_written += len(missing)
        stats.seconds += seconds
        if on_chunk is not None:
            on_chunk(hi - lo)
        log(
            f"[{setting.setting_id}] chunk {k + 1}/{len(chunks)} (images {lo}..{hi - 1}): "
            f"{hi - lo} {getattr(generator, 'verb', 'sampled')}, {len(missing)} written in {seconds:.1f} s "
            f"[{n_done + 1}/{len(mine)} of this worker's chunks]"
        )
    return stats


def _chunk_error(e: Exception, where: str, name: str) -> Exception:
    """The one-line error of a chunk whose sampling raised ``e`` (nothing of the chunk is written)."""

    if isinstance(e, SamplingError):
        return SamplingError(f"{where}: {e}. Nothing of this chunk was written; no results were produced")
    if isinstance(e, GeneratorError):
        return e
    return GeneratorError(
        f"{where}: generator {name} raised {type(e).__name__}: {e}. Nothing of this chunk was written; fix the "
        "generator and run the same command again to resume"
    )


@dataclass
class Timing:
    """Summed chunk records of one setting."""

    seconds: float
    images: int
    chunks_timed: int
    chunks_total: int
    evals_per_image: float | None


def read_timing(run_dir: Path, setting_id: str, n: int, chunk: int) -> Timing:
    """Sum the chunk records (a chunk's last generation counts); evals from any record."""
    chunks = chunk_bounds(n, chunk)
    tdir = timing_dir(run_dir, setting_id)
    seconds, images, timed, evals = 0.0, 0, 0, None
    for k in range(len(chunks)):
        p = tdir / f"chunk_{k:06d}.json"
        if not p.is_file():
            continue
        rec = read_json(p)
        seconds += float(rec["seconds"])
        images += int(rec["sampled"])
        timed += 1
        e = rec.get("evals_per_image") or {}
        if e:
            evals = float(sum(e.values()))
    return Timing(seconds, images, timed, len(chunks), evals)
