"""``python -m glide``: every expected failure is one paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glide import checkpoints
from glide.__main__ import _parser, main
from glide.checkpoints import save_model
from glide.unet import create_model

from .helpers import tiny_config, tiny_model

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--no-upsample", "--steps", "3", "--device", "cpu"]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


def _run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def flip_data_bytes(path: Path) -> None:
    """Invert every byte of a safetensors file's tensor data (its header stays readable)."""
    blob = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", blob[:8])
    start = 8 + header_len
    blob[start:] = bytes(b ^ 0xFF for b in blob[start:])
    path.write_bytes(bytes(blob))


def test_flipped_bytes_in_a_checkpoint_give_a_message_naming_the_file(tmp_path):
    # a freshly built model: its zero-initialised output layer becomes NaN when the bytes are inverted
    path = tmp_path / "flipped.safetensors"
    save_model(create_model(tiny_config()), path)
    flip_data_bytes(path)
    cmd = [sys.executable, "-m", "glide", "sample", "a red circle", "--base", str(path), "--out"]
    cmd += [str(tmp_path / "x.png"), *FAST]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env.pop("GLIDE_DEBUG", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc.stderr)
    assert f"the checkpoint file {path}" in line and "NaN/inf" in line
    assert "corrupt" in line and f"copy, download or export {path} again" in line
    assert not (tmp_path / "x.png").exists()


def test_a_sampling_error_of_an_official_checkpoint_says_how_to_download_it_again(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    monkeypatch.setattr(checkpoints, "preset", lambda name, use_fp16=False: tiny_config())
    model = create_model(tiny_config())
    with torch.no_grad():
        model.out[2].bias.fill_(float("nan"))
    torch.save(model.state_dict(), tmp_path / "base.pt")
    rc, _, err = _run_main(["sample", "a red circle", "--out", str(tmp_path / "x.png"), *FAST], capsys)
    assert rc == 2
    line = _error_line(err)
    assert f"the official 'base' checkpoint {tmp_path / 'base.pt'}" in line
    assert "python -m glide download base" in line


def test_a_truncated_cached_file_is_not_recorded_and_the_right_copy_then_samples(
    tmp_path, monkeypatch, capsys
):
    """A truncated base.pt failed to load but had its SHA-256 recorded, so the right file copied in
    afterwards was refused as "changed or corrupt"."""
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoints, "preset", lambda name, use_fp16=False: tiny_config())
    (tmp_path / "cache").mkdir()
    torch.save(tiny_model().state_dict(), tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    cached = tmp_path / "cache" / "base.pt"
    cached.write_bytes(good[: len(good) // 3])
    argv = ["sample", "a red circle", "--out", str(tmp_path / "x.png"), *FAST]
    rc, _, err = _run_main(argv, capsys)
    assert rc == 2 and f"{cached} could not be loaded" in _error_line(err)
    assert not (tmp_path / "cache" / "base.sha256").exists()
    cached.write_bytes(good)
    rc, out, err = _run_main(argv, capsys)
    assert rc == 0, err
    assert (tmp_path / "x.png").is_file()
    assert (tmp_path / "cache" / "base.sha256").read_text().split()[0] == checkpoints.sha256_file(cached)


def test_a_refused_pickle_checkpoint_is_a_message(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save(tiny_model().state_dict() | {"extra": Payload()}, tmp_path / "evil.pt")
    argv = ["sample", "a red circle", "--base", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "x.png")]
    rc, out, err = _run_main(argv + FAST, capsys)
    assert rc == 2 and "this must not run" not in out + err
    line = _error_line(err)
    assert f"{tmp_path / 'evil.pt'} is refused for safety" in line
    assert "non-tensor (pickled Python) objects" in line and "unless its source is trusted" in line


@pytest.mark.parametrize("cmd", ["sample", "inpaint"])
def test_missing_weights_point_to_the_embedded_models(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path / "empty"))
    argv = [cmd, "a red circle", "--out", str(tmp_path / "x.png"), "--device", "cpu"]
    if cmd == "inpaint":
        argv += ["--image", str(tmp_path / "img.png"), "--mask-rows", "20"]
    rc, _, err = _run_main(argv, capsys)
    assert rc == 2
    line = _error_line(err)
    official = "base-inpaint" if cmd == "inpaint" else "base"
    assert f"python -m glide download {official}" in line
    assert "embedded models" in line and "glidebench/assets/models/" in line and "offline" in line
    # the suggested command line parses, and the files it names are the shipped ones and load
    example = re.search(r"(python -m glide (?:sample|inpaint) .*?--out x\.png)", line).group(1)
    args = _parser().parse_args(shlex.split(example)[3:])
    assert args.cmd == cmd
    assert args.no_upsample == (
        cmd == "inpaint"
    )  # no embedded inpainting upsampler: the example stops at 32 px
    for spec in (args.base, None if args.no_upsample else args.upsampler):
        if spec is not None:
            assert spec.startswith("glidebench/assets/models/")
            model = checkpoints.load_model(ROOT / spec)
            assert model.config.inpaint == (cmd == "inpaint")


def test_missing_clip_weights_point_to_the_embedded_noised_clip(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    torch.save(tiny_model().state_dict(), tmp_path / "base.pt")
    argv = ["sample", "a red circle", "--guidance", "clip", "--out", str(tmp_path / "x.png"), *FAST]
    rc, _, err = _run_main(argv, capsys)
    assert rc == 2
    line = _error_line(err)
    assert "python -m glide download clip/image-enc" in line
    assert "--clip glidebench/assets/models/embedded-clip-noised.safetensors" in line
    assert (ROOT / "glidebench/assets/models/embedded-clip-noised.safetensors").is_file()


def test_a_failed_download_is_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    monkeypatch.setitem(  # nothing listens on port 1 of this machine: the connection is refused
        checkpoints.OFFICIAL,
        "base",
        checkpoints.OfficialCheckpoint("base", "http://127.0.0.1:1/base.pt", "unet", {}),
    )
    rc, _, err = _run_main(["download", "base"], capsys)
    assert rc == 2
    line = _error_line(err)
    assert "could not download base from http://127.0.0.1:1/base.pt" in line and "internet connection" in line


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--steps", "abc"], "invalid respacing 'abc'"),
        (["--dtype", "fp16"], "fp16 needs a CUDA device"),
        (["--guidance", "clip", "--clip", "{tmp}/missing.safetensors"], "missing.safetensors does not exist"),
        (["--out", "{tmp}/file.txt/x.png"], "cannot write the image"),
    ],
)
def test_expected_sample_errors_are_messages(extra, expected, tmp_path, capsys):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    argv = [
        "sample",
        "a red circle",
        "--base",
        str(tmp_path / "m.safetensors"),
        "--out",
        str(tmp_path / "x.png"),
    ]
    argv += FAST + [a.format(tmp=tmp_path) for a in extra]
    rc, _, err = _run_main(argv, capsys)
    assert rc == 2
    assert expected in _error_line(err)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ([], "inpaint needs --mask FILE or --mask-rows N"),
        (["--mask-rows", "8", "--image", "{tmp}/nope.png"], "cannot read image"),
        (["--mask-rows", "8", "--image", "{tmp}/notes.txt"], "cannot read image"),
    ],
)
def test_expected_inpaint_errors_are_messages(extra, expected, tmp_path, capsys):
    save_model(tiny_model(inpaint=True), tmp_path / "inpaint.safetensors")
    (tmp_path / "notes.txt").write_text("not an image")
    argv = ["inpaint", "a red circle", "--base", str(tmp_path / "inpaint.safetensors")]
    argv += ["--out", str(tmp_path / "x.png"), *FAST]
    if "--image" not in extra:
        argv += ["--image", str(tmp_path / "notes.txt")]
    rc, _, err = _run_main(argv + [a.format(tmp=tmp_path) for a in extra], capsys)
    assert rc == 2
    assert expected in _error_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_message(tmp_path, capsys):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    argv = [
        "sample",
        "a red circle",
        "--base",
        str(tmp_path / "m.safetensors"),
        "--out",
        str(tmp_path / "x.png"),
    ]
    rc, _, err = _run_main(argv + ["--no-upsample", "--device", "cuda"], capsys)
    assert rc == 2 and "no CUDA device" in _error_line(err)


def test_a_good_file_still_samples(tmp_path, capsys):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    out = tmp_path / "x.png"
    rc, stdout, _ = _run_main(
        ["sample", "a red circle", "--base", str(tmp_path / "m.safetensors"), "--out", str(out), *FAST],
        capsys,
    )
    assert rc == 0 and f"wrote {out}" in stdout
    from PIL import Image

    assert Image.open(out).size == (32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "x.png"]
