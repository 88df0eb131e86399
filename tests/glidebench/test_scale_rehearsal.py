"""The scale rehearsal (benchmarks/scale_rehearsal.py) at a small size: the installed console script runs
coco-fid end to end with the pattern plug-in, a run killed with SIGKILL during generation resumes to the same
images and results, and the summary names every stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_pattern_images_depend_only_on_caption_seed_and_scale() -> None:
    from rehearsal_plugin import make, pattern_image

    from glidebench.generators import as_uint8_images

    a = pattern_image("a red circle", 7, 1.0, 32)
    assert a.shape == (32, 32, 3) and a.dtype.name == "uint8"
    assert (a == pattern_image("a red circle", 7, 1.0, 32)).all()
    assert (a != pattern_image("a red circle", 8, 1.0, 32)).any()
    assert (a != pattern_image("a red circle", 7, 3.0, 32)).any()

    class Setting:
        scale = 1.0

    gen = make(size=32)
    batch = gen.generate(["x", "a red circle"], [3, 7], Setting(), None)
    images, resized = as_uint8_images(batch, 2, 32, "test")
    assert not resized and (images[1] == a).all()


@pytest.mark.slow
def test_rehearsal_small_holds_and_resumes(tmp_path: Path) -> None:
    """64 images (two chunks of 50) with the real Inception: ~1.5 min on the idle 2-core machine."""
    import scale_rehearsal

    if (
        not (Path(sys.executable).parent / "glidebench").exists()
        and not (ROOT / ".venv/bin/glidebench").exists()
    ):
        pytest.skip("no installed glidebench console script")
    figures = tmp_path / "figures.json"
    rc = scale_rehearsal.main(
        ["--images", "64", "--bootstrap-resamples", "50", "--kill-delay", "0.05",
         "--workdir", str(tmp_path / "work"), "--json", str(figures)]
    )  # fmt: skip
    fig = json.loads(figures.read_text())
    assert fig["checks"] and all(fig["checks"].values()), (fig["checks"], fig.get("tail"))
    assert "resumed results equal the uninterrupted run's" in fig["checks"]
    assert rc == 0
    assert fig["resume_killed"] and 0 < fig["resume_images_at_kill"] < 64
    assert fig["resume_differing_images"] == 0
    names = [s["stage"] for s in fig["stages"]]
    for stage in ("generation cfg-1", "report"):
        assert stage in names, names
    assert any(n.startswith("features reference/") or n.startswith("reference features") for n in names), (
        names
    )
    assert any("cfg-1" in n and "metrics" in n for n in names), names
    assert [r["setting_id"] for r in fig["results"]] == ["cfg-1"]
    assert int(fig["results"][0]["n_samples"]) == 64 and int(fig["results"][0]["n_reference"]) == 64
    files = {path: n for path, n, _ in fig["files"]}
    assert files["images/cfg-1/"] == 64
    assert fig["peak_rss_polled"] > 0
    assert "# Scale rehearsal: 64 images" in fig["summary"]
    assert not (tmp_path / "work").exists()  # removed without --keep
