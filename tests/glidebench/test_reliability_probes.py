"""Hostile inputs, each held by a test (docs/reliability.md): run directories a generator's name cannot move,
a report that never deletes or overwrites what it did not write, FID refused on a non-PSD sigma, 16-bit
images scaled by their real range, and one-line errors for truncated or mistyped statistics, caches and
report inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glidebench.cli import main
from glidebench.refstats import ReferenceStatsError, export_stats, load_stats, stats_setting_metrics
from glidebench.report import render_report

from .fixtures_report import write_run_dir
from .test_spec import make_spec

TOY = "tests.glidebench.toy_generators:make"


# --- 1. run directories: a name cannot move them -----------------------------------------------------------


def _safe_name(name: str) -> bool:
    return (
        "/" not in name
        and "\\" not in name
        and ".." not in name
        and not name.startswith(".")
        and all(c.isprintable() and ord(c) < 128 for c in name)
        and len(name) <= 100
    )


@pytest.mark.parametrize(
    "label",
    [
        "/abs/escape",
        "../x",
        "../../x",
        "a/b",
        "a\\b",
        "..",
        ".hidden",
        "tab\there\n",
        "Größe-模型-é",
        "n" * 300,
        "",
    ],
)
def test_run_name_is_a_bounded_slug_of_any_label(label: str, tmp_path: Path) -> None:
    spec = make_spec(model_label=label)
    name = spec.run_name
    assert _safe_name(name), name
    assert name.endswith(spec.fingerprint[:12])
    assert spec.run_dir(tmp_path).parent == tmp_path / "coco-fid"
    assert spec.record()["model_label"] == label  # the full name stays in spec.json


@pytest.mark.parametrize(
    "label", ["embedded", "embedded-short", "embedded-random-init", "toy16", "images:cfg-3"]
)
def test_ordinary_labels_keep_their_run_directory_name(label: str) -> None:
    spec = make_spec(model_label=label)
    assert spec.run_name == f"{label}-embedded-32px-{spec.fingerprint[:12]}"  # existing runs resume


def test_ensure_under_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    from glidebench.store import PathEscapeError, ensure_under

    root = tmp_path / "out"
    assert ensure_under(root, root / "a" / "b.png") == (root / "a" / "b.png").resolve()
    for bad in (tmp_path / "elsewhere", root / ".." / "x", Path("/etc/passwd"), root):
        with pytest.raises(PathEscapeError, match="outside"):
            ensure_under(root, bad)
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathEscapeError, match="outside"):
        ensure_under(root, root / "link" / "x.png")


def _all_files(top: Path) -> set[Path]:
    return {p for p in top.rglob("*")}


def test_no_run_writes_outside_out_whatever_the_generators_name(env: Path) -> None:
    names = [str(env / "abs_escape"), "../../x", "../x", "a/b", "Größe 模型 ☃", "n" * 300]
    before = _all_files(env)
    for i, name in enumerate(names):
        out = env / f"runs{i}"
        args = [
            "run", "coco-fid", "--generator", TOY, "--generator-args", f"size=8,name={name}", "--limit", "4",
            "--cfg", "2", "--batch-size", "4", "--reference-size", "6", "--out", str(out), "--no-report", "--quiet",
        ]  # fmt: skip
        assert main(args) == 0, name
        runs = [p for p in (out / "coco-fid").iterdir()]
        assert len(runs) == 1 and _safe_name(runs[0].name), runs
        spec = json.loads((runs[0] / "spec.json").read_text(encoding="utf-8"))
        assert spec["model_label"] == name  # the full name is kept
        assert (runs[0] / "results.csv").is_file()
    new = _all_files(env) - before
    outs = [env / f"runs{i}" for i in range(len(names))]
    stray = [p for p in new if not any(p == o or o in p.parents for o in outs) and "cache" not in p.parts]
    assert stray == [], stray
    assert not (env / "abs_escape").exists() and not (env.parent / "x").exists()


# --- 2. report --out: never deletes or overwrites what it did not write -------------------------------------


def test_report_refuses_a_foreign_folder_and_keeps_the_users_files(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    out = tmp_path / "mine"
    out.mkdir()
    user = {
        "grid-holiday.png": b"my grid",
        "fig6-draft.png": b"my fig",
        "inpaint1.png": b"x",
        "results.csv": b"a,b",
    }
    for k, v in user.items():
        (out / k).write_bytes(v)
    with pytest.raises(ValueError, match="not written by a glidebench report.*--force"):
        render_report([run], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == user  # nothing touched
    # --force: the report is written, and a later render still never deletes the user's files
    index = render_report([run], out, force=True)
    assert index.is_file()
    manifest = json.loads((out / ".glidebench-report.json").read_text())
    assert "index.html" in manifest["files"] and "grid-holiday.png" not in manifest["files"]
    for k in ("grid-holiday.png", "fig6-draft.png", "inpaint1.png"):
        assert (out / k).read_bytes() == user[k]


def test_report_rerenders_its_own_folder_and_drops_only_its_own_stale_files(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    out = tmp_path / "out"
    render_report([run], out)
    manifest = json.loads((out / ".glidebench-report.json").read_text())
    (out / "grid-stale.png").write_bytes(b"ours, from an older render")
    manifest["files"].append("grid-stale.png")
    manifest["files"].append("../outside.txt")  # a crafted manifest cannot delete outside the folder
    (tmp_path / "outside.txt").write_text("keep")
    (out / ".glidebench-report.json").write_text(json.dumps(manifest))
    render_report([run], out)
    assert not (out / "grid-stale.png").exists() and (tmp_path / "outside.txt").read_text() == "keep"
    (out / "notes.txt").write_text("the user's own")
    with pytest.raises(ValueError, match="notes.txt"):
        render_report([run], out)
    assert (out / "notes.txt").read_text() == "the user's own"


def test_report_cli_refuses_a_foreign_folder_in_one_line(tmp_path: Path, capsys) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "grid-a.png").write_bytes(b"mine")
    assert main(["report", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glidebench: error:") and str(out) in err[0]
    assert (out / "grid-a.png").read_bytes() == b"mine"


def test_report_refuses_a_setting_id_that_leaves_the_run(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    outside = tmp_path / "x"
    outside.mkdir()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(outside / "000000.png")
    df = pd.read_csv(run / "results.csv")
    df.loc[0, "setting_id"] = "../../x"
    df.to_csv(run / "results.csv", index=False)
    with pytest.raises(ValueError, match=r"setting_id '\.\./\.\./x'"):
        render_report([run], tmp_path / "out")


# --- 3. FID from a sigma that is not symmetric PSD ----------------------------------------------------------


def test_non_psd_reference_sigma_is_refused_naming_the_file(tmp_path: Path) -> None:
    from glidebench.metrics.fid import CovarianceError, check_covariance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 8))
    sigma = a @ a.T - 50.0 * np.eye(8)  # symmetric, strongly negative eigenvalues
    path = tmp_path / "ref.npz"
    np.savez(path, mu=np.zeros(8), sigma=sigma)
    with pytest.raises(ReferenceStatsError, match=r"ref\.npz.*positive semi-definite"):
        load_stats(path)
    check_covariance(a @ a.T, "ok")  # PSD passes
    check_covariance(np.zeros((3, 3)), "zero")  # the zero matrix is PSD
    with pytest.raises(CovarianceError, match="symmetric"):
        check_covariance(a, "asym")


def test_a_negative_fid_is_never_returned(tmp_path: Path, monkeypatch) -> None:
    import glidebench.refstats as R

    feats = np.random.default_rng(0).normal(size=(40, 4))
    path, _ = export_stats(tmp_path / "ref.npz", feats, {"resolution": 8})
    stats = load_stats(path)
    monkeypatch.setattr(R, "frechet_distance", lambda *a: -19982.02)
    with pytest.raises(ReferenceStatsError, match="negative FID"):
        stats_setting_metrics({"pool3": feats}, stats)


# --- 4. images of any bit depth and mode --------------------------------------------------------------------


def _grey16(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint16)).save(path)  # I;16 PNG
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    return path


def test_16_bit_grey_is_scaled_by_its_range(tmp_path: Path) -> None:
    from glidebench.images_io import ImageModeError, to_rgb_array

    values = np.array([[0, 257, 32896, 65535]] * 4, dtype=np.uint16)
    with Image.open(_grey16(tmp_path / "g.png", values)) as im:
        got = to_rgb_array(im)
    assert got.dtype == np.uint8 and got.shape == (4, 4, 3)
    assert got[0, :, 0].tolist() == [0, 1, 128, 255] and (got[..., 0] == got[..., 2]).all()
    for mode, arr in (("F", np.full((2, 2), 0.5, np.float32)), ("I", np.full((2, 2), -5, np.int32))):
        with pytest.raises(ImageModeError, match="range"):
            to_rgb_array(Image.fromarray(arr, mode))
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 128))
    assert to_rgb_array(rgba)[0, 0].tolist() == [10, 20, 30]


def test_16_bit_coco_reference_images_are_not_white(tmp_path: Path) -> None:
    from glidebench.data.coco import load_reference_image

    path = _grey16(tmp_path / "ref.png", np.full((8, 8), 32896))
    assert (load_reference_image(path, 8) == 128).all()


def test_16_bit_png_read_back_from_the_store(tmp_path: Path) -> None:
    from glidebench.store import ImageStore

    store = ImageStore(tmp_path)
    _grey16(store.path(0), np.full((4, 4), 65535 // 2))
    assert (store.read(0) == 127).all()


def test_16_bit_folder_images_are_not_white(tmp_path: Path) -> None:
    from glidebench.generators.folder import read_rgb

    arr, _ = read_rgb(_grey16(tmp_path / "000000.png", np.full((4, 4), 32896)))
    assert (arr == 128).all()


# --- 5. tracebacks that should be one-line errors -----------------------------------------------------------


def _good_stats(tmp_path: Path) -> Path:
    path, _ = export_stats(
        tmp_path / "ref.npz", np.random.default_rng(0).normal(size=(40, 4)), {"resolution": 8}
    )
    return path


def test_truncated_or_misnamed_statistics_are_one_line_errors(tmp_path: Path) -> None:
    path = _good_stats(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReferenceStatsError, match=r"ref\.npz.*not a readable \.npz"):
        load_stats(path)
    npy = tmp_path / "plain.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(4))
    with pytest.raises(ReferenceStatsError, match=r"plain\.npz.*\.npy"):
        load_stats(npy)


@pytest.mark.parametrize(
    "side",
    [{"feature_dim": [4]}, {"resolution": {}}, {"fid_resize": 3}, {"count": "many"}, {"inception_source": 1}],
)
def test_a_sidecar_with_a_wrong_type_is_a_one_line_error(tmp_path: Path, side: dict) -> None:
    path = _good_stats(tmp_path)
    record = json.loads(path.with_suffix(".json").read_text()) | side
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ReferenceStatsError, match=r"ref\.json"):
        stats = load_stats(path)
        stats.check_protocol(8, "tf-bilinear", "torch-fidelity")
        assert stats.count >= 0


def test_read_checked_names_a_truncated_cache(tmp_path: Path) -> None:
    from glidebench.features import load_npz_mapped
    from glidebench.store import CorruptFileError, read_checked

    path = tmp_path / "feats.npz"
    np.savez(path, pool3=np.zeros((4, 4)))
    assert read_checked(path, load_npz_mapped, "feature cache")["pool3"].shape == (4, 4)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match=r"feature cache .*feats\.npz.*delete"):
        read_checked(path, load_npz_mapped, "feature cache")
    assert issubclass(CorruptFileError, ValueError)  # the CLI prints it in one line


def test_a_truncated_feature_cache_is_a_one_line_error(tmp_path: Path) -> None:
    from glidebench.features import cached_features

    class Ex:
        name, fingerprint = "toy", "fp"

    feats = {"pool3": np.zeros((4, 4))}
    cached_features(Ex(), "set", lambda: feats, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="delete"):
        cached_features(Ex(), "set", lambda: feats, tmp_path)


def test_malformed_differences_csv_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    (run / "differences.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differences.csv" in err[0]


@pytest.mark.parametrize("cut", ["header", "mid-row", "empty"])
def test_truncated_results_csv_fails_in_one_line(tmp_path: Path, capsys, cut: str) -> None:
    run = write_run_dir(tmp_path, "r", throughput=False)
    text = (run / "results.csv").read_text()
    lines = text.splitlines(keepends=True)
    cut_text = {"header": lines[0], "mid-row": "".join(lines[:2]) + lines[2][:25], "empty": ""}[cut]
    (run / "results.csv").write_text(cut_text)
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.csv" in err[0], err
