"""CLIP score variants: the CLIPScore column (2.5 max(cos, 0)) against a direct computation on hand-built
embeddings, the backbone option, the count of truncated captions, and the fast offline decision (no hub retries)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from glidebench.clip_eval import ClipOffline, hub_reachable, parse_clip_score_model
from glidebench.metrics import clip_score


def test_clipscore_column_equals_a_direct_computation() -> None:
    angles = np.array([0.3, 1.2, 1.9, 2.8, 0.9])  # cos > 0 for the first two and the last, < 0 for the others
    img = np.stack([np.cos(0 * angles), np.sin(0 * angles)], axis=1) * np.array(
        [[3.0], [0.5], [1.0], [2.0], [7.0]]
    )
    txt = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 4.0
    cos = np.cos(angles)
    out = clip_score(img, txt)
    assert out["clip_score_2p5"] == pytest.approx(2.5 * np.where(cos > 0, cos, 0).sum() / 5, rel=1e-12)
    assert out["clip_score"] == pytest.approx(100 * cos.mean(), rel=1e-12)
    assert out["clip_score_clamped"] == pytest.approx(100 * np.where(cos > 0, cos, 0).mean(), rel=1e-12)
    assert out["clip_score_2p5"] == pytest.approx(out["clip_score_clamped"] / 40, rel=1e-12)


def test_results_rows_carry_the_clipscore_column() -> None:
    from glidebench.runner.results import setting_metrics

    rng = np.random.default_rng(0)
    gen, ref = {"pool3": rng.normal(size=(20, 6))}, {"pool3": rng.normal(size=(30, 6))}
    img, txt = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    metrics, _ = setting_metrics(gen, ref, clip_pair=(img, txt))
    assert metrics["clip_score_2p5"] == pytest.approx(clip_score(img, txt)["clip_score_2p5"])


def test_clip_score_model_option_is_checked_without_network() -> None:
    assert parse_clip_score_model("ViT-L-14:openai") == ("ViT-L-14", "openai")
    assert parse_clip_score_model("ViT-g-14:laion2b_s34b_b88k") == ("ViT-g-14", "laion2b_s34b_b88k")
    with pytest.raises(ValueError, match="write ARCH:PRETRAINED"):
        parse_clip_score_model("ViT-B-16")
    with pytest.raises(ValueError, match="no architecture 'ViT-Q-99'"):
        parse_clip_score_model("ViT-Q-99:openai")
    with pytest.raises(ValueError, match="no pretrained weights 'nope' for ViT-B-16"):
        parse_clip_score_model("ViT-B-16:nope")


def test_truncated_captions_are_counted() -> None:
    import open_clip

    from glidebench.features import ClipEmbedder

    tok = open_clip.get_tokenizer("ViT-B-16")
    emb = ClipEmbedder(torch.nn.Identity(), lambda x: x, tok, "t", "t")
    long = " ".join(["word"] * 80)
    exact = " ".join(["word"] * 75)  # 75 tokens + start + end = 77, the context: not truncated
    assert len(tok.encode(exact)) == 75
    assert emb.count_truncated(["a cat", long, exact, long + " more"]) == 2


@pytest.fixture
def empty_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return tmp_path / "hub"


def _load_eval_clip_timed():
    from glidebench.models import load_eval_clip
    from glidebench.models.plan import ModelPlan
    from glidebench.models.sources import OPENAI_CLIP_B16

    plan = ModelPlan("plugin", "x", {}, {}, False, 64, None)
    plan.add(OPENAI_CLIP_B16)
    t0 = time.monotonic()
    embedder, warning = load_eval_clip(plan, "cpu")
    return embedder, warning, time.monotonic() - t0


def test_offline_without_cached_weights_is_decided_at_once(empty_hub, capfd) -> None:
    import open_clip  # noqa: F401  (imported before timing: the decision is what is timed)

    if hub_reachable():
        pytest.skip("the hub is reachable here: this test needs the network unavailable")
    embedder, warning, seconds = _load_eval_clip_timed()
    assert embedder is None and seconds < 5.0
    assert warning.startswith("CLIP score skipped: could not load OpenAI CLIP ViT-B-16 (ClipOffline")
    assert "unreachable (no network)" in warning and "\n" not in warning
    captured = capfd.readouterr()
    assert "Retrying" not in captured.err + captured.out  # no hub retry chatter


def test_hf_hub_offline_is_respected_at_once(empty_hub, monkeypatch) -> None:
    from glidebench.features import ClipEmbedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(ClipOffline, match="not cached .* and HF_HUB_OFFLINE is set"):
        ClipEmbedder.from_open_clip("ViT-L-14", "openai")
    assert time.monotonic() - t0 < 5.0
