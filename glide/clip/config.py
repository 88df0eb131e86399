"""Options of GLIDE's noised CLIP (one frozen dataclass, read from the official ``config.yaml`` format).

The field names are exactly the keys of glide-text2im's ``glide_text2im/clip/config.yaml``; the packaged
``glide/clip/config.yaml`` holds the official values and :meth:`ClipConfig.official` returns them. Unknown keys
are errors. ``logit_scale`` is the temperature of the contrastive loss; it is stored as ``log(logit_scale)`` in
float32 by :class:`glide.clip.model.ClipModel` and is in neither encoder's state dict.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..fileio import atomic_write

#: Beta schedules a noised CLIP can be trained on (the official one uses squaredcos_cap_v2).
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear")
#: Smallest token table that can hold every id the CLIP tokenizer emits (49406 SOT, 49407 EOT).
MIN_VOCAB = 49408


def default_config_path() -> Path:
    """Path of the packaged ``config.yaml`` with the official option values."""
    return Path(__file__).resolve().with_name("config.yaml")


@dataclass(frozen=True)
class ClipConfig:
    """Noised-CLIP options (official names and, as defaults, the official values)."""

    logit_scale: float = 100.0
    beta_schedule: str = "squaredcos_cap_v2"
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512
    n_head_state_text: int = 64
    n_head_text: int = 8
    n_xf_blocks_text: int = 12
    n_head_state_image: int = 64
    n_head_image: int = 12
    n_xf_blocks_image: int = 12

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"ClipConfig.{f.name} must be an int, got {value!r}")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"ClipConfig.{f.name} must be a number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if not self.logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0 (it is stored as its log), got {self.logit_scale}")
        positive = (
            "n_timesteps image_size patch_size n_embd n_head_state_text n_head_text n_xf_blocks_text "
            "n_head_state_image n_head_image n_xf_blocks_image"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ClipConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}; "
                "choose a patch size that divides the image"
            )
        if self.max_text_len < 2:
            raise ValueError(f"max_text_len must be >= 2 (room for SOT and EOT), got {self.max_text_len}")
        if self.n_vocab < MIN_VOCAB:
            raise ValueError(
                f"n_vocab {self.n_vocab} is smaller than the CLIP tokenizer's {MIN_VOCAB} ids; "
                f"use n_vocab >= {MIN_VOCAB} (the official table has 65536 rows)"
            )

    # Derived sizes -----------------------------------------------------------------------------------
    @property
    def text_width(self) -> int:
        """Residual width of the text transformer (n_head_text x n_head_state_text)."""
        return self.n_head_text * self.n_head_state_text

    @property
    def image_width(self) -> int:
        """Residual width of the image transformer (n_head_image x n_head_state_image)."""
        return self.n_head_image * self.n_head_state_image

    # Constructors / serialisation --------------------------------------------------------------------
    @classmethod
    def official(cls) -> ClipConfig:
        """The released noised CLIP's options (``clip/image-enc`` and ``clip/text-enc`` checkpoints)."""
        return cls()

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> ClipConfig:
        """Build from a mapping; unknown keys are errors, missing keys take the official values."""
        if not isinstance(options, dict):
            raise TypeError(f"a ClipConfig needs a mapping of options, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown ClipConfig option(s) {unknown}; valid options are {sorted(known)}")
        return cls(**options)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ClipConfig:
        """Read an official-format ``config.yaml`` (a flat mapping of the option names)."""
        with open(path, encoding="utf-8") as f:
            options = yaml.safe_load(f)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValueError(f"{path}: expected a mapping of CLIP options, got {type(options).__name__}")
        try:
            return cls.from_dict(options)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write the options as YAML atomically (:func:`glide.fileio.atomic_write`)."""
        atomic_write(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
