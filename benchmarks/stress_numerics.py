"""Benchmark (run by hand, and once per CI run at a small count): do the numerical tests hold on this machine at
every thread count, with and without other work on the CPUs?

    python benchmarks/stress_numerics.py [--repeat 20] [--threads 1,2] [--load off,on] [--out runs/stress-numerics]

For every thread count and load condition it runs the numerical tests ``--repeat`` times in a row in one fresh
pytest process (pytest-repeat's ``--count``, ``-x``: the first failure ends the condition) with
``OMP_NUM_THREADS`` set before torch loads. The tests are the fast-path test and every test that holds a
computation to a tolerance against the official code's outputs or against another path
(:data:`NUMERICAL_TESTS`). ``--load on`` runs, beside pytest, ``--load-procs`` busy processes (float32 matrix
products at one thread each, the pattern of another user's job; default 1, half of a 2-core machine), so that a
2-thread pytest has one of its threads preempted mid-kernel; ``off`` runs nothing beside it (the machine's other work is recorded, not controlled:
the 1-minute load average at the start and end of each condition is in the table).

Writes ``stress.json`` and ``stress.md`` into ``--out`` (after every condition) and prints the table; exits 1
if any condition failed. Figures are in docs/performance.md ("Numerical tests under threads and load").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The fast-path test first: it is the one that failed on a busy machine.
NUMERICAL_TESTS = [
    "tests/glide/test_fast.py",
    "tests/glide/test_parity.py",
    "tests/glide/test_clip.py",
    "tests/glide/test_clip_guided.py",
    "tests/glide/test_sampling.py",
    # the metrics against torch-fidelity, clean-fid, scikit-learn and closed forms, the pairwise pass, the jackknife
    "tests/glidebench/test_metrics.py",
    "tests/glidebench/test_pairs.py",
    "tests/glidebench/test_jackknife.py",
    "tests/glidebench/test_diversity.py",
]

_LOAD = (
    "import torch, time\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(384, 384)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a / 20.0)\n"
)


def start_load(n: int) -> list[subprocess.Popen]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-c", _LOAD], env=env) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def run_condition(threads: int, load: int, repeat: int, tests: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--count", str(repeat)]
    cmd += ["-m", "not slow and not gpu", *tests]
    load_procs = start_load(load)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        stop_load(load_procs)
    seconds = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
    return {
        "threads": threads,
        "load": f"{load} busy" if load else "off",
        "repeat": repeat,
        "passed": proc.returncode == 0,
        "summary": tail,
        "seconds": round(seconds, 1),
        "load1_start": round(load_start, 2),
        "load1_end": round(os.getloadavg()[0], 2),
        "failures": [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")][:5],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| threads | load beside | repeats | result | pytest summary | wall s | load avg start / end |",
        "|---:|---|---:|---|---|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['load']} | {r['repeat']} | {'pass' if r['passed'] else 'FAIL'} | "
            f"{r['summary']} | {r['seconds']} | {r['load1_start']} / {r['load1_end']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="runs in a row of every test per condition")
    ap.add_argument("--threads", default="1,2", help="comma-separated OMP_NUM_THREADS values")
    ap.add_argument("--load", default="off,on", help="off, on or both: a busy process per CPU beside pytest")
    ap.add_argument("--load-procs", type=int, default=1, help="busy processes beside pytest under --load on")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "stress-numerics")
    ap.add_argument("tests", nargs="*", help="test files or node ids (default: the numerical tests)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    loads = [s.strip() for s in args.load.split(",") if s.strip()]
    if not loads or any(s not in ("off", "on") for s in loads):
        ap.error(f"--load takes off, on or off,on, got {args.load!r}")
    threads = [int(s) for s in args.threads.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for load in loads:
        for n in threads:
            print(f"threads {n}, load {load}: {args.repeat} x the numerical tests ...", flush=True)
            rows.append(
                run_condition(
                    n, args.load_procs if load == "on" else 0, args.repeat, args.tests or NUMERICAL_TESTS
                )
            )
            print(f"  {rows[-1]['summary']} ({rows[-1]['seconds']} s)", flush=True)
            (args.out / "stress.json").write_text(json.dumps(rows, indent=2) + "\n")
            (args.out / "stress.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
