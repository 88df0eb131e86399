"""Benchmark (run by hand, not a test): the fast inference path's GPU figures for the base model.

    python benchmarks/fast_figures.py [--device cuda] [--size full|tiny] [--batch-sizes 16,64,128]
        [--dtypes fp16,bf16] [--variants official,fast] [--loop-steps 10] [--row-limit-s 0]
        [--out runs/fast-figures]

One row per dtype x variant x batch size B (images; the base model runs the classifier-free batch of 2B
rows). A variant is ``official`` (the model itself: einsum attention, NCHW, eager) or ``fast``
(``GlidePipeline(..., fast=FastPath())``: on CUDA SDPA + torch.compile + CUDA graphs, see glide/fast.py); a
dtype is fp16 (the official ``convert_to_fp16``), bf16 (autocast, as glide.pipeline does) or fp32. Columns:

- ``ms_per_eval``: median milliseconds of one 2B-row evaluation (synchronised; CUDA events on GPU) after
  warm-up (the fast variant compiles and records its graphs there);
- ``gflop_per_eval`` (torch's FlopCounterMode, counted once per shape on the eager einsum model, 2 FLOPs per
  multiply-add), ``achieved_tflops`` and ``utilisation`` = achieved / the device's dense peak for the dtype
  (``glidebench.profile.PEAK_FLOPS``; empty where unknown, e.g. on CPU);
- ``peak_memory_mib`` over the row's evaluations and sampling loop (``glidebench.profile.peak_memory_bytes``:
  CUDA's allocator peak; on CPU the process's peak RSS, which only grows);
- ``loop_s`` and ``images_per_s`` = B / loop_s: one whole ``sample_base`` call (ancestral over a respaced
  schedule of ``--loop-steps`` steps, classifier-free scale 3) with the same forward, after a 2-step warm-up;
- ``projected_gpu_hours_per_scale``: the paper's protocol (30,000 samples x 250 base steps, each step one
  evaluation of the 2B-row batch) from this row's time: samples / B x steps x ms_per_eval / 3.6e6. The
  footer repeats it at the largest batch measured per dtype x variant (base model only; no upsampler).

Rows are written as they come (CSV and Markdown, atomically); a row that fails (out of memory, an
unsupported combination, or over ``--row-limit-s``) is a row with an ``error``, not the end of the table.
The full size is the official base architecture with random weights (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fast  # noqa: E402  (its markdown table writer)

from glide.fast import FastPath  # noqa: E402
from glide.pipeline import GlidePipeline  # noqa: E402
from glidebench.profile import count_flops, peak_flops, peak_memory_bytes, synchronize, time_fn  # noqa: E402
from glidebench.store import atomic_write_text  # noqa: E402

VARIANTS = ("official", "fast")
COLUMNS = [
    "size", "device", "dtype", "variant", "batch_size", "rows", "ms_per_eval", "ms_min", "ms_max", "repeats",
    "gflop_per_eval", "achieved_tflops", "utilisation", "peak_memory_mib", "loop_steps", "loop_s",
    "images_per_s", "projected_gpu_hours_per_scale", "fast_path", "notes", "error",
]  # fmt: skip
HOURS_FORMULA = "samples / B x base_steps x ms_per_eval / 3.6e6"


class RowTimeout(BaseException):
    """A row ran past --row-limit-s. A BaseException, so that no ``except Exception`` on the way (the fast
    path's compile fallback has one) mistakes it for a failure of the thing being measured."""


@contextlib.contextmanager
def row_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`RowTimeout` in the main thread after ``seconds`` (0 = no limit)."""
    if seconds <= 0:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise RowTimeout(f"row ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def projected_hours(ms_per_eval: float, batch_size: int, samples: int = 30_000, steps: int = 250) -> float:
    """Device hours of one classifier-free scale in the paper's protocol: ``samples`` images in batches of
    ``batch_size``, ``steps`` base steps, each one evaluation of the 2B-row batch taking ``ms_per_eval``."""
    return samples / batch_size * steps * ms_per_eval / 3.6e6


def fresh_base(size: str) -> torch.nn.Module:
    """The base model (fp32, CPU, random weights) of ``size``: 'full' (official architecture) or 'tiny'."""
    from glide.unet import create_model
    from glidebench.suites.throughput import _unet_config

    torch.manual_seed(0)
    return create_model(_unet_config("base", size)).eval()


def _autocast(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_inputs(model: torch.nn.Module, batch_size: int, dtype: str, device: torch.device) -> dict[str, Any]:
    """(x, t, text_emb) of one classifier-free evaluation, laid out as the guidance wrapper lays them out
    (conditional rows then unconditional rows, each tensor concatenated, so contiguous), so a compiled
    forward sees the same shapes and strides here as in the sampling loop."""
    cfg, b = model.config, batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, cfg.image_size, cfg.image_size, generator=g).to(device)
    t = torch.full((b,), cfg.diffusion_steps // 2, dtype=torch.long, device=device)
    embs = []
    for prompts in ([f"a photo of object number {i}" for i in range(b)], [""] * b):
        tokens, mask = model.tokenizer.batch(prompts, cfg.text_ctx)
        with torch.no_grad(), _autocast(dtype, device):
            embs.append(model.get_text_emb(tokens.to(device), mask.to(device)))
    text_emb = tuple(torch.cat([c, u]) for c, u in zip(*embs))
    return {"x": torch.cat([x, x]), "t": torch.cat([t, t]), "text_emb": text_emb}


def eval_flops(model: torch.nn.Module, batch_size: int, dtype: str, device: torch.device) -> int | None:
    """FLOPs of one 2B-row evaluation of ``model`` (eager; einsum attention, whose FLOPs the counter sees);
    None when the evaluation fails (out of memory)."""
    try:
        inputs = eval_inputs(model, batch_size, dtype, device)
        with torch.no_grad(), _autocast(dtype, device):
            return count_flops(lambda: model(inputs["x"], inputs["t"], text_emb=inputs["text_emb"]))
    except (RuntimeError, ValueError):
        return None
    finally:
        inputs = None
        _free(device)


def measure_evals(
    fwd: Callable[..., torch.Tensor],
    inputs: dict[str, Any],
    dtype: str,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """Median / min / max milliseconds of one evaluation of ``fwd`` on ``inputs``."""
    x, t, text_emb = inputs["x"], inputs["t"], inputs["text_emb"]
    with torch.no_grad(), _autocast(dtype, device):
        times = time_fn(lambda: fwd(x, t, text_emb=text_emb), device, warmup, repeats)
    return {
        "ms_per_eval": statistics.median(times) * 1000,
        "ms_min": min(times) * 1000,
        "ms_max": max(times) * 1000,
        "repeats": repeats,
    }


def measure_loop(pipe: GlidePipeline, batch_size: int, steps: int) -> dict[str, float]:
    """Seconds of one classifier-free ``sample_base`` call (ancestral, ``steps`` respaced steps, scale 3)."""
    prompts = [f"a photo of object number {i}" for i in range(batch_size)]
    seeds = list(range(batch_size))
    pipe.sample_base(prompts, seeds, "cfg", 3.0, "ancestral", str(min(2, steps)))  # warm-up
    synchronize(pipe.device)
    t0 = time.perf_counter()
    pipe.sample_base(prompts, seeds, "cfg", 3.0, "ancestral", str(steps))
    synchronize(pipe.device)
    loop_s = time.perf_counter() - t0
    return {"loop_steps": steps, "loop_s": loop_s, "images_per_s": batch_size / loop_s}


def build(fresh: torch.nn.Module, dtype: str, device: torch.device) -> torch.nn.Module:
    """A copy of ``fresh`` in ``dtype``'s weights (fp16: the official conversion) on ``device``."""
    model = copy.deepcopy(fresh)
    if dtype == "fp16":
        model.convert_to_fp16()
    return model.to(device).eval()


def markdown(table: pd.DataFrame, header: Sequence[str], footer: Sequence[str]) -> str:
    """A GFM table of ``table``'s non-empty columns (floats to 4 significant digits) with header / footer."""
    cols = [c for c in table.columns if table[c].notna().any() and (table[c].astype(str) != "").any()]
    return bench_fast.markdown(table[cols], header, footer)


def footer_lines(table: pd.DataFrame, samples: int, steps: int) -> list[str]:
    """The projected-hours formula and its value at the largest measured batch per dtype x variant."""
    lines = [
        f"projected_gpu_hours_per_scale = {HOURS_FORMULA} (samples = {samples:,}, base_steps = {steps}; "
        "each step is one evaluation of the 2B-row classifier-free batch; base model only, no upsampler).",
    ]
    if "ms_per_eval" not in table:
        return lines
    ok = table[table["ms_per_eval"].notna()]
    for (dtype, variant), group in ok.groupby(["dtype", "variant"], sort=False):
        r = group.loc[group["batch_size"].idxmax()]
        lines.append(
            f"- {dtype} {variant}: {r['projected_gpu_hours_per_scale']:.3g} h per scale "
            f"(B = {int(r['batch_size'])}, {r['ms_per_eval']:.4g} ms per evaluation)"
        )
    return lines


def write(
    rows: list[dict[str, Any]], out: Path, header: Sequence[str], samples: int, steps: int
) -> pd.DataFrame:
    """fast_figures.csv and fast_figures.md in ``out`` (atomic writes); returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write_text(out / "fast_figures.csv", table.to_csv(index=False))
    atomic_write_text(out / "fast_figures.md", markdown(table, header, footer_lines(table, samples, steps)))
    return table


def _describe(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in record.items())


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--batch-sizes", default="16,64,128", help="images (the base model runs 2B rows)")
    p.add_argument(
        "--dtypes", default=None, help="fp32, fp16, bf16 (default: fp16,bf16 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--variants", default="official,fast")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-steps", type=int, default=10, help="respaced steps of the timed sampling loop")
    p.add_argument("--samples", type=int, default=30_000, help="samples per scale for the projected hours")
    p.add_argument("--paper-steps", type=int, default=250, help="base steps for the projected hours")
    p.add_argument("--row-limit-s", type=float, default=0, help="seconds per row, 0 = no limit")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=Path("runs/fast-figures"))
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    dtypes = (args.dtypes or ("fp16,bf16" if dev.type == "cuda" else "fp32")).split(",")
    variants = args.variants.split(",")
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    for d in dtypes:
        if d not in ("fp32", "fp16", "bf16") or (d == "fp16" and dev.type != "cuda"):
            raise SystemExit(f"dtype {d!r}: use fp16 or bf16 on CUDA, fp32 or bf16 on CPU")
    if bad := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    if min(batch_sizes) < 1 or args.loop_steps < 1 or args.repeats < 1:
        raise SystemExit("batch sizes, --loop-steps and --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    header = [
        f"# Fast path figures: base model ({args.size}) on {device_name}",
        "",
        f"torch {torch.__version__}; median of {args.repeats} evaluations after {args.warmup} warm-up; "
        f"loop = sample_base, classifier-free scale 3, ancestral, {args.loop_steps} respaced steps.",
    ]
    fresh = fresh_base(args.size)
    flops: dict[int, int] = {}  # per batch size: counted once, on the eager einsum model
    rows: list[dict[str, Any]] = []
    for dtype in dtypes:
        for variant in variants:
            model = build(fresh, dtype, dev)
            for b in batch_sizes:  # count before the fast path switches the model to SDPA
                if b not in flops and (n := eval_flops(model, b, dtype, dev)) is not None:
                    flops[b] = n
            pipe = GlidePipeline(
                model, dtype=dtype, device=dev, fast=FastPath() if variant == "fast" else None
            )
            # the pipeline's own forward (for the fast path: one torch.compile and its CUDA graphs), so the
            # evaluations and the sampling loop share the compiled code instead of compiling twice
            fwd = pipe.forward_of(model)
            for b in batch_sizes:
                row: dict[str, Any] = {
                    "size": args.size,
                    "device": device_name,
                    "dtype": dtype,
                    "variant": variant,
                    "batch_size": b,
                    "rows": 2 * b,
                    "fast_path": _describe(fwd.path.record()) if variant == "fast" else "",
                }
                try:
                    with row_limit(args.row_limit_s):
                        if dev.type == "cuda":
                            torch.cuda.reset_peak_memory_stats(dev)
                        inputs = eval_inputs(model, b, dtype, dev)
                        row |= measure_evals(fwd, inputs, dtype, dev, args.warmup, args.repeats)
                        inputs = None
                        row |= measure_loop(pipe, b, args.loop_steps)
                        row["peak_memory_mib"] = peak_memory_bytes(dev) / 2**20
                except (RuntimeError, ValueError, RowTimeout) as e:  # OOM, unsupported, too slow: one row
                    row["error"] = f"{type(e).__name__}: {str(e).strip()[:300]}"
                    inputs = None
                if "ms_per_eval" in row:
                    seconds = row["ms_per_eval"] / 1000
                    peak = peak_flops(dev, dtype)
                    row["gflop_per_eval"] = flops[b] / 1e9 if b in flops else float("nan")
                    row["achieved_tflops"] = flops[b] / seconds / 1e12 if b in flops else float("nan")
                    row["utilisation"] = flops[b] / seconds / peak if b in flops and peak else float("nan")
                    row["projected_gpu_hours_per_scale"] = projected_hours(
                        row["ms_per_eval"], b, args.samples, args.paper_steps
                    )
                row["notes"] = "; ".join(pipe.fast_notes)
                rows.append(row)
                print(", ".join(f"{k}={bench_fast.cell(v)}" for k, v in row.items()), flush=True)
                write(
                    rows, args.out, header, args.samples, args.paper_steps
                )  # a cut-short run keeps its rows
                _free(dev)
            del pipe, fwd, model
            _free(dev)
            if variant == "fast":
                torch._dynamo.reset()  # drop this model's compiled graphs before the next model is compiled
    table = write(rows, args.out, header, args.samples, args.paper_steps)
    print(markdown(table, header, footer_lines(table, args.samples, args.paper_steps)))
    print(f"wrote {args.out}/fast_figures.csv and fast_figures.md")
    return table


if __name__ == "__main__":
    main()
