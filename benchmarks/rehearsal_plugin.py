"""A trivial generator for the scale rehearsal (benchmarks/scale_rehearsal.py): cheap pattern images, no
diffusion.

Image ``i`` is a background colour taken from its caption's hash, one seeded rectangle of another colour, and
seeded Gaussian noise whose amplitude falls with the classifier-free scale (so that settings differ). It depends
only on (caption, seed, scale, size): a resumed or sharded run must give the same bytes as an uninterrupted one.

    glidebench run coco-fid --generator rehearsal_plugin:make --cfg 1 --clip '' ...

(from the folder that holds this file, or with it on PYTHONPATH). ``REHEARSAL_PLUGIN_DELAY`` (seconds per image,
default 0) slows generation without changing a pixel or the run's identity: the rehearsal's kill lands inside
generation.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from glidebench.generators import Capabilities, Generator, SamplingOptions

VERSION = "1"


def pattern_image(caption: str, seed: int, scale: float, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: the caption's colour, a seeded rectangle, seeded noise (sigma 40 / max(scale, 1))."""
    h = hashlib.sha256(caption.encode()).digest()
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = np.frombuffer(h[:3], dtype=np.uint8)
    y0, x0 = rng.integers(0, size // 2, size=2)
    y1, x1 = y0 + rng.integers(size // 8, size // 2, size=2)
    img[y0:y1, x0:x1] = np.frombuffer(h[3:6], dtype=np.uint8)
    img += rng.normal(0.0, 40.0 / max(float(scale), 1.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


class PatternGenerator(Generator):
    """Pattern images at ``size`` px (see the module docstring); classifier-free and unguided settings."""

    def __init__(self, size: int = 64) -> None:
        self.size = int(size)
        self.name = "rehearsal-pattern"
        self.capabilities = Capabilities(
            guidance=("cfg", "none"), resolution=self.size, devices=("cpu", "cuda")
        )

    def identity(self) -> dict[str, str]:
        return {"rehearsal-pattern": f"v{VERSION}:size={self.size}"}

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> np.ndarray:
        scale = float(getattr(setting, "scale", 1.0) or 1.0)
        # the rehearsal slows the process it kills (seconds per image); no pixel depends on it
        time.sleep(float(os.environ.get("REHEARSAL_PLUGIN_DELAY", "0") or 0) * len(captions))
        return np.stack([pattern_image(c, int(s), scale, self.size) for c, s in zip(captions, seeds)])


def make(size: int = 64) -> PatternGenerator:
    """The factory of ``--generator rehearsal_plugin:make`` (``--generator-args size=N``)."""
    return PatternGenerator(size)
