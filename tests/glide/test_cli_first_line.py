"""``python -m glide sample/inpaint``: a first line of what runs, defaults in ``--help``, and a base/upsampler
pair that cannot work together refused before any weights are loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import glide.checkpoints as checkpoints
from glide.__main__ import main
from glide.checkpoints import save_model

from .helpers import tiny_model

FAST = ["--steps", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("glide-cli")
    made = {}
    for name, kw in {
        "base": {},
        "inpaint": {"inpaint": True},
        "up": {"super_res": True, "image_size": 64, "channel_mult": "1,1,2,2"},
        "up32": {"super_res": True},  # 32 px: no larger than the 32 px base
    }.items():
        made[name] = d / f"{name}.safetensors"
        save_model(tiny_model(**kw), made[name])
    return made


def _no_loading(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("weights were loaded before the pair was checked")

    monkeypatch.setattr(checkpoints, "load_model", refuse)


def test_sample_prints_what_runs_first(files, tmp_path, capsys) -> None:
    out = tmp_path / "x.png"
    rc = main(
        ["sample", "a red square", "--base", str(files["base"]), "--no-upsample", "--out", str(out), *FAST]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"glide sample: base {files['base']}, 32 px, no upsampler; guidance cfg scale 3; ancestral 2; seed 0; "
        "cpu fp32"
    ), lines
    assert out.is_file()


def test_help_shows_the_defaults(capsys) -> None:
    for cmd, expect in (("sample", ["(default: base)", "(default: upsample)", "(default: 3.0)"]),
                        ("inpaint", ["(default: base-inpaint)", "(default: upsample-inpaint)", "(default: 5.0)"])):  # fmt: skip
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for e in [*expect, "(default: 100)", "(default: ancestral)", "(default: 0)"]:
            assert e in text, (cmd, e)


def test_inpaint_with_a_plain_upsampler_is_refused_before_loading(
    files, tmp_path, monkeypatch, capsys
) -> None:
    _no_loading(monkeypatch)
    argv = ["inpaint", "a red square", "--image", str(tmp_path / "none.png"), "--mask-rows", "4",
            "--base", str(files["inpaint"]), "--upsampler", str(files["up"]), "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"--upsampler {files['up']} is an upsample model; `inpaint`" in err
    assert "needs an upsample-inpaint upsampler" in err and "--no-upsample" in err


def test_sample_with_an_inpainting_base_is_refused_before_loading(
    files, tmp_path, monkeypatch, capsys
) -> None:
    _no_loading(monkeypatch)
    argv = ["sample", "a red square", "--base", str(files["inpaint"]), "--no-upsample",
            "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "is a base-inpaint model (32 px); `sample` needs a base model: use `python -m glide inpaint`" in err
    )


def test_an_upsampler_given_as_the_base_is_refused(files, tmp_path, monkeypatch, capsys) -> None:
    _no_loading(monkeypatch)
    argv = ["sample", "a red square", "--base", str(files["up"]), "--out", str(tmp_path / "x.png"), *FAST]
    assert main(argv) == 2
    assert (
        f"--base {files['up']} is an upsample model (64 px); `sample` needs a base model"
        in capsys.readouterr().err
    )


def test_an_upsampler_no_larger_than_the_base_is_refused(files, tmp_path, monkeypatch, capsys) -> None:
    _no_loading(monkeypatch)
    argv = ["sample", "a red square", "--base", str(files["base"]), "--upsampler", str(files["up32"]),
            "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 2
    assert (
        "makes 32 px images from the base's 32 px: it does not upsample this base" in capsys.readouterr().err
    )


def test_inpaint_says_when_the_input_is_resized(files, tmp_path, capsys) -> None:
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    argv = ["inpaint", "a red square", "--image", str(image), "--mask-rows", "16", "--base", str(files["inpaint"]),
            "--no-upsample", "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"glide inpaint: base {files['inpaint']}, 32 px, no upsampler; guidance cfg scale 5"
    )
    assert f"note: {image} (64x64) is resized to the base model's 32 px" in out


def test_inpaint_keeps_the_white_region_of_the_mask_exactly(files, tmp_path, capsys) -> None:
    """The CLI's conventions end to end: the image read into [-1, 1] NCHW, white = keep, the known region reset
    at every step (a flipped mask, a wrong range or channel order would change the kept pixels)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray(pixels).save(image)
    keep = np.zeros((32, 32), np.uint8)
    keep[:, :20] = 255  # keep the left 20 columns, fill the rest
    Image.fromarray(keep).save(mask)
    for how in (["--mask", str(mask)], ["--mask-rows", "12"]):
        out = tmp_path / "x.png"
        argv = ["inpaint", "a red square", "--image", str(image), *how, "--base", str(files["inpaint"]),
                "--no-upsample", "--out", str(out), *FAST]  # fmt: skip
        assert main(argv) == 0
        got = np.asarray(Image.open(out).convert("RGB"))
        kept = (slice(None), slice(0, 20)) if how[0] == "--mask" else (slice(0, 12), slice(None))
        filled = (slice(None), slice(20, None)) if how[0] == "--mask" else (slice(12, None), slice(None))
        np.testing.assert_array_equal(got[kept], pixels[kept])
        assert (got[filled] != pixels[filled]).mean() > 0.9, how
    capsys.readouterr()


EMBEDDED = Path(__file__).resolve().parents[2] / "glidebench" / "assets" / "models"


def test_the_embedded_inpainting_base_with_the_embedded_upsampler_is_refused(
    tmp_path, monkeypatch, capsys
) -> None:
    """There is no embedded inpainting upsampler: the plain one is refused in one line, before sampling."""
    base, up = EMBEDDED / "embedded-inpaint.safetensors", EMBEDDED / "embedded-upsample.safetensors"
    if not (base.is_file() and up.is_file()):
        pytest.skip(f"the embedded models are not in {EMBEDDED}")
    _no_loading(monkeypatch)
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    argv = ["inpaint", "a red square", "--image", str(image), "--mask-rows", "16", "--base", str(base),
            "--upsampler", str(up), "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the first line: nothing runs
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"--upsampler {up} is an upsample model; `inpaint` with base {base}" in err
    assert "--no-upsample" in err
    assert not (tmp_path / "x.png").exists()


def test_the_embedded_inpainting_model_says_what_images_it_knows(tmp_path, capsys) -> None:
    """Around images unlike its training scenes the embedded model fills the hole with noise (docs/glide.md):
    a run says so, once, after the first line."""
    base = EMBEDDED / "embedded-inpaint.safetensors"
    if not base.is_file():
        pytest.skip(f"the embedded models are not in {EMBEDDED}")
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    argv = ["inpaint", "a red square on a black background", "--image", str(image), "--mask-rows", "16",
            "--base", str(base), "--no-upsample", "--out", str(tmp_path / "x.png"), *FAST]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"glide inpaint: base {base}, 32 px, no upsampler")
    notes = [line for line in lines if line.startswith("note: the embedded inpainting model")]
    assert len(notes) == 1 and "fills the hole with noise" in notes[0], lines
