"""How wide should the embedded default run's intervals be? The true sampling spread of each metric from
independent replicates of the protocol, against the intervals' implied standard deviations.

The default run (coco-fid version 5, embedded profile) draws 150 reference scenes, prompts the models with the
short captions of 100 of them (a seeded permutation) and one image seed per caption. A rerun with another
``--seed`` keeps the references and draws its captions from the same 150, so the spread over seeds understates
the protocol's. Here every replicate draws all three afresh and independently:

- references: 150 scenes of the embedded ``test`` stream, rendered as the harness renders references
  (:func:`glidebench.data.embedded_source.embedded_reference_image`); replicate 0 is the default run itself
  (records 0..149, ``numpy.random.default_rng(0)`` permutation, seeds 0..99), replicate r >= 1 takes the disjoint
  records ``1000 + 150 (r - 1)`` .. ``1000 + 150 r - 1`` (the same per-index stream the 1000-record split is the
  start of; records are i.i.d. scenes, never trained on), so no two replicates share a scene
  (``--pool test1000``: instead a random 150 of the fixed 1000, as first asked; two such draws share 22 scenes
  on average, which lowers the spread by the finite-population factor sqrt(1 - 150/1000) on the scene part);
- captions: the short captions of a ``default_rng([SEED_ROOT, r])`` permutation of the 150, first 100;
- image seeds: ``100000 r + i`` (replicate 0: ``i``), shared by the two settings (paired, as in a run).

Images come from the run's own generator (``resolve_plan`` of ``coco-fid`` with ``--cfg 1,4 --clip ''``: the
embedded short-caption family, DPM-Solver++(2M) SDE, quad20, 32 px, fp32, chunks of 50), features from the
run's Inception extractor (``make_inception``) and evaluator CLIP (``load_eval_clip``), metrics from
:func:`glidebench.runner.results.setting_metrics`, intervals from :class:`glidebench.runner.uncertainty.Draws` and
:func:`glidebench.runner.uncertainty.setting_uncertainty` (jackknife, and the bootstrap at 200 resamples). Nothing is
reimplemented.

Per replicate ``OUT/rep-XX.npz`` (images, features, estimates, replicates); a rerun skips finished replicates.
``OUT/summary.json`` and ``OUT/summary.md`` are rewritten after each replicate (``--summarize``: only that).

    OMP_NUM_THREADS=1 python -m research.embedded_interval_truth [--reps 40] [--stop-at EPOCH] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

OUT = Path(__file__).resolve().parent / "out" / "embedded_interval_truth"
SEED_ROOT = 2029  # the replicates' seed root
N, N_REF, CHUNK = 100, 150, 50
METRICS = ("fid", "kid_mean", "precision", "recall", "clip_score")
BOOT_RESAMPLES = 200
SETTINGS = ("cfg-1", "cfg-4")


def make_plan():
    """The default run's plan restricted to classifier-free 1 and 4 (generator, spec, models, device)."""
    from glidebench.runner.options import RunOptions
    from glidebench.runner.plan import resolve_plan
    from glidebench.runner.rundir import Dist

    return resolve_plan(RunOptions(cfg="1,4", clip="", out="/tmp/embedded_interval_truth"), Dist.from_env())


def replicate_design(r: int, pool: str) -> tuple[list[int], list[int], list[int]]:
    """(reference record indices [150], caption picks (positions in the references) [100], seeds [100])."""
    if r == 0:  # the default run: first 150 test records, EmbeddedSource's one-per-image picks, seeds 0..99
        return (
            list(range(N_REF)),
            [int(i) for i in np.random.default_rng(0).permutation(N_REF)[:N]],
            list(range(N)),
        )
    rng = np.random.default_rng([SEED_ROOT, r])
    if pool == "test1000":
        refs = [int(i) for i in np.sort(rng.choice(1000, N_REF, replace=False))]
    else:
        refs = list(range(1000 + N_REF * (r - 1), 1000 + N_REF * r))
    picks = [int(i) for i in rng.permutation(N_REF)[:N]]
    return refs, picks, [100_000 * r + i for i in range(N)]


class Records:
    """The embedded test stream's records (short captions), computed once up to the largest index needed."""

    def __init__(self) -> None:
        from glidebench.data.embedded import EmbeddedCaptionSet, EmbeddedConfig

        self.ds, self.native, self._records = EmbeddedCaptionSet(), EmbeddedConfig().size, []

    def get(self, indices: list[int]) -> list:
        need = max(indices) + 1
        if need > len(self._records):
            self._records = self.ds.eval_split("test", need, short=True)
        return [self._records[i] for i in indices]


def features(extractor, images: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
    """Features of uint8 NHWC images with one of the run's extractors (Inception or evaluator CLIP)."""
    from glidebench.features import extract_features

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    out = extract_features(extractor, t, batch_size=batch, progress=False)
    return {k: np.asarray(v).copy() for k, v in out.items()}


def generate(plan, setting, captions: list[str], seeds: list[int]) -> np.ndarray:
    """uint8 [N, H, W, 3] images of ``setting`` from the run's generator, in the run's chunks."""
    from glidebench.generators import as_uint8_images
    from glidebench.runner.generate import sampling_options

    options = sampling_options(plan.spec, str(plan.device), False)
    parts = []
    for lo in range(0, len(captions), CHUNK):
        hi = min(lo + CHUNK, len(captions))
        imgs = plan.generator.generate(captions[lo:hi], seeds[lo:hi], setting, options)
        arr, _ = as_uint8_images(imgs, hi - lo, plan.spec.resolution, f"{setting.setting_id} {lo}..{hi - 1}")
        parts.append(np.asarray(arr))
    return np.concatenate(parts)


def implied_sd(draws, reps: np.ndarray, metric: str) -> float:
    """Half-width of the (unclipped) interval over its quantile: t_{G-1} (jackknife), t_{S(q-1)} (split
    samples), 1.96 (bootstrap)."""
    from glidebench.metrics import jackknife as J
    from glidebench.runner.uncertainty import SPLIT_METRICS

    lo, hi = draws.interval(reps, metric)
    half = (hi - lo) / 2.0
    if draws.method == "bootstrap":
        return half / 1.959963984540054
    if metric in SPLIT_METRICS:
        q, s = int(draws.split_gen.max()) + 1, len(draws.split_gen)
        return half / J.t_quantile(draws.confidence, s * (q - 1))
    return half / J.t_quantile(draws.confidence, int(np.isfinite(reps[1:]).sum()) - 1)


def run_replicate(r: int, plan, tools: dict, records: Records, pool: str) -> dict:
    from glidebench.data.embedded_source import embedded_reference_image
    from glidebench.runner.results import setting_metrics
    from glidebench.runner.uncertainty import Draws, setting_uncertainty

    res = plan.spec.resolution
    partial = OUT / f"rep-{r:02d}.partial.npz"
    saved = dict(np.load(partial)) if partial.exists() else {}
    ref_idx, picks, seeds = replicate_design(r, pool)
    recs = records.get(ref_idx)
    captions = [recs[k].caption for k in picks]
    if "ref_images" not in saved:
        saved["ref_images"] = np.stack([embedded_reference_image(x.scene, res, records.native) for x in recs])
        ref = features(tools["inception"], saved["ref_images"])
        saved |= {f"ref_{k}": v for k, v in ref.items()}
        saved["text_emb"] = np.asarray(tools["clip"].embed_texts(captions))
        np.savez(partial, **saved)
    ref = {k[4:]: saved[k] for k in saved if k.startswith("ref_") and k != "ref_images"}
    settings = {s.setting_id: s for s in plan.spec.settings}
    t_gen = {}
    for sid in SETTINGS:
        if f"{sid}_images" in saved:
            continue
        t0 = time.monotonic()
        saved[f"{sid}_images"] = generate(plan, settings[sid], captions, seeds)
        t_gen[sid] = time.monotonic() - t0
        gen = features(tools["inception"], saved[f"{sid}_images"])
        saved |= {f"{sid}_{k}": v for k, v in gen.items()}
        saved[f"{sid}_clip_image"] = features(tools["clip"], saved[f"{sid}_images"])["clip_image"]
        np.savez(partial, **saved)
    draws = {
        "jackknife": Draws.make(N, N_REF, 0, 0, seed=r, method="jackknife"),
        "bootstrap": Draws.make(N, N_REF, 0, BOOT_RESAMPLES, seed=r, method="bootstrap"),
    }
    out: dict = {"replicate": r, "ref_records": ref_idx, "caption_picks": picks, "seeds": seeds,
                 "captions": captions, "generation_s": t_gen, "settings": {}}  # fmt: skip
    reps_all = {}
    for sid in SETTINGS:
        gen = {k[len(sid) + 1 :]: saved[k] for k in saved if k.startswith(sid + "_") and k not in
               (f"{sid}_images", f"{sid}_clip_image")}  # fmt: skip
        clip_pair = (saved[f"{sid}_clip_image"], saved["text_emb"])
        metrics, _ = setting_metrics(gen, ref, k=plan.spec.prc_k, kid_subset_size=plan.spec.kid_subset_size,
                                     seed=plan.spec.seed, clip_pair=clip_pair)  # fmt: skip
        row = {"estimate": {m: float(metrics[m]) for m in METRICS}}
        for method, d in draws.items():
            _, reps = setting_uncertainty(d, gen, ref, N, plan.spec.prc_k, clip_pair, {}, [])
            reps_all[(sid, method)] = reps
            row[method] = {
                m: {"lo": float(d.interval(reps[m], m)[0]), "hi": float(d.interval(reps[m], m)[1]),
                    "replicate0": float(reps[m][0]), "implied_sd": float(implied_sd(d, reps[m], m))}
                for m in METRICS
            }  # fmt: skip
        out["settings"][sid] = row
    diff = {}  # the paired difference cfg-4 - cfg-1 (what differences.csv resolves)
    for method, d in draws.items():
        diff[method] = {}
        for m in METRICS:
            dr = reps_all[("cfg-4", method)][m] - reps_all[("cfg-1", method)][m]
            lo, hi = d.interval(dr, m)
            diff[method][m] = {"lo": float(lo), "hi": float(hi), "implied_sd": float(implied_sd(d, dr, m))}
    out["difference"] = diff
    arrays = {k: v for k, v in saved.items()}
    for (sid, method), reps in reps_all.items():
        for m in METRICS:
            arrays[f"reps_{sid}_{method}_{m}"] = np.asarray(reps[m])
    arrays["summary_json"] = np.array(json.dumps(out))
    np.savez_compressed(OUT / f"rep-{r:02d}.npz", **arrays)
    partial.unlink(missing_ok=True)
    return out


def load_done() -> list[dict]:
    done = []
    for p in sorted(OUT.glob("rep-[0-9][0-9].npz")):
        with np.load(p) as z:
            done.append(json.loads(str(z["summary_json"])))
    return done


def summarize(done: list[dict], meta: dict) -> dict:
    """True SD (over replicates), RMS implied SD, ratio and coverage of the mean estimate, per setting,
    metric and method; the same for the paired difference cfg-4 - cfg-1."""
    R = len(done)
    table: dict = {}
    for sid in (*SETTINGS, "difference"):
        table[sid] = {}
        for m in METRICS:
            if sid == "difference":
                est = np.array([d["settings"]["cfg-4"]["estimate"][m] - d["settings"]["cfg-1"]["estimate"][m]
                                for d in done])  # fmt: skip
                iv = {meth: [d["difference"][meth][m] for d in done] for meth in ("jackknife", "bootstrap")}
            else:
                est = np.array([d["settings"][sid]["estimate"][m] for d in done])
                iv = {
                    meth: [d["settings"][sid][meth][m] for d in done] for meth in ("jackknife", "bootstrap")
                }
            mean, sd = float(est.mean()), float(est.std(ddof=1)) if R > 1 else float("nan")
            row = {"mean": mean, "true_sd": sd}
            for meth, rows in iv.items():
                imp = np.array([x["implied_sd"] for x in rows])
                rms = float(np.sqrt(np.mean(imp**2)))
                cover = float(np.mean([x["lo"] <= mean <= x["hi"] for x in rows]))
                row[meth] = {"rms_implied_sd": rms, "ratio": rms / sd if sd > 0 else float("nan"),
                             "coverage_of_mean": cover, "min_implied_sd": float(imp.min()),
                             "max_implied_sd": float(imp.max())}  # fmt: skip
            table[sid][m] = row
    from scipy.stats import chi2

    ratio_range = ([math.sqrt(chi2.ppf(q, R - 1) / (R - 1)) for q in (0.025, 0.975)] if R > 1
                   else [float("nan")] * 2)  # fmt: skip
    return meta | {"R": R, "ratio_range": ratio_range, "relative_se_of_true_sd": 1 / math.sqrt(2 * (R - 1)) if R > 1 else None,
                   "table": table, "replicates": done}  # fmt: skip


def fmt(x: float, m: str) -> str:
    if m == "kid_mean":
        return f"{x:.5f}"
    if m in ("precision", "recall"):
        return f"{x:.4f}"
    return f"{x:.3f}"


def write_summary(doc: dict) -> None:
    from glidebench.store import atomic_write_json

    atomic_write_json(OUT / "summary.json", doc)
    R = doc["R"]
    lines = [
        "# Embedded default: interval width against the true sampling spread",
        "",
        f"R = {R} independent replicates of the coco-fid v5 embedded protocol (relative SE of a true SD from R "
        f"draws about 1/sqrt(2(R-1)) = {doc['relative_se_of_true_sd'] or float('nan'):.2f}). Generated by "
        "`research/embedded_interval_truth.py`.",
        "",
        "Each replicate: 150 fresh reference scenes of the embedded test stream (replicate 0 = the default run's "
        "records 0..149; replicate r >= 1 = records 1000+150(r-1) .. 1000+150r-1, disjoint; "
        f"pool: {doc['pool']}), rendered as the harness renders references; the short captions of 100 of them "
        "(seeded permutation); fresh image seeds shared by both settings; the run's generator (embedded-short, "
        "dpm++2m-sde quad20, 32 px, fp32, chunks of 50), Inception and evaluator CLIP; `setting_metrics`; "
        "`Draws.make(100, 150, 0, ..., method=...)` + `setting_uncertainty`.",
        "",
        "- true SD: SD (ddof 1) of the estimates over the R replicates;",
        "- implied SD: interval half-width / t_39 (jackknife, 40 blocks), / t_10 (precision/recall split samples, "
        "10 x halves), / 1.96 (bootstrap, 200 resamples, shifted percentile); RMS over replicates;",
        "- coverage: share of the R 95 % intervals that contain the mean of the R estimates;",
        f"- 95 % range of a ratio from the true SD's chi-square ({R - 1} dof) alone: ratio x "
        f"[{doc['ratio_range'][0]:.2f}, {doc['ratio_range'][1]:.2f}] (the implied SD's own noise is smaller).",
        "",
        f"Wall time per replicate: {doc.get('seconds_per_replicate', float('nan')):.0f} s "
        f"(median, both settings, {doc.get('threads')} thread(s), shared 2-core CPU).",
        "",
        "| setting | metric | mean | true SD | jackknife/split RMS SD | ratio | coverage | bootstrap RMS SD | ratio "
        "| coverage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sid, rows in doc["table"].items():
        name = "cfg-4 - cfg-1 (paired)" if sid == "difference" else sid
        for m, row in rows.items():
            j, b = row["jackknife"], row["bootstrap"]
            lines.append(
                f"| {name} | {m} | {fmt(row['mean'], m)} | {fmt(row['true_sd'], m)} | {fmt(j['rms_implied_sd'], m)} "
                f"| {j['ratio']:.2f} | {j['coverage_of_mean']:.2f} | {fmt(b['rms_implied_sd'], m)} | {b['ratio']:.2f} "
                f"| {b['coverage_of_mean']:.2f} |"
            )
    r0 = next((d for d in doc["replicates"] if d["replicate"] == 0), None)
    if r0 is not None:
        lines += ["", "Replicate 0 (the default run's own draw; check against README's table):", ""]
        for sid in SETTINGS:
            e = r0["settings"][sid]["estimate"]
            lines.append(f"- {sid}: " + ", ".join(f"{m} {fmt(e[m], m)}" for m in METRICS))
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")


def coupled_table(pool: str) -> str:
    """The intervals recomputed from the saved features with the captions coupled to their reference images
    (``Draws.make(..., coupling=picks)``: what the harness does since the data sources report the coupling),
    against the same true spread; markdown."""
    from glidebench.runner.uncertainty import Draws, setting_uncertainty

    files = sorted(OUT.glob("rep-[0-9][0-9].npz"))
    est: dict = {}
    sds: dict = {}
    for f in files:
        r = int(f.stem.split("-")[1])
        z = np.load(f)
        picks = replicate_design(r, pool)[1]
        draws = Draws.make(N, N_REF, 0, 0, seed=r, method="jackknife", coupling=picks)
        reps_all = {}
        for sid in SETTINGS:
            gen, ref = {"pool3": z[f"{sid}_pool3"]}, {"pool3": z["ref_pool3"]}
            clip = (z[f"{sid}_clip_image"], z["text_emb"])
            _, reps_all[sid] = setting_uncertainty(draws, gen, ref, N, 3, clip, {}, [])
        reps_all["cfg-4 - cfg-1 (paired)"] = {m: reps_all["cfg-4"][m] - reps_all["cfg-1"][m] for m in METRICS}
        for key, reps in reps_all.items():
            for m in METRICS:
                est.setdefault((key, m), []).append(float(reps[m][0]))
                sds.setdefault((key, m), []).append(implied_sd(draws, reps[m], m))
    lines = [
        f"Coupled design (captions deleted and split with their reference images), R = {len(files)}:",
        "",
        "| setting | metric | true SD | jackknife/split SD | ratio |",
        "|---|---|---|---|---|",
    ]
    for (key, m), e in est.items():
        true = float(np.std(e, ddof=1))
        implied = float(np.sqrt(np.mean(np.square(sds[(key, m)]))))
        lines.append(f"| {key} | {m} | {fmt(true, m)} | {fmt(implied, m)} | {implied / true:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40, help="replicates to aim for (0 .. reps-1)")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time after which no replicate starts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", choices=("disjoint", "test1000"), default="disjoint")
    ap.add_argument("--summarize", action="store_true", help="only rewrite summary.json / summary.md")
    ap.add_argument("--coupled", action="store_true", help="only write summary-coupled.md (coupled design)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    meta_path = OUT / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta |= {"pool": args.pool if not meta.get("pool") else meta["pool"], "threads": args.threads,
             "settings": list(SETTINGS), "n": N, "n_ref": N_REF, "bootstrap_resamples": BOOT_RESAMPLES}  # fmt: skip
    if args.summarize:
        write_summary(summarize(load_done(), meta))
        return
    if args.coupled:
        (OUT / "summary-coupled.md").write_text(coupled_table(meta.get("pool", "disjoint")))
        print((OUT / "summary-coupled.md").read_text())
        return
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    except ImportError:
        pass
    from glide.fast import tune_cpu_allocator

    tune_cpu_allocator()
    from glidebench import models as M
    from glidebench.runner.stages import make_inception

    plan = make_plan()
    meta |= {"model": plan.models.label, "identities": dict(plan.models.identities), "sampler": plan.spec.sampler,
             "steps": plan.spec.steps, "resolution": plan.spec.resolution, "dtype": plan.spec.dtype,
             "inception": plan.spec.inception, "prc_k": plan.spec.prc_k}  # fmt: skip
    embedder, warning = M.load_eval_clip(plan.models, plan.device)
    if embedder is None:
        raise SystemExit(warning)
    tools = {"inception": make_inception(plan.spec.inception, plan.device), "clip": embedder}
    meta["inception_name"], meta["clip_name"] = tools["inception"].name, getattr(embedder, "name", None)
    records = Records()
    times = list(meta.get("rep_seconds", []))
    todo = [r for r in range(args.reps) if not (OUT / f"rep-{r:02d}.npz").exists()]
    for r in tqdm(todo, desc="replicates", unit="rep"):
        if args.stop_at is not None and time.time() > args.stop_at:
            tqdm.write(f"stop time reached; {r} not started")
            break
        t0 = time.monotonic()
        out = run_replicate(r, plan, tools, records, meta["pool"])
        times.append(time.monotonic() - t0)
        meta["rep_seconds"] = times
        meta["seconds_per_replicate"] = float(np.median(times))
        meta_path.write_text(json.dumps(meta, indent=2))
        e = {sid: out["settings"][sid]["estimate"] for sid in SETTINGS}
        tqdm.write(f"rep {r}: {times[-1]:.0f} s  " + "  ".join(
            f"{sid} FID {e[sid]['fid']:.2f} KID {e[sid]['kid_mean']:.4f} P {e[sid]['precision']:.3f} "
            f"R {e[sid]['recall']:.3f} CLIP {e[sid]['clip_score']:.2f}" for sid in SETTINGS))  # fmt: skip
        write_summary(summarize(load_done(), meta))


if __name__ == "__main__":
    main()
