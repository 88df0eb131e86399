"""Benchmark (run by hand, not a test): end-to-end sampling throughput of GlidePipeline, images/s.

    python benchmarks/bench_sampler.py [--device cuda] [--size full|embedded|tiny] [--dtypes fp16,bf16]
        [--attention sdpa] [--batch-sizes 8,32] [--settings cfg/ancestral/100,clip/ancestral/100,up/ddim/fast27]
        [--out runs/bench-sampler]

Where the throughput suite times one model evaluation, this times the whole sampling loop as a run does it
(text encodings, per-sample CPU noise generators, the guidance wrapper, the sampler's arithmetic, the NaN
check), so ``ms_per_row_eval_in_loop`` against the suite's ``ms_per_eval`` divided by its rows (2B for the base
model's classifier-free batch, B otherwise) shows what the loop adds.

A setting is KIND/SAMPLER/STEPS[/LO,HI]: KIND is cfg (scale 3), clip (scale 3, the noised CLIP), none, or up
(the upsampler on 64-px inputs, no guidance); LO,HI is a classifier-free guidance interval. Sizes: full =
the official architectures with random weights (timing does not depend on the weights), embedded = the
shipped models, tiny = small random models (a smoke test on CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glide.nn import set_attention_impl  # noqa: E402
from glide.pipeline import GlidePipeline  # noqa: E402
from glidebench.profile import peak_memory_bytes, synchronize  # noqa: E402
from glidebench.store import atomic_write_text  # noqa: E402


def _models(size: str, dtype: str, device: torch.device, need_clip: bool, need_up: bool):
    """(base, upsampler or None, noised CLIP or None) for one size, in the dtype's weights, on ``device``."""
    fp16 = dtype == "fp16"
    if size == "embedded":
        from glide.checkpoints import load_clip, load_model
        from glidebench.models import models_dir

        d = models_dir()
        base = load_model(d / "embedded-base.safetensors", device=device, fp16=fp16)
        up = load_model(d / "embedded-upsample.safetensors", device=device, fp16=fp16) if need_up else None
        clip = load_clip(str(d / "embedded-clip-noised.safetensors"), device=device) if need_clip else None
        return base, up, clip
    from glide.unet import create_model
    from glidebench.suites.throughput import _clip, _unet_config

    def unet(name):
        m = create_model(_unet_config(name, size))
        if fp16:
            m.convert_to_fp16()
        return m.to(device).eval()

    return unet("base"), unet("upsample") if need_up else None, _clip(size, device) if need_clip else None


def _parse(setting: str) -> tuple[str, str, str, tuple[int, int] | None]:
    parts = setting.split("/")
    if len(parts) not in (3, 4) or parts[0] not in ("cfg", "clip", "none", "up"):
        raise SystemExit(
            f"bad setting {setting!r}: expected KIND/SAMPLER/STEPS[/LO,HI], KIND in cfg|clip|none|up"
        )
    interval = tuple(int(v) for v in parts[3].split(",")) if len(parts) == 4 else None
    return parts[0], parts[1], parts[2], interval  # type: ignore[return-value]


def run_one(pipe: GlidePipeline, kind, sampler, steps, interval, batch: int, warm_steps: str, repeats: int):
    prompts = [f"a photo of object number {i}" for i in range(batch)]
    seeds = list(range(batch))
    dev = pipe.device

    def call(st: str):
        if kind == "up":
            low = torch.zeros(
                batch, 3, pipe.upsampler.config.image_size // 4, pipe.upsampler.config.image_size // 4
            )
            return pipe.upsample(low, prompts, seeds, sampler, st)
        guidance = "none" if kind == "none" else kind
        return pipe.sample_base(prompts, seeds, guidance, 3.0, sampler, st, cfg_interval=interval)

    call(warm_steps)  # kernels, allocator and (for compile) graphs warm on a short loop
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call(steps)
        synchronize(dev)
        times.append(time.perf_counter() - t0)
    evals = pipe.last_evals_per_image["upsample" if kind == "up" else "base"]
    median = statistics.median(times)
    return {
        "seconds_per_batch": median,
        "images_per_s": batch / median,
        "evals_per_image": evals,
        # per image row through the model, comparable to the throughput suite's ms_per_eval / rows per call
        "ms_per_row_eval_in_loop": 1000 * median / (evals * batch),
        "peak_memory_mib": peak_memory_bytes(dev) / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="full", choices=["full", "embedded", "tiny"])
    p.add_argument("--dtypes", default=None, help="default: fp16,bf16 on GPU, fp32 on CPU")
    p.add_argument("--attention", default="sdpa", help="einsum, sdpa or both")
    p.add_argument("--batch-sizes", default="8")
    p.add_argument(
        "--settings",
        default="cfg/ancestral/100,cfg/dpm++2m-sde/quad16/71,639,clip/ancestral/100,up/ddim/fast27",
        help="settings separated by ';' (or by ',' where a part without '/' continues an interval); see the module docstring",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warm-steps", default="3", help="respacing of the warm-up call")
    p.add_argument("--tf32", choices=["on", "off", "default"], default="default", help="CUDA TF32 for fp32")
    p.add_argument("--out", type=Path, default=Path("runs/bench-sampler"))
    args = p.parse_args()
    dev = torch.device(args.device)
    if args.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
    dtypes = (args.dtypes or ("fp16,bf16" if dev.type == "cuda" else "fp32")).split(",")
    # Settings are separated by ';' (an interval has a comma); a plain ',' list also works without intervals.
    raw = args.settings.split(";") if ";" in args.settings else _split_commas(args.settings)
    settings = [_parse(s) for s in raw]
    need_clip = any(s[0] == "clip" for s in settings)
    need_up = any(s[0] == "up" for s in settings)
    rows = []
    for dtype in dtypes:
        base, up, clip = _models(args.size, dtype, dev, need_clip, need_up)
        for attention in args.attention.split(","):
            for m in (base, up, clip):
                if m is not None:
                    set_attention_impl(m, attention)
            pipe = GlidePipeline(base, up, clip, dtype=dtype, device=dev)
            for kind, sampler, steps, interval in settings:
                for b in (int(v) for v in args.batch_sizes.split(",")):
                    row = {
                        "size": args.size,
                        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                        "dtype": dtype,
                        "attention": attention,
                        "tf32_conv": torch.backends.cudnn.allow_tf32 if dev.type == "cuda" else None,
                        "kind": kind,
                        "sampler": sampler,
                        "steps": steps,
                        "interval": None if interval is None else f"{interval[0]},{interval[1]}",
                        "batch_size": b,
                    }
                    try:
                        row |= run_one(pipe, kind, sampler, steps, interval, b, args.warm_steps, args.repeats)
                    except (RuntimeError, ValueError) as e:  # out of memory, unsupported: a row, not a crash
                        row["error"] = str(e)[:300]
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                    rows.append(row)
                    print(json.dumps(row, default=str), flush=True)
                    _write(rows, args.out)  # after every row: a sweep cut short keeps what it measured
        del base, up, clip
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    table = _write(rows, args.out)
    cols = ["dtype", "attention", "kind", "sampler", "steps", "interval", "batch_size", "images_per_s",
            "evals_per_image", "ms_per_row_eval_in_loop", "peak_memory_mib", "error"]  # fmt: skip
    print(table[[c for c in cols if c in table]].to_string(index=False))
    print(f"wrote {args.out}/sampler.json and sampler.csv")


def _write(rows: list[dict], out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "sampler.json", json.dumps(rows, indent=1, default=str))
    atomic_write_text(out / "sampler.csv", table.to_csv(index=False))
    return table


def _split_commas(text: str) -> list[str]:
    """'cfg/ancestral/100,clip/ancestral/100' -> settings; a part without '/' continues an interval."""
    out: list[str] = []
    for part in text.split(","):
        if "/" in part or not out:
            out.append(part)
        else:
            out[-1] += "," + part
    return out


if __name__ == "__main__":
    main()
