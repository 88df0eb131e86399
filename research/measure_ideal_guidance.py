"""What error-free guidance does to the default run's metrics: no network, no model error.

    python -m research.measure_ideal_guidance [--seeds 3] [--candidates 200] [--scales 1,2,4] [--exact-denoiser] [--out F]

Classifier-free guidance at scale w aims at p(s) P(c | s)^w, and on the embedded set P(c | s) is known
(``research.ideal_guidance``). This script draws those scenes for the default coco-fid run's 100
scenes, renders them as the references are rendered, and measures them against the run's own reference set
with the harness's metrics (``glidebench.runner.results.setting_metrics``: Inception pool3, precision/recall k = 3 on
a reference subset of the generated set's size, KID). It does so for three caption processes:

- ``exact``: ``--caption-style exact``'s captions (every part stated: the target does not move);
- ``short``: the default run's captions (the shipped short captions);
- ``one-object``: a what-if where each caption names one object of the scene chosen at random, which pulls
  the target hardest towards simple scenes.

With ``--exact-denoiser`` it also runs classifier-free guidance as GLIDE samples it, with exact denoisers
(``exact_denoiser_cfg``), on the short captions. Two fixed sets bound the numbers: held-out renders of the
same split (a perfect unguided model) and renders of one-object scenes only (every multi-object scene
collapsed away). Each seed redraws the candidates; the captions stay the default run's (exact captions get
one draw: the target does not move). On CPU at two threads: about 25 minutes for the three processes, and
about 4 minutes per seed for the exact denoiser. Writes nothing but ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from glidebench.data.embedded import EmbeddedCaptionSet, EmbeddedConfig, parse_stated, sample_scene
from glidebench.data.embedded_source import EmbeddedSource, embedded_reference_image, prompt_scenes
from glidebench.features import InceptionExtractor
from glidebench.runner.results import setting_metrics
from glidebench.store import atomic_write_json
from glidebench.suites import load_suite
from research.ideal_guidance import (
    EXACT_KEEP,
    ChainCaptions,
    OneObjectCaptions,
    exact_denoiser_cfg,
    ideal_guided_scenes,
    weighted_candidates,
)

RESOLUTION = 32  # the shipped embedded base model's resolution (the default run's "base" resolution)
COLUMNS = ("precision", "recall", "kid_mean", "fid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="independent candidate draws per process")
    ap.add_argument(
        "--candidates", type=int, default=200, help="importance-resampling candidates per caption"
    )
    ap.add_argument("--scales", default="1,2,4", help="classifier-free scales (the default run's)")
    ap.add_argument("--processes", default="short,one-object,exact")
    ap.add_argument("--exact-denoiser", action="store_true", help="also run classifier-free guidance with exact "
                    "denoisers on the short captions (GLIDE's ancestral sampler; about 8 min per seed)")  # fmt: skip
    ap.add_argument(
        "--prior-size", type=int, default=3000, help="prior scenes standing for p(x) (exact denoiser)"
    )
    ap.add_argument("--steps", default="50", help="ancestral steps of the exact-denoiser sampler")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = ap.parse_args()
    scales = [float(v) for v in args.scales.split(",")]

    opts = dict(load_suite("coco-fid").profiles["embedded"])
    # the same scenes and references whichever the suite's caption style; each process takes its own captions
    exact_source = EmbeddedSource(opts | {"caption_style": "exact"})
    prompts, records = exact_source.prompts, exact_source.records
    short_prompts = EmbeddedSource(opts | {"caption_style": "short"}).prompts
    scenes = prompt_scenes(prompts, records)
    native = EmbeddedConfig().size
    extractor = InceptionExtractor("auto")

    def feats_u8(x: torch.Tensor) -> dict[str, np.ndarray]:
        return {"pool3": np.concatenate([extractor(x[i : i + 50])["pool3"] for i in range(0, len(x), 50)])}

    def renders(scene_list) -> torch.Tensor:
        """Scenes rendered as the references: uint8 [N, 3, H, W]."""
        imgs = np.stack([embedded_reference_image(s, RESOLUTION, native) for s in scene_list])
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()

    def features(scene_list) -> dict[str, np.ndarray]:
        return feats_u8(renders(scene_list))

    def images(scene_list) -> torch.Tensor:
        """The exact denoiser's sets: renders flattened to [N, D] in [-1, 1], float64."""
        return renders(scene_list).reshape(len(scene_list), -1).double() / 127.5 - 1

    ref = features([r.scene for r in records])

    def measure(scene_list) -> dict[str, float]:
        metrics, _ = setting_metrics(features(scene_list), ref, k=int(opts["prc_k"]), seed=int(opts["seed"]))
        return {k: float(metrics[k]) for k in COLUMNS}

    rows: list[dict] = []

    def report(row: dict) -> None:
        rows.append(row)
        vals = "  ".join(f"{k} {row[k]:.4f}" for k in COLUMNS)
        print(f"{row['set']:<34} {vals}", flush=True)

    ds = EmbeddedCaptionSet()
    held = ds.eval_split(opts["split"], len(records) + len(prompts))[len(records) :]
    report(
        {"set": "held-out renders (perfect, unguided)", "seed": None, "scale": None}
        | measure([r.scene for r in held])
    )
    rng = np.random.default_rng(12)
    singles = [sample_scene(rng, 3, [1.0, 0.0, 0.0]) for _ in prompts]
    report({"set": "one-object scenes only", "seed": None, "scale": None} | measure(singles))

    processes = {
        "exact": (ChainCaptions(EXACT_KEEP, name="exact"), [parse_stated(p.caption) for p in prompts]),
        "short": (ChainCaptions(), [parse_stated(p.caption) for p in short_prompts]),
    }
    one = OneObjectCaptions()
    crng = np.random.default_rng(5)
    processes["one-object"] = (one, [one.draw(s, crng) for s in scenes])
    names = [n for n in args.processes.split(",") if n]
    for name in names:
        process, stated = processes[name]
        # exact captions: every seed gives the same scenes at every scale; one draw shows it (and it is the slowest:
        # a candidate must match every stated part)
        for seed in range(1 if name == "exact" else args.seeds):
            # exact captions weigh every agreeing candidate alike (P(c | s) = 1): a few candidates are as exact
            n_cand = min(args.candidates, 5) if name == "exact" else args.candidates
            by_scale = ideal_guided_scenes(
                process, stated, scales, np.random.default_rng([seed, 1]), n_candidates=n_cand
            )
            for w, chosen in by_scale.items():
                counts = np.bincount([s.n_objects for s in chosen], minlength=4)[1:].tolist()
                report(
                    {
                        "set": f"{name} w={w:g} seed {seed} n={counts}",
                        "process": name,
                        "seed": seed,
                        "scale": w,
                        "object_counts": counts,
                    }
                    | measure(chosen)
                )

    if args.exact_denoiser:
        # classifier-free guidance as GLIDE runs it, with exact denoisers (no model error) for the short captions
        process, stated = processes["short"]
        prior_rng = np.random.default_rng(21)
        prior = [sample_scene(prior_rng, 3, process.object_probs) for _ in range(args.prior_size)]
        uncond = images(prior)
        for seed in range(args.seeds):
            rng = np.random.default_rng([seed, 3])
            cond, logw, log_pc, kept = [], [], [], []
            for st in stated:
                cands, lik, q = weighted_candidates(process, st, args.candidates, rng)
                cond.append(images(cands))
                logw.append(torch.from_numpy(np.log(lik / q)))
                log_pc.append(np.log(max(np.mean([process.likelihood(st, s) for s in prior]), 1e-4)))
                kept.append(cands)
            cond_t, logw_t = torch.stack(cond), torch.stack(logw)
            log_pc_t = torch.tensor(log_pc, dtype=torch.float64)
            for w in scales:
                x = exact_denoiser_cfg(cond_t, logw_t, uncond, log_pc_t, w, steps=args.steps,
                                       generator=torch.Generator().manual_seed(seed))  # fmt: skip
                # each sample lands on one of its caption's candidates: which one tells the scene
                dist = ((x[:, None] - cond_t) ** 2).mean(-1)
                pick = dist.argmin(1)
                chosen = [kept[i][int(j)] for i, j in enumerate(pick)]
                counts = np.bincount([s.n_objects for s in chosen], minlength=4)[1:].tolist()
                rms = float(dist.min(1).values.sqrt().max())
                u8 = (
                    ((x.view(-1, 3, RESOLUTION, RESOLUTION) + 1) * 127.5)
                    .round()
                    .clamp(0, 255)
                    .to(torch.uint8)
                )
                m, _ = setting_metrics(feats_u8(u8), ref, k=int(opts["prc_k"]), seed=int(opts["seed"]))
                report({"set": f"exact-denoiser CFG w={w:g} seed {seed} n={counts}", "process": "exact-denoiser",
                        "seed": seed, "scale": w, "object_counts": counts, "max_rms_to_candidate": rms}
                       | {k: float(m[k]) for k in COLUMNS})  # fmt: skip
        names = [*names, "exact-denoiser"]

    summary = {}
    for name in names:
        for w in scales:
            sel = [r for r in rows if r.get("process") == name and r["scale"] == w]
            summary[f"{name}@{w:g}"] = {k: float(np.mean([r[k] for r in sel])) for k in COLUMNS} | {
                f"{k}_sd": float(np.std([r[k] for r in sel], ddof=1)) if len(sel) > 1 else float("nan")
                for k in ("precision", "recall")
            }
    print("\nmean over seeds:")
    for key, val in summary.items():
        print(
            f"  {key:<16} precision {val['precision']:.3f}  recall {val['recall']:.3f} (sd {val['recall_sd']:.3f})"
            f"  KID {val['kid_mean']:.4f}"
        )
    if args.out:
        atomic_write_json(
            args.out,
            {
                "rows": rows,
                "mean": summary,
                "inception": extractor.fingerprint,
                "resolution": RESOLUTION,
                "candidates": args.candidates,
            },
        )


if __name__ == "__main__":
    main()
