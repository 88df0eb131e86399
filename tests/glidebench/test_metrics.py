"""Metric functions against closed forms, direct numpy computations and torch-fidelity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from glidebench.metrics import (
    FID_MIN_SAMPLES,
    clip_score,
    feature_statistics,
    fid_from_features,
    fid_report,
    frechet_distance,
    inception_score,
    kid_from_features,
    knn_radii,
    paired_kid_jackknife,
    precision_recall,
)

# ------------------------------------------------------------------------------------------------ FID


def _fid_sqrtm(mu1, s1, mu2, s2):
    """Independent reference: the TTUR/pytorch-fid formula with scipy.linalg.sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(1)
    d = 12
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fid_sqrtm(mu1, s1, mu2, s2), rel=1e-8)
    # torch inputs are accepted and give the same float64 answer
    got_t = frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
    assert got_t == pytest.approx(_fid_sqrtm(mu1, s1, mu2, s2), rel=1e-8)


def test_fid_from_gaussian_samples_near_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 40_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.5, 1.0, 2.0, 1.0])
    x = mu1 + rng.normal(size=(n, d)) * np.sqrt(s1)
    y = mu2 + rng.normal(size=(n, d)) * np.sqrt(s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))  # = 2.3125
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 40k samples: no few-samples warning
        got = fid_from_features(x, y)
    assert got == pytest.approx(expected, abs=0.05)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2100, 32)) @ rng.normal(size=(32, 32))
    mu, sigma = feature_statistics(x)
    assert abs(fid_from_features(x, x)) < 1e-8 * np.trace(sigma)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_feature_statistics_is_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    mu, sigma = feature_statistics(torch.from_numpy(x).float())
    np.testing.assert_allclose(mu, [3.0, 5.0])
    np.testing.assert_allclose(sigma, [[4.0, 5.0], [5.0, 7.0]], rtol=1e-6)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64


def test_fid_warns_and_flags_few_samples():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(100, 3)), rng.normal(size=(FID_MIN_SAMPLES, 3))
    with pytest.warns(UserWarning, match="fewer than 2048"):
        report = fid_report(a, b)
    assert report.few_samples and (report.n_a, report.n_b) == (100, FID_MIN_SAMPLES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not fid_report(b, b).few_samples


def test_fid_rejects_bad_inputs():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        fid_from_features(np.zeros((3000, 3)), np.zeros((3000, 4)))
    with pytest.raises(ValueError, match="2-D"):
        fid_from_features(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        fid_from_features(np.full((3000, 2), np.nan), np.zeros((3000, 2)))


# ------------------------------------------------------------------------------------------------ KID


def _mmd2_unbiased_direct(x, y, degree=3, gamma=None, coef0=1.0):
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    m = x.shape[0]
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    off = ~np.eye(m, dtype=bool)
    return kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()


@pytest.mark.parametrize("n_a,n_b,subset_size", [(120, 150, 40), (50, 80, 1000)])
def test_kid_matches_direct_unbiased_mmd_on_the_same_subsets(n_a, n_b, subset_size):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(n_a, 8))
    b = rng.normal(loc=0.3, size=(n_b, 8))
    subsets, seed = 7, 11
    mean, std = kid_from_features(a, b, subsets=subsets, subset_size=subset_size, seed=seed)
    m = min(subset_size, n_a, n_b)  # clipped to the smaller set
    state = np.random.RandomState(seed)
    direct = []
    for _ in range(subsets):
        ia = state.choice(n_a, m, replace=False)
        ib = state.choice(n_b, m, replace=False)
        direct.append(_mmd2_unbiased_direct(a[ia], b[ib]))
    assert mean == pytest.approx(np.mean(direct), rel=1e-10)
    assert std == pytest.approx(np.std(direct), rel=1e-8)


def _mmd2_general(x, y, degree=3, coef0=1.0):
    """Unbiased MMD^2 for sets of different sizes, from its definition (loops over the off-diagonal pairs)."""
    gamma = 1.0 / x.shape[1]
    k = lambda u, v: (u @ v.T * gamma + coef0) ** degree  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    sxx = sum(kxx[i, j] for i in range(len(x)) for j in range(len(x)) if i != j) / (len(x) * (len(x) - 1))
    syy = sum(kyy[i, j] for i in range(len(y)) for j in range(len(y)) if i != j) / (len(y) * (len(y) - 1))
    return sxx + syy - 2 * k(x, y).mean()


def test_paired_kid_jackknife_against_its_definition():
    """Full-set unbiased MMD^2 and the delete-one-pair jackknife SE of kid_b / kid_a - 1, recomputed by brute
    force (each pair removed, MMD^2 recomputed from the definition); with equal set sizes the full-set value is
    also torch-fidelity's KID with one subset holding every sample."""
    rng = np.random.default_rng(8)
    real = rng.normal(size=(30, 5))
    a = rng.normal(loc=0.4, size=(12, 5))
    b = a + rng.normal(scale=0.5, size=(12, 5)) + 0.2  # paired with a (same "captions"), a bit further off
    out = paired_kid_jackknife(a, b, real)
    assert out["kid_a"] == pytest.approx(_mmd2_general(a, real), rel=1e-10)
    assert out["kid_b"] == pytest.approx(_mmd2_general(b, real), rel=1e-10)
    assert out["rel"] == pytest.approx(out["kid_b"] / out["kid_a"] - 1, rel=1e-12)
    loo = np.array(
        [
            _mmd2_general(np.delete(b, i, 0), real) / _mmd2_general(np.delete(a, i, 0), real) - 1
            for i in range(12)
        ]
    )
    se = np.sqrt(11 / 12 * ((loo - loo.mean()) ** 2).sum())
    assert out["rel_se"] == pytest.approx(se, rel=1e-9) and out["rel_se"] > 0
    real12 = rng.normal(size=(12, 5))
    tf_mean, _ = kid_from_features(b, real12, subsets=1, subset_size=12)
    assert paired_kid_jackknife(a, b, real12)["kid_b"] == pytest.approx(tf_mean, rel=1e-10)
    assert paired_kid_jackknife(a, a, real)["rel_se"] == 0.0  # identical sets: no spread at all
    with pytest.raises(ValueError, match="same rows"):
        paired_kid_jackknife(a, b[:5], real)


def test_kid_is_seeded_and_separates_distributions():
    rng = np.random.default_rng(6)
    a, a2 = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    b = rng.normal(loc=1.0, size=(300, 6))
    assert kid_from_features(a, b, subsets=5, subset_size=100, seed=3) == kid_from_features(
        a, b, subsets=5, subset_size=100, seed=3
    )
    same, _ = kid_from_features(a, a2, subsets=20, subset_size=100)
    diff, _ = kid_from_features(a, b, subsets=20, subset_size=100)
    assert abs(same) < 0.05 and diff > 0.5


# ------------------------------------------------------------------------------------------------ precision/recall


def _line(n):
    return np.arange(n, dtype=np.float64).reshape(-1, 1)


def test_precision_recall_orientation_hand_built():
    # real = 0..99 on a line; fake = {0..4}, an exact subset bunched at one end.
    # Every fake sample is a real sample -> precision 1.
    # Fake 3-NN radii: 3,2,2,2,3 -> fake balls cover [-3, 7] -> real 0..7 inside -> recall 8/100.
    real, fake = _line(100), _line(5)
    out = precision_recall(real, fake, k=3, block_size=7)
    assert out == {"precision": 1.0, "recall": pytest.approx(0.08)}
    swapped = precision_recall(fake, real, k=3)
    assert swapped["precision"] == pytest.approx(0.08) and swapped["recall"] == 1.0


def test_torch_fidelity_prc_orientation_is_generated_then_real():
    """torch-fidelity 0.4's prc takes (features_1=GENERATED, features_2=REAL); reversing the arguments swaps
    precision and recall (the symptom of torch-fidelity issue 58). Pinned on the hand-built case."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    real, fake = torch.from_numpy(_line(100)), torch.from_numpy(_line(5))
    kw = dict(prc_neighborhood=3, prc_batch_size=16, save_cpu_ram=True, verbose=False)
    tf_gen_real = prc_features_to_metric(fake, real, **kw)
    assert tf_gen_real["precision"] == pytest.approx(1.0) and tf_gen_real["recall"] == pytest.approx(0.08)
    tf_real_gen = prc_features_to_metric(real, fake, **kw)
    assert tf_real_gen["precision"] == pytest.approx(0.08) and tf_real_gen["recall"] == pytest.approx(1.0)


def _prc_unblocked(real, fake, k):
    """Independent reference on full distance matrices (scipy cdist)."""
    r_real = np.sort(cdist(real, real), axis=1)[:, k]
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(fake, real)
    return (d <= r_real[None, :]).any(axis=1).mean(), (d <= r_fake[:, None]).any(axis=0).mean()


def test_precision_recall_blocked_equals_unblocked_and_torch_fidelity():
    from torch_fidelity.metric_prc import prc_features_to_metric

    rng = np.random.default_rng(7)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(size=(250, 16)) + 0.8
    ref_p, ref_r = _prc_unblocked(real, fake, 3)
    assert 0.05 < ref_p < 0.95 and 0.05 < ref_r < 0.95  # a non-trivial case
    for block_size in (16, 64, 250, 10_000):
        out = precision_recall(real, fake, k=3, block_size=block_size)
        assert out["precision"] == pytest.approx(ref_p, abs=1e-12), block_size
        assert out["recall"] == pytest.approx(ref_r, abs=1e-12), block_size
    tf = prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=64, verbose=False
    )
    assert tf["precision"] == pytest.approx(ref_p, abs=1e-6) and tf["recall"] == pytest.approx(
        ref_r, abs=1e-6
    )
    # float32 tiles (the fast option) agree on this well-separated data
    out32 = precision_recall(real, fake, k=3, block_size=64, dtype=torch.float32)
    assert out32["precision"] == pytest.approx(ref_p, abs=1e-2) and out32["recall"] == pytest.approx(
        ref_r, abs=1e-2
    )


def test_knn_radii_match_full_distance_matrix():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(97, 5))
    expected = np.sort(cdist(x, x), axis=1)[:, 5]
    np.testing.assert_allclose(knn_radii(x, k=5, block_size=10).numpy(), expected, rtol=1e-9)


def test_precision_recall_rejects_too_few_samples_for_k():
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(_line(10), _line(3), k=3)


# ------------------------------------------------------------------------------------------------ IS


def test_inception_score_uniform_logits_is_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_distinct_classes_is_num_classes():
    num_classes = 5
    labels = np.tile(np.arange(num_classes), 10)  # every split of 5 holds each class once
    logits = np.full((labels.size, 20), -1000.0)
    logits[np.arange(labels.size), labels] = 1000.0
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(num_classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = np.random.default_rng(9).normal(scale=3.0, size=(200, 30))
    ours = inception_score(logits, splits=4)
    tf = isc_features_to_metric(torch.from_numpy(logits), splits=4, shuffle=False)
    assert ours[0] == pytest.approx(tf["inception_score_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(tf["inception_score_std"], rel=1e-8)
    shuffled = inception_score(logits, splits=4, shuffle_seed=2020)
    tf_shuffled = isc_features_to_metric(torch.from_numpy(logits), splits=4, shuffle=True, rng_seed=2020)
    assert shuffled[0] == pytest.approx(tf_shuffled["inception_score_mean"], rel=1e-10)


# ------------------------------------------------------------------------------------------------ CLIP score


def test_clip_score_hand_built_cosines_and_clamp():
    img = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    txt = np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.5]])
    cos = np.array([1 / np.sqrt(2), -1.0, 1.0])  # embeddings are normalised inside
    out = clip_score(img, txt)
    assert out["clip_score"] == pytest.approx(100 * cos.mean())
    assert out["clip_score_clamped"] == pytest.approx(100 * np.maximum(cos, 0).mean())
    assert out["clip_score"] < out["clip_score_clamped"]
    assert clip_score(img, txt, logit_scale=2.5)["clip_score"] == pytest.approx(2.5 * cos.mean())


def test_clip_score_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="paired"):
        clip_score(np.ones((3, 4)), np.ones((2, 4)))
