"""Width and coverage of the harness's intervals against the true sampling spread, on Gaussian features.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_interval_width.py --n 1000 --d 64 --draws 200
    .venv/bin/python benchmarks/bench_interval_width.py --n 5000 --d 64 --draws 60 --methods jackknife
    .venv/bin/python benchmarks/bench_interval_width.py --n 1000 --d 2048 --draws 30 --json out.json
    .venv/bin/python benchmarks/bench_interval_width.py --n 30000 --d 64 --draws 200 --methods jackknife --metrics fid

Each draw is an independent pair of sets (n "generated" rows from N(0.15, diag(scale^2)), 1.35 n "reference"
rows from N(0, I)), put through exactly what the metrics stage does for one setting
(``glidebench.runner.uncertainty.Draws.make`` + ``setting_uncertainty``). Over the draws it reports, per metric and
interval method:

- ``true SD``: the standard deviation of the estimate (replicate 0, the number a run reports) over the draws;
- ``interval SD / true SD``: the root mean square of the implied SDs (half-width / the method's quantile:
  t_{G-1} for the jackknife, z for the bootstrap's percentile interval) over the true SD: 1 is right, above 1
  too wide, below too narrow;
- ``coverage``: the fraction of intervals that contain the estimator's expectation at this size (the mean of
  the estimates over the draws; FID and precision/recall depend on the sample size, so this is what an interval
  at this size is for);
- ``seconds``: the mean time of the interval computation per draw (all metrics), on this machine.

Numbers go in docs/uncertainty.md, not in asserts (tests/glidebench/test_jackknife.py holds the checks).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from tqdm import tqdm

METRICS = ("fid", "kid_mean", "precision", "recall", "clip_score")


def run(
    n: int,
    d: int,
    draws: int,
    method: str,
    resamples: int,
    seed: int,
    partial: str | None = None,
    metrics: tuple[str, ...] = METRICS,
) -> dict:
    """The rows of one method; with ``partial``, the summary of the draws done so far is written there (JSON,
    atomically) after every draw, so a long run that is stopped still leaves its figures."""
    from scipy.stats import norm

    from glidebench.metrics import jackknife as J
    from glidebench.runner.uncertainty import Draws, setting_uncertainty

    rng = np.random.default_rng([seed, n, d])
    scale = np.linspace(0.8, 1.2, d)
    m = int(round(1.35 * n))
    design = Draws.make(n, m, 0, resamples, seed, method=method)
    if method == "jackknife":
        quantile = J.t_quantile(design.confidence, int(design.gen_labels.max()))
    else:
        quantile = float(norm.ppf(0.5 + design.confidence / 2))
    est: dict[str, list[float]] = {k: [] for k in metrics}
    half: dict[str, list[float]] = {k: [] for k in metrics}
    lohi: dict[str, list[tuple[float, float]]] = {k: [] for k in metrics}
    seconds = []
    for _ in tqdm(range(draws), desc=f"{method} n={n} d={d}", unit="draw"):
        x = (rng.normal(size=(n, d)) * scale + 0.15).astype(np.float32)
        y = rng.normal(size=(m, d)).astype(np.float32)
        img, txt = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
        img[:, 0] += 1.0
        txt[:, 0] += 1.0  # a CLIP score stand-in: cosines of correlated pairs
        draws_ = Draws.make(n, m, 0, resamples, seed, method=method)  # fresh reference cache per draw
        t0 = time.perf_counter()
        if metrics == ("fid",):  # FID alone: the jackknife of the harness without the pairwise pass
            rep = J.fid_jackknife(x, y, design.gen_labels, design.ref_labels)
            lo_hi = J.jackknife_interval(rep) if method == "jackknife" else (float("nan"),) * 2
            cols, reps = {"fid_lo": lo_hi[0], "fid_hi": lo_hi[1]}, {"fid": rep}
        else:
            cols, reps = setting_uncertainty(draws_, {"pool3": x}, {"pool3": y}, n, 3, (img, txt), {}, [])
        seconds.append(time.perf_counter() - t0)
        for k in metrics:
            lo, hi = cols[f"{k}_lo"], cols[f"{k}_hi"]
            est[k].append(float(reps[k][0]))
            half[k].append((hi - lo) / 2)
            lohi[k].append((lo, hi))
        if partial is not None and len(seconds) > 1:
            tmp = partial + ".tmp"
            with open(tmp, "w") as f:
                json.dump(
                    summarise(n, m, d, method, resamples, design, quantile, seconds, est, half, lohi), f
                )
            os.replace(tmp, partial)
    return summarise(n, m, d, method, resamples, design, quantile, seconds, est, half, lohi)


def summarise(n, m, d, method, resamples, design, quantile, seconds, est, half, lohi) -> dict:
    """Per metric: the true SD over the draws, the interval's implied SD over it, and the coverage."""
    out = {"n": n, "n_reference": m, "d": d, "draws": len(seconds), "method": method,
           "resamples": resamples if method == "bootstrap" else int(design.gen_labels.max()) + 1,
           "seconds_per_draw": float(np.mean(seconds)), "metrics": {}}  # fmt: skip
    for k in est:
        e, h = np.array(est[k]), np.array(half[k])
        target = float(e.mean())
        true_sd = float(e.std(ddof=1)) if len(e) > 1 else float("nan")
        implied = float(np.sqrt(np.nanmean((h / quantile) ** 2)))
        cover = float(np.mean([lo <= target <= hi for lo, hi in lohi[k]]))
        out["metrics"][k] = {"mean": target, "true_sd": true_sd, "interval_sd_ratio": implied / true_sd,
                             "coverage": cover}  # fmt: skip
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| metric | N (gen / ref) | d | method | draws | true SD | interval SD / true SD | coverage | s per draw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        meth = r["method"] + (
            f" (R = {r['resamples']})" if r["method"] == "bootstrap" else f" (G = {r['resamples']})"
        )
        for k, v in r["metrics"].items():
            lines.append(
                f"| {k} | {r['n']} / {r['n_reference']} | {r['d']} | {meth} | {r['draws']} | {v['true_sd']:.4g} | "
                f"{v['interval_sd_ratio']:.2f} | {100 * v['coverage']:.0f} % | {r['seconds_per_draw']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="generated rows per draw (references: 1.35 n)")
    ap.add_argument("--d", type=int, default=64, help="feature width (Inception pool3: 2048)")
    ap.add_argument("--draws", type=int, default=100, help="independent draws")
    ap.add_argument("--methods", default="jackknife,bootstrap", help="comma-separated: jackknife, bootstrap")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument(
        "--metrics", default=",".join(METRICS), help="fid alone skips the pairwise pass (cheap at 30k)"
    )
    ap.add_argument(
        "--partial", help="after every draw, write the summary of the draws so far here (JSON, one method)"
    )
    a = ap.parse_args()
    rows = [
        run(a.n, a.d, a.draws, m, a.resamples, a.seed, a.partial, tuple(a.metrics.split(",")))
        for m in a.methods.split(",")
    ]
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
