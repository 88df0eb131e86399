"""The metric stage at the paper's scale: memory that does not grow with N (batched text
embeddings, memory-mapped feature files, preallocated extraction), the symmetric FID trace term, the
reference set's k-NN radii computed once per run, and open_clip's random-init evaluator."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glidebench.features import (
    ClipEmbedder,
    GlideClipEmbedder,
    cached_features,
    extract_features,
    feature_cache_path,
    load_npz_mapped,
)
from glidebench.metrics.fid import frechet_distance, trace_sqrt_product
from glidebench.metrics.prc import knn_sq_radii, precision_recall
from glidebench.runner.results import setting_metrics

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CAPTIONS = [
    "a red cube", "two dogs on a beach at sunset", "an astronaut riding a horse", "a bowl of fruit",
    "a man holding an umbrella in the rain", "a train", "three people playing frisbee in a park",
]  # fmt: skip


def _images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


class _Extractor:
    """Deterministic per-image features: float32 'mean' [N, 3] and float64 'max' [N, 1]."""

    name, fingerprint = "mean/rgb", "mean-rgb:v1"

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = images.double()
        return {"mean": x.mean(dim=(2, 3)).float().numpy(), "max": x.amax(dim=(1, 2, 3))[:, None].numpy()}


# ------------------------------------------------------------------------------------------------ CLIP


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory) -> ClipEmbedder:
    """A tiny registered open_clip architecture, random-initialised (pretrained=None: nothing downloads)."""
    import open_clip

    cfg = tmp_path_factory.mktemp("clip") / "glidebench-scale-tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    return ClipEmbedder.from_open_clip("glidebench-scale-tiny-clip", pretrained=None)


def test_from_open_clip_random_init_has_a_weights_digest(random_clip):
    # open_clip's 0-d logit_scale used to make _state_dict_digest raise
    assert random_clip.model.logit_scale.ndim == 0
    assert random_clip.fingerprint.startswith("open_clip/glidebench-scale-tiny-clip:random-init:sha256=")
    torch.manual_seed(0)
    again = ClipEmbedder.from_open_clip("glidebench-scale-tiny-clip", pretrained=None)
    assert again.fingerprint == random_clip.fingerprint  # the digest names the weights
    torch.manual_seed(1)
    other = ClipEmbedder.from_open_clip("glidebench-scale-tiny-clip", pretrained=None)
    assert other.fingerprint != random_clip.fingerprint


def test_open_clip_text_embeddings_in_batches_equal_one_call(random_clip):
    calls: list[int] = []
    encode = random_clip.model.encode_text

    def spy(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(len(tokens))
        return encode(tokens)

    random_clip.model.encode_text = spy
    try:
        batched = random_clip.embed_texts(CAPTIONS, batch_size=3)
        assert calls == [3, 3, 1]  # never more than batch_size captions per call
        whole = random_clip.embed_texts(CAPTIONS, batch_size=len(CAPTIONS))
    finally:
        del random_clip.model.encode_text
    with torch.no_grad():
        direct = encode(random_clip.tokenizer(CAPTIONS)).numpy()
    assert batched.shape == (len(CAPTIONS), 16) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batched, direct, rtol=0, atol=1e-6)


def test_glide_clip_text_embeddings_in_batches_equal_one_call():
    from glide.clip import ClipConfig, create_clip_model

    cfg = ClipConfig(
        image_size=8, patch_size=4, n_embd=32, n_head_text=1, n_head_state_text=32, n_xf_blocks_text=1,
        n_head_image=1, n_head_state_image=32, n_xf_blocks_image=1, max_text_len=32,
    )  # fmt: skip
    model = create_clip_model(config=cfg, device="cpu", generator=torch.Generator().manual_seed(0)).eval()
    emb = GlideClipEmbedder(model, "tiny", "fp", torch.device("cpu"))
    batched = emb.embed_texts(CAPTIONS, batch_size=2)
    with torch.no_grad():
        whole = model.text_embeddings(CAPTIONS).numpy()
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        emb.embed_texts(CAPTIONS, batch_size=0)


# ------------------------------------------------------------------------------------------------ features


def test_cached_features_come_back_memory_mapped_and_equal(tmp_path):
    ex, imgs = _Extractor(), _images(9)
    want = ex(imgs)
    first = cached_features(
        ex, "set", lambda: extract_features(ex, imgs, batch_size=4, progress=False), tmp_path
    )
    again = cached_features(ex, "set", lambda: pytest.fail("recomputed a cached set"), tmp_path)
    for got in (first, again):
        assert set(got) == {"mean", "max"}
        for key, value in want.items():
            assert isinstance(got[key], np.memmap) and got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
    # copy-on-write: the arrays are writable in the process, the file is not changed
    again["mean"][0] = -1.0
    np.testing.assert_array_equal(cached_features(ex, "set", dict, tmp_path)["mean"], want["mean"])
    with np.load(feature_cache_path(ex, "set", tmp_path)) as data:  # still an ordinary .npz
        np.testing.assert_array_equal(data["mean"], want["mean"])


def test_a_cache_written_by_earlier_versions_is_still_read(tmp_path):
    ex = _Extractor()
    want = ex(_images(5))
    path = feature_cache_path(ex, "old", tmp_path)
    meta = {
        "__extractor_fingerprint__": np.array(ex.fingerprint),
        "__image_set_fingerprint__": np.array("old"),
    }
    with open(path, "wb") as f:  # exactly what cached_features wrote before (np.savez into the open file)
        np.savez(f, **want, **meta)
    got = cached_features(ex, "old", lambda: pytest.fail("recomputed a cached set"), tmp_path)
    for key, value in want.items():
        assert isinstance(got[key], np.memmap)
        np.testing.assert_array_equal(got[key], value)
    np.savez_compressed(path, **want, **meta)  # a compressed member cannot be mapped: it is read
    got = cached_features(ex, "old", lambda: pytest.fail("recomputed a cached set"), tmp_path)
    assert not isinstance(got["mean"], np.memmap)
    np.testing.assert_array_equal(got["mean"], want["mean"])
    path.rename(feature_cache_path(ex, "other", tmp_path))  # a file under another set's name is refused
    with pytest.raises(RuntimeError, match="delete the file"):
        cached_features(ex, "other", lambda: want, tmp_path)
    np.savez(path, **want)  # no fingerprints inside
    with pytest.raises(RuntimeError, match="no fingerprints"):
        cached_features(ex, "old", lambda: want, tmp_path)


def test_load_npz_mapped_equals_np_load_for_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "c": rng.normal(size=(7, 5)).astype(np.float32),
        "f": np.asfortranarray(rng.normal(size=(4, 6))),
        "i": np.arange(12, dtype=np.int64).reshape(3, 4),
        "empty": np.zeros((0, 3), np.float32),
        "text": np.array("a fingerprint"),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    got = load_npz_mapped(tmp_path / "a.npz")
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype
    assert all(isinstance(got[k], np.memmap) for k in ("c", "f", "i"))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(zipfile.BadZipFile):
        load_npz_mapped(tmp_path / "bad.npz")


@pytest.mark.parametrize("given", [9, 6, 12])  # exact, more images than announced, fewer
def test_extract_features_writes_into_a_preallocated_map(tmp_path, given):
    ex, imgs = _Extractor(), _images(9)
    want = ex(imgs)
    out = extract_features(ex, iter(imgs.split(4)), progress=False, total=given, memmap_dir=tmp_path)
    for key, value in want.items():
        np.testing.assert_array_equal(out[key], value)
        assert out[key].dtype == value.dtype
    if given >= 9:
        assert isinstance(out["mean"], np.memmap)
    assert not list(tmp_path.iterdir())  # the temporary file was unlinked at once
    in_ram = extract_features(ex, imgs, batch_size=4, progress=False)  # a tensor: total is known
    np.testing.assert_array_equal(in_ram["mean"], want["mean"])


# ------------------------------------------------------------------------------------------------ FID


def _fid_torch_fidelity(m1, s1, m2, s2) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, verbose=False)[
        KEY_METRIC_FID
    ]


def _sample_stats(rng, n: int, d: int, shift: float):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + shift
    mu = x.mean(0)
    a = (x - mu) / np.sqrt(n - 1)  # covariance a^T a
    return mu, a.T @ a, a


@pytest.mark.parametrize("d,n1,n2", [(64, 500, 700), (256, 2000, 3000)])
def test_symmetric_fid_equals_torch_fidelity_full_rank(d, n1, n2):
    rng = np.random.default_rng(d)
    m1, s1, _ = _sample_stats(rng, n1, d, 0.0)
    m2, s2, _ = _sample_stats(rng, n2, d, 0.1)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(_fid_torch_fidelity(m1, s1, m2, s2), rel=1e-10)


@pytest.mark.parametrize("d,n1,n2", [(64, 32, 600), (64, 600, 32), (64, 32, 40), (256, 100, 2000)])
def test_symmetric_fid_rank_deficient_is_exact(d, n1, n2):
    """n < d: exact against the nuclear-norm form Tr (S1 S2)^{1/2} = ||A1 A2^T||_* (S = A^T A); the plain
    eigenvalue forms, torch-fidelity's included, carry ~1e-8 relative of rounding from the d - n zero
    eigenvalues (sqrt(eps) each), which trace_sqrt_product floors to 0."""
    rng = np.random.default_rng(n1 + n2)
    m1, s1, a1 = _sample_stats(rng, n1, d, 0.0)
    m2, s2, a2 = _sample_stats(rng, n2, d, 0.1)
    exact_tr = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    exact = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * exact_tr)
    got = frechet_distance(m1, s1, m2, s2)
    assert got == pytest.approx(exact, rel=1e-10)
    assert got == pytest.approx(_fid_torch_fidelity(m1, s1, m2, s2), rel=1e-6)


def test_trace_sqrt_product_is_batched_over_every_path():
    rng = np.random.default_rng(5)
    mats = []
    for n1, n2 in [(300, 400), (10, 400), (400, 10), (10, 12)]:  # S1 factors, S2 factors, neither
        _, s1, a1 = _sample_stats(rng, n1, 32, 0.0)
        _, s2, a2 = _sample_stats(rng, n2, 32, 0.0)
        mats.append((s1, s2, np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()))
    s1 = torch.from_numpy(np.stack([m[0] for m in mats]))
    s2 = torch.from_numpy(np.stack([m[1] for m in mats]))
    got = trace_sqrt_product(s1, s2).numpy()
    np.testing.assert_allclose(got, [m[2] for m in mats], rtol=1e-12)
    for i in range(len(mats)):
        assert trace_sqrt_product(s1[i], s2[i]).item() == pytest.approx(got[i], rel=1e-13)
    with pytest.raises(ValueError, match="one shape"):
        trace_sqrt_product(s1, s2[:, :3, :3])


# ------------------------------------------------------------------------------------------------ P/R


def test_reference_radii_computed_once_give_identical_metrics(monkeypatch):
    import glidebench.metrics.prc as prc

    rng = np.random.default_rng(7)
    ref = {"pool3": rng.normal(size=(150, 16)).astype(np.float32)}
    gens = [{"pool3": rng.normal(loc=0.1 * i, size=(120, 16)).astype(np.float32)} for i in range(3)]
    plain = [setting_metrics(g, ref, k=3, kid_subset_size=50, seed=1)[0] for g in gens]
    calls = {"n": 0}
    real_knn = prc._knn_sq_radii

    def counting(x, k, block_size):
        calls["n"] += len(x) == 150  # the reference set's radii
        return real_knn(x, k, block_size)

    monkeypatch.setattr(prc, "_knn_sq_radii", counting)
    cache: dict = {}
    cached = [
        setting_metrics(g, ref, k=3, kid_subset_size=50, seed=1, reference_cache=cache)[0] for g in gens
    ]
    assert calls["n"] == 1 and len(cache) == 1
    assert cached == plain  # the same numbers, to the bit
    other = {"pool3": ref["pool3"] + 1.0}  # another reference set in the same cache: recomputed, not reused
    assert (
        setting_metrics(gens[0], other, k=3, kid_subset_size=50, seed=1, reference_cache=cache)[0]
        == (setting_metrics(gens[0], other, k=3, kid_subset_size=50, seed=1)[0])
    )
    assert len(cache) == 2


def test_precision_recall_with_given_reference_radii():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(90, 8)), rng.normal(size=(70, 8))
    radii = knn_sq_radii(real, k=3, block_size=16)
    assert precision_recall(real, fake, k=3, block_size=16, real_sq_radii=radii) == precision_recall(
        real, fake, k=3, block_size=16
    )
    with pytest.raises(ValueError, match="one squared radius per real sample"):
        precision_recall(real, fake, k=3, real_sq_radii=radii[:10])


def test_feature_files_of_the_harness_keep_their_names(tmp_path):
    """Provenance records feature file names: the format change kept them (``<extractor>-<key>.npz``)."""
    ex = _Extractor()
    path = feature_cache_path(ex, "set", tmp_path)
    assert path.suffix == ".npz" and path.name.startswith("mean_rgb-")
    cached_features(ex, "set", lambda: ex(_images(2)), tmp_path)
    assert [p.name for p in Path(tmp_path).iterdir()] == [path.name]
