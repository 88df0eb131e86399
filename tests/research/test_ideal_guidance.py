"""The ideal-guidance sampler (research.ideal_guidance) against independent answers: the shipped
``short_caption`` function's own frequencies, closed-form tilted posteriors over the object count, and
two-point mixtures for the exact-denoiser sampler."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from glidebench.data.embedded import SHORT_KEEP, EmbeddedCaptionSet, parse_stated, short_caption
from research.ideal_guidance import (
    EXACT_KEEP,
    ChainCaptions,
    OneObjectCaptions,
    exact_denoiser_cfg,
    ideal_guided_scenes,
    mixture_x0,
)


def _key(stated) -> tuple:
    return (tuple(stated["objects"]), tuple(stated["relations"]), stated["background"])


def _three_object_scene():
    records = EmbeddedCaptionSet().eval_split("test", 40)
    return next(r.scene for r in records if r.scene.n_objects == 3)


def test_chain_likelihood_matches_short_caption_frequencies():
    # the likelihood is written from the process's description; short_caption is the shipped code
    scene = _three_object_scene()
    rng = np.random.default_rng(0)
    n = 20000
    counts = Counter(_key(parse_stated(short_caption(scene, rng))) for _ in range(n))
    process = ChainCaptions(SHORT_KEEP)
    total = 0.0
    for key, c in counts.items():
        p = process.likelihood(
            {"objects": list(key[0]), "relations": list(key[1]), "background": key[2]}, scene
        )
        total += p
        assert abs(c / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (key, c / n, p)
    assert total == pytest.approx(1.0, abs=1e-9)  # every caption the process can give was seen


def test_one_object_likelihood_matches_its_draws():
    scene = _three_object_scene()
    process = OneObjectCaptions()
    rng = np.random.default_rng(1)
    n = 20000
    counts = Counter(_key(process.draw(scene, rng)) for _ in range(n))
    total = 0.0
    for key, c in counts.items():
        p = process.likelihood({"objects": list(key[0]), "relations": [], "background": key[2]}, scene)
        total += p
        assert abs(c / n - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (key, c / n, p)
    assert total == pytest.approx(1.0, abs=1e-9)


def _count_frequencies(process, stated, w, copies, seed):
    scenes = ideal_guided_scenes(
        process, [stated] * copies, [w], np.random.default_rng(seed), n_candidates=100
    )
    counts = np.bincount([s.n_objects for s in scenes[float(w)]], minlength=4)[1:]
    return counts / copies


@pytest.mark.parametrize("w", [1.0, 4.0])
def test_chain_tilted_object_count_closed_form(w):
    # "a circle": P(c | s) = 1 - keep_next for a scene of >= 2 objects (the chain stops after the first), 1 for
    # one object; the shape of the first object is independent of the count. So p_w(n) ∝ prior(n) P(j=1 | n)^w.
    prior = np.array([0.5, 0.3, 0.2])
    drop = 1 - SHORT_KEEP["next_object"]
    expected = prior * np.array([1.0, drop**w, drop**w])
    expected /= expected.sum()
    stated = {"objects": [(None, None, "circle")], "relations": [], "background": None}
    copies = 300
    got = _count_frequencies(ChainCaptions(SHORT_KEEP), stated, w, copies, seed=2)
    # importance resampling with 100 candidates is biased by O(1/100); allow that beside 4 sigma
    tol = 4 * np.sqrt(expected * (1 - expected) / copies) + 0.03
    assert np.all(np.abs(got - expected) <= tol), (got, expected)


@pytest.mark.parametrize("w", [1.0, 4.0])
def test_one_object_tilted_object_count_closed_form(w):
    # "a circle" under the one-object what-if: P(c | s) ∝ m / n with m ~ Binomial(n, 1/4) circles among n
    # objects (shapes are independent and uniform), so p_w(n) ∝ prior(n) E[(m / n)^w].
    prior = np.array([0.5, 0.3, 0.2])
    moments = np.array(
        [
            sum(math.comb(n, m) * 0.25**m * 0.75 ** (n - m) * (m / n) ** w for m in range(n + 1))
            for n in (1, 2, 3)
        ]
    )
    expected = prior * moments
    expected /= expected.sum()
    stated = {"objects": [(None, None, "circle")], "relations": [], "background": None}
    copies = 300
    got = _count_frequencies(OneObjectCaptions(), stated, w, copies, seed=3)
    tol = 4 * np.sqrt(expected * (1 - expected) / copies) + 0.03
    assert np.all(np.abs(got - expected) <= tol), (got, expected)


def test_exact_captions_are_not_moved_by_guidance():
    # P(c | s) is 0 or 1 for exact captions: a perfect model's guided samples equal its unguided ones
    records = EmbeddedCaptionSet().eval_split("test", 6)
    process = ChainCaptions(EXACT_KEEP, name="exact")
    stated = [parse_stated(r.caption) for r in records]
    scenes = ideal_guided_scenes(process, stated, [1.0, 4.0], np.random.default_rng(4), n_candidates=20)
    assert scenes[1.0] == scenes[4.0]
    assert [s.caption for s in scenes[1.0]] == [r.caption for r in records]  # every part was stated


def test_mixture_x0_is_the_posterior_mean_of_two_points():
    # two points a, b with weights wa, wb: E[x0 | x_t] = a + sigmoid(log(wb/wa) - (|x_t - s b|^2 - |x_t - s a|^2) /
    # (2 (1 - abar))) (b - a), s = sqrt(abar); computed here with numpy from the formula
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, 5))
    wa, wb, abar = 0.7, 0.3, 0.6
    xt = rng.normal(size=(4, 5))
    s = math.sqrt(abar)
    da = ((xt - s * pts[0]) ** 2).sum(1)
    db = ((xt - s * pts[1]) ** 2).sum(1)
    pb = 1 / (1 + np.exp(-(math.log(wb / wa) - (db - da) / (2 * (1 - abar)))))
    expected = pts[0] + pb[:, None] * (pts[1] - pts[0])
    logw = torch.tensor([math.log(wa), math.log(wb)], dtype=torch.float64)
    x0, _ = mixture_x0(torch.from_numpy(xt), abar, torch.from_numpy(pts), logw)
    np.testing.assert_allclose(x0.numpy(), expected, rtol=1e-10, atol=1e-12)
    x0b, _ = mixture_x0(
        torch.from_numpy(xt), abar, torch.from_numpy(pts)[None].expand(4, 2, 5), logw[None].expand(4, 2)
    )
    np.testing.assert_allclose(x0b.numpy(), expected, rtol=1e-10, atol=1e-12)


def _two_candidates(n: int):
    a, b = torch.full((4,), -0.5, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)
    cond = torch.stack([a, b])[None].expand(n, 2, 4).contiguous()
    return a, b, cond


def test_exact_denoiser_at_scale_one_samples_the_conditional_mixture():
    # an exact denoiser and GLIDE's ancestral sampler draw the mixture itself: each sample is one of the two
    # candidates, with the mixture's frequencies (0.8 / 0.2, 4 sigma over 400 samples)
    n = 400
    a, b, cond = _two_candidates(n)
    logw = torch.log(torch.tensor([0.8, 0.2], dtype=torch.float64))[None].expand(n, 2)
    uncond = torch.zeros(3, 4, dtype=torch.float64)
    x = exact_denoiser_cfg(cond, logw, uncond, torch.full((n,), math.log(0.5), dtype=torch.float64), 1.0,
                           steps="50", generator=torch.Generator().manual_seed(0))  # fmt: skip
    near_a = (x - a).abs().max(1).values < 1e-3
    near_b = (x - b).abs().max(1).values < 1e-3
    assert bool((near_a | near_b).all())
    assert abs(near_a.double().mean().item() - 0.8) <= 4 * math.sqrt(0.8 * 0.2 / n)


def test_exact_denoiser_guidance_favours_the_candidate_the_prior_lacks():
    # p(x | c) = 1/2 a + 1/2 b; the prior away from the caption sits on a, so p(c | x) is larger at b: guidance
    # moves samples from a to b (the direction the tilted distribution p(x|c) p(c|x)^(w-1) also takes)
    n = 300
    a, b, cond = _two_candidates(n)
    logw = torch.zeros(n, 2, dtype=torch.float64)
    uncond = a[None].repeat(5, 1)
    log_pc = torch.full((n,), math.log(0.2), dtype=torch.float64)
    frac_b = {}
    for w in (1.0, 3.0):
        x = exact_denoiser_cfg(
            cond, logw, uncond, log_pc, w, steps="50", generator=torch.Generator().manual_seed(1)
        )
        frac_b[w] = ((x - b).abs().max(1).values < 1e-2).double().mean().item()
    assert abs(frac_b[1.0] - 0.5) <= 4 * math.sqrt(0.25 / n)
    assert frac_b[3.0] > 0.85, frac_b  # 0.94 measured
