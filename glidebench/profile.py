"""Honest timing of model evaluations: warm-up, device synchronisation, repeats, medians, FLOPs and memory.

``time_fn`` uses CUDA events on GPU and ``perf_counter`` (after a synchronize) elsewhere; ``count_flops``
uses ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add); utilisation compares achieved
FLOP/s with the device's dense peak from a small table (None where unknown, e.g. CPUs). ``profile_case``
builds a model in the requested dtype / attention implementation / compile / memory format and times one
evaluation of it; ``export_trace`` writes a torch.profiler Chrome trace.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from glide.fast import FastPath, accelerate
from glide.nn import set_attention_impl
from glide.tokenizer import vocab_size

from .store import atomic_path

# Dense peak FLOP/s (no sparsity) by device-name substring and dtype, from the vendors' data sheets.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67e12, "tf32": 494.7e12, "fp16": 989.4e12, "bf16": 989.4e12},
    "H100": {"fp32": 67e12, "tf32": 494.7e12, "fp16": 989.4e12, "bf16": 989.4e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "fp16": 312e12, "bf16": 312e12},
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "fp16": 121e12, "bf16": 121e12},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any], device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5
) -> list[float]:
    """Seconds per call for ``repeats`` calls after ``warmup`` calls (CUDA events on GPU)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call as counted by torch's FlopCounterMode (2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, dtype: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in PEAK_FLOPS.items():
        if key in name:
            return table.get(dtype)
    return None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # process peak RSS (Linux: KiB)


@dataclass(frozen=True)
class Case:
    """One throughput measurement: which model call, and how it is run."""

    model: str  # a name for the report: "base", "upsample", "clip-step", ...
    batch_size: int
    dtype: str = "fp32"  # fp32 | fp16 (official conversion) | bf16 (autocast)
    attention: str = "einsum"  # einsum | sdpa
    compile: bool = False
    channels_last: bool = False
    cuda_graph: bool = False  # capture the evaluation once and time graph replays (no host launch cost)

    def __post_init__(self) -> None:
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"dtype must be fp32, fp16 or bf16, got {self.dtype!r}")
        if self.attention not in ("einsum", "sdpa"):
            raise ValueError(f"attention must be einsum or sdpa, got {self.attention!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph and compile are separate cases (compile has its own graph mode)")


def prepare_model(model: torch.nn.Module, case: Case, device: torch.device) -> torch.nn.Module:
    """Apply a case's dtype / attention / memory format to ``model`` (in place) and move it to ``device``."""

    if case.dtype == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 (the official conversion) needs CUDA; use fp32 or bf16 on CPU")
        model.convert_to_fp16()
    set_attention_impl(model, case.attention)
    model = model.to(device)
    if case.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def autocast_for(case: Case, device: torch.device):
    if case.dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def profile_call(
    case: Case,
    call: Callable[[], Any],
    device: torch.device,
    images_per_call: int,
    warmup: int = 2,
    repeats: int = 5,
    flops: int | None = None,
) -> dict[str, Any]:
    """Time ``call`` (already bound to its inputs), count its FLOPs, and return one results row.

    ``flops`` overrides the count: FlopCounterMode does not see inside fused kernels such as CPU SDPA, so
    the suite counts each model once with the einsum attention and reuses that number.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad(), autocast_for(case, device):
        if flops is None:
            flops = count_flops(call)
        times = time_fn(call, device, warmup, repeats)
    median = statistics.median(times)
    peak = peak_flops(device, case.dtype)
    achieved = flops / median if median > 0 else float("nan")
    row = asdict(case) | {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "ms_per_eval": median * 1000,
        "ms_min": min(times) * 1000,
        "ms_max": max(times) * 1000,
        "repeats": repeats,
        "images_per_s": images_per_call / median,
        "gflop_per_eval": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "utilisation": achieved / peak if peak else None,
        "peak_memory_mib": peak_memory_bytes(device) / 2**20,
        # fp32 on an Ampere-or-later GPU runs cuDNN convolutions in TF32 unless this is off (torch's default)
        "tf32_conv": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None,
    }
    gc.collect()
    return row


def maybe_compile(fn: Callable, case: Case) -> Callable:
    if not case.compile:
        return fn
    try:
        return torch.compile(fn)
    except Exception as e:  # compile is an optimisation: report, never fail the benchmark
        raise RuntimeError(f"torch.compile failed for {case}: {e}") from e


def capture_cuda_graph(call: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """Record ``call`` (bound to static inputs) as a CUDA graph; return a replay that yields its outputs.

    Warm-up runs on a side stream as torch's documentation prescribes; a call that synchronises with the
    host or allocates outside the graph's pool fails here, with torch's error.
    """
    if device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(2):
            call()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = call()

    def replay():
        graph.replay()
        return out

    return replay


def export_trace(call: Callable[[], Any], path: str | Path, device: torch.device | str = "cpu") -> Path:
    """Run ``call`` under torch.profiler and write a Chrome trace (open in chrome://tracing or Perfetto)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), profile(activities=activities, record_shapes=True) as prof:
        call()
        synchronize(device)
    with atomic_path(path) as tmp:
        prof.export_chrome_trace(str(tmp))
    return path


# -- one evaluation of a model at a case (the throughput suite and a run's --profile) -----------------------
def bind_unet(model: torch.nn.Module, case: Case, device: torch.device, low_res_size: int | None = None):
    """(call, images per call): one evaluation of ``model`` (already in the case's dtype / attention / memory
    format, on ``device``) at the case's batch, on fixed random inputs. The base model runs the classifier-free
    batch [cond | uncond] (2B rows); the upsampler B rows with a ``low_res_size`` input (default a quarter)."""

    g = torch.Generator().manual_seed(0)
    cfg, b = model.config, case.batch_size
    n = 2 * b if case.model == "base" else b
    s = cfg.image_size
    x = torch.randn(n, 3, s, s, generator=g).to(device)
    if case.channels_last:
        x = x.to(memory_format=torch.channels_last)
    t = torch.full((n,), 500, dtype=torch.long, device=device)
    tokens = torch.randint(0, vocab_size(cfg.tokenizer), (n, cfg.text_ctx), generator=g).to(device)
    mask = torch.ones(n, cfg.text_ctx, dtype=torch.bool, device=device)
    kwargs: dict[str, Any] = {"tokens": tokens, "mask": mask}
    if case.model == "upsample":
        r = low_res_size or s // 4
        kwargs["low_res"] = torch.randn(n, 3, r, r, generator=g).to(device)
    fwd = maybe_compile(model, case)
    call = lambda: fwd(x, t, **kwargs)  # noqa: E731
    if case.cuda_graph:
        with autocast_for(case, device):
            call = capture_cuda_graph(call, device)
    return call, b


def bind_clip_step(clip: torch.nn.Module, case: Case, device: torch.device):
    """(call, images per call): one CLIP-guidance step of ``clip`` (forward + backward through the image
    encoder) at the case's batch."""
    g = torch.Generator().manual_seed(0)
    b = case.batch_size
    s = clip.config.image_size
    x = torch.randn(b, 3, s, s, generator=g).to(device)
    t = torch.full((b,), 500, dtype=torch.long, device=device)
    cond_fn = clip.cond_fn(["a photo of a corgi"] * b, 3.0)

    def step():
        with torch.enable_grad():
            return cond_fn(x, t)

    return step, b


def profile_run_models(
    base: torch.nn.Module,
    upsampler: torch.nn.Module | None,
    clip: torch.nn.Module | None,
    batch_size: int,
    dtype: str,
    attention: str,
    device: torch.device,
    base_resolution: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    fast: bool = False,
) -> list[dict[str, Any]]:
    """A real run's ``--profile``: one evaluation of each of its generators, on their own weights, at the run's
    chunk size, dtype, attention and device (FLOPs counted on the einsum path, as the suite does); ``fast``:
    the UNets through glide.fast's forward, as a ``--fast`` run samples them."""

    device = torch.device(device)
    jobs: list[tuple[Case, torch.nn.Module, Any]] = [(Case("base", batch_size, dtype, attention), base, None)]
    if upsampler is not None:
        jobs.append((Case("upsample", batch_size, dtype, attention), upsampler, base_resolution))
    if clip is not None:  # the noised CLIP stays fp32 beside an fp16 model, as in the official code
        jobs.append(
            (Case("clip-step", batch_size, "fp32" if dtype == "fp16" else dtype, attention), clip, None)
        )
    rows = []
    for case, model, low_res in jobs:

        def bind(case=case, model=model, low_res=low_res):
            if case.model == "clip-step":
                return bind_clip_step(model, case, device)
            return bind_unet(model, case, device, low_res)

        set_attention_impl(model, "einsum")
        with torch.no_grad(), autocast_for(case, device):
            flops = count_flops(bind()[0])
        set_attention_impl(model, attention)
        if fast and case.model != "clip-step":
            model = accelerate(model, device, FastPath(attention=attention))
        call, images = bind(model=model)
        rows.append(profile_call(case, call, device, images, warmup, repeats, flops=flops) | {"fast": fast})
    return rows
