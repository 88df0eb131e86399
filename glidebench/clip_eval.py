"""The evaluator CLIP of the CLIP score: which open_clip backbone (``--clip-score-model``), where its weights
are cached, whether they can be had right now, and how many captions its text encoder truncates.

Owns:

- :func:`parse_clip_score_model`: ``ARCH:PRETRAINED`` (``ViT-B-16:openai``, the GLIDE paper's and the
  default; ``ViT-L-14:openai``; ``ViT-g-14:laion2b_s34b_b88k`` ...; ``ARCH:/path/weights.bin`` for a local file),
  checked against open_clip's own list (no network);
- :func:`cached_weights`: the weights file of a pretrained tag in its cache (the Hugging Face hub cache for
  ``hf_hub`` tags, open_clip's ``~/.cache/clip`` for URL tags), each backbone its own file, or None;
- :func:`weights_available`: the fast offline decision made once, before open_clip is asked: weights cached ->
  load them with the hub in offline mode (no update check); not cached and ``HF_HUB_OFFLINE`` set, or the hub
  not reachable within :data:`PROBE_TIMEOUT_S` -> :class:`ClipOffline` with a one-line message (instead of the
  hub's retries: about 46 s and ~40 warning lines before); else open_clip downloads them;
- :func:`count_truncated`: the captions longer than the text encoder's context (which are truncated, the
  policy of open_clip's tokenizer and of glide's CLIP); the count goes into the results (``clip_truncated``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_CLIP_SCORE_MODEL = "ViT-B-16:openai"
HUB_HOST = "huggingface.co"
PROBE_TIMEOUT_S = 2.0
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class ClipOffline(RuntimeError):
    """The evaluator CLIP's weights are not cached and cannot be downloaded now (one line: what and the fix)."""


def parse_clip_score_model(text: str) -> tuple[str, str]:
    """``ARCH:PRETRAINED`` -> (arch, pretrained), checked against open_clip's list of pretrained tags (or a
    local weights file). Errors say what is wrong and give examples."""
    import open_clip

    arch, sep, pretrained = str(text).partition(":")
    arch, pretrained = arch.strip(), pretrained.strip()
    examples = "e.g. ViT-B-16:openai (the default), ViT-L-14:openai, ViT-g-14:laion2b_s34b_b88k"
    if not sep or not arch or not pretrained:
        raise ValueError(f"--clip-score-model {text!r}: write ARCH:PRETRAINED, {examples}")
    if arch not in open_clip.list_models():
        raise ValueError(f"--clip-score-model {text!r}: open_clip has no architecture {arch!r}; {examples}")
    if Path(pretrained).expanduser().is_file():
        return arch, str(Path(pretrained).expanduser())
    tags = sorted(open_clip.list_pretrained_tags_by_model(arch))
    if pretrained not in tags:
        raise ValueError(
            f"--clip-score-model {text!r}: open_clip has no pretrained weights {pretrained!r} for {arch} (it has "
            f"{', '.join(tags) or 'none'}); or give a local weights file as ARCH:/path/to/file"
        )
    return arch, pretrained


def _hub_candidates(hf_hub: str) -> tuple[str, list[str]]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    model_id, filename = os.path.split(hf_hub)
    if not filename:
        return model_id, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    stem, ext = os.path.splitext(filename)
    safe = [stem + ".safetensors"] if ext in (".bin", ".pth") else []
    return model_id, safe + [filename]


def cached_weights(arch: str, pretrained: str) -> Path | None:
    """The cached weights file of ``arch``/``pretrained`` (the file itself for a local path), else None."""
    if Path(pretrained).is_file():
        return Path(pretrained)
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, pretrained) or {}
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        model_id, names = _hub_candidates(cfg["hf_hub"])
        for name in names:
            hit = try_to_load_from_cache(model_id, name)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
        return None
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return path if path.is_file() else None
    return None


def hub_reachable(host: str | None = None, timeout: float | None = None) -> bool:
    """Whether a TCP connection to ``host``:443 (default :data:`HUB_HOST`) opens within ``timeout`` seconds
    (default :data:`PROBE_TIMEOUT_S`; name lookup included: it runs in a daemon thread, so a hanging resolver
    cannot hold the run)."""
    host, timeout = host or HUB_HOST, timeout or PROBE_TIMEOUT_S
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def weights_available(arch: str, pretrained: str) -> Path | None:
    """The cached weights (None: not cached, but the hub is reachable and open_clip may download them).
    Raises :class:`ClipOffline` at once when they are not cached and cannot be downloaded."""
    path = cached_weights(arch, pretrained)
    if path is not None:
        return path
    name = f"{arch}:{pretrained}"
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_ENV):
        raise ClipOffline(
            f"{name} weights are not cached (hub cache {_hub_cache()}) and HF_HUB_OFFLINE is set: run once online "
            "(or unset HF_HUB_OFFLINE) to cache them"
        )
    if not hub_reachable():
        raise ClipOffline(
            f"{name} weights are not cached (hub cache {_hub_cache()}) and {HUB_HOST} is unreachable (no network): "
            "run once online to cache them"
        )
    return None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face hub in offline mode while active: cached files are used without an update check (which
    would retry for tens of seconds without a network)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def count_truncated(embedder: Any, texts: Sequence[str]) -> int | None:
    """How many of ``texts`` exceed the text encoder's context (and are truncated); None when the embedder
    cannot say."""
    counter = getattr(embedder, "count_truncated", None)
    return None if counter is None else int(counter(list(texts)))
