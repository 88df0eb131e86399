"""Width and coverage of the harness's intervals against the true sampling spread, on Gaussian features.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_interval_width.py --n 1000 --d 64 --draws 200
    .venv/bin/python benchmarks/bench_interval_width.py --n 5000 --d 64 --draws 60 --methods jackknife
    .venv/bin/python benchmarks/bench_interval_width.py --n 1000 --d 2048 --draws 30 --json out.json
    .venv/bin/python benchmarks/bench_interval_width.py --n 30000 --d 64 --draws 200 --methods jackknife --metrics fid
    .venv/bin/python benchmarks/bench_interval_width.py --n 30000 --methods jackknife --seed 1 --partial a.json
    .venv/bin/python benchmarks/bench_interval_width.py --n 30000 --methods jackknife --seed 2 --point-only --partial b.json
    .venv/bin/python benchmarks/bench_interval_width.py --merge a.json b.json   # draws of several processes

Each draw is an independent pair of sets (n "generated" rows from N(0.15, diag(scale^2)), 1.35 n "reference"
rows from N(0, I)), put through exactly what the metrics stage does for one setting
(``glidebench.runner.uncertainty.Draws.make`` + ``setting_uncertainty``; ``--metrics fid``: FID's replicates
alone, ``fid_jackknife`` or the bootstrap's ``fid_replicates``). Over the draws it reports, per metric and
interval method:

- ``true SD``: the standard deviation of the estimate (replicate 0, the number a run reports) over the draws;
- ``interval SD / true SD``: the root mean square of the implied SDs (half-width / the method's quantile:
  t_{G-1} for the jackknife, t_{S (q - 1)} for the split samples of precision and recall, z for the
  bootstrap's percentile interval) over the true SD: 1 is right, above 1
  too wide, below too narrow;
- ``coverage``: the fraction of intervals that contain the estimator's expectation at this size (the mean of
  the estimates over the draws; FID and precision/recall depend on the sample size, so this is what an interval
  at this size is for);
- ``seconds``: the mean time of the interval computation per draw (all metrics), on this machine.

``--partial FILE`` rewrites FILE after every draw with the summary so far and every draw's values, so a stopped
run keeps its draws; processes with different ``--seed`` draw independent sets, and ``--merge`` sums the draws of
their partial files into one row (the way to spread an expensive size over cores or sessions). ``--point-only``
draws compute the estimates alone (what a run reports, without the split groups and leave-one-out values), at
about half the cost of a draw with intervals at 30,000: merged with interval draws, they sharpen the true SD, the
uncertain half of the ratio.

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


def quantiles(
    method: str, n: int, blocks: int, metrics: tuple[str, ...], confidence: float = 0.95
) -> dict[str, float]:
    """The quantile each metric's half-width is divided by: t_{G-1} for the jackknife, t_{S (q - 1)} for the
    split samples of precision and recall, z for the bootstrap's percentile interval."""
    from scipy.stats import norm

    from glidebench.metrics import jackknife as J
    from glidebench.runner.uncertainty import SPLIT_METRICS

    if method == "bootstrap":
        return {k: float(norm.ppf(0.5 + confidence / 2)) for k in metrics}
    q, reps = J.split_design(n)
    return {
        k: J.t_quantile(confidence, reps * (q - 1) if k in SPLIT_METRICS else blocks - 1) for k in metrics
    }


def _point_values(design, x, y, img, txt, metrics) -> dict[str, np.ndarray]:
    """Replicate 0 of every metric (the number a run reports) without the intervals: FID's full-set value,
    and one pass over the pairwise tiles for KID's full-set MMD^2 and precision/recall (no split groups)."""
    from glidebench.metrics import jackknife as J
    from glidebench.metrics.clip_score import clip_score

    reps: dict[str, np.ndarray] = {"fid": J.fid_jackknife(x, y, design.gen_labels, design.ref_labels)[:1]}
    if set(metrics) - {"fid", "clip_score"}:
        side = J.reference_side(y, design.ref_labels, 3)
        reps |= J.pair_replicates(x, side, design.gen_labels)
    reps["clip_score"] = np.array([clip_score(img, txt)["clip_score"]])  # the results column
    return reps


def run(
    n: int,
    d: int,
    draws: int,
    method: str,
    resamples: int,
    seed: int,
    partial: str | None = None,
    metrics: tuple[str, ...] = METRICS,
    point_only: bool = False,
) -> dict:
    """The rows of one method; with ``partial``, the summary of the draws done so far and every draw's values
    are written there (JSON, atomically) after every draw, so a long run that is stopped still leaves its
    figures. ``point_only``: the estimates alone (no interval), for the true SD (merge them with interval draws
    of other seeds)."""
    from glidebench.metrics import bootstrap as B
    from glidebench.metrics import jackknife as J
    from glidebench.runner.uncertainty import Draws, setting_uncertainty

    rng = np.random.default_rng([seed, n, d])
    scale = np.linspace(0.8, 1.2, d)
    m = int(round(1.35 * n))
    design = Draws.make(n, m, 0, resamples, seed, method=method)
    est: dict[str, list[float]] = {k: [] for k in metrics}
    half: dict[str, list[float]] = {k: [] for k in metrics}
    lohi: dict[str, list[tuple[float, float]]] = {k: [] for k in metrics}
    seconds = []
    units = resamples if method == "bootstrap" else int(design.gen_labels.max()) + 1
    label = "point values" if point_only else method
    for _ in tqdm(range(draws), desc=f"{label} n={n} d={d}", unit="draw"):
        x = (rng.normal(size=(n, d)) * scale + 0.15).astype(np.float32)
        y = rng.normal(size=(m, d)).astype(np.float32)
        img, txt = rng.normal(size=(n, 16)), rng.normal(size=(n, 16))
        img[:, 0] += 1.0
        txt[:, 0] += 1.0  # a CLIP score stand-in: cosines of correlated pairs
        full = not point_only and metrics != ("fid",)  # the pairwise pass: a fresh reference cache per draw
        draws_ = Draws.make(n, m, 0, resamples, seed, method=method) if full else design
        t0 = time.perf_counter()
        cols: dict[str, float] = {}
        if point_only:
            reps = _point_values(design, x, y, img, txt, metrics)
        elif metrics == ("fid",):  # FID alone: the harness's FID replicates without the pairwise pass
            if method == "jackknife":
                rep = J.fid_jackknife(x, y, design.gen_labels, design.ref_labels)
            else:
                rep = B.fid_replicates(
                    x, y, design.gen_counts, design.ref_counts, design.gen_labels, design.ref_labels
                )
            lo_hi = design.interval(rep, "fid")
            cols, reps = {"fid_lo": lo_hi[0], "fid_hi": lo_hi[1]}, {"fid": rep}
        else:
            cols, reps = setting_uncertainty(draws_, {"pool3": x}, {"pool3": y}, n, 3, (img, txt), {}, [])
        if not point_only:
            seconds.append(time.perf_counter() - t0)
        for k in metrics:
            est[k].append(float(reps[k][0]))
            if not point_only:
                lo, hi = cols[f"{k}_lo"], cols[f"{k}_hi"]
                half[k].append((hi - lo) / 2)
                lohi[k].append((lo, hi))
        if partial is not None and len(est[metrics[0]]) > 1:
            row = summarise(n, m, d, method, units, seconds, est, half, lohi)
            row["raw"] = {"seed": seed, "seconds": seconds, "est": est, "half": half, "lohi": lohi}
            tmp = partial + ".tmp"
            with open(tmp, "w") as f:
                json.dump(row, f)
            os.replace(tmp, partial)
    return summarise(n, m, d, method, units, seconds, est, half, lohi)


def merge(paths: list[str]) -> dict:
    """One row from the partial files of several processes (same n, d and method; different seeds), point-only
    files included: the true SD comes from every draw, the interval SD and coverage from the interval draws."""
    rows = []
    for p in paths:
        with open(p) as f:
            rows.append(json.load(f))
    first = rows[0]
    keys = ("n", "n_reference", "d", "method", "resamples")
    for p, r in zip(paths, rows):
        if (
            any(r[k] != first[k] for k in keys)
            or "raw" not in r
            or r["metrics"].keys() != first["metrics"].keys()
        ):
            raise SystemExit(f"{p}: not a partial file of the same size, method and metrics as {paths[0]}")
    seeds = [r["raw"]["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the partial files share a --seed ({seeds}): their draws are not independent")
    raw = [r["raw"] for r in rows]
    cat = lambda key: {k: sum((x[key][k] for x in raw), []) for k in first["metrics"]}  # noqa: E731
    out = summarise(*(first[k] for k in keys), sum((x["seconds"] for x in raw), []), cat("est"), cat("half"),
                    cat("lohi"))  # fmt: skip
    out["seeds"] = seeds
    return out


def summarise(n, m, d, method, units, seconds, est, half, lohi) -> dict:
    """Per metric: the true SD over all draws, the interval's implied SD over it (root mean square over the draws
    with an interval), and the coverage of those intervals. ``units``: the bootstrap's resamples or the
    jackknife's blocks."""
    first = next(iter(est))
    out = {"n": n, "n_reference": m, "d": d, "draws": len(est[first]), "interval_draws": len(half[first]),
           "method": method, "resamples": units,
           "seconds_per_draw": float(np.mean(seconds)) if seconds else float("nan"), "metrics": {}}  # fmt: skip
    q = quantiles(method, n, units, tuple(est))
    for k in est:
        e, h = np.array(est[k]), np.array(half[k])
        target = float(e.mean())
        true_sd = float(e.std(ddof=1)) if len(e) > 1 else float("nan")
        implied = float(np.sqrt(np.nanmean((h / q[k]) ** 2))) if len(h) else float("nan")
        cover = float(np.mean([lo <= target <= hi for lo, hi in lohi[k]])) if len(h) else float("nan")
        out["metrics"][k] = {"mean": target, "true_sd": true_sd, "interval_sd_ratio": implied / true_sd,
                             "coverage": cover}  # fmt: skip
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| metric | N (gen / ref) | d | method | draws (with interval) | true SD | interval SD / true SD | coverage | s per draw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        meth = r["method"] + (
            f" (R = {r['resamples']})" if r["method"] == "bootstrap" else f" (G = {r['resamples']})"
        )
        count = r["draws"] if r["interval_draws"] == r["draws"] else f"{r['draws']} ({r['interval_draws']})"
        for k, v in r["metrics"].items():
            lines.append(
                f"| {k} | {r['n']} / {r['n_reference']} | {r['d']} | {meth} | {count} | {v['true_sd']:.4g} | "
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
    ap.add_argument(
        "--point-only",
        action="store_true",
        help="estimates alone, for the true SD (merge with interval draws)",
    )
    ap.add_argument(
        "--merge", nargs="+", metavar="PARTIAL", help="one row from these partial files, then stop"
    )
    a = ap.parse_args()
    if a.merge:
        print(markdown([merge(a.merge)]))
        return
    rows = [
        run(a.n, a.d, a.draws, m, a.resamples, a.seed, a.partial, tuple(a.metrics.split(",")), a.point_only)
        for m in a.methods.split(",")
    ]
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
