"""Inception Score (IS) over classifier logits.

Owns: IS = exp(E_x KL(p(y|x) || p(y))) per split, mean and std over splits (Salimans et al. 2016, section 4).
p(y) is the marginal over the split. Splits are contiguous, in the given order (the original code and
OpenAI's evaluator do not shuffle); pass `shuffle_seed` to permute first, as torch-fidelity does (2020).
Math in float64 with log-softmax for stability.

Use the Inception logits WITHOUT the fc bias (torch-fidelity's `logits_unbiased`, what the original TF code
reads); `glidebench.features.InceptionExtractor` returns exactly those as "logits".
"""

from __future__ import annotations

import numpy as np

from .fid import ArrayLike, as_feature_matrix


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(
    logits: ArrayLike, splits: int = 10, shuffle_seed: int | None = None
) -> tuple[float, float]:
    """Inception Score mean and std over `splits` splits of the logits [N, num_classes]."""
    x = as_feature_matrix(logits, "logits")
    n = x.shape[0]
    if splits < 1 or splits > n:
        raise ValueError(f"splits must be in [1, num_samples={n}], got {splits}")
    if shuffle_seed is not None:
        x = x[np.random.RandomState(shuffle_seed).permutation(n)]
    log_p = _log_softmax(x)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_s, log_p_s = p[lo:hi], log_p[lo:hi]
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 * log 0 = 0 for classes nobody predicts
            log_q = np.log(p_s.mean(axis=0, keepdims=True))
            terms = np.where(p_s > 0, p_s * (log_p_s - log_q), 0.0)
        kl = terms.sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
