"""Benchmark (run by hand, not a test): CPU threads for sampling and for the metric stage, idle and under load.

    python benchmarks/bench_threads.py [--threads 1,2] [--loads 0,1,2] [--repeats 3]
        [--workloads sample,torch-eigvalsh,...] [--settle 20] [--out runs/bench-threads]

Each measurement is a fresh child process whose thread variables (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``) are set before numpy and torch load, so numpy's OpenBLAS and torch's MKL / OpenMP pools
both start at that count (``torch.set_num_threads`` too). Workloads:

- ``sample``: the embedded base model (``embedded-base-short``, the default run's) sampling 50 captions with
  classifier-free guidance (dpm++2m-sde, 3 steps, 100 rows per evaluation), after a two-step warm-up, with
  ``glide.fast.tune_cpu_allocator`` as the CLI runs it;
- the metric stage's LAPACK and BLAS, float64 at Inception's d = 2048: ``torch-eigvalsh`` and
  ``torch-cholesky`` of a 2048 x 2048 covariance (glidebench.metrics.bootstrap's FID trace term),
  ``numpy-eigvalsh`` (the same through numpy's OpenBLAS), ``numpy-cov`` (``np.cov`` of 10,000 x 2048 rows,
  glidebench.metrics.fid) and ``numpy-eigvals`` (the non-symmetric eigenvalues of a 1024 x 1024 product, the
  form torch-fidelity's point FID uses, at half its size to keep the run short);
- ``pairwise``: the metric stage's pass over pairwise tiles (``glidebench.metrics.pairs``: k-NN radii with 5
  splits into 4 groups, KID kernel sums in 40 blocks) of two sets of 4,096 x 2048 float64 rows, each set
  against itself and one against the other: float64 matrix products and the selections beside them.

Load: for each level N of ``--loads`` the script starts N busy-loop processes itself (``while True: pass``),
waits ``--settle`` seconds, measures, and stops them (by their process ids). Within a level it alternates
the thread counts per repeat and workload. Beside every measurement it records the 1-minute load average at
the child's start and the mean number of runnable tasks (``/proc/loadavg``'s fourth field, sampled every
0.25 s while the child runs; the child's own running threads count in it). On a machine shared with other
work, level 0 is "no load of ours", not idle: the load columns say what there was.

Writes bench_threads.csv (every child) and bench_threads.md (medians per workload, load level and threads)
atomically into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WORKLOADS = (
    "sample",
    "torch-eigvalsh",
    "torch-cholesky",
    "numpy-eigvalsh",
    "numpy-cov",
    "numpy-eigvals",
    "pairwise",
)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BUSY_LOOP = "while True: pass"


# ----------------------------------------------------------------------------------------------------------
# Child: one workload at one thread count (numpy and torch are imported here, after the variables are set)


def _covariance(d: int = 2048, n: int = 4096):
    import numpy as np

    x = np.random.default_rng(0).standard_normal((n, d))
    return np.cov(x, rowvar=False)


def _workload(name: str) -> tuple[Callable[[], Any], int]:
    """(the timed call, how many timed calls) of workload ``name``, set up and warmed up."""
    import numpy as np
    import torch

    if name == "sample":
        from glide.checkpoints import load_model
        from glide.fast import tune_cpu_allocator
        from glide.pipeline import GlidePipeline
        from glidebench.models import models_dir

        tune_cpu_allocator()
        model = load_model(models_dir() / "embedded-base-short.safetensors", device="cpu").float().eval()
        pipe = GlidePipeline(model)
        prompts, seeds = [f"a red circle number {i}" for i in range(50)], list(range(50))
        with torch.no_grad():
            pipe.sample_base(prompts[:1], seeds[:1], "cfg", 2.0, "dpm++2m-sde", "2")  # warm-up

        def fn() -> Any:
            with torch.no_grad():
                return pipe.sample_base(prompts, seeds, "cfg", 2.0, "dpm++2m-sde", "3")

        return fn, 1
    if name == "numpy-cov":
        x = np.random.default_rng(0).standard_normal((10_000, 2048))
        np.cov(x[:256], rowvar=False)
        return lambda: np.cov(x, rowvar=False), 2
    if name == "numpy-eigvals":
        c = _covariance(1024, 2048)
        a = c @ (c + np.eye(1024))
        np.linalg.eigvals(a[:64, :64])
        return lambda: np.linalg.eigvals(a), 2
    if name == "pairwise":
        from glidebench.metrics import pairs

        rng = np.random.default_rng(0)
        x, y = (torch.from_numpy(rng.standard_normal((4096, 2048))) for _ in range(2))
        groups, labels = rng.integers(0, 4, (5, 4096)), np.arange(4096) * 40 // 4096

        def pass_() -> Any:
            wx, wy = pairs.within(x, 3, groups, labels), pairs.within(y, 3, groups, labels)
            return pairs.across(x, y, wx, wy, (groups, groups), (labels, labels))

        return pass_, 1
    c = _covariance()
    if name == "numpy-eigvalsh":
        np.linalg.eigvalsh(c[:64, :64])
        return lambda: np.linalg.eigvalsh(c), 2
    t = torch.from_numpy(c)
    if name == "torch-eigvalsh":
        torch.linalg.eigvalsh(t[:64, :64])
        return lambda: torch.linalg.eigvalsh(t), 2
    if name == "torch-cholesky":
        torch.linalg.cholesky(t)
        return lambda: torch.linalg.cholesky(t), 5
    raise SystemExit(f"unknown workload {name!r}; choose from {WORKLOADS}")


def child(name: str, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    fn, calls = _workload(name)
    seconds = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(seconds), "calls": calls, "torch_threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------------------
# Parent: load levels, children, load records


def read_loadavg() -> tuple[float, int]:
    """(1-minute load average, tasks runnable now) from /proc/loadavg."""
    fields = Path("/proc/loadavg").read_text().split()
    return float(fields[0]), int(fields[3].split("/")[0])


def run_child(name: str, threads: int) -> dict[str, Any]:
    """Measure ``name`` at ``threads`` in a fresh process, sampling the runnable-task count while it runs."""
    env = os.environ | {var: str(threads) for var in THREAD_VARS}
    load1, _ = read_loadavg()
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append(read_loadavg()[1])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--threads", str(threads)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        stop.set()
        sampler.join()
    if proc.returncode:
        raise SystemExit(
            f"child {name} at {threads} threads failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return r | {"load1_start": load1, "runnable_mean": statistics.mean(samples) if samples else float("nan")}


class BusyLoops:
    """``n`` busy-loop processes, started on entry and stopped (by pid) on exit."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> BusyLoops:
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)


def summarise(rows: list[dict[str, Any]], threads: Sequence[int]) -> Any:
    """Medians per (workload, load level, threads), side by side, with the ratio to the first thread count."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (workload, load), g in df.groupby(["workload", "busy_loops"], sort=False):
        row: dict[str, Any] = {"workload": workload, "busy_loops": load}
        for n in threads:
            sub = g[g.threads == n]
            row[f"{n}t_median_s"] = statistics.median(sub.seconds) if len(sub) else float("nan")
        for n in threads[1:]:
            row[f"{n}t/{threads[0]}t"] = row[f"{n}t_median_s"] / row[f"{threads[0]}t_median_s"]
        row["runs"] = len(g) // len(threads)
        row["load1"] = f"{g.load1_start.min():.2f}-{g.load1_start.max():.2f}"
        row["runnable_mean"] = float(g.runnable_mean.mean())
        out.append(row)
    return pd.DataFrame(out)


def main(argv: Sequence[str] | None = None) -> Any:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="thread counts to compare")
    p.add_argument("--loads", default="0,1,2", help="busy-loop processes per level")
    p.add_argument("--repeats", type=int, default=3, help="children per (workload, level, threads)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument(
        "--settle", type=float, default=20.0, help="seconds between starting the load and measuring"
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-threads"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, int(args.threads))))
        return None
    threads = [int(n) for n in args.threads.split(",")]
    workloads = args.workloads.split(",")
    if any(w not in WORKLOADS for w in workloads):
        raise SystemExit(f"--workloads takes a comma-separated subset of {WORKLOADS}")
    rows: list[dict[str, Any]] = []
    for load in (int(n) for n in args.loads.split(",")):
        with BusyLoops(load):
            if load:
                time.sleep(args.settle)
            for rep in range(args.repeats):
                for w in workloads:
                    order = threads if rep % 2 == 0 else threads[::-1]
                    for n in order:
                        r = run_child(w, n)
                        rows.append({"workload": w, "busy_loops": load, "threads": n, "repeat": rep} | r)
                        print(
                            f"load {load} rep {rep} {w} {n}t: {r['seconds']:.3f} s (load1 {r['load1_start']:.2f}, "
                            f"runnable {r['runnable_mean']:.1f})",
                            flush=True,
                        )
        write(rows, threads, args)  # after each level: a run cut short keeps what it measured
    return write(rows, threads, args)


def write(rows: list[dict[str, Any]], threads: Sequence[int], args: argparse.Namespace) -> Any:
    """bench_threads.csv (every child) and bench_threads.md (the medians) in ``args.out``; returns the table."""
    import pandas as pd
    from bench_fast import markdown

    from glidebench.store import atomic_write_text

    table = summarise(rows, threads)
    header = [
        "# CPU threads: sampling and the metric stage's LAPACK, with 0..N busy-loop processes beside",
        "",
        f"{os.cpu_count()} CPUs; medians of {args.repeats} fresh child processes per cell (thread variables set "
        "before numpy and torch load), thread counts alternating. load1: the 1-minute load average at the "
        "children's start (min-max); runnable_mean: runnable tasks while they ran (theirs included).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "bench_threads.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(args.out / "bench_threads.md", markdown(table, header))
    print(markdown(table, header), flush=True)
    return table


if __name__ == "__main__":
    main()
