"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", eqs. 1-3) over feature arrays, computed in blocks.

Owns: the k-NN manifold estimate and the two fractions

    f(phi, Phi)  = 1 if ||phi - phi'||_2 <= ||phi' - NN_k(phi', Phi)||_2 for some phi' in Phi, else 0
    precision    = mean over fake phi_g of f(phi_g, Phi_real)   (fake samples inside the real manifold)
    recall       = mean over real phi_r of f(phi_r, Phi_fake)   (real samples inside the fake manifold)

with k = 3 (the paper's and OpenAI's evaluator's choice; NN_k excludes the sample itself). Distances are
squared Euclidean from the Gram expansion in float64 (by default) and compared with squared radii.
Nothing larger than a few [block_size, block_size] tiles is held (glidebench.metrics.pairs: radii keep a
running k+1 smallest per row, and one pass over the fake x real tiles fills both membership masks), so 30k x
30k stays far below 4 GiB.

Use Inception pool3 features (`glidebench.features.InceptionExtractor`), as the GLIDE paper does, never
torch-fidelity's VGG16 default for `prc`.

Orientation note: torch-fidelity 0.4.0's `prc_features_to_metric(features_1, features_2)` (and its
`calculate_precision_recall_part/full`) is orientation-correct when called as (GENERATED, REAL), which is
its documented input1=generated, input2=real convention; calling it as (real, generated) swaps precision and
recall (the symptom users of torch-fidelity have reported as swapped metrics). tests/glidebench/test_metrics.py pins this
with a hand-built case and cross-checks our numbers against torch-fidelity called as (fake, real).
"""

from __future__ import annotations

import torch

from .fid import ArrayLike, as_feature_matrix
from .pairs import TILE, Within, across, within

DEFAULT_BLOCK_SIZE = TILE


def _to_tensor(x: ArrayLike, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(as_feature_matrix(x, name)).to(device=device, dtype=dtype)


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")


def _knn_sq_radii(x: torch.Tensor, k: int, block_size: int) -> torch.Tensor:
    """Squared distance from each row of x to its k-th nearest other row (the (k+1)-th smallest incl. self)."""
    return within(x, k, tile=block_size).radii


@torch.no_grad()
def knn_sq_radii(
    feats: ArrayLike,
    k: int = 3,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """SQUARED distance from each sample to its k-th nearest neighbour in the same set: what
    :func:`precision_recall` compares with, so a set's radii (the reference set's, O(N^2 d)) can be computed
    once and passed to it for every generated set (``real_sq_radii``)."""
    _check_block_size(block_size)
    x = _to_tensor(feats, "feats", torch.device(device), dtype)
    return _knn_sq_radii(x, k, block_size)


def knn_radii(
    feats: ArrayLike,
    k: int = 3,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (the manifold ball radii)."""
    return knn_sq_radii(feats, k, block_size, device, dtype).sqrt()


@torch.no_grad()
def precision_recall(
    real_feats: ArrayLike,
    fake_feats: ArrayLike,
    k: int = 3,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    real_sq_radii: torch.Tensor | None = None,
) -> dict[str, float]:
    """Kynkaanniemi et al. 2019 precision (fake inside real manifold) and recall (real inside fake manifold).

    Memory is O(block_size^2 + N*D): pass a smaller `block_size` to use less. `device` may be a GPU.
    ``real_sq_radii``: the real set's squared k-NN radii from :func:`knn_sq_radii` (same ``k``, ``dtype``),
    computed once for many generated sets; the result is the same to the bit.
    """
    _check_block_size(block_size)
    dev = torch.device(device)
    real = _to_tensor(real_feats, "real_feats", dev, dtype)
    fake = _to_tensor(fake_feats, "fake_feats", dev, dtype)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"feature dimensions differ (real {real.shape[1]} vs fake {fake.shape[1]}); use the same extractor layer"
        )
    if real_sq_radii is None:
        r_real = _knn_sq_radii(real, k, block_size)
    elif tuple(real_sq_radii.shape) != (real.shape[0],):
        raise ValueError(
            f"real_sq_radii has shape {tuple(real_sq_radii.shape)}, not ({real.shape[0]},): one squared radius "
            "per real sample (knn_sq_radii of the same real set)"
        )
    else:
        r_real = real_sq_radii.to(device=dev, dtype=dtype)
    fake_side = within(fake, k, tile=block_size)
    both = across(fake, real, fake_side, Within(r_real), tile=block_size)
    fake_in_real, real_in_fake = both.x_in_y, both.y_in_x
    return {
        "precision": float(fake_in_real.double().mean().item()),
        "recall": float(real_in_fake.double().mean().item()),
    }
