"""Toy generators for the plug-in tests: deterministic per (caption, seed, setting), cheap, with switches for
every way a plug-in can go wrong."""

from __future__ import annotations

import hashlib

import numpy as np

from glidebench.generators import Capabilities, Generator


def toy_image(caption: str, seed: int, scale: float, size: int) -> np.ndarray:
    """A caption-coloured image with seeded noise whose amplitude falls with the guidance scale."""
    h = hashlib.sha256(caption.encode()).digest()
    colour = np.array([h[0], h[1], h[2]], dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, 60.0 / max(scale, 1.0), (size, size, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


class ToyGenerator(Generator):
    """Images depend only on (caption, seed, scale): resumed and sharded runs must equal an uninterrupted one."""

    def __init__(self, size: int = 16, mode: str = "ok", name: str = "toy") -> None:
        self.size, self.mode, self.name = int(size), mode, name
        self.capabilities = Capabilities(guidance=("cfg", "none"), resolution=self.size)
        self.calls: list[int] = []

    def identity(self) -> dict[str, str]:
        return {"toy": f"v1:size={self.size}:mode={self.mode}"}

    def generate(self, captions, seeds, setting, options):
        self.calls.append(len(captions))
        imgs = np.stack([toy_image(c, s, setting.scale, self.size) for c, s in zip(captions, seeds)])
        if self.mode == "float":
            return imgs.astype(np.float32) / 255.0
        if self.mode == "nchw":
            return imgs.transpose(0, 3, 1, 2)
        if self.mode == "pil":
            from PIL import Image

            return [Image.fromarray(a) for a in imgs]
        if self.mode == "nan":
            out = imgs.astype(np.float32) / 255.0
            out[0, 0, 0, 0] = np.nan
            return out
        if self.mode == "range":
            return imgs.astype(np.float32)  # 0..255 floats: out of [0, 1]
        if self.mode == "shape":
            return imgs[:, :, :, :2]
        if self.mode == "count":
            return imgs[:-1]
        if self.mode == "dtype":
            return imgs.astype(np.int32)
        if self.mode == "raise":
            raise RuntimeError("the toy model ran out of ideas")
        return imgs


def make(**kwargs) -> ToyGenerator:
    return ToyGenerator(**kwargs)


def broken_factory(**kwargs):
    raise ValueError("cannot build the toy model")


def not_a_generator(**kwargs):
    return object()
