"""Intra-caption diversity: the pairwise distances equal a direct computation on hand-built
embeddings, and the Vendi score meets its closed forms (identical -> 1, orthogonal -> K, two orthogonal
clusters of sizes a and b -> exp of the binary entropy of a / K)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from glidebench.metrics.diversity import mean_pairwise_distance, per_caption, vendi_score


def test_mean_pairwise_distance_equals_a_direct_loop() -> None:
    emb = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    pairs = list(itertools.combinations(range(4), 2))
    want = sum(math.dist(emb[i], emb[j]) for i, j in pairs) / len(pairs)
    assert mean_pairwise_distance(emb) == pytest.approx(want, rel=1e-12)
    unit = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])  # cosines 0, -1, 0
    assert mean_pairwise_distance(unit, "cosine") == pytest.approx((1 + 2 + 1) / 3, rel=1e-12)


def test_identical_images_have_no_diversity() -> None:
    same = np.tile(np.array([[0.2, -1.0, 3.0]]), (4, 1))
    assert mean_pairwise_distance(same) == pytest.approx(0.0, abs=1e-7)
    assert mean_pairwise_distance(same, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert vendi_score(same) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_vendi_of_orthogonal_embeddings_is_k(k: int) -> None:
    emb = (
        np.eye(k, 10) * np.arange(1, k + 1)[:, None]
    )  # orthogonal, different norms (cosine kernel ignores them)
    assert vendi_score(emb) == pytest.approx(k, rel=1e-9)


def test_vendi_of_two_orthogonal_clusters_is_exp_binary_entropy() -> None:
    a, b = 3, 1
    emb = np.array([[1.0, 0.0]] * a + [[0.0, 1.0]] * b)
    p = a / (a + b)
    assert vendi_score(emb) == pytest.approx(math.exp(-p * math.log(p) - (1 - p) * math.log(1 - p)), rel=1e-9)


def test_per_caption_applies_the_measure_to_each_group() -> None:
    emb = np.vstack([np.eye(3), np.ones((2, 3))])
    got = per_caption(emb, [[0, 1, 2], [3, 4]], vendi_score)
    assert got == pytest.approx([3.0, 1.0], rel=1e-9)


def test_bad_input_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="at least 2 images per caption"):
        mean_pairwise_distance(np.ones((1, 3)))
    with pytest.raises(ValueError, match="all zeros"):
        vendi_score(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="metric must be one of"):
        mean_pairwise_distance(np.ones((2, 3)), "manhattan")
