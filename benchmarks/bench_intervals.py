"""Cost of the FID bootstrap interval at MS-COCO sizes: time and peak memory of ``fid_replicates`` for N
generated and N reference Inception pool3 features (2048 wide), resampled by 40 blocks of caption indices.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_intervals.py --sizes 10000,30000 --resamples 10
    .venv/bin/python benchmarks/bench_intervals.py --device cuda --resamples 200

Each size runs in its own process (the peak resident memory of a process only grows). It reports the one-off
cost (the per-block sums of x and x x^T of both sets: O(N d^2)), the cost per resample (the count-weighted
sums, O(blocks d^2), and the eigenvalue form of the trace term, O(d^3)), the extrapolated cost of 1000
resamples, the peak resident memory (and on CUDA the peak allocated device memory), and, for comparison, the
naive per-resample cost (a covariance of N resampled rows, O(N d^2), measured on 2 resamples).
Features are random (the cost does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, d: int, resamples: int, device: str) -> dict:
    import numpy as np
    import torch

    from glidebench.metrics import bootstrap as B
    from glidebench.metrics.fid import trace_sqrt_product

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=(n, d)).astype(np.float32)
    labels = B.unit_labels(n)
    units = int(labels.max()) + 1
    cx, cy = B.resample_counts(units, resamples, rng), B.resample_counts(units, resamples, rng)
    dev = torch.device(device)
    t0 = time.perf_counter()
    mx = B._BlockMoments(torch.from_numpy(x).double(), labels, dev)
    my = B._BlockMoments(torch.from_numpy(y).double(), labels, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    step = max(1, min(64, 2**24 // (d * d)))
    t1 = time.perf_counter()
    for lo in range(0, resamples, step):
        mu1, s1 = mx.cov(torch.from_numpy(cx[lo : lo + step]).to(dev))
        mu2, s2 = my.cov(torch.from_numpy(cy[lo : lo + step]).to(dev))
        val = (
            ((mu1 - mu2) ** 2).sum(1)
            + s1.diagonal(dim1=1, dim2=2).sum(1)
            + s2.diagonal(dim1=1, dim2=2).sum(1)
        )
        (val - 2 * trace_sqrt_product(s1, s2)).cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    per = (time.perf_counter() - t1) / resamples
    xt = torch.from_numpy(x).double().to(dev)
    t2 = time.perf_counter()
    for r in range(2):  # naive: the covariance of the N resampled rows
        w = torch.from_numpy(cx[r][labels]).to(dev)
        mu = (w @ xt) / n
        ((xt * w[:, None]).T @ xt - n * torch.outer(mu, mu)) / (n - 1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    naive = (time.perf_counter() - t2) / 2
    out = {
        "n": n, "d": d, "blocks": units, "device": device, "threads": torch.get_num_threads(),
        "setup_s": round(setup, 2), "per_resample_s": round(per, 3), "resamples_timed": resamples,
        "extrapolated_1000_s": round(setup + 1000 * per, 1),
        "naive_covariance_per_resample_s": round(naive, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }  # fmt: skip
    if dev.type == "cuda":
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,30000", help="comma-separated N (each set)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--resamples", type=int, default=10, help="resamples timed (the rest is extrapolated)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.dim, a.resamples, a.device)))
        return
    for n in (int(s) for s in a.sizes.split(",")):
        args = [sys.executable, __file__, "--one", str(n), "--dim", str(a.dim),
                "--resamples", str(a.resamples),
                "--device", a.device]  # fmt: skip
        res = subprocess.run(args, capture_output=True, text=True, check=True)
        print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
