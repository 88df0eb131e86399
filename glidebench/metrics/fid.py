"""Frechet Inception Distance (FID) over feature arrays.

Owns: the Gaussian statistics of a feature set and the Frechet distance between two Gaussians
(Heusel et al. 2017, eq. 6 of "GANs Trained by a Two Time-Scale Update Rule"):

    FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^{1/2})

The trace of the matrix square root is computed by torch-fidelity's own routine
(`torch_fidelity.metric_fid.fid_statistics_to_metric`: Tr (Sigma_1 Sigma_2)^{1/2} = sum_i sqrt(lambda_i)
over the eigenvalues of Sigma_1 Sigma_2), so our numbers are torch-fidelity's numbers. All math is float64.

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


def feature_statistics(feats: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector mu [D] and unbiased covariance Sigma [D, D] (rows are samples), float64."""
    arr = as_feature_matrix(feats, "feats")
    if arr.shape[0] < 2:
        raise ValueError("feature_statistics needs at least 2 samples to estimate a covariance; got 1")
    mu = arr.mean(axis=0)
    sigma = np.cov(arr, rowvar=False)
    return mu, np.atleast_2d(sigma)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6), float64.

    Delegates to torch-fidelity's `fid_statistics_to_metric` (eigenvalue form of the trace term).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    m1 = np.asarray(mu1.cpu() if isinstance(mu1, torch.Tensor) else mu1, dtype=np.float64)
    m2 = np.asarray(mu2.cpu() if isinstance(mu2, torch.Tensor) else mu2, dtype=np.float64)
    s1 = np.atleast_2d(
        np.asarray(sigma1.cpu() if isinstance(sigma1, torch.Tensor) else sigma1, dtype=np.float64)
    )
    s2 = np.atleast_2d(
        np.asarray(sigma2.cpu() if isinstance(sigma2, torch.Tensor) else sigma2, dtype=np.float64)
    )
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length, got {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be [{d}, {d}] covariance matrices matching mu, got {s1.shape} and {s2.shape}"
        )
    out = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, verbose=False)
    return float(out[KEY_METRIC_FID])


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
