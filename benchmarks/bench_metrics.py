"""Benchmark the metrics layer (run by hand; not a test).

Measures:
- offline Inception (fid-helper TorchScript) feature extraction, images/s, on the chosen device;
- improved precision/recall on random 2048-d features, N real x N fake (default 10k and 30k): wall time and
  the peak resident memory of a fresh child process (resource.getrusage ru_maxrss), which must stay < 4 GiB;
- FID from two N x 2048 feature sets (covariances + the Frechet distance).

Each precision/recall case runs in its own subprocess so its peak memory is its own.

    python benchmarks/bench_metrics.py                         # everything, default sizes
    python benchmarks/bench_metrics.py --prc-sizes 10000 --inception-images 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

MEMORY_LIMIT_GIB = 4.0


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**30


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _random_features(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g).abs_()  # float32, non-negative like pool3 features


def prc_child(n: int, dim: int, block_size: int, dtype: str) -> dict:
    from glidebench.metrics import precision_recall

    real, fake = _random_features(n, dim, 0).numpy(), _random_features(n, dim, 1).numpy()
    inputs_rss = _rss_gib()
    t0 = time.perf_counter()
    out = precision_recall(real, fake, k=3, block_size=block_size, dtype=getattr(torch, dtype))
    seconds = time.perf_counter() - t0
    return {
        "n": n,
        "dim": dim,
        "block_size": block_size,
        "dtype": dtype,
        "seconds": round(seconds, 2),
        "inputs_rss_gib": round(inputs_rss, 3),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
        "precision": out["precision"],
        "recall": out["recall"],
    }


def _vm_hwm_gib(pid: int) -> float:
    """Peak resident set size so far of a running process (VmHWM from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def bench_prc(n: int, dim: int, block_size: int, dtype: str, timeout: float | None) -> dict:
    """Run one case in a child process; with `timeout`, stop it then and report the peak RSS so far."""
    cmd = [sys.executable, __file__, f"--_prc-child={n}", f"--dim={dim}", f"--block-size={block_size}"]
    cmd.append(f"--dtype={dtype}")
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while child.poll() is None:
        try:
            peak = max(peak, _vm_hwm_gib(child.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        if timeout is not None and time.perf_counter() - t0 > timeout:
            child.kill()
            child.wait()
            row = {"n": n, "dim": dim, "block_size": block_size, "dtype": dtype, "completed": False}
            row.update(seconds=f">{timeout:.0f}", peak_rss_gib=round(peak, 3), inputs_rss_gib="n/a")
            row["under_limit"] = peak < MEMORY_LIMIT_GIB
            return row
        time.sleep(0.5)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"precision/recall child failed:\n{stderr}")
    row = json.loads(stdout.strip().splitlines()[-1])
    row["completed"] = True
    row["under_limit"] = row["peak_rss_gib"] < MEMORY_LIMIT_GIB
    return row


def bench_inception(num_images: int, batch_size: int, size: int, device: str) -> dict:
    from glidebench.features import InceptionExtractor

    ex = InceptionExtractor(source="fid-helper", device=device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (num_images, 3, size, size), generator=g, dtype=torch.uint8)
    ex(images[:1])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in images.split(batch_size):
        ex(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "extractor": ex.name,
        "device": device,
        "threads": torch.get_num_threads(),
        "images": num_images,
        "image_size": size,
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        "images_per_s": round(num_images / seconds, 2),
    }


def bench_fid(n: int, dim: int) -> dict:
    from glidebench.metrics import fid_from_features

    a, b = _random_features(n, dim, 2).numpy(), _random_features(n, dim, 3).numpy()
    t0 = time.perf_counter()
    fid = fid_from_features(a, b)
    return {"n": n, "dim": dim, "seconds": round(time.perf_counter() - t0, 2), "fid": round(fid, 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prc-sizes", type=int, nargs="*", default=[10_000, 30_000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument(
        "--prc-timeout",
        type=float,
        help="stop a precision/recall case after this many seconds and report its peak "
        "memory so far (the tiles are all allocated within the first blocks)",
    )
    ap.add_argument("--inception-images", type=int, default=16, help="0 skips the Inception benchmark")
    ap.add_argument("--inception-batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fid-n", type=int, default=10_000, help="0 skips the FID timing")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--_prc-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._prc_child:
        print(json.dumps(prc_child(args._prc_child, args.dim, args.block_size, args.dtype)))
        return

    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.inception_images:
        results["inception"] = r = bench_inception(
            args.inception_images, args.inception_batch, args.image_size, args.device
        )
        print(
            f"inception {r['extractor']} on {r['device']} ({r['threads']} threads): {r['images_per_s']} img/s "
            f"({r['images']} images {r['image_size']}px, batch {r['batch_size']})",
            flush=True,
        )
    results["precision_recall"] = []
    for n in args.prc_sizes:
        r = bench_prc(n, args.dim, args.block_size, args.dtype, args.prc_timeout)
        results["precision_recall"].append(r)
        print(
            f"precision/recall {n} x {n} x {args.dim} ({args.dtype}, block {args.block_size}): "
            f"{r['seconds']} s, peak RSS {r['peak_rss_gib']} GiB (inputs {r['inputs_rss_gib']} GiB), "
            f"{'OK' if r['under_limit'] else 'OVER'} the {MEMORY_LIMIT_GIB} GiB limit",
            flush=True,
        )
    if args.fid_n:
        results["fid"] = r = bench_fid(args.fid_n, args.dim)
        print(f"FID {r['n']} vs {r['n']} x {r['dim']}: {r['seconds']} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
