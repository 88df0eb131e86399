"""Interval replicates of the harness's metrics whose width matches the sampling spread: pure functions
over feature arrays (docs/uncertainty.md).

**Jackknife** (FID, KID, CLIP score, accuracies, diversity). Both sets are cut into ``G`` blocks (40, or one
unit per row when a set has fewer rows): block ``b`` of the generated set is a run of consecutive caption
indices, block ``b`` of the reference set a run of reference images. Replicate ``b + 1`` is the metric with
block ``b`` of BOTH sets left out; replicate 0 is the full sample's value. With ``theta_b`` the
leave-one-block-out values and ``theta_bar`` their mean,

    se^2 = (G - 1) / G * sum_b (theta_b - theta_bar)^2        (Tukey's jackknife variance)

and the interval is ``theta +- t_{G-1, (1 + c) / 2} * se``. Why not the bootstrap: a resample's duplicates
lower its effective sample size, and a metric with a sample-size-dependent bias (FID) moves with that size
from resample to resample, so the bootstrap's spread overstates the sampling spread (FID on pool3 features: 2.25x
at 1,000 images, 13x at 5,000). A leave-one-block-out set has no duplicates and almost the full size.

**Split samples** (precision, recall). A k-NN statistic is not smooth enough for the jackknife: deleting a
block moves the radii of its neighbours, and the jackknife then overstates the spread (1.4x on Gaussian
features at 1k). Instead both sets are split at random into ``q`` groups, ``S`` times; group ``j`` of split
``s`` is an independent pair of sets of 1/q of the size, the variance of the q group values estimates the
metric's variance at that size, and dividing it by q scales it to the full size:

    se^2 = mean_s var_j(theta_sj) / q,     interval theta +- t_{S (q - 1)} * se.

- :func:`block_labels` / :func:`deletion_counts`: the blocks and the [G + 1, G] 0/1 design (row 0 all ones);
- :func:`jackknife_interval`, :func:`split_interval`: the interval of a metric from its replicates;
- :func:`fid_jackknife`: FID of each leave-one-block-out pair of sets, from the full sums of ``x`` and
  ``x x^T`` less one block's (recomputed per replicate, so memory is O(d^2) whatever N is), trace term in
  the symmetric eigenvalue form; the Gram form when both sets have at most ``d`` rows;
- :func:`pair_replicates`: precision/recall of the full sets and of every group of every split, and the
  KID jackknife (the full-set unbiased MMD^2 from block kernel sums), from one pass over the pairwise tiles;
- :class:`ReferenceSide`: what the reference set contributes (its k-NN radii over the whole set and within
  every group, KID kernel sums), computed once per run and reused by every setting;
- :func:`weighted_mean_jackknife`: means and ratios of per-caption values.

All math is float64. Nothing here reads images or files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import pairs as P
from .bootstrap import _fid_gram, weighted_mean_replicates
from .fid import ArrayLike, as_feature_matrix, trace_sqrt_product

DEFAULT_BLOCKS = 40
CONFIDENCE = 0.95


def block_labels(n: int, blocks: int = DEFAULT_BLOCKS) -> np.ndarray:
    """The block (0 .. G-1, G = min(n, blocks)) of each of ``n`` consecutive rows, sizes as equal as possible."""
    if n < 2:
        raise ValueError(f"a jackknife needs at least 2 rows, got {n}")
    if blocks < 2:
        raise ValueError(f"a jackknife needs at least 2 blocks, got {blocks}")
    g = min(n, blocks)
    return (np.arange(n) * g) // n


def coupled_labels(ref_labels: np.ndarray, coupling: ArrayLike) -> np.ndarray:
    """The block of each caption when captions follow their reference images: caption i written for reference
    image ``coupling[i]`` is in that image's block (-1: a caption of no reference image; those are spread
    over the blocks in order)."""
    c = np.asarray(coupling, dtype=np.int64)
    g = int(ref_labels.max()) + 1
    out = np.empty(len(c), dtype=np.int64)
    linked = c >= 0
    out[linked] = ref_labels[c[linked]]
    free = int((~linked).sum())
    if free:
        out[~linked] = (np.arange(free) * min(g, free)) // free
    return out


def deletion_counts(g: int) -> np.ndarray:
    """[g + 1, g] weights of each block: row 0 all ones (the full sample), row b + 1 leaves block b out."""
    return np.vstack([np.ones((1, g)), 1.0 - np.eye(g)])


def jackknife_se(deleted: ArrayLike) -> float:
    """Tukey's jackknife standard error from the leave-one-block-out values (NaN values are dropped; NaN
    when fewer than two are finite)."""
    r = np.asarray(deleted, dtype=np.float64)
    r = r[np.isfinite(r)]
    g = r.size
    if g < 2:
        return float("nan")
    return float(np.sqrt((g - 1) / g * ((r - r.mean()) ** 2).sum()))


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t quantile t_{dof, (1 + confidence) / 2}."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, dof))


def jackknife_interval(replicates: ArrayLike, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(lo, hi) = estimate +- t * se from ``replicates`` [G + 1] (row 0 the full sample's value, the rest
    leave-one-block-out values). The interval is for the estimator's expectation at this sample size (the
    quantity two runs of the same size compare); it does not remove FID's small-sample bias."""
    r = np.asarray(replicates, dtype=np.float64)
    est, deleted = float(r[0]), r[1:]
    finite = int(np.isfinite(deleted).sum())
    if not np.isfinite(est) or finite < 2 or finite < 0.5 * deleted.size:
        return float("nan"), float("nan")
    half = t_quantile(confidence, finite - 1) * jackknife_se(deleted)
    return est - half, est + half


# ------------------------------------------------------------------------------------------------ FID
def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.sum(0), x.T @ x


def _cov(n: float, s: torch.Tensor, ss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = s / n
    return mu, (ss - n * torch.outer(mu, mu)) / (n - 1)


def _frechet(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    tr = trace_sqrt_product(s1[None], s2[None])[0]
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * tr)


def fid_jackknife(
    gen: ArrayLike,
    ref: ArrayLike,
    gen_labels: np.ndarray,
    ref_labels: np.ndarray,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """[G + 1] FID values: the full sets', then with block b of both sets left out (b = 0 .. G - 1).

    Both label arrays must name the same number of blocks G. Sets of at most ``d`` rows use the exact Gram
    form (:func:`glidebench.metrics.bootstrap._fid_gram`); larger ones the sums of x and x x^T less the
    block's, with the symmetric eigenvalue form of the trace term."""
    x, y = as_feature_matrix(gen, "gen"), as_feature_matrix(ref, "ref")
    gl, rl = np.asarray(gen_labels), np.asarray(ref_labels)
    g = _check_blocks(gl, rl, len(x), len(y))
    w = deletion_counts(g)
    if max(len(x), len(y)) <= x.shape[1]:
        return _fid_gram(x, y, w[:, gl], w[:, rl])
    dev = torch.device(device)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    (sx, ssx), (sy, ssy) = _moments(xt), _moments(yt)
    out = np.empty(g + 1)
    out[0] = _frechet(*_cov(len(x), sx, ssx), *_cov(len(y), sy, ssy))
    tgl, trl = torch.from_numpy(gl).to(dev), torch.from_numpy(rl).to(dev)
    for b in range(g):
        xb, yb = xt[tgl == b], yt[trl == b]
        bx, bbx = _moments(xb)
        by, bby = _moments(yb)
        out[b + 1] = _frechet(
            *_cov(len(x) - len(xb), sx - bx, ssx - bbx), *_cov(len(y) - len(yb), sy - by, ssy - bby)
        )
    return out


def _check_blocks(gl: np.ndarray, rl: np.ndarray, n: int, m: int) -> int:
    """G, the number of blocks (the reference side names every block; a block may hold no caption when the
    captions follow their reference images)."""
    if len(gl) != n or len(rl) != m:
        raise ValueError(f"labels of length {len(gl)} and {len(rl)} for sets of {n} and {m} rows")
    g = int(rl.max()) + 1
    if int(gl.max()) >= g or int(gl.min()) < 0:
        raise ValueError(
            f"generated-side blocks {int(gl.min())}..{int(gl.max())} outside the {g} reference blocks"
        )
    return g


# ------------------------------------------------------------------------------------------------ KID
def _mmd_from_sums(
    sxx: torch.Tensor,
    dx: torch.Tensor,
    nx: torch.Tensor,
    syy: torch.Tensor,
    dy: torch.Tensor,
    ny: torch.Tensor,
    sxy: torch.Tensor,
) -> np.ndarray:
    g = sxx.shape[0]
    w = torch.from_numpy(deletion_counts(g))
    n, m = w @ nx, w @ ny
    xx = ((w @ sxx) * w).sum(1) - w @ dx
    yy = ((w @ syy) * w).sum(1) - w @ dy
    xy = ((w @ sxy) * w).sum(1)
    return (xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)).numpy()


# ------------------------------------------------------------------------------------------------ P/R
def split_groups(n: int, groups: int, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """[repeats, n]: for each repeat, a random split of ``n`` rows into ``groups`` groups of equal size (+-1)."""
    if n < 2 * groups:
        raise ValueError(f"a split into {groups} groups needs at least {2 * groups} rows, got {n}")
    return np.stack([rng.permutation(n) % groups for _ in range(repeats)])


def coupled_groups(ref_groups: np.ndarray, coupling: ArrayLike, rng: np.random.Generator) -> np.ndarray:
    """[repeats, n] split groups of captions that follow their reference images (as :func:`coupled_labels`);
    captions of no reference image are split at random."""
    c = np.asarray(coupling, dtype=np.int64)
    q = int(ref_groups.max()) + 1
    out = np.empty((len(ref_groups), len(c)), dtype=np.int64)
    linked = c >= 0
    for s in range(len(ref_groups)):
        out[s, linked] = ref_groups[s, c[linked]]
        out[s, ~linked] = rng.permutation(int((~linked).sum())) % q
    return out


def split_design(n: int) -> tuple[int, int]:
    """(groups q, repeats S) of the split-sample interval for ``n`` generated rows: quarters repeated 5 times
    when a quarter holds at least 250 images, else halves repeated 10 times (docs/uncertainty.md)."""
    return (4, 5) if n >= 1000 else (2, 10)


def split_interval(replicates: ArrayLike, groups: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(lo, hi) = estimate +- t_{S (q - 1)} * sqrt(mean over splits of the variance of the q group values / q).

    Each group is an independent pair of sets of 1/q of the size, so the variance of its values estimates the
    metric's variance at that size, and dividing by q scales it to the full size (a variance in 1/N).
    ``replicates``: row 0 the estimate, then the S x q group values (split-major)."""
    r = np.asarray(replicates, dtype=np.float64)
    vals = r[1:].reshape(-1, groups)
    if not np.isfinite(r).all() or vals.shape[0] < 1 or groups < 2:
        return float("nan"), float("nan")
    var = float(vals.var(axis=1, ddof=1).mean()) / groups
    half = t_quantile(confidence, vals.shape[0] * (groups - 1)) * np.sqrt(var)
    return float(r[0] - half), float(r[0] + half)


# ------------------------------------------------------------------------------------------------ sides
@dataclass
class ReferenceSide:
    """What the reference set contributes to every setting's replicates: its rows, blocks, split groups, and
    the quantities of one pass over its own tiles (k-NN radii of the whole set and within each group, KID
    kernel sums per block pair), computed on first use and reused by every setting of the run."""

    features: np.ndarray
    labels: np.ndarray
    k: int
    groups: np.ndarray | None = None  # [S, m] split groups of the precision/recall intervals
    _within: P.Within | None = None

    @property
    def blocks(self) -> int:
        return int(self.labels.max()) + 1

    def within(self) -> P.Within:
        if self._within is None:
            x = torch.from_numpy(self.features)
            self._within = P.within(x, self.k, self.groups, self.labels, self.blocks)
        return self._within


def reference_side(
    ref: ArrayLike, labels: np.ndarray, k: int = 3, groups: np.ndarray | None = None
) -> ReferenceSide:
    g = None if groups is None else np.asarray(groups)
    return ReferenceSide(as_feature_matrix(ref, "ref"), np.asarray(labels), k, g)


def pair_replicates(
    gen: ArrayLike,
    ref: ReferenceSide,
    gen_labels: np.ndarray | None = None,
    gen_groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The replicates that need pairwise distances or kernels, from one pass over the generated set's own
    tiles and one over its tiles against the reference set (glidebench.metrics.pairs), with k = ``ref.k``:

    - ``precision``, ``recall``: [1 + S q] with ``gen_groups`` [S, n] (the reference groups are
      ``ref.groups``): the full sets' values (equal to ``prc.precision_recall``'s), then those of group j of
      split s of both sets (row 1 + s q + j), radii within each group; [1] (the full sets' values only)
      without groups or when a group is too small for k-NN balls;
    - ``kid_mean``: [G + 1] with ``gen_labels`` [n]: the full-set unbiased MMD^2 (k(x, y) = (x.y / d + 1)^3),
      the full sets', then block b of both left out."""
    x = torch.from_numpy(as_feature_matrix(gen, "gen"))
    y = torch.from_numpy(ref.features)
    gl = None if gen_labels is None else np.asarray(gen_labels)
    g = None if gl is None else _check_blocks(gl, ref.labels, len(x), len(y))
    gg, rg, q = None, ref.groups, 0
    if gen_groups is not None:
        gg = np.asarray(gen_groups)
        if rg is None or gg.shape[0] != rg.shape[0] or gg.shape[1] != len(x):
            shape = None if rg is None else rg.shape
            raise ValueError(
                f"split groups of shape {gg.shape} and {shape} for sets of {len(x)} and {len(y)} rows"
            )
        q = int(rg.max()) + 1
        smallest = min(int(np.bincount(a[s], minlength=q).min()) for a in (gg, rg) for s in range(len(a)))
        if smallest <= ref.k:  # a group too small for k-NN balls: no interval
            gg = None
    wy = ref.within()
    wx = P.within(x, ref.k, gg, gl, g)
    both = P.across(
        x, y, wx, wy, None if gg is None else (gg, rg), None if gl is None else (gl, ref.labels),
        None if g is None else (g, g),
    )  # fmt: skip
    prec, rec = [float(both.x_in_y.double().mean())], [float(both.y_in_x.double().mean())]
    if gg is not None:
        for s in range(len(gg)):
            for j in range(q):
                prec.append(float(both.group_x_in_y[s][torch.from_numpy(gg[s] == j)].double().mean()))
                rec.append(float(both.group_y_in_x[s][torch.from_numpy(rg[s] == j)].double().mean()))
    out = {"precision": np.array(prec), "recall": np.array(rec)}
    if g is not None:
        nx = torch.from_numpy(np.bincount(gl, minlength=g).astype(np.float64))
        ny = torch.from_numpy(np.bincount(ref.labels, minlength=g).astype(np.float64))
        out["kid_mean"] = _mmd_from_sums(wx.kernel, wx.diagonal, nx, wy.kernel, wy.diagonal, ny, both.kernel)
    return out


def weighted_mean_jackknife(values: ArrayLike, labels: np.ndarray) -> np.ndarray:
    """[G + 1] means of per-caption ``values`` (NaN: a caption the mean does not count), full then block b
    left out."""
    lab = np.asarray(labels)
    return weighted_mean_replicates(values, deletion_counts(int(lab.max()) + 1)[:, lab])
