"""MS-COCO from a local copy: reproducible caption choice, center-cropped references, and clear errors for missing or
corrupt files (a tiny fake COCO tree built here)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidebench.cli import main
from glidebench.data.coco import CocoCaptions, CocoError, load_reference_image, validate_images

from .harness import (
    base_args,
    only_run_dir,
)

RED, BLUE = (200, 20, 20), (20, 20, 200)


def make_coco(root: Path, n_images: int = 12, split: str = "val2014", shuffle: bool = False) -> Path:
    """A COCO-shaped tree: images of several aspect ratios (red center square, blue side bands), 1-5 captions each."""
    rng = np.random.default_rng(0)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations, ann_id = [], [], 1000
    for k in range(n_images):
        image_id = 500 + 7 * k
        w, h = [(30, 20), (20, 30), (24, 24), (40, 16)][k % 4]
        a = np.empty((h, w, 3), np.uint8)
        a[:] = BLUE
        s = min(w, h)
        top, left = (h - s) // 2, (w - s) // 2
        a[top : top + s, left : left + s] = RED
        name = f"COCO_{split}_{image_id:012d}.png"
        Image.fromarray(a).save(root / split / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for j in range(int(rng.integers(1, 6))):
            annotations.append(
                {"id": ann_id, "image_id": image_id, "caption": f"  image {image_id} caption {j}\n"}
            )
            ann_id += 1
    if shuffle:
        images = images[::-1]
        annotations = annotations[::-1]
    (root / "annotations" / f"captions_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    return root


def test_one_caption_per_image_is_reproducible_distinct_and_prefix_stable(tmp_path: Path) -> None:
    coco = CocoCaptions(make_coco(tmp_path / "a"), "val2014")
    sel = coco.select(8, "one-per-image", seed=0)
    assert len({c.image_id for c in sel}) == 8
    for c in sel:
        assert c.caption.startswith(f"image {c.image_id} caption ") and c.caption == c.caption.strip()
        assert c.source == f"coco:{c.image_id}"
    assert coco.select(8, "one-per-image", seed=0) == sel
    assert coco.select(5, "one-per-image", seed=0) == sel[:5]
    assert coco.select(8, "one-per-image", seed=1) != sel
    # The order of the JSON file does not matter.
    shuffled = CocoCaptions(make_coco(tmp_path / "b", shuffle=True), "val2014")
    assert [(c.image_id, c.caption) for c in shuffled.select(8, "one-per-image", 0)] == [
        (c.image_id, c.caption) for c in sel
    ]
    with pytest.raises(CocoError, match="use --num-samples <= 12 or --captions random"):
        coco.select(13, "one-per-image", 0)
    rnd = coco.select(30, "random", seed=0)
    assert len({c.caption_id for c in rnd}) == 30 and len({c.image_id for c in rnd}) < 30
    rec = coco.selection_record(8, "one-per-image", 0)
    assert (
        rec["split"] == "val2014" and len(rec["annotations_sha256"]) == 64 and rec["n_images_in_split"] == 12
    )


def test_reference_images_are_center_cropped_not_squeezed(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "c", n_images=4)
    for p in sorted((root / "val2014").iterdir()):
        img = load_reference_image(p, 8)
        assert img.shape == (8, 8, 3)
        assert np.abs(img.astype(int) - np.array(RED)).max() <= 1, (
            p.name
        )  # only the red center square remains
    # Squeezing the whole 40x16 image instead would have kept blue.
    squeezed = np.asarray(
        Image.open(sorted((root / "val2014").iterdir())[3]).resize((8, 8), Image.Resampling.BICUBIC)
    )
    assert np.abs(squeezed.astype(int) - np.array(RED)).max() > 50


def test_reference_subset_is_seeded_and_sorted(tmp_path: Path) -> None:
    coco = CocoCaptions(make_coco(tmp_path / "d"), "val2014")
    assert len(coco.reference_files()) == 12
    sub = coco.reference_files(5, seed=0)
    assert len(sub) == 5 and sub == sorted(sub) and sub == coco.reference_files(5, seed=0)
    digests = validate_images(sub)
    assert coco.reference_fingerprint(sub, 64, digests) != coco.reference_fingerprint(sub, 256, digests)


def test_missing_and_malformed_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CocoError, match="COCO root .*nowhere does not exist"):
        CocoCaptions(tmp_path / "nowhere", "val2014")
    root = make_coco(tmp_path / "e")
    with pytest.raises(
        CocoError, match=r"missing COCO annotations file .*captions_val2017\.json.*annotations_trainval2017"
    ):
        CocoCaptions(root, "val2017")
    ann = root / "annotations" / "captions_val2014.json"
    ann.write_text(ann.read_text()[:100])
    with pytest.raises(CocoError, match=r"captions_val2014\.json is not a COCO captions file.*truncated"):
        CocoCaptions(root, "val2014")
    root = make_coco(tmp_path / "f")
    victim = sorted((root / "val2014").iterdir())[2]
    victim.unlink()
    coco = CocoCaptions(root, "val2014")
    with pytest.raises(CocoError, match=rf"1 of 12 COCO images are missing \(e\.g\. .*{victim.name}"):
        coco.check_files(coco.reference_files())
    bad = sorted((root / "val2014").iterdir())[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(
        CocoError, match=rf"reference image .*{bad.name} is corrupt or unreadable.*replace it"
    ):
        load_reference_image(bad, 8)


def test_run_on_coco_records_the_caption_choice(env: Path, monkeypatch, capsys) -> None:
    from glidebench.features import ClipEmbedder

    asked = []

    def offline(
        model_name, pretrained, device="cpu"
    ):  # what open_clip does without internet, minus the retries
        asked.append((model_name, pretrained))
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(ClipEmbedder, "from_open_clip", staticmethod(offline))
    root = make_coco(env / "coco")
    monkeypatch.setenv("GLIDEBENCH_COCO", str(root))  # the environment variable is enough
    out = env / "runs"
    assert (
        main(base_args(out, "--model", "embedded", "--reference-size", "0", "--cfg", "2", "--clip", "")) == 0
    )
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"glidebench coco-fid: MS-COCO val2014 from {root}")
    run = only_run_dir(out)
    prompts = json.loads((run / "prompts.json").read_text())
    coco = CocoCaptions(root, "val2014")
    assert [(p["source"], p["caption"]) for p in prompts] == [
        (c.source, c.caption) for c in coco.select(8, "one-per-image", 0)
    ]
    spec = json.loads((run / "spec.json").read_text())
    assert (
        spec["data"] == "coco"
        and spec["reference_size"] == 12
        and spec["data_id"] == coco.annotations_sha256[:16]
    )
    prov = json.loads((run / "provenance.json").read_text())
    assert (
        prov["data"]["captions"] == "one-per-image"
        and prov["data"]["annotations_sha256"] == coco.annotations_sha256
    )
    row = json.loads((run / "results.json").read_text())[0]
    assert row["n_reference"] == 12 and row["data"] == "coco" and "not MS-COCO" not in row["warnings"]
    # On MS-COCO the CLIP score uses OpenAI CLIP ViT-B/16 (whatever the generator); offline it is skipped, loudly.
    assert asked == [("ViT-B-16", "openai")]
    assert (
        "CLIP score skipped: could not load OpenAI CLIP ViT-B-16" in row["warnings"]
        and row["clip_score"] is None
    )
    assert spec["weights"]["eval-clip"] == "open_clip:ViT-B-16:openai"


def test_corrupt_reference_image_fails_cleanly(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    bad = sorted((root / "val2014").iterdir())[5]
    bad.write_bytes(b"not an image")
    out = env / "runs"
    code = main(
        base_args(out, "--coco-root", str(root), "--model", "embedded", "--reference-size", "0", "--cfg", "2")
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("glidebench: error: ") and bad.name in err and "corrupt" in err
    assert not list(out.rglob("results.csv")) and not list(out.rglob("results.json"))


def test_prepare_coco_validates(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    assert main(["prepare", "coco", "--coco-root", str(root), "--check-only"]) == 0
    assert "12 images" in capsys.readouterr().out
    sorted((root / "val2014").iterdir())[0].unlink()
    assert main(["prepare", "coco", "--coco-root", str(root), "--check-only"]) == 1
    assert "1 of 12 COCO images are missing" in capsys.readouterr().err
    assert main(["prepare", "coco", "--coco-root", str(env / "nope")]) == 1


def _flip_bytes(path: Path, offset: int = -40, n: int = 4) -> bytes:
    """Flip ``n`` bytes of ``path`` in place (same size); returns the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    for i in range(n):
        data[offset + i] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def test_reference_key_follows_content_not_size(tmp_path: Path) -> None:
    """Same size, other bytes: another key; restored bytes: the original key again (no stale features)."""
    coco = CocoCaptions(make_coco(tmp_path / "k"), "val2014")
    files = coco.reference_files()
    key = coco.reference_fingerprint(files, 64, validate_images(files))
    victim = files[3]
    size = victim.stat().st_size
    original = victim.read_bytes()
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(victim)  # another valid image...
    victim.write_bytes(victim.read_bytes()[:size].ljust(size, b"\0"))  # ...of exactly the same size
    assert victim.stat().st_size == size
    changed = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert coco.reference_fingerprint(files, 64, changed) != key
    victim.write_bytes(original)
    assert coco.reference_fingerprint(files, 64, validate_images(files)) == key


def test_validation_decodes_every_image_once_and_names_the_corrupt_one(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "v")
    files = CocoCaptions(root, "val2014").reference_files()
    manifest = tmp_path / "validated.txt"
    digests = validate_images(files, manifest)
    assert digests == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    assert set(manifest.read_text().split()) == set(digests)
    bad = files[4]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated: the header still parses
    with pytest.raises(CocoError, match=rf"1 of 12 reference images are corrupt or unreadable: .*{bad.name}"):
        validate_images(files, manifest)
    assert set(manifest.read_text().split()) == set(digests)  # nothing bad recorded


def test_corrupt_reference_image_is_found_before_generation(env: Path, capsys) -> None:
    root = make_coco(env / "coco")
    bad = sorted((root / "val2014").iterdir())[7]
    _flip_bytes(bad, offset=0, n=8)  # header overwritten, same size
    out = env / "runs"
    code = main(
        base_args(out, "--coco-root", str(root), "--model", "embedded", "--reference-size", "0", "--cfg", "2")
    )
    err = capsys.readouterr().err
    assert code == 1 and bad.name in err and "corrupt" in err
    assert not list(out.rglob("*.png")), "images were generated before the references were checked"


def test_null_and_empty_captions_are_dropped_and_empty_lists_named(tmp_path: Path) -> None:
    root = make_coco(tmp_path / "n", n_images=3)
    ann = root / "annotations" / "captions_val2014.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["caption"] = None
    data["annotations"][1]["caption"] = "   "
    ann.write_text(json.dumps(data))
    coco = CocoCaptions(root, "val2014")
    texts = [t for caps in coco.captions.values() for _, t in caps]
    assert "None" not in texts and "" not in texts and len(texts) == len(data["annotations"]) - 2
    assert coco.selection_record(1, "one-per-image", 0)["n_empty_captions_dropped"] == 2
    for a in data["annotations"]:
        a["caption"] = None
    ann.write_text(json.dumps(data))
    with pytest.raises(CocoError, match=r"captions_val2014\.json has no usable captions .*3 images"):
        CocoCaptions(root, "val2014")
    data["images"], data["annotations"] = [], []
    ann.write_text(json.dumps(data))
    with pytest.raises(CocoError, match=r"captions_val2014\.json has no usable captions \(0 images"):
        CocoCaptions(root, "val2014")
