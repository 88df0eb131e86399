"""Saving and loading trained noised/clean CLIP models as safetensors (config in the metadata).

A file holds the :class:`glide.clip.ClipModel` state dict (keys ``image_encoder.*`` / ``text_encoder.*``),
optionally in float16, with metadata ``clip_config`` (JSON of :class:`glide.clip.ClipConfig`) and ``clip_mode``
("noised" for the guidance model, "clean" for an evaluator trained at t = 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoints import CheckpointError, load_state_dict, sha256_file

TOKEN_TABLE = "text_encoder.blocks.input.w_voc"  # the CLIP text encoder's [n_vocab, width] token embedding
ROWS_SUFFIX = ".rows"


def vocabulary_token_rows(model: torch.nn.Module, words: Sequence[str]) -> list[int]:
    """The CLIP-BPE token ids a closed vocabulary can produce (each word alone, as the BPE splits on spaces),
    plus those of the empty prompt (start, end and padding)."""
    ids: set[int] = set()
    tokens, lens = model.tokenizer.encode_batch(["", *words], model.config.max_text_len)
    for row, n in zip(tokens.tolist(), lens.tolist()):
        ids.update(row[: max(int(n), 1)])
    ids.update(tokens[0].tolist())
    return sorted(ids)


def save_clip(
    model: torch.nn.Module,
    path: str | os.PathLike,
    fp16: bool = True,
    extra_metadata: dict[str, str] | None = None,
    token_rows: Sequence[int] | None = None,
) -> str:
    """Write a ClipModel atomically; returns the file's SHA-256.

    ``token_rows``: store only these rows of the token table (and their ids as ``<name>.rows``); the loader
    puts zeros in the others. For a model trained on a closed vocabulary (the embedded CLIPs use a few dozen
    of the 49,408 CLIP-BPE rows), this cut each embedded CLIP file from 14 MiB to 2 MiB without changing any output for
    prompts in that vocabulary.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().contiguous().cpu()
        tensors[k] = v.half() if fp16 and v.is_floating_point() else v
    meta = {"clip_config": json.dumps(model.config.to_dict(), sort_keys=True)} | (extra_metadata or {})
    if token_rows is not None:
        rows = torch.tensor(sorted(set(int(i) for i in token_rows)), dtype=torch.long)
        n_vocab = tensors[TOKEN_TABLE].shape[0]
        if len(rows) == 0 or rows.min() < 0 or rows.max() >= n_vocab:
            raise ValueError(f"token_rows must be non-empty ids in [0, {n_vocab}), got {len(rows)} ids")
        tensors[TOKEN_TABLE] = tensors[TOKEN_TABLE][rows].contiguous()
        tensors[TOKEN_TABLE + ROWS_SUFFIX] = rows
        meta["sparse_token_table"] = f"{len(rows)} of {n_vocab} rows stored; the others load as zeros"
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return sha256_file(path)


def load_trained_clip(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A :class:`glide.clip.ClipModel` (float32, eval mode) from a file written by :func:`save_clip`."""
    from ..clip import ClipConfig, create_clip_model

    sd, meta = load_state_dict(path)
    if "clip_config" not in meta:
        raise CheckpointError(
            f"{path} carries no 'clip_config' metadata: it was not written by glide.train.export.save_clip "
            "(official CLIP checkpoints load with glide.clip.load_clip_state_dicts)"
        )
    config = ClipConfig.from_dict(json.loads(meta["clip_config"]))
    model = create_clip_model(config=config, device="cpu")
    expected = model.state_dict()
    rows = sd.pop(TOKEN_TABLE + ROWS_SUFFIX, None)
    if rows is not None and TOKEN_TABLE in sd:
        full = torch.zeros(expected[TOKEN_TABLE].shape, dtype=sd[TOKEN_TABLE].dtype)
        if rows.ndim != 1 or len(rows) != len(sd[TOKEN_TABLE]) or int(rows.max()) >= len(full):
            raise CheckpointError(
                f"{path}: its sparse token table does not fit its clip_config; the file is corrupt"
            )
        full[rows.long()] = sd[TOKEN_TABLE]
        sd[TOKEN_TABLE] = full
    missing, unexpected = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match its own clip_config: missing {sorted(missing)[:3]}, unexpected "
            f"{sorted(unexpected)[:3]}; the file is corrupt or was edited"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()})
    return model.to(device).eval()


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
    token-table rows these words use (see :func:`save_clip`).
    """
    import datetime
    import platform

    from .loop import Trainer
    from .recipes import Recipe

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    trainer = Trainer(Recipe.from_dict(ckpt["recipe"]), resume=checkpoint, progress=False)
    dest = Path(dest)
    digest = trainer.export(dest, fp16=fp16, token_vocab=token_vocab)
    os.chmod(dest, 0o644)  # safetensors writes 0600; these files are meant to be shipped and shared
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
    tmp = dest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, dest.with_suffix(".json"))
    return card
