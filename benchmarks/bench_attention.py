"""Benchmark (run by hand, not a test): attention implementation and guidance-step costs of full-size GLIDE.

    python benchmarks/bench_attention.py [--device cpu|cuda] [--batch-sizes 2,8] [--repeats 3] [--out runs/bench]

Prints, as ratios measured in one run on one machine:
- SDPA vs the official einsum attention: per-evaluation latency of the full-size base model (385M) at the
  classifier-free batch (2B rows for B images), fp32;
- the cost of one CLIP-guided step (a base evaluation at batch B + a noised-CLIP forward/backward) relative to
  one classifier-free step (a base evaluation at batch 2B).
On GPU it adds fp16 (official conversion) and bf16 rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from glidebench.profile import Case
from glidebench.suites.throughput import run_throughput


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="2,8", help="images per step (the CFG batch is twice this)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--out", type=Path, default=Path("runs/bench-attention"))
    args = p.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = ["fp32"] + (["fp16", "bf16"] if args.device.startswith("cuda") else [])
    case_list = [Case("base", b, d, a) for b in sizes for d in dtypes for a in ("einsum", "sdpa")]
    case_list += [
        Case("base", b // 2 or 1, "fp32", "einsum") for b in sizes
    ]  # the B-row base eval of a CLIP step
    case_list += [Case("clip-step", b, "fp32", "einsum") for b in sizes]
    table = run_throughput(case_list, args.out, args.device, args.size, warmup=1, repeats=args.repeats)
    cols = [
        "model",
        "batch_size",
        "dtype",
        "attention",
        "ms_per_eval",
        "gflop_per_eval",
        "achieved_tflops",
        "peak_memory_mib",
    ]
    print(table[[c for c in cols if c in table]].to_string(index=False))

    def ms(model, b, dtype="fp32", attention="einsum"):
        sel = table[
            (table.model == model)
            & (table.batch_size == b)
            & (table.dtype == dtype)
            & (table.attention == attention)
        ]
        return float(sel.ms_per_eval.iloc[0])

    print("\nratios (same run, same machine):")
    for b in sizes:
        for d in dtypes:
            print(
                f"  base, {b} images ({2 * b} rows), {d}: sdpa / einsum latency = {ms('base', b, d, 'sdpa') / ms('base', b, d):.3f}"
            )
        half = b // 2 or 1
        # A base row count of b (the model runs 2x rows for CFG): base(b rows) = Case('base', b/2) in CFG terms.
        clip_step = ms("base", half) + ms("clip-step", b)
        cfg_step = ms("base", b)
        print(
            f"  {b} images: CLIP-guided step / classifier-free step = {clip_step / cfg_step:.3f} "
            f"(base {b} rows {ms('base', half):.0f} ms + CLIP {ms('clip-step', b):.0f} ms vs base {2 * b} rows {cfg_step:.0f} ms)"
        )


if __name__ == "__main__":
    main()
