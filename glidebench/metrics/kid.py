"""Kernel Inception Distance (KID) over feature arrays.

Owns: the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (gamma x.y + coef0)^degree,
gamma = 1/D by default (Binkowski et al. 2018, "Demystifying MMD GANs", eq. 4 / the KID definition),
averaged over random subsets:

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m^2 sum_{i,j} k(x_i,y_j)

Computed by torch-fidelity's `kid_features_to_metric` (float64 inputs, seeded numpy RandomState: per subset
it draws `m` indices of set a without replacement, then `m` of set b), so numbers match torch-fidelity's KID.
"""

from __future__ import annotations

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
