"""Hostile inputs refused in one line before any work (docs/reliability.md): COCO annotations whose captions
are not strings or whose image ids repeat, a model file whose tensor data was partly overwritten, seeds at or
past 2**32 and reference sets larger than their data source."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from glidebench.cli import main
from glidebench.data.coco import CocoCaptions, CocoError

from .test_coco import make_coco

ASSETS = Path(__file__).resolve().parents[2] / "glidebench" / "assets" / "models"


def _one_line_error(capsys, out: Path | None = None) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("glidebench: error: ") and "Traceback" not in err, err
    assert out is None or not out.exists()
    return lines[0]


# --- COCO annotations -------------------------------------------------------------------------------------


def _edit_annotations(root: Path, edit) -> Path:
    path = root / "annotations" / "captions_val2014.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("caption", [["a red square", "a blue square"], {"text": "a red square"}, 7])
def test_a_caption_that_is_not_a_string_is_refused_naming_the_annotation(caption, tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco")
    victim = {}

    def edit(data):
        data["annotations"][3]["caption"] = caption
        victim["id"] = data["annotations"][3]["id"]

    path = _edit_annotations(root, edit)
    with pytest.raises(CocoError) as e:
        CocoCaptions(root, "val2014")
    msg = str(e.value)
    assert (
        str(path) in msg
        and f"annotation id {victim['id']} has a caption of type {type(caption).__name__}" in msg
    )
    assert "one string per annotation" in msg and "\n" not in msg


def test_a_list_caption_is_never_prompted_as_its_repr(env: Path, monkeypatch, capsys) -> None:
    root = make_coco(env / "coco")
    _edit_annotations(root, lambda d: [a.update(caption=["a", "b"]) for a in d["annotations"][:2]])
    monkeypatch.setenv("GLIDEBENCH_COCO", str(root))
    out = env / "runs"
    args = ["run", "coco-fid", "--generator", "tests.glidebench.toy_generators:make", "--limit", "4", "--cfg",
            "2", "--reference-size", "6", "--out", str(out), "--no-report", "--quiet"]  # fmt: skip
    assert main(args) == 1
    line = _one_line_error(capsys, out)
    assert "has a caption of type list" in line and "(and 1 more)" in line


def test_a_repeated_image_id_is_refused_naming_the_id(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "coco")

    def edit(data):
        twin = dict(data["images"][2])
        twin["file_name"] = data["images"][5]["file_name"]
        data["images"].append(twin)

    _edit_annotations(root, edit)
    images = json.loads((root / "annotations" / "captions_val2014.json").read_text())["images"]
    with pytest.raises(CocoError, match=rf"image id {images[2]['id']} is listed 2 times \(files ") as e:
        CocoCaptions(root, "val2014")
    assert images[2]["file_name"] in str(e.value) and images[5]["file_name"] in str(e.value)


# --- model files: the card's SHA-256 is checked wherever the file loads -------------------------------------


def flip_64_bytes(path: Path) -> None:
    """XOR 64 bytes in the middle of a safetensors file's tensor data with 0x10: values change, none is NaN."""
    blob = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", blob[:8])
    start = 8 + header_len + (len(blob) - 8 - header_len) // 2
    blob[start : start + 64] = bytes(b ^ 0x10 for b in blob[start : start + 64])
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("stem", ["embedded-base", "embedded-clip-eval"])
def test_flipped_tensor_data_of_an_embedded_model_is_refused_on_load(stem: str, tmp_path: Path) -> None:
    from glide.checkpoints import CheckpointError, load_clip, load_model

    for suffix in (".safetensors", ".json"):
        shutil.copy(ASSETS / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    path = tmp_path / f"{stem}.safetensors"
    load = load_clip if "clip" in stem else load_model
    load(str(path))  # the intact copy loads
    flip_64_bytes(path)
    with pytest.raises(CheckpointError) as e:
        load(str(path))
    msg = str(e.value)
    assert str(path) in msg and str(tmp_path / f"{stem}.json") in msg and "corrupt or was replaced" in msg
    assert "\n" not in msg


def test_python_m_glide_refuses_a_flipped_embedded_file_before_sampling(tmp_path: Path, capsys) -> None:
    from glide.__main__ import main as glide_main

    for suffix in (".safetensors", ".json"):
        shutil.copy(ASSETS / f"embedded-base{suffix}", tmp_path / f"embedded-base{suffix}")
    path = tmp_path / "embedded-base.safetensors"
    flip_64_bytes(path)
    argv = ["sample", "a red circle", "--base", str(path), "--no-upsample", "--steps", "2", "--device", "cpu"]
    assert glide_main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.strip()][-1]
    assert line.startswith("error: ") and str(path) in line and "Copy embedded-base.safetensors again" in line
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()


def test_a_card_of_another_file_is_not_read_as_this_files(tmp_path: Path) -> None:
    from glide.checkpoints import verify_card

    shutil.copy(ASSETS / "embedded-base.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps({"file": "other.safetensors", "sha256": "0" * 64}))
    assert verify_card(tmp_path / "model.safetensors") is None
    (tmp_path / "model.json").write_text("[1, 2]")  # not a card: some other JSON beside the file
    assert verify_card(tmp_path / "model.safetensors") is None


# --- seeds and reference sizes: refused at plan time --------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--seed", "4294967296"],
            r"--seed 4294967296 .*below 2\*\*32 = 4294967296; use --seed 0\.\.4294967288",
        ),
        (["--seed", "4294967290"], r"--seed 4294967290 .*sample i uses seed \+ i"),
        (["--seed", str(2**70)], r"below 2\*\*32"),
        (["--kid-seed", "4294967296"], r"--kid-seed 4294967296"),
    ],
)
def test_a_seed_past_2_to_the_32_is_refused_before_the_run_dir_exists(
    flags, message, env: Path, capsys
) -> None:
    import re

    out = env / "runs"
    args = ["run", "coco-fid", "--limit", "8", "--cfg", "2", "--reference-size", "12", "--out", str(out)]
    assert main([*args, *flags]) == 1
    assert re.search(message, _one_line_error(capsys, out))
    assert main([*args, "--seed", str(2**32 - 8), "--dry-run"]) == 0  # the last seed that fits


def test_a_reference_size_beyond_the_embedded_split_is_refused_without_drawing_it(
    env: Path, monkeypatch, capsys
) -> None:
    from glidebench.data.embedded import EmbeddedCaptionSet

    drawn = []
    real = EmbeddedCaptionSet.eval_split

    def counting(self, name="val", n=None, short=False):
        drawn.append(n)
        if n is not None and n > 10**6:
            raise MemoryError(f"eval_split({n}) would hold {n} records")
        return real(self, name, n, short)

    monkeypatch.setattr(EmbeddedCaptionSet, "eval_split", counting)
    out = env / "runs"
    assert main(["run", "coco-fid", "--reference-size", "100000000", "--dry-run", "--out", str(out)]) == 1
    line = _one_line_error(capsys, out)
    assert "--reference-size 100000000 is more than the embedded test split holds (50000 records)" in line
    assert drawn == []


def test_a_reference_size_beyond_the_coco_split_is_refused(tmp_path: Path, capsys) -> None:
    root = make_coco(tmp_path / "coco")
    with pytest.raises(
        CocoError, match=r"--reference-size 13 is more than the 12 images of val2014 .*--reference-size 12"
    ):
        CocoCaptions(root, "val2014").reference_files(13)
    assert len(CocoCaptions(root, "val2014").reference_files(12)) == 12
    out = tmp_path / "runs"
    args = ["run", "coco-fid", "--coco-root", str(root), "--generator", "tests.glidebench.toy_generators:make",
            "--limit", "4", "--cfg", "2", "--reference-size", "100000000", "--dry-run", "--out", str(out)]  # fmt: skip
    assert main(args) == 1
    assert "more than the 12 images of val2014" in _one_line_error(capsys, out)
