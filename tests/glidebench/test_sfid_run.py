"""`run coco-fid --sfid`: the run's Inception gives sFID's spatial features, results get ``sfid`` with its interval
(checked against an independent numpy/scipy recomputation from the cached feature files), results.md shows it,
and a run without the option keeps its spec, its fingerprint and its numbers. Against statistics: sFID comes
with an ADM batch's ``mu_s`` / ``sigma_s`` and is refused without them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg

from glidebench.cli import main
from glidebench.runner.options import RunOptions, spatial_features
from glidebench.spec import RunSpec

from .harness import base_args, metric_rows, only_run_dir

SIZE = (
    "--limit",
    "16",
    "--reference-size",
    "24",
)  # more images than spatial dimensions (12): full-rank covariances


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of two feature sets, written out with numpy and scipy's sqrtm."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def test_sfid_run_reports_sfid_of_its_spatial_features(env: Path, capsys) -> None:
    assert main(base_args(env / "sfid", *SIZE, "--sfid")) == 0
    run = only_run_dir(env / "sfid")
    spec = json.loads((run / "spec.json").read_text())
    assert spec["sfid"] is True
    rows = json.loads((run / "results.json").read_text())
    files = json.loads((run / "provenance.json").read_text())["feature_extractor"]["files"]
    ref = np.load(env / "cache" / "features" / files["reference"])
    assert ref["spatial"].shape == (24, 12)
    for row in rows:
        gen = np.load(run / "features" / files["settings"][row["setting_id"]])
        assert gen["spatial"].shape == (16, 12)
        assert row["sfid"] == pytest.approx(numpy_fid(gen["spatial"], ref["spatial"]), rel=1e-6)
        assert row["fid"] == pytest.approx(numpy_fid(gen["pool3"], ref["pool3"]), rel=1e-6)  # pool3 as before
        assert math.isfinite(row["sfid_lo"]) and row["sfid_lo"] <= row["sfid"] <= row["sfid_hi"]
        assert row["sfid_lo"] < row["sfid_hi"]
    md = (run / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| setting_id"))
    assert "| fid | sfid | kid_mean |" in header
    assert f"{rows[0]['sfid']:.2f} [{rows[0]['sfid_lo']:.2f}, {rows[0]['sfid_hi']:.2f}]" in md
    differences = json.loads((run / "differences.json").read_text())
    assert any(d["metric"] == "sfid" for d in differences)  # paired differences of sFID between settings
    assert "sFID" in capsys.readouterr().out

    # the same run without --sfid: no sfid in its spec, the fingerprint it had before, the same other numbers
    assert main(base_args(env / "plain", *SIZE)) == 0
    plain = only_run_dir(env / "plain")
    plain_spec = json.loads((plain / "spec.json").read_text())
    assert "sfid" not in plain_spec
    with_sfid = RunSpec.from_dict(spec)
    assert with_sfid.replace(sfid=False).fingerprint == plain_spec["fingerprint"] != spec["fingerprint"]
    assert with_sfid.replace(sfid=False).canonical_json() == RunSpec.from_dict(plain_spec).canonical_json()
    assert metric_rows(plain) == metric_rows(run)
    plain_rows = json.loads((plain / "results.json").read_text())
    assert not any(k.startswith("sfid") for r in plain_rows for k in r)
    assert "sfid" not in (plain / "results.md").read_text()


def test_sfid_needs_spatial_statistics_and_an_adm_batch_turns_it_on() -> None:
    notes: list[str] = []
    assert spatial_features(RunOptions(sfid=True), None, notes) and not notes  # reference images: measured
    assert not spatial_features(RunOptions(), None, notes) and not notes
    adm = SimpleNamespace(path="adm.npz", mu_s=np.zeros(3), sigma_s=np.eye(3))
    assert spatial_features(RunOptions(), adm, notes) and "sFID measured too" in notes[0]
    assert spatial_features(RunOptions(sfid=True), adm, [])
    plain = SimpleNamespace(path="stats.npz", mu_s=None, sigma_s=None)
    assert not spatial_features(RunOptions(), plain, [])
    with pytest.raises(ValueError, match=r"^--sfid: stats.npz has no mu_s / sigma_s .*leave out --sfid$"):
        spatial_features(RunOptions(sfid=True), plain, [])


def test_sfid_with_statistics_without_mu_s_is_refused_in_one_line(env: Path, capsys) -> None:
    stats = env / "stats.npz"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 48))
    np.savez(stats, mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    args = base_args(env / "runs", "--reference-stats", str(stats), "--reference-protocol", "tf-bilinear:8")
    assert main([*args, "--sfid", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("glidebench: error: --sfid:") and "mu_s / sigma_s" in err and "\n" not in err
    assert main([*args, "--dry-run"]) == 0  # without --sfid the same statistics are fine


def test_sfid_is_in_the_spec_only_when_on() -> None:
    from .test_spec import make_spec

    plain = make_spec()
    assert "sfid" not in plain.to_dict() and make_spec(sfid=False).fingerprint == plain.fingerprint
    on = make_spec(sfid=True)
    assert on.to_dict()["sfid"] is True and on.fingerprint != plain.fingerprint
    assert on.run_dir("runs") != plain.run_dir("runs")
    assert RunSpec.from_dict(on.record()) == on


def test_real_inception_sfid_run(monkeypatch, tmp_path: Path, tiny_models_dir: Path) -> None:
    """The real offline Inception (fid-helper) with --sfid: 2023-d spatial features in the run's feature files,
    equal to a fresh extraction of the run's images, and sfid computed from them."""
    import torch

    from glidebench.features import InceptionExtractor
    from glidebench.metrics.sfid import sfid_from_features
    from glidebench.store import ImageStore

    monkeypatch.setenv("GLIDEBENCH_MODELS", str(tiny_models_dir))
    monkeypatch.setenv("GLIDEBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    args = ("--limit", "4", "--cfg", "2", "--clip", "", "--reference-size", "6", "--inception", "fid-helper")
    assert main(base_args(out, *args, "--sfid")) == 0
    run = only_run_dir(out)
    row = json.loads((run / "results.json").read_text())[0]
    files = json.loads((run / "provenance.json").read_text())["feature_extractor"]["files"]
    gen = np.load(run / "features" / files["settings"]["cfg-2"])["spatial"]
    ref = np.load(tmp_path / "cache" / "features" / files["reference"])["spatial"]
    assert gen.shape == (4, 2023) and ref.shape == (6, 2023)
    images = torch.cat(list(ImageStore(run / "images" / "cfg-2").batches(list(range(4)))))
    fresh = InceptionExtractor("fid-helper", spatial=True)(images)["spatial"]
    np.testing.assert_allclose(gen, fresh, rtol=1e-5, atol=1e-5)
    assert row["sfid"] == pytest.approx(sfid_from_features(gen, ref), rel=1e-9)  # 4 and 6 images: singular
