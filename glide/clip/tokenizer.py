"""CLIP text tokenizer for the noised CLIP (CLIP's byte-level BPE, 49408 ids, context 77).

The BPE merges, vocabulary and text cleaning are open_clip's shipped ``bpe_simple_vocab_16e6`` and its
``SimpleTokenizer`` (ftfy fix, HTML unescape twice, whitespace collapse, strip, lower-case); nothing here
re-implements BPE. What this module adds is the convention of glide-text2im's CLIP tokenizer:

* the literal strings ``<|startoftext|>`` and ``<|endoftext|>`` are special tokens (ids 49406 and 49407), as
  in the original CLIP pre-tokenisation pattern (open_clip >= 3 spells its special tokens differently);
* ``padded_tokens_and_len``: ``[49406] + content[: ctx - 2] + [49407]``, right-padded with **0** to ``ctx``,
  and ``text_len`` counting SOT and EOT (the text encoder pools at ``text_len - 1``, the EOT position).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import regex
import torch

SOT_TOKEN = 49406
EOT_TOKEN = 49407
PAD_TOKEN = 0
VOCAB_SIZE = 49408
DEFAULT_CONTEXT = 77

_SPECIAL = {"<|startoftext|>": SOT_TOKEN, "<|endoftext|>": EOT_TOKEN}
# The original CLIP pre-tokenisation pattern: special tokens first, then contractions, letter runs,
# single digits and runs of other non-space characters.
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def _open_clip_tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer`` module.

    ``import open_clip`` pulls in its whole model zoo (torchvision, timm, ...: seconds). The tokenizer module
    is self-contained, so unless open_clip is already imported it is loaded from its file on its own; any
    failure falls back to the ordinary import.
    """
    if "_glide_open_clip_tokenizer" in sys.modules:
        return sys.modules["_glide_open_clip_tokenizer"]
    if "open_clip" not in sys.modules:
        try:
            spec = importlib.util.find_spec("open_clip")
            if spec is not None and spec.submodule_search_locations:
                path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
                file_spec = importlib.util.spec_from_file_location("_glide_open_clip_tokenizer", path)
                if file_spec is not None and file_spec.loader is not None:
                    module = importlib.util.module_from_spec(file_spec)
                    sys.modules[file_spec.name] = module
                    try:
                        file_spec.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[file_spec.name]
                        raise
                    return module
        except Exception:  # noqa: BLE001 - fall back to the regular import below
            pass
    try:
        from open_clip import tokenizer
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError(
            "the CLIP tokenizer needs open-clip-torch (its BPE vocabulary and cleaning); "
            "install it with `pip install open-clip-torch`"
        ) from e
    return tokenizer


@lru_cache(maxsize=1)
def _open_clip_tokenizer():  # -> open_clip.tokenizer.SimpleTokenizer
    return _open_clip_tokenizer_module().SimpleTokenizer()


class ClipTokenizer:
    """CLIP BPE tokenizer with glide-text2im's padding convention (see the module docstring)."""

    sot_token: int = SOT_TOKEN
    eot_token: int = EOT_TOKEN
    pad_token: int = PAD_TOKEN
    n_vocab: int = VOCAB_SIZE

    def __init__(self) -> None:
        self._oc = _open_clip_tokenizer()
        if self._oc.vocab_size != VOCAB_SIZE or self._oc.eot_token_id != EOT_TOKEN:
            raise RuntimeError(
                f"open_clip's SimpleTokenizer has {self._oc.vocab_size} ids (EOT {self._oc.eot_token_id}); "
                f"expected CLIP's {VOCAB_SIZE} (EOT {EOT_TOKEN}). Use the default bpe_simple_vocab_16e6."
            )

    def clean(self, text: str) -> str:
        """open_clip's 'lower' cleaning: ftfy + double HTML unescape, whitespace collapse, strip, lower."""
        return self._oc.clean_fn(text)

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without SOT/EOT (special-token literals map to 49406/49407)."""
        oc = self._oc
        ids: list[int] = []
        for piece in _PATTERN.findall(self.clean(text)):
            special = _SPECIAL.get(piece)
            if special is not None:
                ids.append(special)
                continue
            piece = "".join(oc.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(oc.encoder[bpe_token] for bpe_token in oc.bpe(piece).split(" "))
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        return self._oc.decode([int(t) for t in tokens])

    def padded_tokens_and_len(self, tokens: Sequence[int], text_ctx: int) -> tuple[list[int], int]:
        """``[SOT] + tokens[: text_ctx - 2] + [EOT]`` padded with 0 to ``text_ctx``, and its unpadded length."""
        if text_ctx < 2:
            raise ValueError(f"text_ctx must be >= 2 to hold SOT and EOT, got {text_ctx}")
        out = [SOT_TOKEN, *list(tokens)[: text_ctx - 2], EOT_TOKEN]
        text_len = len(out)
        return out + [PAD_TOKEN] * (text_ctx - text_len), text_len

    def encode_batch(
        self,
        prompts: Sequence[str],
        text_ctx: int = DEFAULT_CONTEXT,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, text_ctx]`` and lengths ``[B]`` (both int64) for a list of prompts."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not a single string; wrap it: [prompt]")
        rows, lens = [], []
        for prompt in prompts:
            row, n = self.padded_tokens_and_len(self.encode(prompt), text_ctx)
            rows.append(row)
            lens.append(n)
        tokens = torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), text_ctx)
        return tokens, torch.tensor(lens, dtype=torch.long, device=device)
