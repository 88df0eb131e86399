"""A generator describes its own sampling (model, sampler or scheduler, steps, evaluations per image, what a
guidance scale means); the run's lines, results, results.md and the report show that, never GLIDE's sampler,
for plug-in, diffusers and folder runs. GLIDE's sampling flags given to a generator that does not read them are
refused in one line before any work (a dry run too), or noted when the generator does not say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glidebench.cli import main
from glidebench.generators import Capabilities, Generator, SamplingDescription

from .harness import only_run_dir

GLIDE_SAMPLER = "dpm++2m-sde"  # the coco-fid profile's sampler: what other models were labelled with


class Described(Generator):
    """A plug-in that describes its sampling and reads none of GLIDE's options."""

    name = "described"

    def __init__(self) -> None:
        self.capabilities = Capabilities(guidance=("cfg", "none"), resolution=8)

    def identity(self) -> dict[str, str]:
        return {"described": "v1"}

    def describe(self, options) -> SamplingDescription:
        return SamplingDescription(self.name, "euler-ancestral", "7", "7 x 2", "my own guidance", reads=())

    def generate(self, captions, seeds, setting, options):
        return np.stack([np.full((8, 8, 3), (11 * s) % 256, np.uint8) for s in seeds])


class Silent(Described):
    """A plug-in that says nothing about its sampling."""

    name = "silent"
    describe = Generator.describe


def described(**kw) -> Described:
    return Described()


def silent(**kw) -> Silent:
    return Silent()


def _args(out: Path, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--limit", "4", "--cfg", "2", "--clip", "", "--batch-size", "4", "--reference-size",
        "6", "--out", str(out), "--no-report", *extra,
    ]  # fmt: skip


def _no_glide_sampler(text: str) -> None:
    assert GLIDE_SAMPLER not in text and "quad20" not in text, text


def test_a_described_plugin_is_shown_in_its_own_words(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(_args(out, "--generator", f"{__name__}:described")) == 0
    printed = capsys.readouterr().out
    assert "  sampling: described: euler-ancestral, 7 steps; model evaluations per image: 7 x 2; guidance: my " \
        "own guidance" in printed  # fmt: skip
    assert "| euler-ancestral 7 |" in printed
    _no_glide_sampler(printed)
    run = only_run_dir(out)
    rows = json.loads((run / "results.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in rows] == [("euler-ancestral", "7")]
    md = (run / "results.md").read_text()
    assert "Sampling: described: euler-ancestral, 7 steps" in md
    _no_glide_sampler(md)
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["sampling"]["sampler"] == "euler-ancestral"


def test_the_report_names_the_generators_sampling(env: Path, capsys) -> None:
    out = env / "runs"
    assert main(_args(out, "--generator", f"{__name__}:described")) == 0
    run = only_run_dir(out)
    assert main(["report", str(run), "--out", str(env / "report")]) == 0
    md = (env / "report" / "report.md").read_text()
    assert "| Sampler and steps | euler-ancestral 7 |" in md
    assert "| Sampling (the generator's words) | described: euler-ancestral, 7 steps;" in md
    before_spec, spec = md.split("Resolved run spec (spec.json)", 1)
    _no_glide_sampler(before_spec)
    assert "GLIDE's defaults, recorded but not used by this generator" in spec.split("```")[0]


@pytest.mark.parametrize("dry_run", [True, False])
def test_glide_options_a_generator_does_not_read_are_refused(env: Path, capsys, dry_run: bool) -> None:
    out = env / "runs"
    extra = ["--generator", f"{__name__}:described", "--sampler", "ddim", "--steps", "50"]
    assert main(_args(out, *extra, *(["--dry-run"] if dry_run else []))) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "glidebench: error: --sampler, --steps are GLIDE's sampling options; generator described does not use "
        "them (it samples with euler-ancestral 7); leave them out"
    ), err
    assert not out.exists()


def test_glide_options_given_to_a_silent_plugin_are_noted(env: Path, capsys) -> None:
    assert main(_args(env / "runs", "--generator", f"{__name__}:silent", "--steps", "50", "--dry-run")) == 0
    printed = capsys.readouterr().out
    notes = [x for x in printed.splitlines() if "--steps" in x and "note:" in x]
    assert len(notes) == 1 and "does not describe its sampling" in notes[0], printed
    assert "its own sampler (the generator does not describe it)" in printed


def test_a_folder_run_is_not_labelled_as_glide(env: Path, capsys) -> None:
    from PIL import Image

    folder = env / "made"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    out = env / "runs"
    assert main(_args(out, "--images", str(folder))) == 0
    printed = capsys.readouterr().out
    assert "sampling: " in printed and "images made elsewhere" in printed
    _no_glide_sampler(printed)
    run = only_run_dir(out)
    rows = json.loads((run / "results.json").read_text())
    assert rows[0]["sampler"] == "images made elsewhere"
    _no_glide_sampler((run / "results.md").read_text())
    assert main(_args(out, "--images", str(folder), "--sampler", "ddim")) == 1
    assert "--sampler is GLIDE's sampling option" in capsys.readouterr().err


def test_a_diffusers_run_shows_its_scheduler(env: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("diffusers")
    from .tiny_diffusers import build_tiny_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = build_tiny_pipeline(env / "tiny-sd")
    out = env / "runs"
    common = ["--generator", f"diffusers:{pipe}", "--resolution", "8", "--steps", "2"]
    assert main(_args(out, *common)) == 0
    printed = capsys.readouterr().out
    assert "sampling: tiny-sd: DDIMScheduler, 2 steps" in printed and "| DDIMScheduler 2 |" in printed
    _no_glide_sampler(printed)
    run = only_run_dir(out)
    rows = json.loads((run / "results.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in rows] == [("DDIMScheduler", "2")]
    assert rows[0]["evals_per_image"] == 4.0  # counted: 2 steps x a classifier-free batch of 2
    _no_glide_sampler((run / "results.md").read_text())
    assert main(_args(out, *common, "--sampler", "ddim", "--dry-run")) == 1
    err = capsys.readouterr().err
    assert "--sampler is GLIDE's sampling option; generator tiny-sd does not use it" in err, err
