"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models", eqs. 1-3) over feature arrays, computed in blocks.

Owns: the k-NN manifold estimate and the two fractions

    f(phi, Phi)  = 1 if ||phi - phi'||_2 <= ||phi' - NN_k(phi', Phi)||_2 for some phi' in Phi, else 0
    precision    = mean over fake phi_g of f(phi_g, Phi_real)   (fake samples inside the real manifold)
    recall       = mean over real phi_r of f(phi_r, Phi_fake)   (real samples inside the fake manifold)

with k = 3 (the paper's and OpenAI's evaluator's choice; NN_k excludes the sample itself). Distances are
squared Euclidean from the Gram expansion in float64 (by default) and compared with squared radii.
Nothing larger than one [block_size, block_size] tile is held: radii keep a running k+1 smallest per row,
and one pass over the fake x real tiles fills both membership masks, so 30k x 30k stays far below 4 GiB.

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

DEFAULT_BLOCK_SIZE = 2048


def _sq_dists(a: torch.Tensor, a2: torch.Tensor, b: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)] = |a|^2 + |b|^2 - 2 a.b, clamped at 0."""
    d = torch.addmm(a2[:, None], a, b.T, beta=1.0, alpha=-2.0)
    return d.add_(b2[None, :]).clamp_min_(0.0)


def _to_tensor(x: ArrayLike, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(as_feature_matrix(x, name)).to(device=device, dtype=dtype)


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")


def _knn_sq_radii(x: torch.Tensor, k: int, block_size: int) -> torch.Tensor:
    """Squared distance from each row of x to its k-th nearest other row (the (k+1)-th smallest incl. self)."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(
            f"k must be in [1, num_samples - 1] = [1, {n - 1}], got k={k}; use more samples or a smaller k"
        )
    x2 = (x * x).sum(dim=1)
    radii = torch.empty(n, dtype=x.dtype, device=x.device)
    for i in range(0, n, block_size):
        rows, rows2 = x[i : i + block_size], x2[i : i + block_size]
        best = torch.full((rows.shape[0], k + 1), float("inf"), dtype=x.dtype, device=x.device)
        for j in range(0, n, block_size):
            tile = _sq_dists(rows, rows2, x[j : j + block_size], x2[j : j + block_size])
            tile_best = torch.topk(tile, min(k + 1, tile.shape[1]), dim=1, largest=False).values
            del tile
            best = torch.topk(
                torch.cat([best, tile_best], dim=1), k + 1, dim=1, largest=False, sorted=True
            ).values
        radii[i : i + rows.shape[0]] = best[:, k]
    return radii


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
    r_fake = _knn_sq_radii(fake, k, block_size)
    real2 = (real * real).sum(dim=1)
    fake2 = (fake * fake).sum(dim=1)
    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool, device=dev)
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=dev)
    for i in range(0, fake.shape[0], block_size):
        f_rows, f2, rf = fake[i : i + block_size], fake2[i : i + block_size], r_fake[i : i + block_size]
        for j in range(0, real.shape[0], block_size):
            tile = _sq_dists(f_rows, f2, real[j : j + block_size], real2[j : j + block_size])
            fake_in_real[i : i + block_size] |= (tile <= r_real[None, j : j + block_size]).any(dim=1)
            real_in_fake[j : j + block_size] |= (tile <= rf[:, None]).any(dim=0)
            del tile
    return {
        "precision": float(fake_in_real.double().mean().item()),
        "recall": float(real_in_fake.double().mean().item()),
    }
