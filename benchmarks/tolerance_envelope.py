"""Benchmark (run by hand, not a test): how far the fast path's samples lie from the official path's, and what
bound tests/glide/test_fast.py::test_pipeline_fast_matches_official_and_reuses_text_encodings can hold.

    python benchmarks/tolerance_envelope.py [--threads 1,2] [--seeds 3,4,5 10,11,12 20,21,22]
        [--steps 10] [--out runs/tolerance-envelope]

The compared computation is the test's: the golden base model (tests/data, random weights) sampling three
captions with classifier-free guidance (s = 3, ancestral, 10 steps) through ``GlidePipeline``, official
numerics against ``FastPath(rows_per_call=2)``. For every thread count (a fresh child process whose
``OMP_NUM_THREADS`` is set before torch loads, and ``torch.set_num_threads``) and every seed triple it records

- ``fast-vs-official``: the fast path against the official path, same threads (what the test asserts);
- ``single-vs-batch``: the official path one caption at a time against the three as one batch (the envelope
  the test measured before: it depends on the machine's kernels and threads, so a bound of 3x it moved);
- ``threads-vs-1``: the official path at this thread count against the official path at one thread;
- perturbations of the fast path that a real bug would look like (guidance scale off by 1 %, the output
  convolution's weights off by 0.1 %, GroupNorm's epsilon x10, the unconditional caption's padding not masked):
  the bound must catch each.

Each row gives the maximum absolute difference, the 99.9th percentile and the mean, over all pixels in
[-1, 1]. Writes envelope.json and envelope.md into ``--out`` and prints the table.

Measured 2026-12-07 (2-core CPU shared with other work, load 7-10, torch 2 threads and 1), worst over the
three seed triples and both thread counts (max / 99.9th percentile / mean):

- fast vs official: 7.1e-3 / 1.1e-3 / 2.5e-5 (1 thread, seeds 3-5: 4.5e-3; 2 threads: 7.1e-3);
- the official path, single vs batch: 7.1e-3 / 1.1e-3 / 2.5e-5 (its max for the test's seeds 3-5: 7.1e-3 at
  1 thread, 4.0e-3 at 2, 1.06e-3 on the machine where the test failed: a bound of 3x it moved from 3.2e-3 to
  2.1e-2 with the machine);
- the official path at 2 threads vs 1: 4.5e-3 / 7.7e-4 / 2.2e-5 (images depend on the thread count);
- the smallest perturbation tried, each statistic: max 7.3e-2 (output weights x1.001), 99.9th 2.1e-2 and
  mean 7.5e-4 (GroupNorm eps x10); guidance scale x1.01: 0.25 / 8.8e-2 / 4.9e-3; padding unmasked: 2.0.

The test's bounds (tests/glide/test_fast.py, PIPELINE_BOUNDS: max 3e-2, 99.9th 5e-3, mean 1e-4) are about 4x
the worst benign value of each statistic and below every perturbation's (2.4x, 4x and 7.5x margins).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["a corgi", "an oil painting of a fox", "a red cube"]


def _stats(a, b) -> dict:
    d = (a.double() - b.double()).abs().flatten()
    return {"max": d.max().item(), "p999": d.quantile(0.999).item(), "mean": d.mean().item()}


def child(threads: int, seed_sets: list[list[int]], steps: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from glide.fast import FastPath
    from glide.pipeline import GlidePipeline
    from tests.glide.helpers import build

    data = ROOT / "tests" / "data"
    golden, meta = np.load(data / "golden_small.npz"), json.loads((data / "golden_small.json").read_text())
    official = GlidePipeline(build(golden, meta, data / "gpt2-bpe", "sd/"))

    def fast_pipeline(mutate=None):
        model = copy.deepcopy(official.base)
        if mutate is not None:
            mutate(model)
        return GlidePipeline(model, fast=FastPath(rows_per_call=2))

    def scale_out(model):
        with torch.no_grad():
            model.out[-1].weight.mul_(1.001)

    def groupnorm_eps(model):
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.eps *= 10

    def padding_unmasked(model):
        encode = model.get_text_emb
        model.get_text_emb = lambda tokens, mask: encode(tokens, torch.ones_like(mask))

    fast = fast_pipeline()
    perturbed = {
        "out-conv-weights-x1.001": fast_pipeline(scale_out),
        "groupnorm-eps-x10": fast_pipeline(groupnorm_eps),
        "padding-unmasked": fast_pipeline(padding_unmasked),
    }
    out = {"threads": threads, "torch": torch.__version__, "runs": []}
    for seeds in seed_sets:
        ref = official.sample_base(CAPTIONS, seeds, "cfg", 3.0, "ancestral", steps)
        one = torch.cat(
            [official.sample_base([c], [s], "cfg", 3.0, "ancestral", steps) for c, s in zip(CAPTIONS, seeds)]
        )
        got = fast.sample_base(CAPTIONS, seeds, "cfg", 3.0, "ancestral", steps)
        row = {"seeds": seeds, "fast-vs-official": _stats(got, ref), "single-vs-batch": _stats(one, ref)}
        row["perturbed:guidance-scale-x1.01"] = _stats(
            fast.sample_base(CAPTIONS, seeds, "cfg", 3.03, "ancestral", steps), ref
        )
        for name, pipe in perturbed.items():
            row[f"perturbed:{name}"] = _stats(
                pipe.sample_base(CAPTIONS, seeds, "cfg", 3.0, "ancestral", steps), ref
            )
        row["official"] = ref.tolist()
        out["runs"].append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--seeds", nargs="+", default=["3,4,5", "10,11,12", "20,21,22"])
    p.add_argument("--steps", default="10")
    p.add_argument("--out", default="runs/tolerance-envelope")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    seed_sets = [[int(s) for s in group.split(",")] for group in args.seeds]
    if args.child is not None:
        print(json.dumps(child(args.child, seed_sets, args.steps)))
        return
    import torch

    results = []
    for t in [int(x) for x in args.threads.split(",")]:
        env = os.environ | {
            "OMP_NUM_THREADS": str(t),
            "MKL_NUM_THREADS": str(t),
            "OPENBLAS_NUM_THREADS": str(t),
        }
        cmd = [sys.executable, __file__, "--child", str(t), "--steps", args.steps, "--seeds", *args.seeds]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = {tuple(r["seeds"]): torch.tensor(r["official"]) for r in results[0]["runs"]}
    lines = ["| threads | seeds | comparison | max | 99.9th pct | mean |", "|---|---|---|---|---|---|"]
    for res in results:
        for r in res["runs"]:
            r["threads-vs-1"] = _stats(torch.tensor(r.pop("official")), base[tuple(r["seeds"])])
            for key, s in r.items():
                if key != "seeds":
                    seeds = ",".join(map(str, r["seeds"]))
                    lines.append(
                        f"| {res['threads']} | {seeds} | {key} | {s['max']:.2e} | {s['p999']:.2e} | {s['mean']:.2e} |"
                    )
    for key in ("fast-vs-official", "single-vs-batch", "threads-vs-1"):
        worst = {m: max(r[key][m] for res in results for r in res["runs"]) for m in ("max", "p999", "mean")}
        lines.append(
            f"| all | all | worst {key} | {worst['max']:.2e} | {worst['p999']:.2e} | {worst['mean']:.2e} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from glide.fileio import atomic_write

    atomic_write(out / "envelope.json", json.dumps(results, indent=1))
    atomic_write(out / "envelope.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
