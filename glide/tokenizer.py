"""GLIDE's text tokenizers and the padding convention of its text transformer.

Official checkpoints use GPT-2's byte-level BPE (50,257 tokens) with GLIDE's conventions: the whole prompt is
lower-cased with ``str.lower()`` and nothing else is cleaned; no start or end token is added; the first
``text_ctx`` tokens are kept; padding on the right uses ``end_token = n_vocab - 1``; the mask is True for real
tokens. The empty prompt (all padding, all-False mask) is the unconditional input of classifier-free guidance.

The BPE itself comes from tiktoken (built from ``vocab.bpe``/``encoder.json`` files on disk, or tiktoken's
own cached download of GPT-2's files). Models trained by this project may use another vocabulary; the choice
is part of :class:`glide.config.ModelConfig` (``tokenizer``), so a checkpoint always names its tokenizer:

- ``{"kind": "gpt2"}`` (optionally ``"path": DIR`` with vocab.bpe[.gz] and encoder.json[.gz])
- ``{"kind": "clip"}``: CLIP's BPE as shipped by open_clip (49,408 tokens, no SOT/EOT added here)
- ``{"kind": "words", "vocab": [...]}``: a closed word list (id = position; then UNK; end token last)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:
    """Common interface: ``encode`` text to ids, pad to ``text_ctx`` the GLIDE way."""

    n_vocab: int

    @property
    def end_token(self) -> int:
        return self.n_vocab - 1

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def padded_tokens_and_mask(self, tokens: Sequence[int], text_ctx: int) -> tuple[list[int], list[bool]]:
        tokens = list(tokens)[:text_ctx]
        padding = text_ctx - len(tokens)
        return tokens + [self.end_token] * padding, [True] * len(tokens) + [False] * padding

    def batch(self, prompts: Sequence[str], text_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, text_ctx] (int64) and mask [B, text_ctx] (bool) for a list of prompts."""
        rows = [self.padded_tokens_and_mask(self.encode(p), text_ctx) for p in prompts]
        tokens = torch.tensor([r[0] for r in rows], dtype=torch.long).reshape(len(rows), text_ctx)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool).reshape(len(rows), text_ctx)
        return tokens, mask


def _read_maybe_gz(directory: Path, name: str) -> bytes:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            data = candidate.read_bytes()
            return gzip.decompress(data) if candidate.suffix == ".gz" else data
    raise FileNotFoundError(
        f"GPT-2 BPE file {name}(.gz) not found in {directory}; the directory must hold vocab.bpe and "
        "encoder.json (optionally gzipped), as glide-text2im's glide_text2im/tokenizer/ does"
    )


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE with GLIDE's lower-casing (tiktoken does the BPE)."""

    n_vocab = 50257

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        import tiktoken

        if path is None:
            # tiktoken downloads GPT-2's files once (with its own hash check) and caches them.
            self._enc = tiktoken.get_encoding("gpt2")
        else:
            self._enc = tiktoken.Encoding(
                name="glide-gpt2",
                pat_str=GPT2_PATTERN,
                mergeable_ranks=_load_data_gym(Path(path)),
                special_tokens={},
            )
        if self._enc.n_vocab < self.n_vocab - 1:
            raise ValueError(f"GPT-2 vocabulary has {self._enc.n_vocab} tokens, expected 50257")

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text.lower())

    def decode(self, tokens: Sequence[int]) -> str:
        return self._enc.decode([t for t in tokens if t != self.end_token])


def _load_data_gym(directory: Path) -> dict[bytes, int]:
    """Read GPT-2's data-gym files (vocab.bpe + encoder.json, maybe gzipped) into tiktoken's ranks."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab = _read_maybe_gz(directory, "vocab.bpe")
    encoder = _read_maybe_gz(directory, "encoder.json")
    with tempfile.TemporaryDirectory() as tmp:
        vp, ep = Path(tmp, "vocab.bpe"), Path(tmp, "encoder.json")
        vp.write_bytes(vocab)
        ep.write_bytes(encoder)
        return data_gym_to_mergeable_bpe_ranks(str(vp), str(ep))


class ClipBPETokenizer(Tokenizer):
    """CLIP's BPE vocabulary as shipped by open_clip, with GLIDE's padding convention."""

    n_vocab = 49408

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self._tok = SimpleTokenizer()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)


class WordTokenizer(Tokenizer):
    """A closed word-level vocabulary for small models trained on captions from a known grammar."""

    _split = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, vocab: Sequence[str]) -> None:
        if len(set(vocab)) != len(vocab):
            raise ValueError("word vocabulary has duplicate entries")
        self.vocab = list(vocab)
        self._ids = {w: i for i, w in enumerate(self.vocab)}
        self.unk_token = len(self.vocab)
        self.n_vocab = len(self.vocab) + 2  # words, UNK, end token

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, self.unk_token) for w in self._split.findall(text.lower())]


_CACHE: dict[str, Tokenizer] = {}


def vocab_size(spec: dict[str, Any] | None = None) -> int:
    """The token-table size a tokenizer spec implies, without building the tokenizer (no file or download)."""
    spec = spec or {"kind": "gpt2"}
    kind = spec.get("kind")
    if kind == "gpt2":
        return GPT2Tokenizer.n_vocab
    if kind == "clip":
        return ClipBPETokenizer.n_vocab
    if kind == "words":
        return len(spec["vocab"]) + 2
    raise ValueError(f"unknown tokenizer kind {kind!r}; use 'gpt2', 'clip' or 'words'")


def get_tokenizer(spec: dict[str, Any] | None = None) -> Tokenizer:
    """Build (and memoise) the tokenizer a model config names."""
    spec = dict(spec or {"kind": "gpt2"})
    key = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()
    if key not in _CACHE:
        kind = spec.pop("kind")
        if kind == "gpt2":
            path = spec.pop("path", None) or os.environ.get("GLIDE_GPT2_BPE_DIR")
            tok: Tokenizer = GPT2Tokenizer(path)
        elif kind == "clip":
            tok = ClipBPETokenizer()
        elif kind == "words":
            tok = WordTokenizer(spec.pop("vocab"))
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r}; use 'gpt2', 'clip' or 'words'")
        if spec:
            raise ValueError(f"unknown tokenizer option(s) {sorted(spec)} for kind {kind!r}")
        _CACHE[key] = tok
    return _CACHE[key]
