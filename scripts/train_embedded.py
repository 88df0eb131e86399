"""Train, package and eyeball the embedded GLIDE family (the small models glidebench ships).

    python scripts/train_embedded.py train    # all runs in order (base in five stages, CLIPs in two, upsampler, inpaint)
    python scripts/train_embedded.py package  # EMA weights + JSON cards -> glidebench/assets/models/
    python scripts/train_embedded.py grid     # 16 val captions at CFG scale 1 and 3 (DDIM 25) -> PNG

Each run is step-bounded with the step counts of the shipped models and uses the thread count it was trained
with (``RUNS``), so on the same CPU kind and torch build ``train`` should reproduce the shipped weights (data
order and noise derive from (seed, step)); each run is packaged as soon as it finishes, because the
inpainting recipe and the base model's second stage start from the packaged first stage. ``--minutes``
bounds every run by wall time instead (how the shipped runs were bounded).

The base model is trained in four stages: stage 1 (``recipes/embedded-base.json``, 1,489 steps, 47.0 min) is
packaged to ``runs/embedded-base-stage1.safetensors``; stage 2 (``recipes/embedded-base-offset.json``, 444 steps,
12.0 min) fine-tunes it with offset noise 0.1 -> ``runs/embedded-base-stage2.safetensors``; stage 3
(``recipes/embedded-base-bg.json``, 1,121 steps, 45.0 min) fine-tunes stage 2 with offset noise 0.2 and 30% of
each batch at t >= 800, so that the caption, not the starting noise, sets the background ->
``runs/embedded-base-stage3.safetensors`` (none of these is shipped); stage 4 (``recipes/embedded-base-lowt.json``,
733 steps, 24.0 min) fine-tunes stage 3 with 40% of each batch at t < 100 and is what ships as ``embedded-base``.
``embedded-base-short`` (``recipes/embedded-base-short.json``) fine-tunes the shipped base on a mix of exact and
short captions (parts of the scene left unsaid); both CLIPs are fine-tuned the same way from the shipped ones
(``recipes/embedded-clip-{noised,eval}-short.json``) into ``embedded-clip-{noised,eval}-short``.
The inpainting model was fine-tuned from stage 1. The upsampler is trained in two stages: stage 1
(``recipes/embedded-upsample.json``, 305 steps) -> ``runs/embedded-upsample-stage1.safetensors``; stage 2
(``recipes/embedded-upsample-offset.json``, 1,047 steps, offset noise 0.2 and 30% of each batch at t >= 700)
ships as ``embedded-upsample``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "glidebench" / "assets" / "models"
# name -> (train kind, recipe, steps of the shipped model, torch threads it was trained with)
RUNS: dict[str, tuple[str, str, int, int]] = {
    "embedded-base-stage1": ("base", "recipes/embedded-base.json", 1489, 2),
    "embedded-base-stage2": ("base", "recipes/embedded-base-offset.json", 444, 2),
    "embedded-base-stage3": ("base", "recipes/embedded-base-bg.json", 1121, 2),
    "embedded-base": ("base", "recipes/embedded-base-lowt.json", 733, 2),
    "embedded-clip-noised": ("clip", "recipes/embedded-clip-noised.json", 1928, 1),
    "embedded-clip-eval": ("clip", "recipes/embedded-clip-eval.json", 334, 1),
    "embedded-upsample-stage1": ("upsample", "recipes/embedded-upsample.json", 305, 1),
    "embedded-upsample": ("upsample", "recipes/embedded-upsample-offset.json", 1047, 1),
    "embedded-inpaint": ("inpaint", "recipes/embedded-inpaint.json", 487, 1),
    # the short-caption models (shipped as embedded-*-short; runs with --caption-style short use them): fine-tunes
    # of the shipped base and CLIPs on a mix of exact and short captions
    "embedded-base-short": ("base", "recipes/embedded-base-short.json", 2660, 2),
    "embedded-clip-noised-short": (
        "clip",
        "recipes/embedded-clip-noised-short.json",
        2760,
        1,
    ),
    "embedded-clip-eval-short": ("clip", "recipes/embedded-clip-eval-short.json", 2763, 1),
}
# packaged somewhere other than glidebench/assets/models (intermediate stages that are not shipped)
PACKAGE_TO = {
    "embedded-base-stage1": ROOT / "runs" / "embedded-base-stage1.safetensors",
    "embedded-base-stage2": ROOT / "runs" / "embedded-base-stage2.safetensors",
    "embedded-base-stage3": ROOT / "runs" / "embedded-base-stage3.safetensors",
    "embedded-upsample-stage1": ROOT / "runs" / "embedded-upsample-stage1.safetensors",
}
# earlier stages a shipped model continues (their wall time counts towards its training time)
STAGES = {
    "embedded-base": ["embedded-base-stage1", "embedded-base-stage2", "embedded-base-stage3"],
    "embedded-base-short": [
        "embedded-base-stage1",
        "embedded-base-stage2",
        "embedded-base-stage3",
        "embedded-base",
    ],
    "embedded-clip-noised-short": ["embedded-clip-noised"],
    "embedded-clip-eval-short": ["embedded-clip-eval"],
    "embedded-upsample": ["embedded-upsample-stage1"],
}
_CLIP_SHORT_MACHINE = (
    "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 1 torch thread, beside the other CLIP's 1-thread fine-tune and "
    "one 1-thread evaluation run"
)
_BASE_MACHINE = (
    "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 2 torch threads, channels_last, alone on the machine"
)
MACHINE = {
    "embedded-base-stage1": _BASE_MACHINE,
    "embedded-base-stage2": _BASE_MACHINE,
    "embedded-base-stage3": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 2 torch threads, channels_last, with "
    "one-thread evaluation jobs beside it for about half of the run (1.6 s per step alone, up to 3.9 s beside them)",
    "embedded-base": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 2 torch threads, channels_last, with "
    "one-thread evaluation and test jobs beside it for most of the run (about 2 s per step)",
    "embedded-base-short": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 2 torch threads, channels_last, mostly "
    "alone (1.0 s per step; up to 2.4 s while short test and probe jobs ran beside it)",
    "embedded-clip-noised-short": _CLIP_SHORT_MACHINE,
    "embedded-clip-eval-short": _CLIP_SHORT_MACHINE,
    "embedded-inpaint": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 1 torch thread, channels_last, beside one other 1-thread job",
    "embedded-upsample-stage1": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 1 torch thread, channels_last, beside two "
    "one-thread evaluation jobs (about 6.5 s per step)",
    "embedded-upsample": "2-core AMD EPYC CPU VM (AVX2), torch CPU build, 1 torch thread, channels_last, beside one or two "
    "one-thread evaluation jobs (3.8-7 s per step)",
}
OLD_MACHINE = (
    "shared 2-core AMD EPYC CPU VM (load average 3-12 from other jobs during the runs), torch CPU build, "
    "1 torch thread per run, up to 3 training runs at a time"
)


def train(names: list[str], minutes: float | None) -> None:
    for name in names:
        kind, recipe, steps, threads = RUNS[name]
        cmd = [
            sys.executable,
            "-m",
            "glide.train",
            kind,
            "--config",
            recipe,
            "--out",
            f"runs/{name}",
            "--threads",
            str(threads),
            "--no-progress",
        ]
        cmd += ["--max-minutes", str(minutes)] if minutes else ["--max-steps", str(steps)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        package([name])


def package(names: list[str]) -> None:
    from glide.train.export import package as pack
    from glidebench.data.embedded import vocabulary

    for name in names:
        ckpt = ROOT / "runs" / name / "checkpoint.pt"
        if not ckpt.exists():
            print(f"skip {name}: {ckpt} missing")
            continue
        machine = MACHINE.get(name, OLD_MACHINE)
        # the CLIPs keep only the token-table rows of the caption vocabulary (14 MiB -> 1.5 MiB each)
        vocab = vocabulary() if RUNS[name][0] == "clip" else None
        extra: dict = {"trained_on": machine}
        if name in STAGES:
            extra["stages"] = [_stage_record(s) for s in STAGES[name]] + [_stage_record(name)]
            extra["total_train_wall_seconds"] = round(
                sum(s["train_wall_seconds"] for s in extra["stages"]), 1
            )
        dest = PACKAGE_TO.get(name, ASSETS / f"{name}.safetensors")
        card = pack(ckpt, dest, fp16=True, extra=extra, token_vocab=vocab)
        print(
            f"{name}: step {card['steps']}, {card['train_wall_seconds']} s, loss {card['final_loss']}, "
            f"{card['size_bytes'] / 2**20:.2f} MiB"
        )


# Stages whose run directories are gone (trained before this script kept them): their wall time as the shipped cards
# carried it (measured then). Used only when runs/<name>/checkpoint.pt is missing.
RECORDED_STAGES: dict[str, float] = {  # name -> training wall seconds (steps: RUNS)
    "embedded-base-stage1": 2820.2,
    "embedded-base-stage2": 721.5,
    "embedded-base-stage3": 2701.3,
    "embedded-base": 1441.1,
    "embedded-clip-noised": 1982.1,
    "embedded-clip-eval": 660.7,
}


def _stage_record(name: str) -> dict:
    """Recipe, steps and wall time of one training stage, from its run directory's checkpoint (or, for a stage
    whose run directory is gone, from ``RECORDED_STAGES``)."""
    import torch

    path = ROOT / "runs" / name / "checkpoint.pt"
    if not path.exists() and name in RECORDED_STAGES:
        return {
            "run": name,
            "recipe": RUNS[name][1],
            "steps": RUNS[name][2],
            "train_wall_seconds": RECORDED_STAGES[name],
            "source": "recorded card",
        }
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {
        "run": name,
        "recipe": RUNS[name][1],
        "steps": int(ckpt["step"]),
        "train_wall_seconds": round(float(ckpt["wall_seconds"]), 1),
    }


def grid(model_path: str, out: str, n: int = 16) -> None:
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from glide.checkpoints import load_model
    from glide.pipeline import GlidePipeline
    from glidebench.data.embedded import EmbeddedCaptionSet

    torch.set_num_threads(1)
    data = EmbeddedCaptionSet()
    records = data.eval_split("val", n)
    prompts = [r.caption for r in records]
    pipe = GlidePipeline(load_model(model_path))
    rows = []
    for scale in (1.0, 3.0):
        x = pipe.generate(prompts, list(range(n)), guidance="cfg", scale=scale, sampler="ddim", steps="25")
        rows.append(x.permute(0, 2, 3, 1).numpy())
    ref = data.render_records(records)
    size = 96
    tiles = [
        [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.NEAREST)) for im in row]
        for row in [ref, *rows]
    ]
    canvas = Image.new("RGB", (n * size, 3 * size + 16 * 3), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (row, label) in enumerate(zip(tiles, ["reference", "CFG scale 1", "CFG scale 3"])):
        y = r * (size + 16)
        draw.text((2, y), label, fill=(0, 0, 0))
        for i, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (i * size, y + 16))
    canvas.save(out)
    Path(out).with_suffix(".txt").write_text("\n".join(f"{i}: {p}" for i, p in enumerate(prompts)) + "\n")
    print(f"wrote {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["train", "package", "grid"])
    p.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--minutes", type=float, default=None, help="bound each run by minutes instead of steps")
    p.add_argument("--model", default=str(ASSETS / "embedded-base.safetensors"))
    p.add_argument("--out", default="runs/embedded-base-grid.png")
    a = p.parse_args()
    if a.action == "train":
        train(a.only, a.minutes)
    elif a.action == "package":
        package(a.only)
    else:
        grid(a.model, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
