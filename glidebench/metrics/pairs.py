"""Every O(N^2 d) quantity of the metrics from one pass over the pairwise tiles of feature sets.

The k-NN radii and ball memberships of precision/recall (Kynkaanniemi et al. 2019) and the kernel sums of
KID's polynomial kernel ``k(x, y) = (x.y / d + 1)^3`` all come from the inner products ``x_i . y_j``. Each
``[TILE, TILE]`` tile of them is computed once here, and everything is derived from it:

- :func:`within` (a set against itself, n x n): each row's squared distance to its k-th nearest other row
  over the whole set and within the row's group of every random split (the split-sample intervals), and the
  kernel sums per pair of blocks with the per-block kernel diagonal (the KID jackknife);
- :func:`across` (set x against set y, n x m): whether each row of one set lies inside some k-NN ball of
  the other, over the whole sets and within every split's groups, and the kernel sums per pair of blocks.

Computing each quantity on its own costs one matrix product per quantity and per group (about 3x the
products per generated set of the split-sample and KID intervals beside the point metrics). Distances are
``|a|^2 + |b|^2 - 2 a.b`` clamped at 0 from the same tiles as :mod:`glidebench.metrics.prc`, so precision and
recall equal ``prc.precision_recall``'s to the bit. Memory: a few tiles (32 MiB each in float64) beside the
features, whatever N is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

TILE = 2048


def gram_sq_dists(
    a: torch.Tensor, a2: torch.Tensor, b: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a b^T, squared Euclidean distances |a|^2 + |b|^2 - 2 a.b clamped at 0), both [len(a), len(b)]."""
    g = a @ b.T
    return g, torch.add(a2[:, None], g, alpha=-2.0).add_(b2[None, :]).clamp_min_(0.0)


def merge_smallest(best: torch.Tensor, tile: torch.Tensor, k: int) -> torch.Tensor:
    """The k + 1 smallest values per row of ``best`` and ``tile`` together, ascending."""
    part = torch.topk(tile, min(k + 1, tile.shape[1]), dim=1, largest=False).values
    return torch.topk(torch.cat([best, part], dim=1), k + 1, dim=1, largest=False, sorted=True).values


def check_k(n: int, k: int) -> None:
    if not 1 <= k < n:
        raise ValueError(
            f"k must be in [1, num_samples - 1] = [1, {n - 1}], got k={k}; use more samples or a smaller k"
        )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block and restored after (None: left as they are).
    The pass is float64 matrix products, which gain from more threads where LAPACK's routines lose."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _kernel(g: torch.Tensor, d: int) -> torch.Tensor:
    return (g / d + 1) ** 3


@dataclass
class Within:
    """One set's own pairwise quantities."""

    radii: torch.Tensor  # [n] squared distance to the k-th nearest other row
    group_radii: torch.Tensor | None = None  # [S, n] the same within the row's group of split s
    kernel: torch.Tensor | None = (
        None  # [G, G] sum of k(x_i, x_j) over i in block u, j in block v (i = j too)
    )
    diagonal: torch.Tensor | None = None  # [G] sum of k(x_i, x_i) over i in block u


@dataclass
class Across:
    """Two sets' pairwise quantities: x's rows inside y's balls and the other way round."""

    x_in_y: torch.Tensor  # [n] bool
    y_in_x: torch.Tensor  # [m] bool
    group_x_in_y: torch.Tensor | None = None  # [S, n] bool, balls of y's rows in the same group of split s
    group_y_in_x: torch.Tensor | None = None  # [S, m] bool
    kernel: torch.Tensor | None = None  # [Gx, Gy]


def _labels(labels: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)


@torch.no_grad()
def within(
    x: torch.Tensor,
    k: int,
    groups: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    blocks: int | None = None,
    tile: int = TILE,
) -> Within:
    """Radii (and, with ``groups`` [S, n], radii within each split's groups; with ``labels`` [n] of
    ``blocks`` blocks, the KID kernel sums) of the rows of ``x`` in one pass over its tiles."""
    n, dev = x.shape[0], x.device
    check_k(n, k)
    x2 = (x * x).sum(dim=1)
    gt, lt = _labels(groups, dev), _labels(labels, dev)
    s_count = 0 if gt is None else gt.shape[0]
    radii = torch.empty(n, dtype=x.dtype, device=dev)
    group_radii = torch.empty(s_count, n, dtype=x.dtype, device=dev) if s_count else None
    g_count = (int(lt.max()) + 1 if blocks is None else blocks) if lt is not None else 0
    kernel = torch.zeros(g_count, g_count, dtype=torch.float64, device=dev) if lt is not None else None
    inf = float("inf")
    for i in range(0, n, tile):
        rows, rows2, r = x[i : i + tile], x2[i : i + tile], slice(i, i + tile)
        best = torch.full((rows.shape[0], k + 1), inf, dtype=x.dtype, device=dev)
        gbest = [best.clone() for _ in range(s_count)]
        part = (
            torch.zeros(rows.shape[0], g_count, dtype=torch.float64, device=dev) if lt is not None else None
        )
        for j in range(0, n, tile):
            c = slice(j, j + tile)
            g, dist = gram_sq_dists(rows, rows2, x[c], x2[c])
            best = merge_smallest(best, dist, k)
            for s in range(s_count):
                other = gt[s, r, None] != gt[s, None, c]
                gbest[s] = merge_smallest(gbest[s], dist.masked_fill(other, inf), k)
            if part is not None:
                part.index_add_(1, lt[c], _kernel(g, x.shape[1]))
            del g, dist
        radii[r] = best[:, k]
        for s in range(s_count):
            group_radii[s, r] = gbest[s][:, k]
        if part is not None:
            kernel.index_add_(0, lt[r], part)
    diagonal = None
    if lt is not None:
        diagonal = torch.zeros(g_count, dtype=torch.float64, device=dev).index_add_(
            0, lt, _kernel(x2, x.shape[1]).to(torch.float64)
        )
    return Within(radii, group_radii, kernel, diagonal)


@torch.no_grad()
def across(
    x: torch.Tensor,
    y: torch.Tensor,
    wx: Within,
    wy: Within,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    blocks: tuple[int, int] | None = None,
    tile: int = TILE,
) -> Across:
    """Ball memberships between ``x`` and ``y`` (whose own radii are ``wx``, ``wy``), within the groups of
    each split when ``groups`` = (x's [S, n], y's [S, m]) is given (their group radii must be in ``wx``,
    ``wy``), and the cross kernel sums per block pair when ``labels`` = (x's, y's) is given."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"feature dimensions differ ({x.shape[1]} vs {y.shape[1]}); use the same extractor layer"
        )
    n, m, dev = x.shape[0], y.shape[0], x.device
    x2, y2 = (x * x).sum(dim=1), (y * y).sum(dim=1)
    gx, gy = (_labels(groups[0], dev), _labels(groups[1], dev)) if groups is not None else (None, None)
    s_count = 0 if gx is None else gx.shape[0]
    if s_count and (wx.group_radii is None or wy.group_radii is None):
        raise ValueError("split groups given without the group radii of both sets (within(..., groups=...))")
    lx, ly = (_labels(labels[0], dev), _labels(labels[1], dev)) if labels is not None else (None, None)
    if lx is not None:
        bx, by = blocks if blocks is not None else (int(lx.max()) + 1, int(ly.max()) + 1)
        kernel = torch.zeros(bx, by, dtype=torch.float64, device=dev)
    else:
        kernel = None
    x_in_y = torch.zeros(n, dtype=torch.bool, device=dev)
    y_in_x = torch.zeros(m, dtype=torch.bool, device=dev)
    gxy = torch.zeros(s_count, n, dtype=torch.bool, device=dev)
    gyx = torch.zeros(s_count, m, dtype=torch.bool, device=dev)
    ry, rx = wy.radii.to(device=dev, dtype=x.dtype), wx.radii.to(device=dev, dtype=x.dtype)
    for i in range(0, n, tile):
        r = slice(i, i + tile)
        part = (
            torch.zeros(x[r].shape[0], kernel.shape[1], dtype=torch.float64, device=dev)
            if lx is not None
            else None
        )
        for j in range(0, m, tile):
            c = slice(j, j + tile)
            g, dist = gram_sq_dists(x[r], x2[r], y[c], y2[c])
            x_in_y[r] |= (dist <= ry[None, c]).any(dim=1)
            y_in_x[c] |= (dist <= rx[r, None]).any(dim=0)
            for s in range(s_count):
                same = gx[s, r, None] == gy[s, None, c]
                gxy[s, r] |= ((dist <= wy.group_radii[s, None, c]) & same).any(dim=1)
                gyx[s, c] |= ((dist <= wx.group_radii[s, r, None]) & same).any(dim=0)
            if part is not None:
                part.index_add_(1, ly[c], _kernel(g, x.shape[1]))
            del g, dist
        if part is not None:
            kernel.index_add_(0, lx[r], part)
    return Across(x_in_y, y_in_x, gxy if s_count else None, gyx if s_count else None, kernel)
