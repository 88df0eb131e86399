"""Intra-caption diversity: how different the K images drawn for one caption are, from their embeddings.

Owns three per-caption measures over the K embeddings [K, D] of one caption's images:

- :func:`mean_pairwise_distance`: the mean over the K(K-1)/2 pairs of the Euclidean distance (Inception
  pool3 features) or of the cosine distance 1 - cos (CLIP image embeddings, ``metric="cosine"``);
- :func:`vendi_score`: the Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation
  Metric for Machine Learning"): exp of the Shannon entropy of the eigenvalues of K_sim / K, with the cosine
  similarity kernel K_sim[i, j] = cos(x_i, x_j) (the ``vendi-score`` package's ``score_X`` with its default
  normalisation and q = 1). It is 1 when the K images are identical and K when their embeddings are
  orthogonal: the effective number of distinct images. Written here because the package needs scikit-learn
  for one normalisation; tests check it against closed forms;
- :func:`per_caption`: one measure for every caption group of a run (the rows of each group's images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .fid import ArrayLike, as_feature_matrix

DIVERSITY_MEASURES = ("euclidean", "cosine")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("an embedding is all zeros, so its cosine is undefined; check the encoder's output")
    return x / norm


def mean_pairwise_distance(emb: ArrayLike, metric: str = "euclidean") -> float:
    """Mean distance over the distinct pairs of the rows of ``emb`` [K, D], K >= 2 (``euclidean`` or
    ``cosine``: 1 - cosine similarity)."""
    x = as_feature_matrix(emb, "emb")
    if len(x) < 2:
        raise ValueError(f"pairwise distances need at least 2 images per caption, got {len(x)}")
    if metric not in DIVERSITY_MEASURES:
        raise ValueError(f"metric must be one of {DIVERSITY_MEASURES}, got {metric!r}")
    iu = np.triu_indices(len(x), k=1)
    if metric == "cosine":
        u = _unit_rows(x)
        return float((1.0 - (u @ u.T)[iu]).mean())
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    return float(np.sqrt(d2[iu]).mean())


def vendi_score(emb: ArrayLike) -> float:
    """Vendi score of the rows of ``emb`` [K, D] with the cosine kernel: exp(-sum lambda log lambda) over
    the eigenvalues lambda of K_sim / K (0 log 0 = 0)."""
    u = _unit_rows(as_feature_matrix(emb, "emb"))
    lam = np.linalg.eigvalsh(u @ u.T / len(u))
    lam = lam[lam > 0]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def per_caption(
    emb: ArrayLike, groups: Sequence[Sequence[int]], measure: Callable[[np.ndarray], float]
) -> np.ndarray:
    """``measure`` of each group's rows of ``emb`` (one group = the row indices of one caption's K images)."""
    x = as_feature_matrix(emb, "emb")
    return np.array([measure(x[list(g)]) for g in groups], dtype=np.float64)
