"""Benchmark (run by hand, not a test): glibc's malloc left as it is against glide.fast.tune_cpu_allocator.

    python benchmarks/bench_allocator.py [--size embedded|tiny] [--images 50] [--repeats 2] [--threads 2]
        [--paths official,fast] [--out runs/bench-allocator]

The allocator setting is process-wide, so each measurement is a child process: ``plain`` (glibc's defaults)
or ``tuned`` (``tune_cpu_allocator()`` first), alternating, ``--repeats`` rounds of each. A child samples
``--images`` captions with classifier-free guidance at scale 2 (DPM-Solver++(2M) SDE, quad20: the default
run's sampler; 2 x images rows per evaluation) on each path of ``--paths`` (``official`` = the official
numerics, ``fast`` = ``FastPath()``), one untimed warm-up evaluation first, and reports the seconds and the
SHA-256 of the sampled tensor's bytes. The table gives the median seconds per (allocator, path), the ratio to
plain official, and whether every child's output on a path was the same to the bit as plain's. Writes
bench_allocator.csv and bench_allocator.md (atomically) into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

ALLOCATORS = ("plain", "tuned")
PATHS = ("official", "fast")
COLUMNS = ["size", "images", "allocator", "path", "runs", "median_s", "ratio_to_plain_official", "same_bits"]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: {path: {"seconds", "sha256"}} plus what the allocator was."""
    from glide.fast import FastPath, tune_cpu_allocator

    state = tune_cpu_allocator() if args.child == "tuned" else None
    if args.child == "tuned" and state is None:
        raise SystemExit(
            "tune_cpu_allocator did nothing here (not glibc, or MALLOC_* set): nothing to compare"
        )
    import torch
    from bench_fast import load_base

    from glide.pipeline import GlidePipeline

    torch.set_num_threads(args.threads)
    model = load_base(args.size)
    prompts = [f"a photo of object number {i}" for i in range(args.images)]
    seeds = list(range(args.images))
    out: dict[str, Any] = {"allocator": state}
    for path in args.paths.split(","):
        pipe = GlidePipeline(model, fast=FastPath() if path == "fast" else None)
        with torch.no_grad():
            pipe.sample_base(prompts[:1], seeds[:1], "cfg", 2.0, "dpm++2m-sde", "2")  # warm-up
            t0 = time.perf_counter()
            x = pipe.sample_base(prompts, seeds, "cfg", 2.0, "dpm++2m-sde", "quad20")
            seconds = time.perf_counter() - t0
        digest = hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()
        out[path] = {"seconds": seconds, "sha256": digest}
    return out


def run_child(allocator: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", allocator, "--size", args.size, "--images", str(args.images),
        "--threads", str(args.threads), "--paths", args.paths,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"child {allocator} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(
    results: dict[str, list[dict[str, Any]]], size: str, images: int, paths: Sequence[str]
) -> pd.DataFrame:
    """The table of medians from the children's results (``results[allocator]`` = one dict per child)."""
    base = (
        statistics.median(r["official"]["seconds"] for r in results["plain"]) if "official" in paths else None
    )
    rows = []
    for allocator in ALLOCATORS:
        for path in paths:
            runs = results[allocator]
            median = statistics.median(r[path]["seconds"] for r in runs)
            reference = results["plain"][0][path]["sha256"]
            rows.append(
                {
                    "size": size,
                    "images": images,
                    "allocator": allocator,
                    "path": path,
                    "runs": len(runs),
                    "median_s": median,
                    "ratio_to_plain_official": median / base if base else float("nan"),
                    "same_bits": all(r[path]["sha256"] == reference for r in runs),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="embedded", choices=["embedded", "tiny", "full"])
    p.add_argument("--images", type=int, default=50, help="captions per sampling run (rows = 2 x images)")
    p.add_argument("--repeats", type=int, default=2, help="child processes per allocator (alternating)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--paths", default="official,fast", help="comma-separated: official, fast")
    p.add_argument("--out", type=Path, default=Path("runs/bench-allocator"))
    p.add_argument("--child", choices=ALLOCATORS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    paths = args.paths.split(",")
    if not paths or any(x not in PATHS for x in paths):
        raise SystemExit(f"--paths takes a comma-separated subset of {PATHS}, got {args.paths!r}")
    if args.child:
        print(json.dumps(child(args)))
        return None
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in ALLOCATORS}
    for round_ in range(args.repeats):
        for allocator in ALLOCATORS:
            r = run_child(allocator, args)
            results[allocator].append(r)
            times = ", ".join(f"{k} {r[k]['seconds']:.2f} s" for k in paths)
            print(f"round {round_ + 1}: {allocator}: {times}", flush=True)
    table = summarise(results, args.size, args.images, paths)
    from bench_fast import markdown

    from glidebench.store import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    state = next(r["allocator"] for r in results["tuned"])
    header = [
        f"# glibc malloc: plain vs tune_cpu_allocator, CPU fp32, base model ({args.size}), sampling",
        "",
        f"{args.images} captions, classifier-free scale 2, dpm++2m-sde quad20, {args.threads} threads; median "
        f"of {args.repeats} child processes per allocator, alternating. tuned: {state}.",
    ]
    atomic_write_text(args.out / "bench_allocator.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "bench_allocator.md", markdown(table, header))
    print(markdown(table, header))
    return table


if __name__ == "__main__":
    main()
