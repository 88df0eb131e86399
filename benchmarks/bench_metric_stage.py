"""Peak memory and time of the whole metric stage at MS-COCO sizes, on synthetic features.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metric_stage.py --sizes 1000,10000,30000
    .venv/bin/python benchmarks/bench_metric_stage.py --sizes 10000 --skip-intervals --threads 2
    .venv/bin/python benchmarks/bench_metric_stage.py --sizes 10000,30000 --threads 1 --pair-threads 2

For each N (generated images per setting; references 1.35 N, as MS-COCO's 40,504 val2014 images against 30k
samples) the features are written by one process as the harness caches them (Inception pool3, 2048-d,
float32, Gaussian; a stand-in evaluator CLIP: random 512-d image embeddings per setting and caption
embeddings), and measured by another that loads them memory-mapped (copy-on-write ``np.load(mmap_mode="c")``,
what ``glidebench.features.cached_features`` returns) and runs the metric stage as
``glidebench.runner.measure`` does: ``Draws.make`` once, then per setting ``uncertainty.setting_uncertainty``
(the intervals, whose pass over the pairwise tiles also gives the point precision/recall;
``--skip-intervals`` leaves them out) and ``results.setting_metrics`` (FID, KID, IS-less point metrics,
precision/recall unless the intervals gave them, CLIP score) with the run's reference cache. Two settings are
measured: what the first costs beyond the second is the reference side (work on the reference set alone,
done once per run and reused: its k-NN radii, the intervals' reference sums). The paper protocol's metric
math (4 settings) is projected as first + 3 x later. No diversity groups (the COCO profile draws one image per
caption). Each size runs in fresh processes, so ``ru_maxrss`` is that size's peak; a stage's peak is the
process's peak up to the end of that stage (it only grows). Features are random: cost does not depend on the
values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DIM, CLIP_DIM, REF_RATIO, K, KID_SUBSET, SEED = 2048, 512, 1.35, 3, 1000, 0
SETTINGS = 2
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def prepare(n: int, workdir: Path) -> None:
    """The feature files of one size: ref.npy, gen-<s>.npy, clip-<s>.npy, text.npy (written in chunks)."""
    import numpy as np

    rng = np.random.default_rng(SEED)

    def write(name: str, rows: int, dim: int, loc: float = 0.0, scale: float = 1.0) -> None:
        out = np.lib.format.open_memmap(workdir / name, mode="w+", dtype=np.float32, shape=(rows, dim))
        for lo in range(0, rows, 4096):
            part = rng.standard_normal((min(4096, rows - lo), dim), dtype=np.float32)
            out[lo : lo + len(part)] = part * scale + loc
        out.flush()
        del out

    write("ref.npy", round(REF_RATIO * n), DIM)
    for s in range(SETTINGS):
        write(f"gen-{s}.npy", n, DIM, loc=0.02 * (s + 1), scale=1.0 + 0.05 * s)
        write(f"clip-{s}.npy", n, CLIP_DIM)
    write("text.npy", n, CLIP_DIM)


def measure(
    n: int, workdir: Path, resamples: int, threads: int, skip_intervals: bool, pair_threads: int | None = None
) -> dict[str, Any]:
    """The metric stage of SETTINGS settings over the feature files; seconds and peak RSS per stage."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from glidebench.runner.results import setting_metrics
    from glidebench.runner.uncertainty import Draws, point_precision_recall, setting_uncertainty

    def load(name: str) -> np.ndarray:
        return np.load(workdir / name, mmap_mode="c")

    out: dict[str, Any] = {
        "n": n, "threads": threads, "pair_threads": pair_threads or threads, "settings": [],
        "imports_peak_gib": _peak_gib(),
    }  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    ref = {"pool3": load("ref.npy")}
    out["n_ref"] = len(ref["pool3"])
    text = load("text.npy")
    draws = None if skip_intervals else Draws.make(n, len(ref["pool3"]), 0, resamples, SEED)
    reference_cache: dict = {}
    out["setup_s"], out["setup_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    for s in range(SETTINGS):
        gen, clip_img = {"pool3": load(f"gen-{s}.npy")}, load(f"clip-{s}.npy")
        t1, c1 = time.perf_counter(), time.process_time()
        prc, row = None, {}
        if draws is not None:  # first, as the harness: the intervals' pass gives the point P/R too
            cols, reps = setting_uncertainty(
                draws, gen, ref, n, K, (clip_img, text), {}, [], device="cpu", pair_threads=pair_threads
            )
            prc = point_precision_recall(draws, reps)
            row["fid_interval"] = (cols.get("fid_lo"), cols.get("fid_hi"))
        t2, c2 = time.perf_counter(), time.process_time()
        metrics, _ = setting_metrics(
            {k: v[:n] for k, v in gen.items()}, ref, k=K, kid_subset_size=KID_SUBSET, seed=SEED,
            clip_pair=(clip_img[:n], text), reference_cache=reference_cache, prc=prc,
        )  # fmt: skip
        t3, c3 = time.perf_counter(), time.process_time()
        row |= {
            "point_s": t3 - t2,
            "point_cpu_s": c3 - c2,
            "point_peak_gib": _peak_gib(),
            "fid": metrics["fid"],
        }
        row["intervals_s"], row["intervals_cpu_s"] = t2 - t1, c2 - c1
        row["total_s"], row["total_cpu_s"] = t3 - t1, c3 - c1
        row["peak_gib"] = _peak_gib()
        out["settings"].append(row)
        del gen, clip_img
    return out


def rows_of(res: dict[str, Any], skip_intervals: bool) -> list[dict[str, Any]]:
    """The table's rows of one size: the first setting, a later one (its parts), the reference side, the
    4-setting projection. Wall and CPU seconds (CPU: of the whole process, all threads; on a machine shared
    with other work it is the steadier figure)."""
    first, later = res["settings"][0], res["settings"][-1]
    n, rows = res["n"], []

    def row(
        stage: str, key: str, peak: float, first_w: float = 0.0, later_w: float = 1.0, setup: bool = False
    ):
        wall = first_w * first[f"{key}_s"] + later_w * later[f"{key}_s"] + setup * res["setup_s"]
        cpu = first_w * first[f"{key}_cpu_s"] + later_w * later[f"{key}_cpu_s"] + setup * res["setup_cpu_s"]
        rows.append({"N": n, "stage": stage, "seconds": round(wall, 1), "CPU s": round(cpu, 1),
                     "peak RSS GiB": round(peak, 2)})  # fmt: skip

    intervals = "intervals skipped" if skip_intervals else "with intervals"
    rows.append({"N": n, "stage": "process after imports (baseline)", "seconds": "", "CPU s": "",
                 "peak RSS GiB": round(res["imports_peak_gib"], 2)})  # fmt: skip
    row(f"first setting ({intervals}; includes the reference side)", "total", first["peak_gib"], 1, 0, True)
    row("later setting: point metrics", "point", later["point_peak_gib"])
    if not skip_intervals:
        row("later setting: intervals", "intervals", later["peak_gib"])
    row(f"later setting ({intervals})", "total", later["peak_gib"])
    row("reference side (first - later)", "total", first["peak_gib"], 1, -1, True)
    row("paper protocol, 4 settings (first + 3 x later)", "total", later["peak_gib"], 1, 3, True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    cols = ["N", "stage", "seconds", "CPU s", "peak RSS GiB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes", default="1000,10000,30000", help="comma-separated N (generated images per setting)"
    )
    p.add_argument("--resamples", type=int, default=200, help="Draws.make's resamples (the bootstrap's R)")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads of the measuring process")
    p.add_argument(
        "--pair-threads", type=int, help="threads of the pass over pairwise tiles (default: --threads); the "
        "CLI's default gives it the CPUs free at each setting",
    )  # fmt: skip
    p.add_argument("--skip-intervals", action="store_true", help="point metrics only")
    p.add_argument("--workdir", type=Path, help="where the feature files go (default: a temporary directory)")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--_prepare", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_measure", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._prepare:
        prepare(a._prepare, a.workdir)
        return 0
    if a._measure:
        res = measure(a._measure, a.workdir, a.resamples, a.threads, a.skip_intervals, a.pair_threads)
        print(json.dumps(res))
        return 0
    env = os.environ | {v: str(a.threads) for v in THREAD_VARS}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    all_rows, raw = [], []
    if a.workdir is not None:
        a.workdir.mkdir(parents=True, exist_ok=True)
    for n in (int(s) for s in a.sizes.split(",") if s.strip()):
        work = Path(tempfile.mkdtemp(prefix=f"bench-metric-stage-{n}-", dir=a.workdir))
        try:
            base = [sys.executable, __file__, "--workdir", str(work)]
            subprocess.run([*base, "--_prepare", str(n)], env=env, check=True)
            cmd = [*base, "--_measure", str(n), "--resamples", str(a.resamples), "--threads", str(a.threads)]
            cmd += ["--pair-threads", str(a.pair_threads)] if a.pair_threads else []
            done = subprocess.run(
                cmd + (["--skip-intervals"] if a.skip_intervals else []), env=env, check=True,
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        raw.append(res)
        rows = rows_of(res, a.skip_intervals)
        all_rows += rows
        print(markdown(rows), flush=True)
    pairs = f", pairwise pass {a.pair_threads}" if a.pair_threads else ""
    print(f"## Metric stage, {a.threads} thread(s){pairs}, references {REF_RATIO} x N, d = {DIM}\n")
    print(markdown(all_rows))
    if a.json:
        a.json.write_text(json.dumps({"rows": all_rows, "raw": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
