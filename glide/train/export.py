"""Packaging a training run: its EMA weights plus a JSON card (:func:`package`).

The trained-CLIP file format (:func:`save_clip`, :func:`load_trained_clip`, the sparse token table) lives in
:mod:`glide.clip.io`, below both training and :mod:`glide.checkpoints`; its names stay importable from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..clip.io import ROWS_SUFFIX, TOKEN_TABLE, load_trained_clip, save_clip, vocabulary_token_rows
from ..fileio import atomic_write, sha256_file
from ..statedict import CheckpointError, load_state_dict

__all__ = [
    "CheckpointError",
    "ROWS_SUFFIX",
    "TOKEN_TABLE",
    "load_state_dict",
    "load_trained_clip",
    "package",
    "save_clip",
    "sha256_file",
    "vocabulary_token_rows",
]


def package(
    checkpoint: str | os.PathLike,
    dest: str | os.PathLike,
    fp16: bool = True,
    extra: dict | None = None,
    token_vocab: Sequence[str] | None = None,
) -> dict:
    """Export a training checkpoint's EMA weights to ``dest`` (.safetensors) with a JSON card beside it.

    The card (``dest`` with suffix ``.json``) records the recipe, seed, steps, batch size, measured training
    wall time, the final logged loss (mean of the last 5 logged windows) and the file's SHA-256; ``extra``
    (e.g. the machine the time was measured on) is merged in. ``token_vocab`` (CLIPs only): store only the
    token-table rows these words use (see :func:`glide.clip.io.save_clip`).
    """
    import datetime
    import platform

    from .loop import Trainer
    from .recipes import Recipe

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trainer = Trainer(Recipe.from_dict(ckpt["recipe"]), resume=checkpoint, progress=False)
    dest = Path(dest)
    digest = trainer.export(dest, fp16=fp16, token_vocab=token_vocab)
    os.chmod(dest, 0o644)  # shipped and shared: readable by all whatever the packager's umask
    hist = trainer.history
    tail = hist[-5:]
    final = {
        k: round(sum(h[k] for h in tail) / len(tail), 5)
        for k in ("loss_avg", "mse", "vb", "acc")
        if tail and all(k in h for h in tail)
    }
    r = trainer.recipe
    card = {
        "name": dest.stem,
        "file": dest.name,
        "sha256": digest,
        "size_bytes": dest.stat().st_size,
        "storage_dtype": "float16" if fp16 else "float32",
        "kind": r.kind if r.kind != "clip" else f"clip-{r.clip_mode}",
        "weights": "EMA",
        "seed": r.seed,
        "steps": trainer.step,
        "batch_size": r.batch_size,
        "examples_seen": trainer.step * r.batch_size,
        "train_wall_seconds": round(trainer.wall_seconds, 1),
        "final_loss": final,
        "loss_history": hist[:: max(1, len(hist) // 40)] + hist[-1:],
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "config": trainer.config.to_dict(),
        "recipe": r.to_dict(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "packaged": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    } | (extra or {})
    card_path = atomic_write(dest.with_suffix(".json"), json.dumps(card, indent=1) + "\n")
    os.chmod(card_path, 0o644)  # shipped beside the weights
    return card
