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
