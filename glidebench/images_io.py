"""Decoded images of any mode and bit depth to the harness's uint8 RGB, by their real range or refused.

Owns the one conversion every image the harness reads goes through (folder images, COCO references, the run's
own PNGs, report grids). PIL's ``convert("RGB")`` clips 16-bit grey (``I;16``, ``I``) at 255, so a 16-bit
photo comes out pure white (FID 175.4 became 247.4); here:

- 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``PA``, ``RGBA``, ``CMYK``, ``YCbCr`` ...) convert as PIL does
  (alpha dropped, no compositing); 16-bit-per-channel RGB(A) PNGs are already read by PIL as their high byte;
- 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``) is scaled by 255/65535 (``round(v / 257)``);
- 32-bit integer grey (``I``, which is how some readers give 16-bit PNGs) is scaled the same way when its
  values lie in 0..65535, and refused otherwise (its range is unknown);
- floating-point grey (``F``) and modes PIL cannot convert are refused: their range is unknown.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageModeError(ValueError):
    """An image whose mode or value range cannot be brought to 8-bit RGB without guessing."""


def to_rgb_array(im: Image.Image, source: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 [H, W, 3] of ``im`` by its real range (see the module docstring); ``source`` names the image in
    the error for a mode whose range is unknown."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        a = np.asarray(im).astype(np.int64)
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageModeError(
                f"image {source or '(in memory)'} is {mode} (32-bit integer) with values {lo}..{hi}, outside "
                "the 16-bit range 0..65535 this can scale; its range is unknown: save it as 8-bit RGB (or 16-bit) "
                "PNG"
            )
        grey = np.rint(a / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        raise ImageModeError(
            f"image {source or '(in memory)'} is floating point (mode F): its range is unknown; save it as 8-bit "
            "RGB PNG"
        )
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except ValueError as e:  # PIL: "conversion from X to RGB not supported"
        raise ImageModeError(
            f"image {source or '(in memory)'} has mode {mode}, which cannot be converted to RGB by its range "
            f"({e}); save it as 8-bit RGB PNG"
        ) from e


def to_rgb(im: Image.Image, source: str | os.PathLike | None = None) -> Image.Image:
    """:func:`to_rgb_array` as a PIL RGB image (``im`` itself when it already is RGB)."""
    return im if im.mode == "RGB" else Image.fromarray(to_rgb_array(im, source), "RGB")
