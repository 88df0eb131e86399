"""Folder mode treats the prompts file as the contract: `run --prompts FILE --images DIR` scores exactly the
exported protocol (resolution, settings, seeds, size), and a mismatch is refused in one line that names it,
before any run folder exists; `prompts` and `run --images` mean the same settings for one command line; a
folder run is named after its folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glidebench.cli import main

from .harness import only_run_dir

SMALL = ["--reference-size", "6", "--batch-size", "4"]


def _prompts(env: Path, *extra: str) -> tuple[Path, list[dict]]:
    path = env / "prompts.jsonl"
    assert main(["prompts", "coco-fid", *SMALL, *extra, "--out", str(path)]) == 0
    return path, [json.loads(x) for x in path.read_text().splitlines()]


def _folder(root: Path, n: int, size: int, sub: str | None = None) -> Path:
    d = root / sub if sub else root
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), (31 * i + size) % 256, np.uint8)).save(d / f"{i}.png")
    return root


def _run(env: Path, *extra: str) -> list[str]:
    return ["run", "coco-fid", "--out", str(env / "runs"), "--no-report", "--quiet", *extra]


def test_prompts_and_run_mean_the_same_settings(env: Path, capsys) -> None:
    _, rows = _prompts(env, "--limit", "4", "--cfg", "3")
    assert {r["setting"] for r in rows} == {"cfg-3"}  # not the profile's CLIP-guidance settings as well
    assert "run" not in rows[0]  # a folder run's fingerprint depends on images that do not exist yet
    folder = _folder(env / "made", 4, 8)
    assert main(_run(env, "--limit", "4", "--cfg", "3", "--images", str(folder), *SMALL)) == 0
    spec = json.loads((only_run_dir(env / "runs") / "spec.json").read_text())
    assert [s["guidance"] + str(s["scale"]) for s in spec["settings"]] == ["cfg3.0"]


def test_the_prompts_file_decides_resolution_settings_seeds_and_size(env: Path, capsys) -> None:
    path, rows = _prompts(env, "--limit", "4", "--cfg", "1,3", "--resolution", "8", "--seed", "5")
    folder = env / "made"
    for sid in ("cfg-1", "cfg-3"):
        _folder(folder, 4, 12, sid)  # 12 px images: evaluated at the file's 8 px, not at 12
    capsys.readouterr()
    assert main(_run(env, "--prompts", str(path), "--images", str(folder))) == 0
    run = only_run_dir(env / "runs")
    spec = json.loads((run / "spec.json").read_text())
    assert spec["resolution"] == 8 and spec["seed"] == 5 and spec["num_samples"] == 4
    assert spec["reference_size"] == 6
    prompts = json.loads((run / "prompts.json").read_text())
    assert [(p["caption"], p["seed"]) for p in prompts] == [(r["caption"], r["seed"]) for r in rows[:4]]
    from glidebench.spec import RunSpec

    assert RunSpec.from_dict(spec).protocol_fingerprint == rows[0]["protocol"]
    assert run.name.startswith("made-embedded-8px-")  # named after the folder: no ':' or ','
    assert {r["n_samples"] for r in json.loads((run / "results.json").read_text())} == {4}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resolution", "12"], "the file says --resolution 8, the command line 12; leave --resolution out"),
        (["--cfg", "2"], "the file says --cfg 3, the command line 2"),
        (["--limit", "4"], "the file lists 5 images per setting (indices 0..4), these options make 4"),
        (["--caption-style", "exact"], "index 0 is "),
        (["--intervals", "bootstrap"], "an option the lines do not list differs"),
    ],
)
def test_a_run_that_is_not_the_files_protocol_is_refused(env: Path, capsys, extra, message) -> None:
    path, _ = _prompts(env, "--limit", "5", "--cfg", "3", "--resolution", "8")
    folder = _folder(env / "made", 5, 8)
    capsys.readouterr()
    assert main(_run(env, "--prompts", str(path), "--images", str(folder), *extra)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"glidebench: error: --prompts {path}: "), err
    assert message in err, err
    assert not (env / "runs").exists()


def test_a_folder_with_other_settings_than_the_file_is_refused(env: Path, capsys) -> None:
    path, _ = _prompts(env, "--limit", "4", "--cfg", "3", "--resolution", "8")
    folder = env / "made"
    for sid in ("cfg-1", "cfg-3"):
        _folder(folder, 4, 8, sid)
    capsys.readouterr()
    assert main(_run(env, "--prompts", str(path), "--images", str(folder), "--dry-run")) == 1
    err = capsys.readouterr().err
    assert "the file's settings are cfg-3, this run's cfg-1, cfg-3" in err, err


def test_a_broken_prompts_file_is_named(env: Path, capsys) -> None:
    bad = env / "bad.jsonl"
    bad.write_text('{"index": 0}\n')
    assert main(_run(env, "--prompts", str(bad), "--images", str(env))) == 1
    err = capsys.readouterr().err
    assert f"--prompts {bad}: line 1 lacks caption" in err, err


def test_a_multi_setting_folder_run_is_named_after_the_folder(env: Path, capsys) -> None:
    folder = env / "my images"
    for sid in ("cfg-1", "cfg-3"):
        _folder(folder, 4, 8, sid)
    assert main(_run(env, "--limit", "4", "--images", str(folder), *SMALL)) == 0
    run = only_run_dir(env / "runs")
    assert run.name.startswith("my-images-embedded-8px-"), run.name
    assert ":" not in run.name and "," not in run.name


def test_a_prompts_files_reference_size_is_not_given_to_a_run_with_its_own_references() -> None:
    """A captions file or a statistics file decides the references: the prompts file's reference size is
    carried over only to runs that draw their references by size."""
    from glidebench.runner.options import RunOptions, check_comparable
    from glidebench.runner.prompts import PromptsContract, apply_contract
    from glidebench.spec import Setting

    contract = PromptsContract(
        path=Path("prompts.jsonl"), resolution=8, settings=(Setting("cfg", 2.0),), base_seed=0, total=4,
        captions=("a",) * 4, protocol="p", size={"num_samples": 4, "reference_size": 12},
    )  # fmt: skip
    assert apply_contract(RunOptions(), contract).reference_size == 12
    for own in ({"captions_file": "caps.txt"}, {"reference_stats": "ref.npz"}):
        options = apply_contract(RunOptions(**own), contract)
        assert options.reference_size is None
        check_comparable(options)  # accepted: no --reference-size to refuse
