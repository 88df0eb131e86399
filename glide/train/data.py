"""Per-step training data: batches, classifier-free caption dropout, erase masks, low-res inputs.

Everything a step draws comes from generators seeded by (seed, step) (:func:`step_generator`), never from an
iterator's state, so a resumed run sees exactly the batches and noise an uninterrupted run sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..images import quantize_8bit


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (seed, step, stream), mixed through numpy's SeedSequence."""
    return int(
        np.random.SeedSequence([int(seed), int(step), int(stream)])
        .generate_state(2, np.uint32)
        .view(np.uint64)[0]
        >> 1
    )


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Box-filter down (or bilinear up) square images to ``size`` pixels."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] % size == 0:
        return F.avg_pool2d(images, images.shape[-1] // size)
    return F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)


def drop_captions(captions: Sequence[str], p_uncond: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by "" with probability ``p_uncond`` (the classifier-free null caption)."""
    keep = torch.rand(len(captions), generator=generator) >= p_uncond
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def erase_masks(
    n: int, size: int, generator: torch.Generator, lo: float = 0.25, hi: float = 0.75, max_rects: int = 2
) -> torch.Tensor:
    """[n, 1, size, size] masks, 1 = keep, with 1..max_rects random rectangles set to 0 (erased)."""
    mask = torch.ones(n, 1, size, size)
    for i in range(n):
        k = int(torch.randint(1, max_rects + 1, (1,), generator=generator))
        for _ in range(k):
            h, w = (
                max(1, round(size * float(lo + (hi - lo) * torch.rand((), generator=generator))))
                for _ in range(2)
            )
            y = int(torch.randint(0, size - h + 1, (1,), generator=generator))
            x = int(torch.randint(0, size - w + 1, (1,), generator=generator))
            mask[i, :, y : y + h, x : x + w] = 0
    return mask


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def low_res_input(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    blur_prob: float = 0.0,
    blur_sigma: tuple[float, float] = (0.4, 0.6),
) -> torch.Tensor:
    """The upsampler's conditioning: box-downsampled, optionally blurred, 8-bit quantised (official)."""
    low = resize(images, size)
    if blur_prob > 0:
        rows = []
        for row in low:
            if float(torch.rand((), generator=generator)) < blur_prob:
                s = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * float(
                    torch.rand((), generator=generator)
                )
                row = gaussian_blur(row[None], s)[0]
            rows.append(row)
        low = torch.stack(rows)
    return quantize_8bit(low.clamp(-1, 1))


class SolidColourSet:
    """A tiny deterministic toy dataset for tests: solid-colour images captioned with their colour."""

    COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}

    def __init__(self, size: int = 8) -> None:
        self.size = size

    @staticmethod
    def vocabulary() -> list[str]:
        return ["a", "blue", "green", "image", "red"]

    def train_batch(self, seed: int, step: int, batch_size: int):
        g = step_generator(seed, step, stream=99)
        names = list(self.COLOURS)
        idx = torch.randint(0, len(names), (batch_size,), generator=g).tolist()
        images = torch.stack(
            [torch.tensor(self.COLOURS[names[i]]).view(3, 1, 1).expand(3, self.size, self.size) for i in idx]
        )
        images = images * 0.8 + 0.05 * torch.randn(images.shape, generator=g)
        return images.clamp(-1, 1), [f"a {names[i]} image" for i in idx], idx


def solid_vocabulary() -> list[str]:
    return SolidColourSet.vocabulary()
