"""Reference statistics files: round trip, FID from statistics equal to FID from features, a file written by an
independent numpy computation, protocol checks, bad files, and a run that reads no reference image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from glidebench.cli import main
from glidebench.metrics import fid_from_features
from glidebench.refstats import (
    NOT_MEASURED_NOTE,
    ReferenceStatsError,
    export_stats,
    load_stats,
    stats_setting_metrics,
)

from .harness import PixelFeatures, base_args, install_prepare_extractor, only_run_dir
from .test_coco import make_coco


def _features(seed: int, n: int = 300, d: int = 16, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix + shift).astype(np.float32)


def _fid_closed_form(mu1, s1, mu2, s2) -> float:
    """Heusel et al.'s formula with scipy's matrix square root (pytorch-fid's way, not torch-fidelity's)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_round_trip_and_fid_from_stats_equals_fid_from_features(tmp_path: Path) -> None:
    real, fake = _features(0), _features(1, shift=0.3)
    npz, side = export_stats(tmp_path / "ref.npz", real, {"resolution": 64, "fid_resize": "tf-bilinear"})
    with np.load(npz) as data:
        assert sorted(data.files) == ["mu", "sigma"]
        assert data["mu"].dtype == np.float64 and data["sigma"].dtype == np.float64
        np.testing.assert_allclose(data["mu"], real.astype(np.float64).mean(0), rtol=1e-12)
    stats = load_stats(npz)
    assert (
        stats.count == 300
        and stats.sidecar["feature_dim"] == 16
        and json.loads(side.read_text())["count"] == 300
    )
    metrics, notes = stats_setting_metrics({"pool3": fake}, stats)
    assert metrics["fid"] == pytest.approx(fid_from_features(fake, real), rel=1e-9)
    assert np.isnan(metrics["kid_mean"]) and np.isnan(metrics["precision"]) and np.isnan(metrics["recall"])
    assert NOT_MEASURED_NOTE in notes


def test_stats_from_an_independent_numpy_computation_give_the_same_fid(tmp_path: Path) -> None:
    real, fake = _features(2).astype(np.float64), _features(3, shift=-0.2).astype(np.float64)
    # written as pytorch-fid does (np.mean / np.cov(rowvar=False) in its own code), here by hand: no sidecar
    mu = real.sum(axis=0) / len(real)
    centred = real - mu
    sigma = centred.T @ centred / (len(real) - 1)
    np.savez(tmp_path / "theirs.npz", mu=mu, sigma=sigma)
    with pytest.raises(ReferenceStatsError, match="no sidecar.*--reference-protocol"):
        load_stats(tmp_path / "theirs.npz")  # what made it must be declared
    stats = load_stats(tmp_path / "theirs.npz", "tf-bilinear:64")
    assert stats.sidecar is None and stats.declared == {"fid_resize": "tf-bilinear", "resolution": 64}
    metrics, notes = stats_setting_metrics({"pool3": fake}, stats)
    mu_f, s_f = fake.mean(0), np.cov(fake, rowvar=False)
    assert metrics["fid"] == pytest.approx(_fid_closed_form(mu_f, s_f, mu, sigma), rel=1e-6)
    assert metrics["fid"] == pytest.approx(fid_from_features(fake, real), rel=1e-9)
    assert NOT_MEASURED_NOTE in notes


def test_protocol_mismatch_is_refused_naming_what_differs(tmp_path: Path) -> None:
    side = {"resolution": 64, "fid_resize": "tf-bilinear", "inception_source": "fid-helper"}
    export_stats(tmp_path / "ref.npz", _features(0), side)
    stats = load_stats(tmp_path / "ref.npz")
    stats.check_protocol(64, "tf-bilinear", "fid-helper")  # the same protocol passes
    with pytest.raises(ReferenceStatsError, match=r"resolution 64 px \(the run: 256 px"):
        stats.check_protocol(256, "tf-bilinear", "fid-helper")
    with pytest.raises(ReferenceStatsError, match=r"FID resize 'tf-bilinear' \(the run: 'clean'"):
        stats.check_protocol(64, "clean", "fid-helper")
    with pytest.raises(
        ReferenceStatsError, match=r"Inception source 'fid-helper' \(the run: 'torch-fidelity'"
    ):
        stats.check_protocol(64, "tf-bilinear", "torch-fidelity")


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ReferenceStatsError, match="do not exist.*--export-stats"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "nosigma.npz", mu=np.zeros(4))
    with pytest.raises(ReferenceStatsError, match="no sigma array"):
        load_stats(tmp_path / "nosigma.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(4), sigma=np.eye(3))
    with pytest.raises(ReferenceStatsError, match=r"mu has shape \(4,\) and sigma \(3, 3\)"):
        load_stats(tmp_path / "shape.npz")
    np.savez(tmp_path / "asym.npz", mu=np.zeros(2), sigma=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ReferenceStatsError, match="not symmetric"):
        load_stats(tmp_path / "asym.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ReferenceStatsError, match="not a readable .npz"):
        load_stats(tmp_path / "junk.npz")
    export_stats(tmp_path / "ok.npz", _features(0), {})
    (tmp_path / "ok.json").write_text(json.dumps({"feature_dim": 99}))
    with pytest.raises(ReferenceStatsError, match="do not belong together"):
        load_stats(tmp_path / "ok.npz")


def export_stats_cli(root: Path, resolution: int, stats_file: Path) -> int:
    """`glidebench prepare coco --export-stats` of the COCO tree at ``root``."""
    args = ["prepare", "coco", "--coco-root", str(root), "--resolution", str(resolution)]
    return main([*args, "--export-stats", str(stats_file)])


@pytest.fixture
def env(env, monkeypatch):
    install_prepare_extractor(monkeypatch)
    return env


def test_prepare_exports_and_a_run_uses_them_without_reading_a_reference_image(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    stats_file = env / "coco-val2014-8px.npz"
    assert export_stats_cli(root, 8, stats_file) == 0
    side = json.loads(stats_file.with_suffix(".json").read_text())
    assert side["split"] == "val2014" and side["resolution"] == 8 and side["count"] == 12
    assert side["inception_fingerprint"] == PixelFeatures.fingerprint and side["fid_resize"] == "tf-bilinear"
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
    # the same run against the reference images (all 12, as the export)
    assert main(base_args(env / "images_run", *common, "--reference-size", "0")) == 0
    from_images = json.loads((only_run_dir(env / "images_run") / "results.json").read_text())[0]
    shutil.rmtree(root / "val2014")  # no reference image can be read now
    assert main(base_args(env / "stats_run", *common, "--reference-stats", str(stats_file))) == 0
    run = only_run_dir(env / "stats_run")
    row = json.loads((run / "results.json").read_text())[0]
    assert row["fid"] == pytest.approx(from_images["fid"], rel=1e-9)
    assert row["kid_mean"] is None and row["precision"] is None and row["recall"] is None
    assert "KID and precision/recall not measured" in row["warnings"] and row["n_reference"] == 12
    spec = json.loads((run / "spec.json").read_text())
    stats = load_stats(stats_file)
    assert spec["reference_stats"] == stats.sha256 and "reference_stats" not in json.loads(
        (only_run_dir(env / "images_run") / "spec.json").read_text()
    )
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["feature_extractor"]["fid_reference"]["reference_stats_sha256"] == stats.sha256
    assert prov["feature_extractor"]["fid_reference"]["reference_stats_sidecar"]["count"] == 12


def test_run_refuses_stats_of_another_resolution_before_generating(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    stats_file = env / "ref.npz"
    assert export_stats_cli(root, 16, stats_file) == 0
    out = env / "runs"
    code = main(base_args(out, "--model", "embedded", "--cfg", "2", "--clip", "", "--resolution", "8",
                          "--coco-root", str(root), "--reference-stats", str(stats_file)))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "resolution 16 px (the run: 8 px" in err
    assert not out.exists() or not list(out.rglob("*.png"))
