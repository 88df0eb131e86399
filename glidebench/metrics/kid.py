"""Kernel Inception Distance (KID) over feature arrays.

Owns: the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (gamma x.y + coef0)^degree,
gamma = 1/D by default (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 4 / the KID definition),
averaged over random subsets:

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m^2 sum_{i,j} k(x_i,y_j)

Computed by torch-fidelity's `kid_features_to_metric` (float64 inputs, seeded numpy RandomState: per subset
it draws `m` indices of set a without replacement, then `m` of set b), so numbers match torch-fidelity's KID.
"""

from __future__ import annotations

import math

import torch

from .fid import ArrayLike, as_feature_matrix


def kid_from_features(
    a: ArrayLike,
    b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1,
    seed: int = 0,
) -> tuple[float, float]:
    """KID mean and (population) std over `subsets` random subsets of size min(subset_size, len(a), len(b))."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    fa = as_feature_matrix(a, "a")
    fb = as_feature_matrix(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(
            f"feature dimensions differ ({fa.shape[1]} vs {fb.shape[1]}); use the same extractor layer"
        )
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(int(subset_size), fa.shape[0], fb.shape[0])
    if m < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 samples; got subset size {m} (sets of {len(fa)}, {len(fb)})"
        )
    out = kid_features_to_metric(
        torch.from_numpy(fa),
        torch.from_numpy(fb),
        kid_subsets=int(subsets),
        kid_subset_size=m,
        kid_kernel="poly",
        kid_kernel_poly_degree=degree,
        kid_kernel_poly_gamma=gamma,
        kid_kernel_poly_coef0=coef0,
        rng_seed=int(seed),
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def _poly_kernel(
    x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float | None, coef0: float
) -> torch.Tensor:
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * g + coef0) ** degree


def paired_kid_jackknife(
    a: ArrayLike,
    b: ArrayLike,
    real: ArrayLike,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1,
) -> dict[str, float]:
    """How sure is "KID(b) is x% above KID(a)" when row i of ``a`` and of ``b`` come from the same caption and
    seed (two samplers on one prompt list)? Returns the full-set unbiased MMD^2 of each against ``real``
    (``kid_a``, ``kid_b``: the subset average's expectation, without subset noise), ``rel`` = kid_b / kid_a - 1,
    and ``rel_se``, its delete-one-pair jackknife standard error (Efron & Stein 1981): caption i is left out of
    both sets at once, so the caption draw, the part both sets share, is what the error measures."""
    fa = torch.from_numpy(as_feature_matrix(a, "a")).double()
    fb = torch.from_numpy(as_feature_matrix(b, "b")).double()
    fr = torch.from_numpy(as_feature_matrix(real, "real")).double()
    n, m = fa.shape[0], fr.shape[0]
    if fb.shape[0] != n:
        raise ValueError(f"paired sets need the same rows: {n} vs {fb.shape[0]}")
    if n < 3 or m < 2:
        raise ValueError(f"need at least 3 paired samples and 2 real ones, got {n} and {m}")
    k_rr = _poly_kernel(fr, fr, degree, gamma, coef0)
    rr = (k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1))

    def leave_one_out(f: torch.Tensor) -> tuple[float, torch.Tensor]:
        k_ff = _poly_kernel(f, f, degree, gamma, coef0)
        k_fr = _poly_kernel(f, fr, degree, gamma, coef0)
        off = k_ff.sum(1) - k_ff.diagonal()  # per row: sum over j != i
        s_ff, s_fr = off.sum(), k_fr.sum()
        full = s_ff / (n * (n - 1)) + rr - 2 * s_fr / (n * m)
        loo = (s_ff - 2 * off) / ((n - 1) * (n - 2)) + rr - 2 * (s_fr - k_fr.sum(1)) / ((n - 1) * m)
        return float(full), loo

    kid_a, loo_a = leave_one_out(fa)
    kid_b, loo_b = leave_one_out(fb)
    rel_i = loo_b / loo_a - 1
    se = math.sqrt((n - 1) / n * float(((rel_i - rel_i.mean()) ** 2).sum()))
    return {"kid_a": kid_a, "kid_b": kid_b, "rel": kid_b / kid_a - 1, "rel_se": se}
