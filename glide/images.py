"""Image conversions shared by sampling and training (a leaf module: it imports nothing from glide)."""

from __future__ import annotations

import torch


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 (the official rounding)."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """The official low-res conditioning: round to 8-bit levels, back to [-1, 1]."""
    return ((x + 1) * 127.5).round() / 127.5 - 1
