"""sFID (Nash et al. 2021, "Generating images with sparse representations", section 4): the Frechet distance of
Inception's spatial features, as the ADM evaluator (guided-diffusion ``evaluations/evaluator.py``) computes it.

The features are the first 7 channels of the TF graph's ``mixed_6/conv`` map (17 x 17 x 192), flattened in
height, width, channel order: 2023 numbers per image (:func:`glidebench.features.spatial_of`). On them sFID is
FID's formula unchanged (Heusel et al. 2017, eq. 6, with mu and the unbiased covariance), so its interval is
FID's jackknife (:func:`glidebench.metrics.jackknife.fid_jackknife`) applied to the spatial features.

Pure functions over arrays; float64.
"""

from __future__ import annotations

import warnings

import numpy as np

from .fid import ArrayLike, feature_statistics, fid_from_features, frechet_distance

SPATIAL_DIM = 17 * 17 * 7  # 2023


def sfid_from_features(gen_spatial: ArrayLike, ref_spatial: ArrayLike) -> float:
    """sFID between two sets of spatial features [N, 2023] (any width: the formula is FID's). No warning for
    fewer than 2048 samples: the results' FID note already says so for the same sets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(fid_from_features(gen_spatial, ref_spatial))


def sfid_from_statistics(gen_spatial: ArrayLike, mu_s: np.ndarray, sigma_s: np.ndarray) -> float:
    """sFID of the spatial features ``gen_spatial`` against reference statistics (an ADM batch's ``mu_s``,
    ``sigma_s``); never below 0 (rounding of a zero distance)."""
    mu, sigma = feature_statistics(gen_spatial)
    if mu.shape != np.shape(mu_s):
        raise ValueError(
            f"spatial features are {mu.shape[0]}-d but the reference's mu_s is {np.shape(mu_s)[0]}-d: sFID's features "
            f"are the {SPATIAL_DIM} numbers of mixed_6/conv[..., :7]"
        )
    return max(float(frechet_distance(mu, sigma, mu_s, sigma_s)), 0.0)
