"""Bootstrap replicates of the harness's metrics: pure functions over feature arrays and resample counts.

Owns the resampling and the per-resample value of every metric that has an interval (docs/uncertainty.md):

- :func:`resample_counts`: how often each unit (a caption index, or a block of them) appears in each of R
  bootstrap resamples (a multinomial draw of n units with replacement), seeded;
- :func:`percentile_interval`: the percentile interval of a set of replicates (95 % by default);
- :func:`fid_replicates`: FID of each resample. When both sets have at most ``d`` rows (the feature width) it
  is computed exactly from the Gram matrices (``X X^T``, ``Y Y^T``, ``X Y^T``, computed once): the trace
  term Tr (S_x S_y)^{1/2} is the nuclear norm of ``A^T B`` for ``S_x = A A^T``, ``S_y = B B^T``, so a resample
  costs one SVD of an n x m matrix. Larger sets are resampled by blocks of caption indices: the sufficient
  statistics (sum x, sum x x^T) of each block are computed once, a resample's mean and covariance are their
  count-weighted sums (O(blocks d^2)), and the trace term is the eigenvalue form
  sum sqrt(eig(S_x^{1/2} S_y S_x^{1/2})) (two symmetric eigendecompositions, O(d^3));
- :func:`kid_replicates`: the full-set unbiased MMD^2 (cubic polynomial kernel, KID's) of each resample from
  the block sums of the kernel matrices (duplicated units count as distinct samples, as a resample is);
- :func:`prc_replicates`: precision/recall of each resample with the k-NN radii recomputed on the resampled
  sets, a duplicated image never being its own neighbour (dense, for sets up to ``PRC_DENSE_MAX`` pairs);
  larger sets keep the full sets' radii and resample the membership indicators;
- :func:`weighted_mean_replicates`: means and ratios of per-caption values (CLIP score, attribute accuracies,
  intra-caption diversity), NaN marking a caption a mean does not count.

All math is float64. Nothing here reads images or files.
"""

from __future__ import annotations

import numpy as np
import torch

from .fid import ArrayLike, as_feature_matrix, trace_sqrt_product
from .pairs import across, within

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
# sets with more rows than this are resampled by blocks of consecutive caption indices
BLOCK_THRESHOLD = 2048
DEFAULT_BLOCKS = 40
PRC_DENSE_MAX = 4_000_000  # n_real * n_fake (and n^2 of each side) up to which P/R radii are recomputed
_CHUNK = 64  # resamples evaluated at once


def unit_labels(n: int, blocks: int = DEFAULT_BLOCKS, threshold: int = BLOCK_THRESHOLD) -> np.ndarray:
    """The resampling unit of each of ``n`` caption indices: the index itself when ``n <= threshold``, else
    one of ``blocks`` blocks of consecutive indices (as equal as possible)."""
    if n < 1:
        raise ValueError(f"a bootstrap needs at least one caption, got {n}")
    if n <= threshold:
        return np.arange(n)
    return (np.arange(n) * blocks) // n


def resample_counts(units: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, units] counts: each row is a resample of ``units`` units drawn with replacement."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return rng.multinomial(units, np.full(units, 1.0 / units), size=resamples).astype(np.float64)


def percentile_interval(
    replicates: ArrayLike, confidence: float = CONFIDENCE, estimate: float | None = None
) -> tuple[float, float]:
    """The percentile bootstrap interval (lo, hi) of ``replicates`` at ``confidence``; NaN replicates are
    ignored (NaN, NaN when fewer than half are finite).

    ``estimate`` (the full sample's value): the interval is shifted by the bootstrap's bias estimate,
    mean(replicates) - estimate, so that it is centred where the estimator is. A resample repeats about a
    third of its units, which moves statistics such as FID (a covariance of fewer distinct images: FID at 100
    samples moves up by about 15) although the sampling spread is estimated well; without the shift the
    interval of such a metric can miss its own estimate. For means (CLIP score, accuracies) the shift is about 0."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0 or r.size < 0.5 * np.asarray(replicates).size:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    if estimate is not None and np.isfinite(estimate):
        shift = float(r.mean()) - float(estimate)
        lo, hi = lo - shift, hi - shift
    return float(lo), float(hi)


def _expand(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return counts[:, labels]


# ------------------------------------------------------------------------------------------------ FID
def _fid_gram(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """FID per row of weights from the Gram matrices; cx [R, n], cy [R, m] caption-level counts (a
    bootstrap resample's, summing to n, or a jackknife's 0/1 weights)."""
    gx, gy, gxy = x @ x.T, y @ y.T, x @ y.T
    out = np.empty(len(cx))
    for lo in range(0, len(cx), _CHUNK):
        a, b = cx[lo : lo + _CHUNK], cy[lo : lo + _CHUNK]
        na, nb = a.sum(1), b.sum(1)
        mxx = np.einsum("ri,ij,rj->r", a, gx, a) / na**2  # |mu_x|^2
        myy = np.einsum("ri,ij,rj->r", b, gy, b) / nb**2
        mxy = np.einsum("ri,ij,rj->r", a, gxy, b) / (na * nb)
        tr_x = (a @ np.diag(gx) - na * mxx) / (na - 1)
        tr_y = (b @ np.diag(gy) - nb * myy) / (nb - 1)
        xmy = (b @ gxy.T) / nb[:, None]  # [R, n]: x_i . mu_y
        ymx = (a @ gxy) / na[:, None]  # [R, m]: y_j . mu_x
        cross = gxy[None] - xmy[:, :, None] - ymx[:, None, :] + mxy[:, None, None]
        cross *= np.sqrt(a)[:, :, None] * np.sqrt(b)[:, None, :]
        nuc = np.linalg.svd(cross, compute_uv=False).sum(axis=1) / np.sqrt((na - 1) * (nb - 1))
        out[lo : lo + _CHUNK] = mxx + myy - 2 * mxy + tr_x + tr_y - 2 * nuc
    return out


class _BlockMoments:
    """Per-block count, sum x and sum x x^T of one feature set (computed once)."""

    def __init__(self, x: torch.Tensor, labels: np.ndarray, device: torch.device) -> None:
        nb = int(labels.max()) + 1
        self.size = torch.from_numpy(np.bincount(labels, minlength=nb).astype(np.float64)).to(device)
        self.sums = torch.zeros(nb, x.shape[1], dtype=torch.float64, device=device)
        self.outer = torch.zeros(nb, x.shape[1], x.shape[1], dtype=torch.float64, device=device)
        for b in range(nb):
            xb = x[torch.from_numpy(labels == b).to(x.device)].to(device)
            self.sums[b] = xb.sum(0)
            self.outer[b] = xb.T @ xb

    def cov(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means [R, d] and covariances [R, d, d] of the resamples whose block counts are the rows of w."""
        n = w @ self.size
        mu = (w @ self.sums) / n[:, None]
        s = torch.einsum("rb,bij->rij", w, self.outer)
        return mu, (s - n[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (n - 1)[:, None, None]


def _unit_labels(n: int, labels: np.ndarray | None) -> np.ndarray:
    """The resampling unit of each of ``n`` rows: ``labels``, or one unit per row."""
    return np.arange(n) if labels is None else np.asarray(labels)


def fid_replicates(
    gen: ArrayLike,
    ref: ArrayLike,
    gen_counts: np.ndarray,
    ref_counts: np.ndarray,
    gen_labels: np.ndarray | None = None,
    ref_labels: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """FID of each resample: row r of ``gen_counts`` / ``ref_counts`` counts the units (caption indices, or
    blocks named by ``*_labels``) of resample r. Exact Gram form when both sets have at most d rows and units
    are captions; block moments otherwise (see the module docstring)."""
    x, y = as_feature_matrix(gen, "gen"), as_feature_matrix(ref, "ref")
    gl, rl = _unit_labels(len(x), gen_labels), _unit_labels(len(y), ref_labels)
    if len(gen_counts) != len(ref_counts):
        raise ValueError(
            f"{len(gen_counts)} generated-side resamples but {len(ref_counts)} reference-side ones"
        )
    d = x.shape[1]
    if (
        len(gl) == len(x)
        and len(rl) == len(y)
        and gen_counts.shape[1] == len(x)
        and ref_counts.shape[1] == len(y)
    ):
        if max(len(x), len(y)) <= d:
            return _fid_gram(x, y, gen_counts, ref_counts)
    dev = torch.device(device)
    mx = _BlockMoments(torch.from_numpy(x), gl, dev)
    my = _BlockMoments(torch.from_numpy(y), rl, dev)
    out = np.empty(len(gen_counts))
    step = max(1, min(_CHUNK, 2**24 // (d * d)))  # resamples at once: [step, d, d] stays near 128 MiB
    for lo in range(0, len(gen_counts), step):
        mu1, s1 = mx.cov(torch.from_numpy(gen_counts[lo : lo + step]).to(dev))
        mu2, s2 = my.cov(torch.from_numpy(ref_counts[lo : lo + step]).to(dev))
        tr = s1.diagonal(dim1=1, dim2=2).sum(1) + s2.diagonal(dim1=1, dim2=2).sum(1)
        val = ((mu1 - mu2) ** 2).sum(1) + tr - 2 * trace_sqrt_product(s1, s2)
        out[lo : lo + step] = val.cpu().numpy()
    return out


# ------------------------------------------------------------------------------------------------ KID
def _block_kernel_sums(
    a: torch.Tensor,
    b: torch.Tensor,
    la: np.ndarray,
    lb: np.ndarray,
    tile: int = 2048,
    units: tuple[int, int] | None = None,
) -> torch.Tensor:
    """S[u, v] = sum over i in unit u of a, j in unit v of b of k(a_i, b_j), the kernel matrix in tiles.
    ``units``: the number of units of each side (default: the largest label + 1)."""
    d = a.shape[1]
    na, nb = units if units is not None else (int(la.max()) + 1, int(lb.max()) + 1)
    ta, tb = torch.from_numpy(la), torch.from_numpy(lb)
    out = torch.zeros(na, nb, dtype=torch.float64)
    for i in range(0, len(a), tile):
        part = torch.zeros(min(tile, len(a) - i), nb, dtype=torch.float64)
        for j in range(0, len(b), tile):
            k = (a[i : i + tile] @ b[j : j + tile].T / d + 1) ** 3
            part.index_add_(1, tb[j : j + tile], k)
        out.index_add_(0, ta[i : i + tile], part)
    return out


def _block_diagonal_sums(x: torch.Tensor, labels: np.ndarray, units: int) -> torch.Tensor:
    """D[u] = sum over i in unit u of k(x_i, x_i): the diagonal of the kernel matrix, per unit."""
    d = x.shape[1]
    return torch.zeros(units, dtype=torch.float64).index_add_(
        0, torch.from_numpy(labels), ((x * x).sum(1) / d + 1) ** 3
    )


def kid_replicates(
    gen: ArrayLike,
    ref: ArrayLike,
    gen_counts: np.ndarray,
    ref_counts: np.ndarray,
    gen_labels: np.ndarray | None = None,
    ref_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Unbiased MMD^2 (k(x, y) = (x.y / d + 1)^3, KID's kernel) of each resample, over the whole resampled
    sets
    (the expectation of KID's subset average). A unit drawn twice counts as two distinct samples."""
    x = torch.from_numpy(as_feature_matrix(gen, "gen"))
    y = torch.from_numpy(as_feature_matrix(ref, "ref"))
    gl, rl = _unit_labels(len(x), gen_labels), _unit_labels(len(y), ref_labels)
    sxx, syy, sxy = (
        _block_kernel_sums(x, x, gl, gl),
        _block_kernel_sums(y, y, rl, rl),
        _block_kernel_sums(x, y, gl, rl),
    )
    dx, dy = _block_diagonal_sums(x, gl, sxx.shape[0]), _block_diagonal_sums(y, rl, syy.shape[0])
    sizex = torch.from_numpy(np.bincount(gl).astype(np.float64))
    sizey = torch.from_numpy(np.bincount(rl).astype(np.float64))
    a, b = torch.from_numpy(gen_counts), torch.from_numpy(ref_counts)
    n, m = a @ sizex, b @ sizey
    xx = ((a @ sxx) * a).sum(1) - a @ dx
    yy = ((b @ syy) * b).sum(1) - b @ dy
    xy = ((a @ sxy) * b).sum(1)
    return (xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)).numpy()


# ------------------------------------------------------------------------------------------------ P/R
def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def _kth_radius(d_self: torch.Tensor, present: torch.Tensor, k: int) -> torch.Tensor:
    """[R, n] squared k-NN radius of each point among the distinct OTHER points present in each resample."""
    big = torch.finfo(d_self.dtype).max
    d = d_self[None].expand(len(present), -1, -1).clone()
    d.masked_fill_(~present[:, None, :], big)
    d.diagonal(dim1=1, dim2=2).fill_(big)
    return torch.topk(d, k, dim=2, largest=False).values[:, :, k - 1]


@torch.no_grad()
def _membership(
    real: torch.Tensor, fake: torch.Tensor, k: int, block: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-set memberships (fake i inside the real manifold, real j inside the fake one), in tiles."""

    both = across(fake, real, within(fake, k, tile=block), within(real, k, tile=block), tile=block)
    return both.x_in_y, both.y_in_x


def prc_replicates(
    real: ArrayLike, fake: ArrayLike, real_counts: np.ndarray, fake_counts: np.ndarray, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of each resample; counts are per image (caption index / reference image).

    Dense (n_real * n_fake, n_real^2 and n_fake^2 up to ``PRC_DENSE_MAX``): each resample's k-NN radii are
    those of its distinct images (a duplicate is not its own neighbour), membership is recomputed, and the
    fractions count duplicates with their multiplicity. Larger sets: the full sets' radii and memberships are
    kept and only the counts vary (the radii's own variation is left out; docs/uncertainty.md)."""
    r = torch.from_numpy(as_feature_matrix(real, "real"))
    f = torch.from_numpy(as_feature_matrix(fake, "fake"))
    cr, cf = torch.from_numpy(real_counts), torch.from_numpy(fake_counts)
    n_r, n_f = len(r), len(f)
    if max(n_r * n_f, n_r * n_r, n_f * n_f) > PRC_DENSE_MAX:
        fake_in, real_in = _membership(r, f, k)
        return (cf @ fake_in.double() / cf.sum(1)).numpy(), (cr @ real_in.double() / cr.sum(1)).numpy()
    d_rr, d_ff, d_fr = _sq_dist(r, r), _sq_dist(f, f), _sq_dist(f, r)
    prec, rec = np.empty(len(cr)), np.empty(len(cr))
    step = max(1, min(_CHUNK, 2**24 // (n_r * n_r + n_f * n_f + 2 * n_r * n_f)))  # bounded temporaries
    for lo in range(0, len(cr), step):
        pr, pf = cr[lo : lo + step] > 0, cf[lo : lo + step] > 0
        rad_r, rad_f = _kth_radius(d_rr, pr, k), _kth_radius(d_ff, pf, k)
        inside_r = (d_fr[None] <= rad_r[:, None, :]) & pr[
            :, None, :
        ]  # [R, fake, real]: fake i in ball of real j
        inside_f = (d_fr[None] <= rad_f[:, :, None]) & pf[:, :, None]  # real j in ball of fake i
        wf, wr = cf[lo : lo + step], cr[lo : lo + step]
        prec[lo : lo + step] = ((wf * inside_r.any(2)).sum(1) / wf.sum(1)).numpy()
        rec[lo : lo + step] = ((wr * inside_f.any(1)).sum(1) / wr.sum(1)).numpy()
    return prec, rec


# ------------------------------------------------------------------------------------------------ means
def weighted_mean_replicates(values: ArrayLike, counts: np.ndarray) -> np.ndarray:
    """Mean of per-caption ``values`` [n] in each resample [R, n]; a NaN value is a caption the mean does
    not count (a ratio: the attribute accuracies judge only the captions that state the attribute)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != counts.shape[1]:
        raise ValueError(f"values of shape {v.shape} do not match resample counts of shape {counts.shape}")
    ok = np.isfinite(v)
    num = counts[:, ok] @ v[ok]
    den = counts[:, ok].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
