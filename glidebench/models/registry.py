"""The embedded model files: where they live, their roles and stems, their JSON cards, and the listing.

Owns :func:`models_dir` (``$GLIDEBENCH_MODELS`` or ``glidebench/assets/models``), :class:`EmbeddedFile` (a file,
its card, and the card's SHA-256 check), :func:`embedded_files` / :func:`short_fallbacks` (which files a
caption style finds), :func:`write_card`, :func:`config_of_file` (a UNet file's config from its header), the
official checkpoint names per role, and :func:`describe_models` (the rows of ``glidebench ls models``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors import safe_open

from glide.checkpoints import CheckpointError, cached_path, config_from_metadata, is_cached, sha256_file
from glide.config import ModelConfig

from ..store import atomic_write_json

ROLES = ("base", "upsample", "noised-clip", "eval-clip", "inpaint")
CLIP_ROLES = ("noised-clip", "eval-clip")  # glide.train.export.save_clip files; the rest are UNets
EMBEDDED_STEMS = {
    "base": "embedded-base",
    "upsample": "embedded-upsample",
    "noised-clip": "embedded-clip-noised",
    "eval-clip": "embedded-clip-eval",
    "inpaint": "embedded-inpaint",
}
# The embedded models fine-tuned on short captions (glidebench.data.embedded.short_caption), used by runs with
# caption_style "short"; roles without one fall back to EMBEDDED_STEMS (with a note).
EMBEDDED_SHORT_STEMS = {
    "base": "embedded-base-short",
    "noised-clip": "embedded-clip-noised-short",
    "eval-clip": "embedded-clip-eval-short",
}
OFFICIAL_NAMES = {
    "base": ("base",),
    "upsample": ("upsample",),
    "noised-clip": ("clip/image-enc", "clip/text-enc"),
}
OFFICIAL_EVAL_CLIP = ("ViT-B-16", "openai")
CARD_FORMAT = "glidebench-model-card/1"


class ModelUnavailable(RuntimeError):
    """A requested model is not present; the message says how to get it or which option to drop."""


def models_dir() -> Path:
    """Where embedded model files live: ``$GLIDEBENCH_MODELS`` or ``glidebench/assets/models``."""
    env = os.environ.get("GLIDEBENCH_MODELS")
    if env:
        return Path(env)
    return Path(str(resources.files("glidebench"))) / "assets" / "models"


@dataclass(frozen=True)
class EmbeddedFile:
    """One embedded model file and its (optional) card."""

    role: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)
    stem: str = ""  # the name the registry found it under (EMBEDDED_STEMS or EMBEDDED_SHORT_STEMS)

    def sha256(self) -> str:
        return sha256_file(self.path)

    def verified_sha256(self) -> str:
        """The file's SHA-256, checked against the card's when the card has one."""
        if not self.path.is_file():
            raise CheckpointError(
                f"the {self.role} model file {self.path} named by its card does not exist; copy it there or "
                "delete the card"
            )
        digest = self.sha256()
        expected = self.card.get("sha256")
        if expected and str(expected).lower() != digest:
            raise CheckpointError(
                f"{self.path} has SHA-256 {digest}, but its card says {expected}: the file is corrupt or was "
                "replaced. Copy the right file (or re-export it) and update the card with glidebench.models.write_card"
            )
        return digest


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model card {path} is not readable JSON ({e}); fix or delete it") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {path} must hold a JSON object")
    return card


def _embedded_file(directory: Path, role: str, stem: str) -> EmbeddedFile | None:
    card_path = directory / f"{stem}.json"
    card = _read_card(card_path) if card_path.is_file() else {}
    path = directory / str(card.get("file", f"{stem}.safetensors"))
    return EmbeddedFile(role, path, card, stem) if card or path.is_file() else None


def embedded_files(directory: Path | None = None, caption_style: str = "exact") -> dict[str, EmbeddedFile]:
    """The embedded model files present, by role (a card without its file is an error when loaded).

    ``caption_style="short"``: the short-caption models (``EMBEDDED_SHORT_STEMS``) where present."""
    directory = directory or models_dir()
    found: dict[str, EmbeddedFile] = {}
    for role, stem in EMBEDDED_STEMS.items():
        f = None
        if caption_style == "short" and role in EMBEDDED_SHORT_STEMS:
            f = _embedded_file(directory, role, EMBEDDED_SHORT_STEMS[role])
        f = f or _embedded_file(directory, role, stem)
        if f is not None:
            found[role] = f
    return found


def short_fallbacks(files: dict[str, EmbeddedFile]) -> list[str]:
    """Roles that have a short-caption model in principle but whose file in ``files`` is an exact-caption one."""
    return [
        role for role, stem in EMBEDDED_SHORT_STEMS.items()
        if role in files and files[role].stem != stem
    ]  # fmt: skip


def write_card(model_file: str | os.PathLike, role: str, **info: Any) -> Path:
    """Write ``<stem>.json`` beside ``model_file`` with its role, file name and SHA-256 (atomic)."""

    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    model_file = Path(model_file)
    card = {
        "format": CARD_FORMAT,
        "role": role,
        "file": model_file.name,
        "sha256": sha256_file(model_file),
    } | info
    out = model_file.with_suffix(".json")
    atomic_write_json(out, card)
    return out


def config_of_file(path: Path) -> ModelConfig:
    """The ModelConfig stored in a safetensors file's metadata (cheap: the header only)."""

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for bad headers
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({type(e).__name__}: {e}); it may be truncated or "
            "corrupt: copy or export it again"
        ) from e
    return config_from_metadata(meta, str(path))


def describe_models(directory: Path | None = None) -> list[dict[str, str]]:
    """Rows for `glidebench ls models`: family, role, status, where."""
    rows = []
    files = embedded_files(directory)
    for role, stem in EMBEDDED_STEMS.items():
        f = files.get(role)
        if f is None:
            status = {
                "eval-clip": "missing (CLIP score skipped)",
                "inpaint": "missing (`glidebench check` needs it)",
            }.get(role, "missing (random-init fallback)")
            rows.append(
                {"family": "embedded", "role": role, "status": status, "where": f"{stem}.safetensors"}
            )
        else:
            status = "trained" if f.path.is_file() else "card without file"
            rows.append({"family": "embedded", "role": role, "status": status, "where": str(f.path)})
    short = embedded_files(directory, "short")
    for role in EMBEDDED_SHORT_STEMS:
        if role in short and role not in short_fallbacks(short):
            f = short[role]
            status = ("trained" if f.path.is_file() else "card without file") + " (short captions)"
            rows.append({"family": "embedded", "role": role, "status": status, "where": str(f.path)})
    for role, names in OFFICIAL_NAMES.items():
        for name in names:
            status = "cached" if is_cached(name) else "not downloaded"
            rows.append(
                {"family": "official", "role": role, "status": status, "where": str(cached_path(name))}
            )
    rows.append(
        {"family": "official", "role": "eval-clip", "status": "open_clip (downloads on first use)",
         "where": "open_clip:" + ":".join(OFFICIAL_EVAL_CLIP)}
    )  # fmt: skip
    return rows
