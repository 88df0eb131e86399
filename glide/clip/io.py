"""Trained CLIP files: a :class:`glide.clip.ClipModel` saved as safetensors with its config in the metadata.

A file holds the ClipModel state dict (keys ``image_encoder.*`` / ``text_encoder.*``), optionally in float16,
with metadata ``clip_config`` (JSON of :class:`glide.clip.ClipConfig`, the config the file carries with it) and,
for files exported by training, ``clip_mode`` ("noised" for the guidance model, "clean" for an evaluator trained
at t = 0). :mod:`glide.checkpoints` loads these files (``load_clip(path)``) and :mod:`glide.train` writes them;
the official two-file CLIP format is read by :func:`glide.clip.model.load_clip_state_dicts`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..fileio import save_safetensors
from ..statedict import CheckpointError, load_state_dict
from .config import ClipConfig
from .model import create_clip_model

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
    return save_safetensors(tensors, Path(path), metadata=meta)


def load_trained_clip(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A :class:`glide.clip.ClipModel` (float32, eval mode) from a file written by :func:`save_clip`."""
    sd, meta = load_state_dict(path)
    if "clip_config" not in meta:
        raise CheckpointError(
            f"{path} carries no 'clip_config' metadata: it was not written by glide.clip.io.save_clip "
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
