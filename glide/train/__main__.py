"""Command line: ``python -m glide.train {base,inpaint,upsample,clip} --config RECIPE [--resume CKPT]
[--out DIR] [--max-minutes M] [--max-steps N]`` and ``python -m glide.train export CKPT OUT.safetensors``.

A run writes DIR/checkpoint.pt (atomically, every few minutes and on Ctrl-C/SIGTERM), DIR/log.jsonl and,
when it ends, the EMA weights as DIR/ema.safetensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .loop import Trainer
from .recipes import KINDS, Recipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glide.train", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=[*KINDS, "export"])
    p.add_argument("paths", nargs="*", help="for export: CHECKPOINT OUT.safetensors")
    p.add_argument("--config", help="recipe JSON/YAML (recipes/*.json)")
    p.add_argument("--resume", help="checkpoint.pt to continue from (same seed and data order)")
    p.add_argument("--out", help="output directory (default runs/<recipe name>)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after M minutes")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--fp32-export", action="store_true", help="export float32 instead of float16")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.kind == "export":
        if len(a.paths) != 2:
            p.error("export needs CHECKPOINT OUT.safetensors")
        trainer = Trainer(_recipe_of(a.paths[0]), resume=a.paths[0], progress=False)
        digest = trainer.export(a.paths[1], fp16=not a.fp32_export)
        print(f"wrote {a.paths[1]} (step {trainer.step}, sha256 {digest})")
        return 0
    if not a.config and not a.resume:
        p.error("give --config RECIPE (or --resume CHECKPOINT)")
    recipe = Recipe.load(a.config) if a.config else _recipe_of(a.resume)
    if recipe.kind != a.kind:
        p.error(f"the recipe is for {recipe.kind!r}, not {a.kind!r}")
    if a.max_steps is not None:
        recipe = recipe.replace(max_steps=a.max_steps)
    out = Path(a.out or Path("runs") / (Path(a.config).stem if a.config else recipe.kind))
    trainer = Trainer(recipe, out, device=a.device, resume=a.resume, progress=not a.no_progress)
    logs = trainer.run(max_minutes=a.max_minutes)
    digest = trainer.export(out / "ema.safetensors", fp16=not a.fp32_export)
    print(
        f"step {trainer.step}, last loss {logs.get('loss')}, wall {trainer.wall_seconds:.0f}s; "
        f"EMA weights: {out / 'ema.safetensors'} (sha256 {digest[:16]})"
    )
    return 0


def _recipe_of(checkpoint: str) -> Recipe:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return Recipe.from_dict(ckpt["recipe"])


if __name__ == "__main__":
    sys.exit(main())
