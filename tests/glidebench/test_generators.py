"""Generators: the interface, plug-ins (module:factory and entry points) through `run coco-fid`, resume and
shards of a plug-in, and clear errors for every bad plug-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glidebench.cli import main
from glidebench.generators import Capabilities, GeneratorError, as_uint8_images, load_generator
from glidebench.generators import parse_generator_args as parse

from .harness import image_bytes, only_run_dir
from .toy_generators import toy_image

TOY = "tests.glidebench.toy_generators:make"


def toy_args(out: Path, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--generator", TOY, "--limit", "8", "--cfg", "1,3", "--batch-size", "3",
        "--reference-size", "12", "--out", str(out), "--no-report", "--quiet", *extra,
    ]  # fmt: skip


def test_parse_generator_args() -> None:
    assert parse("size=16,mode=float,name=x,flag=true,ratio=0.5") == {
        "size": 16, "mode": "float", "name": "x", "flag": True, "ratio": 0.5,
    }  # fmt: skip
    assert parse(None) == {} and parse("") == {}
    with pytest.raises(GeneratorError, match="is not key=value"):
        parse("size")


def test_plugin_runs_to_results_with_its_own_images(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(toy_args(out, "--generator-args", "size=16,name=toy16")) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"with the generator toy16 ({TOY})" in first
    run = only_run_dir(out)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"] == "plugin" and spec["model_label"] == "toy16" and spec["resolution"] == 16
    assert spec["weights"]["generator"] == TOY and spec["weights"]["toy"] == "v1:size=16:mode=ok"
    assert json.loads(spec["weights"]["generator-args"]) == {"name": "toy16", "size": 16}
    assert [s["guidance"] for s in spec["settings"]] == ["cfg", "cfg"]  # the profile's CLIP setting skipped
    prompts = json.loads((run / "prompts.json").read_text())
    from PIL import Image

    for p in prompts:
        got = np.asarray(Image.open(run / "images" / "cfg-3" / f"{p['index']:06d}.png"))
        assert np.array_equal(got, toy_image(p["caption"], p["seed"], 3.0, 16))
    rows = json.loads((run / "results.json").read_text())
    assert [r["model"] for r in rows] == ["toy16", "toy16"] and all(np.isfinite(r["kid_mean"]) for r in rows)
    assert "CLIP-guidance settings skipped: generator toy16 has no CLIP guidance" in rows[0]["warnings"]


@pytest.mark.parametrize("mode", ["float", "nchw", "pil"])
def test_every_accepted_output_form_gives_the_same_images(env: Path, mode: str) -> None:
    ref, other = env / "ref", env / mode
    assert main(toy_args(ref, "--cfg", "2")) == 0
    assert main(toy_args(other, "--cfg", "2", "--generator-args", f"mode={mode}")) == 0
    assert image_bytes(only_run_dir(ref)) == image_bytes(only_run_dir(other))


def test_resized_to_the_evaluation_resolution_by_the_protocol_rule(env: Path) -> None:
    out = env / "runs"
    assert main(toy_args(out, "--cfg", "2", "--resolution", "8", "--generator-args", "size=16")) == 0
    run = only_run_dir(out)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["resolution"] == 8 and spec["weights"]["native-resolution"] == "16"
    from PIL import Image

    p = json.loads((run / "prompts.json").read_text())[0]
    want = Image.fromarray(toy_image(p["caption"], p["seed"], 2.0, 16)).resize(
        (8, 8), Image.Resampling.BICUBIC
    )
    assert np.array_equal(np.asarray(Image.open(run / "images" / "cfg-2" / "000000.png")), np.asarray(want))


def test_plugin_resume_and_shards_are_byte_identical(env: Path) -> None:
    full, resumed, sharded = env / "full", env / "resumed", env / "sharded"
    assert main(toy_args(full)) == 0
    assert main(toy_args(resumed)) == 0
    run = only_run_dir(resumed)
    for victim in sorted((run / "images" / "cfg-3").glob("*.png"))[2:6]:
        victim.unlink()
    (run / "results.csv").unlink()
    assert main(toy_args(resumed)) == 0
    assert main(toy_args(sharded, "--shard", "0/2")) == 0
    assert main(toy_args(sharded, "--shard", "1/2")) == 0
    want = image_bytes(only_run_dir(full))
    assert image_bytes(run) == want and image_bytes(only_run_dir(sharded)) == want
    rows = [json.loads((only_run_dir(d) / "results.json").read_text()) for d in (full, resumed, sharded)]
    for r in rows[1:]:
        assert [x["kid_mean"] for x in r] == [x["kid_mean"] for x in rows[0]]


@pytest.mark.parametrize(
    ("spec", "gen_args", "message"),
    [
        ("no_such_module_xyz:make", None, "no module 'no_such_module_xyz': looked for no_such_module_xyz.py"),
        ("tests.glidebench.toy_generators:nope", None, "has no callable 'nope'"),
        (
            "tests.glidebench.toy_generators:broken_factory",
            None,
            "the factory raised ValueError: cannot build",
        ),
        ("tests.glidebench.toy_generators:not_a_generator", None, "which is not a generator"),
        ("justaname", None, "give module.path:factory"),
        (TOY, "mode=nan", "NaN or infinite pixel values"),
        (TOY, "mode=range", r"float images must lie in \[0, 1\]"),
        (TOY, "mode=shape", r"expected \[N, H, W, 3\]"),
        (TOY, "mode=count", "returned 2 images for 3 captions"),
        (TOY, "mode=dtype", "images of dtype int32"),
        (TOY, "mode=raise", "generator toy raised RuntimeError: the toy model ran out of ideas"),
        (TOY, "size", "is not key=value"),
    ],
)
def test_bad_plugins_fail_cleanly_with_nothing_half_written(
    env: Path, capsys, spec, gen_args, message
) -> None:
    out = env / "runs"
    args = toy_args(out, "--cfg", "2")
    args[args.index(TOY)] = spec
    if gen_args:
        args += ["--generator-args", gen_args]
    assert main(args) == (2 if spec.startswith("no_such") else 1)  # a module not found: a usage error
    err = capsys.readouterr().err
    import re

    assert err.startswith("glidebench: error: ") and re.search(message, err), err
    assert not list(out.rglob("*.png")) and not list(out.rglob("results.*"))


def test_unsupported_guidance_is_refused_before_any_work(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(toy_args(out, "--clip", "2")) == 1
    err = capsys.readouterr().err
    assert "does not support guidance ['clip']" in err and "--clip ''" in err and not out.exists()
    assert main(toy_args(out, "--model", "embedded")) == 1
    assert "give one" in capsys.readouterr().err


def test_entry_point_generator_is_listed_and_runs(env: Path, monkeypatch, capsys) -> None:
    dist = env / "site" / "toyplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[glidebench.generators]\ntoy-ep = tests.glidebench.toy_generators:make\n"
    )
    monkeypatch.syspath_prepend(str(env / "site"))
    assert main(["ls", "generators"]) == 0
    listing = capsys.readouterr().out
    assert "toy-ep" in listing and "tests.glidebench.toy_generators:make" in listing
    out = env / "runs"
    args = toy_args(out, "--cfg", "2")
    args[args.index(TOY)] = "toy-ep"
    assert main(args) == 0
    assert json.loads((only_run_dir(out) / "spec.json").read_text())["weights"]["generator"] == "toy-ep"


def test_as_uint8_images_checks() -> None:
    imgs = np.zeros((2, 4, 4, 3), np.uint8)
    out, resized = as_uint8_images(imgs, 2, 4, "here")
    assert out is not None and not resized
    with pytest.raises(GeneratorError, match="returned 2 images for 3 captions"):
        as_uint8_images(imgs, 3, 4, "here")
    out, resized = as_uint8_images(np.zeros((2, 3, 8, 6), np.float32), 2, 4, "here")  # NCHW, not square
    assert resized and out.shape == (2, 4, 4, 3)
    with pytest.raises(GeneratorError, match=r"returned an array of shape \(\)"):
        as_uint8_images("images", 1, 4, "here")


def test_glide_is_a_generator_and_declares_clip_only_with_a_noised_clip(tiny_models_dir: Path) -> None:
    import torch

    from glidebench import models as M
    from glidebench.generators.glide import GlideGenerator

    with_clip = M.plan_models("embedded", None, want_noised_clip=True, directory=tiny_models_dir)
    without = M.plan_models("embedded", None, want_noised_clip=False, directory=tiny_models_dir)
    g1 = GlideGenerator(with_clip, torch.device("cpu"), "fp32")
    g2 = GlideGenerator(without, torch.device("cpu"), "fp32")
    assert "clip" in g1.capabilities.guidance and "clip" not in g2.capabilities.guidance
    assert g1.identity() == with_clip.identities and isinstance(g1.capabilities, Capabilities)
    assert g1.loaded is None  # nothing loaded until images are needed


def test_load_generator_diffusers_without_the_extra_names_it(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(GeneratorError, match=r'pip install -e "\.\[diffusers\]"'):
        load_generator("diffusers:some/model")


# ----------------------------------------------------------------------------------------------------------
# Folders of images and the prompts file


def _metrics(run: Path) -> list[tuple]:
    cols = ("setting_id", "fid", "kid_mean", "precision", "recall", "clip_score")
    return [tuple(r[c] for c in cols) for r in json.loads((run / "results.json").read_text())]


def test_prompts_file_lists_the_protocol(env: Path) -> None:
    out = env / "prompts.jsonl"
    protocol = ["--limit", "8", "--cfg", "1,3", "--clip", "", "--reference-size", "12", "--resolution", "16"]
    assert main(["prompts", "coco-fid", *protocol, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 16 and [r["index"] for r in rows[:8]] == list(range(8))
    assert [r["seed"] for r in rows[:8]] == list(range(8)) and {r["setting"] for r in rows} == {
        "cfg-1",
        "cfg-3",
    }
    assert rows[0]["file"] == "cfg-1/000000.png" and len({r["protocol"] for r in rows}) == 1
    run_out = env / "runs"
    assert main(toy_args(run_out)) == 0  # a plug-in under the same options: same captions, same protocol
    run = only_run_dir(run_out)
    prompts = json.loads((run / "prompts.json").read_text())
    assert [(p["caption"], p["seed"]) for p in prompts] == [(r["caption"], r["seed"]) for r in rows[:8]]
    from glidebench.spec import RunSpec

    spec = RunSpec.from_dict(json.loads((run / "spec.json").read_text()))
    assert spec.protocol_fingerprint == rows[0]["protocol"] and "run" not in rows[0]  # unknown for a folder


def test_scoring_a_folder_equals_generating_the_same_images(env: Path, capsys) -> None:
    gen_out, folder_out = env / "gen", env / "folder"
    assert main(toy_args(gen_out, "--cfg", "3")) == 0
    gen_run = only_run_dir(gen_out)
    folder = env / "made-elsewhere"
    folder.mkdir()
    for p in sorted((gen_run / "images" / "cfg-3").glob("*.png")):
        (folder / f"{int(p.stem)}.png").write_bytes(p.read_bytes())  # no leading zeros: also accepted
    capsys.readouterr()
    assert main(folder_args(folder_out, "--cfg", "3", "--images", str(folder))) == 0
    assert f"scoring the images of {folder}" in capsys.readouterr().out
    folder_run = only_run_dir(folder_out)
    assert image_bytes(folder_run) == image_bytes(gen_run)
    assert _metrics(folder_run) == _metrics(gen_run)
    spec = json.loads((folder_run / "spec.json").read_text())
    assert spec["model"] == "plugin" and len(spec["weights"]["images"]) == 64


def folder_args(out: Path, *extra: str) -> list[str]:
    return [a for a in toy_args(out) if a not in ("--generator", TOY)] + list(extra)


def _toy_folder(root: Path, n: int = 8, size: int = 16, suffix: str = ".png") -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(toy_image(f"caption {i}", i, 3.0, size)).save(root / f"{i:06d}{suffix}")
    return root


def test_folder_problems_each_get_a_clear_message(env: Path, capsys) -> None:
    from PIL import Image

    out = env / "runs"
    cases = []
    missing = _toy_folder(env / "missing")
    (missing / "000005.png").unlink()
    cases.append((missing, r"1 of the run's 8 images are missing \(e\.g\. indices \[5\]\)"))
    dupe = _toy_folder(env / "dupe")
    (dupe / "3.jpg").write_bytes((dupe / "000003.png").read_bytes())
    cases.append((dupe, r"indices have more than one file \(e\.g\. 3: 000003\.png, 3\.jpg\)"))
    broken = _toy_folder(env / "broken")
    (broken / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cases.append((broken, r"image .*000002\.png is unreadable"))
    cases.append((env / "nowhere", "no such folder"))
    for folder, message in cases:
        assert main(folder_args(out, "--cfg", "3", "--images", str(folder))) == 1, folder
        err = capsys.readouterr().err
        import re

        assert re.search(message, err), err
        assert not list(out.rglob("*.png"))
    # two settings but one flat folder
    flat = _toy_folder(env / "flat")
    assert main(folder_args(out, "--cfg", "1,3", "--images", str(flat))) == 1
    assert "holds the images of one setting, but the run has 2" in capsys.readouterr().err
    # extra, non-image, grey and other-size files: accepted with notes
    odd = _toy_folder(env / "odd", n=10, size=24)
    (odd / "notes.txt").write_text("hello")
    Image.fromarray(np.full((24, 24), 128, np.uint8), "L").save(odd / "000001.png")
    assert main(folder_args(out, "--cfg", "3", "--images", str(odd))) == 0
    text = capsys.readouterr().out
    assert "2 images beyond the run's 8 ignored" in text and "not <index>.png|jpg|webp ignored" in text
    assert "1 images were not RGB" in text
    assert json.loads((only_run_dir(out) / "spec.json").read_text())["resolution"] == 24  # the folder's size
    loud = [a for a in folder_args(env / "runs16", "--cfg", "3", "--images", str(odd)) if a != "--quiet"]
    assert main([*loud, "--resolution", "16"]) == 0
    assert "center-cropped and resized with PIL bicubic" in capsys.readouterr().out
    assert json.loads((only_run_dir(env / "runs16") / "spec.json").read_text())["resolution"] == 16


def test_folder_per_setting_and_images_setting(env: Path) -> None:
    root = env / "multi"
    _toy_folder(root / "cfg-1")
    _toy_folder(root / "cfg-3")
    out = env / "runs"
    assert main(folder_args(out, "--images", str(root))) == 0
    run = only_run_dir(out)
    assert sorted(s["scale"] for s in json.loads((run / "spec.json").read_text())["settings"]) == [1.0, 3.0]
    out2 = env / "runs2"
    args = folder_args(
        out2, "--images-setting", f"cfg-1={root / 'cfg-1'}", "--images-setting", f"cfg-3={root / 'cfg-3'}"
    )
    assert main(args) == 0
    assert _metrics(only_run_dir(out2)) == _metrics(run)
    # a changed image is another run (the content is the identity)
    (root / "cfg-3" / "000000.png").write_bytes((root / "cfg-3" / "000001.png").read_bytes())
    assert main(folder_args(out, "--images", str(root))) == 0
    assert len([p for p in (out / "coco-fid").iterdir()]) == 2


def test_folder_holds_the_extra_draws_per_caption_too(env: Path, capsys) -> None:
    """With K images for M captions the folder holds indices 0..N+M(K-1)-1, as `prompts` lists them."""
    folder = _toy_folder(env / "k2", n=10)
    out = env / "runs"
    extra = ["--cfg", "3", "--samples-per-prompt", "2", "--diversity-prompts", "2", "--images", str(folder)]
    assert main(folder_args(out, *extra)) == 0
    run = only_run_dir(out)
    assert len(list((run / "images" / "cfg-3").glob("*.png"))) == 10
    (folder / "000009.png").unlink()
    assert main(folder_args(env / "runs2", *extra)) == 1
    assert "1 of the run's 10 images are missing (e.g. indices [9])" in capsys.readouterr().err
