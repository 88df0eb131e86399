"""Frechet Inception Distance (FID) over feature arrays.

Owns: the Gaussian statistics of a feature set and the Frechet distance between two Gaussians
(Heusel et al. 2017, eq. 6 of "GANs Trained by a Two Time-Scale Update Rule"):

    FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2})

The trace term is computed in a symmetric eigenvalue form (:func:`trace_sqrt_product`):
Tr (Sigma_1 Sigma_2)^{1/2} = sum_i sqrt(lambda_i) over the eigenvalues of the symmetric L^T Sigma_2 L, with
Sigma_1 = L L^T its Cholesky factor (the same eigenvalues as Sigma_1 Sigma_2, to which it is similar). This is
torch-fidelity's formula (`torch_fidelity.metric_fid.fid_statistics_to_metric` takes the non-symmetric
eigenvalues of Sigma_1 Sigma_2, LAPACK's general eigensolver) at about a third of its cost at d = 2048: on one
CPU thread 1.8-2.0 s of CPU time against 5.4 s. Our numbers
equal torch-fidelity's, not bit for bit: to 1e-12 relative or better with full-rank covariances (the test
asks 1e-10); with a rank-deficient one (fewer samples than d) torch-fidelity's carry ~1e-8 relative of
rounding (sqrt(eps) from each zero eigenvalue), which ours floor to 0, matching the exact nuclear-norm form to
~1e-15 (tests/glidebench/test_scale_memory.py). All math is float64.

Fewer than `FID_MIN_SAMPLES` (2048, the Inception pool3 width) samples give a rank-deficient covariance and
a biased, unstable FID: `fid_report` warns and sets a flag that the results table should carry.

Also home of `as_feature_matrix`, the input check shared by every metric module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

FID_MIN_SAMPLES = 2048

ArrayLike = np.ndarray | torch.Tensor


def as_feature_matrix(x: ArrayLike, name: str = "features") -> np.ndarray:
    """Return `x` (numpy array or torch tensor, shape [N, D]) as a C-contiguous float64 numpy matrix.

    Raises ValueError naming the problem when the shape is wrong, the set is empty or values are not finite.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [num_samples, feature_dim], got shape {tuple(arr.shape)}; "
            "reshape or stack per-sample feature vectors first"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(arr.shape)}); extract features for at least one sample"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; check the feature extractor's input (uint8 images)")
    return arr


def feature_probe(x: np.ndarray) -> tuple:
    """A cheap identity of a feature set for per-run caches: its shape and the sum and sum of squares of
    about 64 of its rows (another set of the same shape is all but certain to differ)."""
    probe = np.asarray(x[:: max(1, len(x) // 64)], dtype=np.float64)
    return tuple(x.shape), float(probe.sum()), float((probe * probe).sum())


def feature_statistics(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector mu [D] and unbiased covariance Sigma [D, D] (rows are samples), float64."""
    arr = as_feature_matrix(feats, "feats")
    if arr.shape[0] < 2:
        raise ValueError("feature_statistics needs at least 2 samples to estimate a covariance; got 1")
    mu = arr.mean(axis=0)
    sigma = np.cov(arr, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _as_float64(x: ArrayLike) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _sqrt_sum(sym: torch.Tensor) -> torch.Tensor:
    """Sum of the square roots of the eigenvalues of symmetric PSD matrices [..., d, d], eigenvalues below
    d eps lambda_max (rounding's reach) counted as 0."""
    return _psd_floor(torch.linalg.eigvalsh(sym)).sqrt().sum(-1)


def _psd_floor(lam: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues [..., d] of PSD matrices with those below d eps lambda_max set to 0: rounding
    leaves a zero eigenvalue at about +-eps lambda_max, whose square root (1e-8 sqrt(lambda_max) in float64)
    would otherwise add up over the d - n zero eigenvalues of a covariance of n < d samples."""
    tol = lam[..., -1:].clamp_min(0) * lam.shape[-1] * torch.finfo(lam.dtype).eps
    return torch.where(lam > tol, lam, torch.zeros_like(lam))


def trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Tr (S1 S2)^{1/2} of symmetric positive semi-definite S1, S2 ([..., d, d], batched; float64 advised).

    The square roots of the eigenvalues of the symmetric L^T S2 L, with S1 = L L^T (Cholesky, about 6 d^3
    flops; the eigenvalues are those of S1 S2, to which it is similar), summed. Where S1 is singular (fewer
    samples than dimensions) the roles swap when S2 factors (Tr (S1 S2)^{1/2} = Tr (S2 S1)^{1/2}); where
    neither does, the square root of S1 from its eigendecomposition takes L's place (about 14 d^3).
    Eigenvalues within rounding of 0 count as 0 (:func:`_psd_floor`), so a rank-deficient product keeps
    float64 accuracy (1e-15 relative to the exact nuclear-norm form, where the plain eigenvalue forms,
    torch-fidelity's included, are off by 1e-8)."""
    if s1.shape != s2.shape or s1.ndim < 2 or s1.shape[-1] != s1.shape[-2]:
        raise ValueError(
            f"S1 and S2 must be square matrices of one shape, got {tuple(s1.shape)} and {tuple(s2.shape)}"
        )
    out = torch.empty(s1.shape[:-2], dtype=s1.dtype, device=s1.device)
    todo = torch.ones(s1.shape[:-2], dtype=torch.bool, device=s1.device)
    for a, b in ((s1, s2), (s2, s1)):  # factor S1, else S2
        chol, info = torch.linalg.cholesky_ex(a)
        ok = todo & (info == 0)
        if ok.any():
            low = chol[ok]
            out[ok] = _sqrt_sum(low.mT @ b[ok] @ low)
            todo &= ~ok
        if not todo.any():
            return out
    lam, v = torch.linalg.eigh(s1[todo])
    half = v * _psd_floor(lam).sqrt()[..., None, :]
    out[todo] = _sqrt_sum(half.mT @ s2[todo] @ half)
    return out


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6), float64.

    The trace term by :func:`trace_sqrt_product` (torch-fidelity's value to about 1e-12 relative)."""
    m1, m2 = _as_float64(mu1), _as_float64(mu2)
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be [{d}, {d}] covariance matrices matching mu, got {s1.shape} and {s2.shape}"
        )
    tr_covmean = float(trace_sqrt_product(torch.from_numpy(s1), torch.from_numpy(s2)))
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def check_fid_sample_count(n_a: int, n_b: int, min_samples: int = FID_MIN_SAMPLES) -> bool:
    """Warn (UserWarning) and return True when either set has fewer than `min_samples` samples."""
    few = min(n_a, n_b) < min_samples
    if few:
        warnings.warn(
            f"FID computed from {n_a} and {n_b} samples; fewer than {min_samples} give an ill-conditioned "
            "covariance and a biased, unstable FID. Use >= 2048 samples per set (the protocol uses 30k) "
            "before comparing numbers.",
            UserWarning,
            stacklevel=3,
        )
    return few


@dataclass(frozen=True)
class FIDResult:
    """FID with the sample counts that produced it and the too-few-samples flag."""

    fid: float
    n_a: int
    n_b: int
    few_samples: bool

    def __post_init__(self) -> None:
        if self.n_a < 2 or self.n_b < 2:
            raise ValueError(f"FIDResult needs n_a, n_b >= 2, got {self.n_a}, {self.n_b}")


def fid_report(feats_a: ArrayLike, feats_b: ArrayLike) -> FIDResult:
    """FID between two feature sets, with sample counts and the `few_samples` flag (warns when set)."""
    a = as_feature_matrix(feats_a, "feats_a")
    b = as_feature_matrix(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature dimensions differ ({a.shape[1]} vs {b.shape[1]}); both sets must come from the same "
            "extractor layer"
        )
    few = check_fid_sample_count(a.shape[0], b.shape[0])
    mu_a, sigma_a = feature_statistics(a)
    mu_b, sigma_b = feature_statistics(b)
    return FIDResult(frechet_distance(mu_a, sigma_a, mu_b, sigma_b), a.shape[0], b.shape[0], few)


def fid_from_features(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """FID between two feature sets [N, D]; warns when either has fewer than 2048 samples (see `fid_report`)."""
    return fid_report(feats_a, feats_b).fid


class CovarianceError(ValueError):
    """A matrix given as a covariance that is not symmetric positive semi-definite (within rounding)."""


def check_covariance(sigma: ArrayLike, name: str, rtol: float = 1e-6) -> None:
    """Refuse ``sigma`` unless it is a covariance matrix within rounding: square, symmetric to ``rtol`` relative
    to its largest entry, and with its smallest eigenvalue >= -``rtol`` x its largest. FID's trace term assumes
    both; a sigma with negative eigenvalues gives any number, negative FIDs included (-19982.02 was seen).
    ``name`` (a file, a setting) starts the message. One symmetric eigendecomposition: ~1 s at d = 2048."""
    s = np.atleast_2d(_as_float64(sigma))
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise CovarianceError(f"{name}: sigma must be a square matrix, got shape {s.shape}")
    scale = float(np.abs(s).max()) if s.size else 0.0
    asym = float(np.abs(s - s.T).max()) if s.size else 0.0
    if asym > rtol * scale:
        raise CovarianceError(
            f"{name}: sigma is not symmetric (largest |sigma - sigma^T| {asym:.3g}, {asym / scale:.2g} of its "
            f"largest entry, above {rtol:g}), so it is not a covariance matrix"
        )
    lam = np.linalg.eigvalsh((s + s.T) / 2.0)
    top = max(float(np.abs(lam).max()), 0.0) if lam.size else 0.0
    if lam.size and float(lam[0]) < -rtol * top:
        raise CovarianceError(
            f"{name}: sigma is not positive semi-definite (smallest eigenvalue {lam[0]:.6g}, largest "
            f"{lam[-1]:.6g}; {int((lam < -rtol * top).sum())} below -{rtol:g} x the largest), so it is not a "
            "covariance matrix and FID from it would be meaningless (possibly negative)"
        )
