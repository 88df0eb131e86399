"""One pass over pairwise tiles (glidebench.metrics.pairs) against brute force written out in numpy: full
distance matrices, sorted rows, explicit group masks and kernel matrices, with tiles smaller than the sets
so that every quantity crosses tile borders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glidebench.metrics import pairs
from glidebench.metrics.prc import precision_recall

K = 3


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _kth(d: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Each row's (K + 1)-th smallest value (K-th nearest other row, the row itself at distance 0 first)."""
    d = d if mask is None else np.where(mask, d, np.inf)
    return np.sort(d, axis=1)[:, K]


def _kernel_sums(a: np.ndarray, b: np.ndarray, la: np.ndarray, lb: np.ndarray, blocks: int) -> np.ndarray:
    k = (a @ b.T / a.shape[1] + 1) ** 3
    out = np.zeros((blocks, blocks))
    for u in range(blocks):
        for v in range(blocks):
            out[u, v] = k[np.ix_(la == u, lb == v)].sum()
    return out


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(41, 6)), rng.normal(0.3, 1.2, size=(53, 6))
    gx, gy = rng.integers(0, 3, (2, 41)), rng.integers(0, 3, (2, 53))
    lx, ly = np.arange(41) * 5 // 41, np.arange(53) * 5 // 53
    return x, y, gx, gy, lx, ly


def test_within_matches_brute_force(sets) -> None:
    x, _, gx, _, lx, _ = sets
    w = pairs.within(torch.from_numpy(x), K, gx, lx, 5, tile=8)
    d = _sq_dists(x, x)
    assert np.allclose(w.radii.numpy(), _kth(d), rtol=1e-12, atol=1e-12)
    for s in range(2):
        same = gx[s][:, None] == gx[s][None, :]
        assert np.allclose(w.group_radii[s].numpy(), _kth(d, same), rtol=1e-12, atol=1e-12)
    assert np.allclose(w.kernel.numpy(), _kernel_sums(x, x, lx, lx, 5), rtol=1e-12)
    diag = np.bincount(lx, weights=((x * x).sum(1) / 6 + 1) ** 3, minlength=5)
    assert np.allclose(w.diagonal.numpy(), diag, rtol=1e-12)


def test_across_matches_brute_force(sets) -> None:
    x, y, gx, gy, lx, ly = sets
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    wx, wy = pairs.within(tx, K, gx, tile=8), pairs.within(ty, K, gy, tile=8)
    both = pairs.across(tx, ty, wx, wy, (gx, gy), (lx, ly), (5, 5), tile=8)
    d = _sq_dists(x, y)
    rx, ry = wx.radii.numpy(), wy.radii.numpy()
    assert np.array_equal(both.x_in_y.numpy(), (d <= ry[None, :]).any(1))
    assert np.array_equal(both.y_in_x.numpy(), (d <= rx[:, None]).any(0))
    for s in range(2):
        same = gx[s][:, None] == gy[s][None, :]
        grx, gry = wx.group_radii[s].numpy(), wy.group_radii[s].numpy()
        assert np.array_equal(both.group_x_in_y[s].numpy(), ((d <= gry[None, :]) & same).any(1))
        assert np.array_equal(both.group_y_in_x[s].numpy(), ((d <= grx[:, None]) & same).any(0))
    assert np.allclose(both.kernel.numpy(), _kernel_sums(x, y, lx, ly, 5), rtol=1e-12)
    assert both.x_in_y.any() and not both.x_in_y.all()  # the case is not degenerate


def test_membership_fractions_are_precision_recall(sets) -> None:
    """prc.precision_recall is built on the same pass: its fractions are the pass's memberships, and the
    tile size does not change them."""
    x, y, *_ = sets
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    both = pairs.across(tx, ty, pairs.within(tx, K, tile=8), pairs.within(ty, K, tile=8), tile=8)
    pr = precision_recall(y, x, k=K, block_size=16)
    assert pr["precision"] == float(both.x_in_y.double().mean())
    assert pr["recall"] == float(both.y_in_x.double().mean())


def test_refusals() -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="k must be in"):
        pairs.within(x, 4)
    w = pairs.within(x, 2)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        pairs.across(x, torch.zeros(4, 2), w, w)
    with pytest.raises(ValueError, match="group radii"):
        pairs.across(x, x, w, w, (np.zeros((1, 4), int), np.zeros((1, 4), int)))
