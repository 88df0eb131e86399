"""Bootstrap intervals and paired differences: each replicate function agrees with the metric it
resamples on the full sample, intervals cover a known FID, a paired difference resolves a real shift and
not a null one, the precision/recall warning on small sets, and an end-to-end run with K
images per caption writes intervals, differences and diversity without changing the protocol's images or
metrics."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from glidebench.metrics import bootstrap as B
from glidebench.metrics import paired_kid_jackknife, precision_recall
from glidebench.runner.options import diversity_groups
from glidebench.runner.results import PRC_MIN_SAMPLES, setting_metrics
from glidebench.runner.uncertainty import Draws, comparison_pairs, differences, setting_uncertainty
from glidebench.spec import Setting

from .harness import base_args, harness_env, only_run_dir

ONES = np.ones((1, 1))


def _ones(n: int) -> np.ndarray:
    return np.ones((1, n))


def _fid_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """FID written independently: scipy's sqrtm of the covariance product (Heusel et al. 2017, eq. 6)."""
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


@pytest.mark.parametrize("n, m, d", [(40, 60, 16), (30, 25, 8)])
def test_fid_replicate_of_the_full_sample_is_the_fid(n: int, m: int, d: int) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n, d)), rng.normal(0.3, 1.2, size=(m, d))
    gram = B.fid_replicates(x, y, _ones(n), _ones(m))[0]
    blocks = B.fid_replicates(x, y, _ones(4), _ones(3), np.arange(n) % 4, np.arange(m) % 3)[0]
    assert gram == pytest.approx(_fid_scipy(x, y), rel=1e-8)
    assert blocks == pytest.approx(_fid_scipy(x, y), rel=1e-8)


def test_fid_resample_equals_fid_of_the_resampled_rows() -> None:
    """A resample with duplicates is the FID of the rows it names (both computation paths)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 24)), rng.normal(0.5, 1.0, size=(30, 24))
    ix, iy = rng.integers(0, 20, 20), rng.integers(0, 30, 30)
    cx, cy = (
        np.bincount(ix, minlength=20)[None].astype(float),
        np.bincount(iy, minlength=30)[None].astype(float),
    )
    want = _fid_scipy(x[ix], y[iy])
    # The resampled covariances are singular (fewer distinct rows than dimensions), where scipy's sqrtm of the
    # non-symmetric product is accurate to about 1e-8 relative, by version (scipy 1.17.1: 1.07e-8 off the
    # symmetric form); 1e-6 still catches a wrong weight (one duplicate moved to another row moves FID here by
    # 3.7e-4 relative at least).
    assert B.fid_replicates(x, y, cx, cy)[0] == pytest.approx(want, rel=1e-6)
    # blocks of one caption each through the block-moment path
    got = B.fid_replicates(x, y, cx, cy, np.arange(20), np.arange(30))
    assert got[0] == pytest.approx(want, rel=1e-6)
    big = B.fid_replicates(x, y, cx, cy, device="cpu")[0]
    assert big == pytest.approx(want, rel=1e-6)


def test_kid_replicate_is_the_unbiased_mmd_and_resample_counts_duplicates_as_distinct() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(25, 10)), rng.normal(0.2, 1.0, size=(35, 10))
    full = B.kid_replicates(x, y, _ones(25), _ones(35))[0]
    assert full == pytest.approx(paired_kid_jackknife(x, x, y)["kid_a"], rel=1e-10)
    ix, iy = rng.integers(0, 25, 25), rng.integers(0, 35, 35)
    cx, cy = (
        np.bincount(ix, minlength=25)[None].astype(float),
        np.bincount(iy, minlength=35)[None].astype(float),
    )
    want = paired_kid_jackknife(x[ix], x[ix], y[iy])["kid_a"]  # positions distinct, duplicates included
    assert B.kid_replicates(x, y, cx, cy)[0] == pytest.approx(want, rel=1e-10)
    blocks = B.kid_replicates(x, y, _ones(5), _ones(7), np.arange(25) % 5, np.arange(35) % 7)[0]
    assert blocks == pytest.approx(full, rel=1e-10)


def test_prc_replicate_of_the_full_sample_is_precision_recall_and_duplicates_are_not_neighbours() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(50, 6)), rng.normal(0.4, 1.0, size=(40, 6))
    p, r = B.prc_replicates(real, fake, _ones(50), _ones(40))
    want = precision_recall(real, fake, k=3)
    assert (p[0], r[0]) == (want["precision"], want["recall"])
    # a resample that names each real image twice and each fake once: the distinct sets are the full ones,
    # so the radii are unchanged (a copy is not a neighbour) and so are the fractions
    p2, r2 = B.prc_replicates(real, fake, np.full((1, 50), 2.0), _ones(40))
    assert (p2[0], r2[0]) == (want["precision"], want["recall"])


def test_weighted_mean_replicates_is_a_ratio_over_judged_captions() -> None:
    values = np.array([1.0, 0.0, np.nan, 1.0])
    counts = np.array([[1, 1, 1, 1], [2, 0, 2, 0], [0, 0, 4, 0]], float)
    got = B.weighted_mean_replicates(values, counts)
    assert got[0] == pytest.approx(2 / 3) and got[1] == 1.0 and math.isnan(got[2])


def test_percentile_interval_is_numpys_quantile_and_ignores_nan() -> None:
    r = np.arange(1001, dtype=float)
    assert B.percentile_interval(r) == pytest.approx((25.0, 975.0), abs=1e-9)
    assert all(math.isnan(v) for v in B.percentile_interval(np.full(10, np.nan)))
    # with the estimate: shifted by mean(replicates) - estimate (here 500 - 400 = 100)
    assert B.percentile_interval(r, estimate=400.0) == pytest.approx((-75.0, 875.0), abs=1e-9)


@pytest.mark.slow
def test_fid_interval_covers_the_known_fid_at_least_90_percent() -> None:
    """Gaussian features with a closed-form FID: N(mu, diag(s^2)) vs N(0, I) has FID = |mu|^2 + sum (1 - s)^2.
    Over 200 independent draws of 3000 + 3000 samples, resampled as the harness resamples sets above 2048 (40
    blocks of consecutive indices), the nominal-95 % interval covers it at least 90 % of the time."""
    d, n, reps, resamples = 3, 3000, 200, 200
    mu, s = np.array([0.4, -0.3, 0.2]), np.array([1.0, 1.3, 0.8])
    true = float((mu**2).sum() + ((1 - s) ** 2).sum())
    labels = B.unit_labels(n)
    assert labels.max() + 1 == B.DEFAULT_BLOCKS
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(reps):
        x, y = rng.normal(size=(n, d)) * s + mu, rng.normal(size=(n, d))
        cx, cy = B.resample_counts(40, resamples, rng), B.resample_counts(40, resamples, rng)
        values = B.fid_replicates(
            x, y, np.vstack([np.ones((1, 40)), cx]), np.vstack([np.ones((1, 40)), cy]), labels, labels
        )
        lo, hi = B.percentile_interval(values[1:], estimate=values[0])
        hits += lo <= true <= hi
    assert hits / reps >= 0.90, f"coverage {hits / reps:.3f}"


def _paired_case(shift: float, method: str, seed: int = 6) -> list[dict]:
    """Two settings sharing captions: features of caption i are a caption effect plus per-setting noise;
    setting b is shifted by ``shift`` in every coordinate (and its CLIP cosines by shift / 10)."""
    rng = np.random.default_rng(seed)
    n, m, d = 120, 150, 8
    caption = rng.normal(size=(n, d))
    ref = {"pool3": rng.normal(size=(m, d)) * 1.4}
    gens = {
        "cfg-1": {"pool3": caption + 0.3 * rng.normal(size=(n, d))},
        "cfg-2": {"pool3": caption + 0.3 * rng.normal(size=(n, d)) + shift},
    }
    txt = rng.normal(size=(n, d))
    draws = Draws.make(n, m, 0, 400, seed=0, method=method)
    reps = {}
    for sid, gen in gens.items():
        img = txt + (0.5 - (shift / 10 if sid == "cfg-2" else 0)) * rng.normal(size=(n, d))
        _, reps[sid] = setting_uncertainty(draws, gen, ref, n, 3, (img, txt), {}, [])
    pairs = comparison_pairs([Setting("cfg", 1), Setting("cfg", 2)])
    return differences(pairs, reps, draws)


@pytest.mark.parametrize("method, replicates", [("jackknife", 40), ("bootstrap", 400)])
def test_paired_difference_resolves_a_real_shift_and_not_a_null_one(method: str, replicates: int) -> None:
    shifted = {r["metric"]: r for r in _paired_case(0.8, method)}
    assert shifted["fid"]["resolved"] and shifted["fid"]["difference_lo"] > 0
    assert shifted["kid_mean"]["resolved"] and shifted["kid_mean"]["difference_lo"] > 0
    null = {r["metric"]: r for r in _paired_case(0.0, method)}
    assert not null["fid"]["resolved"] and null["fid"]["difference_lo"] < 0 < null["fid"]["difference_hi"]
    assert not null["kid_mean"]["resolved"]
    assert all(r["setting_a"] == "cfg-1" for r in null.values())
    assert {r["resamples"] for r in null.values() if r["metric"] not in ("precision", "recall")} == {
        replicates
    }


def test_comparison_pairs_neighbouring_scales_and_against_the_unguided_setting() -> None:
    settings = [Setting("cfg", 1), Setting("cfg", 4), Setting("cfg", 2), Setting("clip", 2)]
    assert comparison_pairs(settings) == [
        ("cfg-1", "cfg-2", "neighbouring scales"), ("cfg-2", "cfg-4", "neighbouring scales"),
        ("cfg-1", "cfg-4", "vs unguided"), ("cfg-1", "clip-2", "vs unguided"),
    ]  # fmt: skip
    with_none = comparison_pairs([Setting("none", 1), Setting("clip", 1), Setting("clip", 3)])
    assert ("none", "clip-1", "vs unguided") in with_none and (
        "clip-1",
        "clip-3",
        "neighbouring scales",
    ) in with_none


def test_diversity_groups_are_the_first_m_prompts_and_their_extra_indices() -> None:
    assert diversity_groups(10, 3, 2) == [[0, 10, 11], [1, 12, 13]]
    assert diversity_groups(4, 2, 0) == [[0, 4], [1, 5], [2, 6], [3, 7]]  # 0 = every prompt
    assert diversity_groups(10, 1, 5) == []


def test_small_sets_warn_about_precision_recall() -> None:
    """16 references gave P = 1.000, R = 0.000 with no warning; now the row says why."""
    rng = np.random.default_rng(7)
    gen, ref = {"pool3": rng.normal(size=(100, 8))}, {"pool3": rng.normal(size=(16, 8))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, notes = setting_metrics(gen, ref, k=3, kid_subset_size=16)
    assert any("precision/recall from 100 generated and 16 reference images" in n for n in notes)
    big = {"pool3": rng.normal(size=(PRC_MIN_SAMPLES, 4))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, notes = setting_metrics(big, big, k=3, kid_subset_size=50)
    assert not any("precision/recall from" in n for n in notes)


def test_precision_recall_use_the_whole_reference_set() -> None:
    rng = np.random.default_rng(8)
    gen, ref = {"pool3": rng.normal(size=(40, 5))}, {"pool3": rng.normal(size=(90, 5))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, _ = setting_metrics(gen, ref, k=3, kid_subset_size=40)
    want = precision_recall(ref["pool3"], gen["pool3"], k=3)
    assert (metrics["precision"], metrics["recall"]) == (want["precision"], want["recall"])


def test_run_with_k_images_per_caption_writes_intervals_differences_and_diversity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path
) -> None:
    from glidebench.cli import main

    harness_env(monkeypatch, tiny_models_dir, tmp_path / "cache")
    out_k, out_1 = tmp_path / "k", tmp_path / "one"
    flags = ("--samples-per-prompt", "3", "--diversity-prompts", "4", "--bootstrap-resamples", "50")
    assert main(base_args(out_k, *flags)) == 0
    assert main(base_args(out_1, "--bootstrap-resamples", "50", "--samples-per-prompt", "1")) == 0
    run_k, run_1 = only_run_dir(out_k), only_run_dir(out_1)
    n = 8
    prompts = json.loads((run_k / "prompts.json").read_text())
    assert len(prompts) == n + 4 * 2
    assert [p["index"] for p in prompts] == list(range(16)) and prompts[8]["caption"] == prompts[0]["caption"]
    assert prompts[9]["caption"] == prompts[0]["caption"] and prompts[10]["caption"] == prompts[1]["caption"]
    assert all(p["seed"] == p["index"] for p in prompts)  # seed 0 + index
    assert len(list((run_k / "images" / "cfg-3").glob("*.png"))) == 16
    # the protocol's images (first image per caption) and their metrics do not change with K
    for sid in ("cfg-1", "cfg-3"):
        for i in range(n):
            a = (run_k / "images" / sid / f"{i:06d}.png").read_bytes()
            assert a == (run_1 / "images" / sid / f"{i:06d}.png").read_bytes()
    rows_k = list(csv.DictReader(open(run_k / "results.csv")))
    rows_1 = list(csv.DictReader(open(run_1 / "results.csv")))
    for a, b in zip(rows_k, rows_1):
        for c in ("fid", "kid_mean", "precision", "recall", "clip_score", "fid_lo", "fid_hi"):
            assert a[c] == b[c], c
        assert float(a["fid_lo"]) <= float(a["fid"]) * 1.5 and float(a["fid_lo"]) < float(a["fid_hi"])
        assert float(a["vendi_clip"]) >= 1.0 - 1e-9 and float(a["vendi_clip"]) <= 3.0 + 1e-9
        assert a["n_reference"] == "12" and "diversity_pool3_lo" in a
    diffs = list(csv.DictReader(open(run_k / "differences.csv")))
    assert {d["metric"] for d in diffs} >= {
        "fid",
        "kid_mean",
        "precision",
        "recall",
        "clip_score",
        "vendi_clip",
    }
    assert {(d["setting_a"], d["setting_b"]) for d in diffs} == {("cfg-1", "cfg-3"), ("cfg-1", "clip-2")}
    md = (run_k / "results.md").read_text()
    assert "Paired differences" in md and " [" in md and "vendi_clip" in md
    prov = json.loads((run_k / "provenance.json").read_text())
    assert prov["features"]["intervals"]["resamples"] == 50 if "features" in prov else True
    spec = json.loads((run_1 / "spec.json").read_text())
    assert "samples_per_prompt" not in spec and "diversity_prompts" not in spec
