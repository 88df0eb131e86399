"""A researcher's first hour: the installed console script finds a plug-in in the current directory
and says where it looked when it does not; a plug-in's identity is canonical (its factory's defaults filled
in); what a generator cannot do is refused at plan time, leaving no run folder; each suite's `run --help` lists
its own options; `ls` is complete, correct and loads no torch; folder mode logs copied files as copied."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from glidebench.cli import main

from .harness import subprocess_env

SCRIPT = Path(sys.executable).parent / "glidebench"  # the installed console script of this environment

PLUGIN = textwrap.dedent(
    """
    import numpy as np

    from glidebench.generators import Capabilities, Generator, GeneratorError


    class Tiny(Generator):
        def __init__(self, size: int = 8, picky: bool = False) -> None:
            self.name, self.size, self.picky = "tiny", int(size), picky
            self.capabilities = Capabilities(guidance=("cfg", "none"), resolution=self.size)

        def identity(self):
            return {"tiny": "v1"}  # leaves the size to the factory's arguments

        def check(self, settings, options):
            big = [s.scale for s in settings if s.scale > 5]
            if self.picky and big:
                raise GeneratorError(f"tiny: scales {big} are beyond this model (at most 5)")

        def generate(self, captions, seeds, setting, options):
            return np.stack([np.full((self.size, self.size, 3), (37 * s) % 256, np.uint8) for s in seeds])


    def make(size: int = 8, picky: bool = False) -> Tiny:
        return Tiny(size, picky)
    """
)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A user's folder holding my_model.py (and nothing on sys.path points at it)."""
    d = tmp_path / "work"
    d.mkdir()
    (d / "my_model.py").write_text(PLUGIN)
    return d


def console(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    if not SCRIPT.is_file():
        pytest.skip(f"no installed console script at {SCRIPT}")
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def small(out: str = "runs", *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--limit", "4", "--cfg", "2", "--clip", "", "--batch-size", "4",
        "--reference-size", "6", "--out", out, "--no-report", "--quiet", *extra,
    ]  # fmt: skip


# --- 1. the console script finds module:factory in the current directory ------------------------------------


def test_console_script_finds_a_plugin_in_the_current_directory(
    plugin_dir: Path, tiny_models_dir: Path
) -> None:
    env = subprocess_env(tiny_models_dir, plugin_dir / "cache")
    env.pop("PYTHONPATH", None)
    r = console(plugin_dir, env, *small("runs", "--generator", "my_model:make", "--dry-run"))
    assert r.returncode == 0, r.stderr
    assert "with the generator tiny (my_model:make)" in r.stdout
    assert not (plugin_dir / "runs").exists()  # a dry run writes nothing


def test_console_script_says_where_it_looked(plugin_dir: Path, tiny_models_dir: Path) -> None:
    env = subprocess_env(tiny_models_dir, plugin_dir / "cache")
    env.pop("PYTHONPATH", None)
    r = console(plugin_dir, env, *small("runs", "--generator", "not_my_model:make"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("glidebench: error: "), err
    assert f"current directory {plugin_dir}" in err and "not_my_model.py" in err, err
    assert str(Path(sys.executable).parent.parent) in err  # the import path searched (this environment)
    assert not (plugin_dir / "runs").exists()


def test_a_plugins_own_failed_import_is_not_reported_as_missing(
    plugin_dir: Path, tiny_models_dir: Path
) -> None:
    (plugin_dir / "needs_more.py").write_text("import no_such_dependency_xyz\n")
    env = subprocess_env(tiny_models_dir, plugin_dir / "cache")
    r = console(plugin_dir, env, *small("runs", "--generator", "needs_more:make", "--dry-run"))
    assert r.returncode == 1, r.stderr
    assert "importing needs_more failed" in r.stderr and "no_such_dependency_xyz" in r.stderr, r.stderr


@pytest.mark.slow  # ~35 s here: the real offline Inception
def test_console_script_runs_a_plugin_to_results(plugin_dir: Path, tiny_models_dir: Path) -> None:
    """One real run: the console script, the plug-in from the current directory, the real feature stage."""
    env = subprocess_env(tiny_models_dir, plugin_dir / "cache")
    env.pop("PYTHONPATH", None)
    r = console(plugin_dir, env, *small("runs", "--generator", "my_model:make"))
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = (plugin_dir / "runs" / "coco-fid").iterdir()
    rows = json.loads((run / "results.json").read_text())
    assert [r["model"] for r in rows] == ["tiny"] and np.isfinite(rows[0]["kid_mean"])


# --- 4. canonical identity; refusals at plan time leave no run folder -------------------------------------


def _run_dir(capsys, args: list[str]) -> str:
    capsys.readouterr()
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "run dir " in x)
    return line.split("run dir ", 1)[1].split(" | ")[0]


def test_a_factory_default_given_or_left_out_is_the_same_run(
    env: Path, plugin_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(plugin_dir)
    base = [
        a for a in small(str(env / "runs"), "--generator", "my_model:make", "--dry-run") if a != "--quiet"
    ]
    left_out = _run_dir(capsys, base)
    given = _run_dir(capsys, [*base, "--generator-args", "size=8"])
    other = _run_dir(capsys, [*base, "--generator-args", "size=16"])
    assert left_out == given and other != given
    assert main([a for a in base if a != "--dry-run"] + ["--quiet"]) == 0
    (run,) = (env / "runs" / "coco-fid").iterdir()
    weights = json.loads((run / "spec.json").read_text())["weights"]
    assert json.loads(weights["generator-args"]) == {"picky": False, "size": 8}


@pytest.mark.parametrize("dry_run", [True, False])
def test_what_a_generator_refuses_is_refused_at_plan_time(
    env: Path, plugin_dir: Path, monkeypatch, capsys, dry_run: bool
) -> None:
    monkeypatch.chdir(plugin_dir)
    out = env / "runs"
    args = small(str(out), "--generator", "my_model:make", "--generator-args", "picky=true", "--cfg", "2,7")
    assert main(args + (["--dry-run"] if dry_run else [])) == 1
    assert "tiny: scales [7.0] are beyond this model (at most 5)" in capsys.readouterr().err
    assert not out.exists()  # no run folder for a refused run


def test_diffusers_scale_below_one_and_cfg_interval_are_refused_at_plan_time(env: Path, capsys) -> None:
    pytest.importorskip("diffusers")
    from .tiny_diffusers import build_tiny_pipeline

    pipe = build_tiny_pipeline(env / "tiny-sd")
    out = env / "runs"
    common = ["run", "coco-fid", "--generator", f"diffusers:{pipe}", "--clip", "", "--limit", "4",
              "--resolution", "8", "--reference-size", "6", "--steps", "ddim2", "--out", str(out)]  # fmt: skip
    cases = [
        (["--cfg", "0.5,3", "--dry-run"], r"classifier-free scale 0.5 < 1"),
        (["--cfg", "0.5,3"], r"classifier-free scale 0.5 < 1"),
        (["--cfg", "3", "--cfg-interval", "0,5", "--dry-run"], "--cfg-interval"),
    ]
    for extra, message in cases:
        assert main(common + extra) == 1, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists(), extra


# --- 6. the CLI: help per suite, complete texts, ls ----------------------------------------------------------


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_each_suite_lists_its_own_options(capsys) -> None:
    coco = _help(capsys, "run", "coco-fid")
    for theirs in ("--models", "--batch-sizes", "--compile", "--cuda-graph", "--repeats"):
        assert theirs not in coco, theirs
    for mine in ("--cfg", "--generator", "--attention", "--images", "--dry-run"):
        assert mine in coco, mine
    throughput = _help(capsys, "run", "throughput")
    assert "--batch-sizes" in throughput and "--compile" in throughput and "--attention" in throughput
    for theirs in ("--cfg", "--generator", "--images", "--coco-root"):
        assert theirs not in throughput, theirs
    nfe = _help(capsys, "run", "nfe")
    assert "once per (sampler, steps) of the sweep" in " ".join(nfe.split())  # the whole description
    assert "--preset" not in nfe  # coco-fid's presets are coco-fid's


def test_run_help_names_every_suite_with_a_whole_sentence(capsys) -> None:
    text = " ".join(_help(capsys, "run").split())
    for name in ("coco-fid", "nfe", "attributes", "throughput"):
        assert name in text
    assert "once per (sampler, steps)" in text or "once per" not in text  # never cut mid-phrase


def test_ls_suites_includes_throughput_and_loads_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from glidebench.cli import main; rc = main(['ls', 'suites']); "
        "print('TORCH', 'torch' in sys.modules); sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIDEBENCH_TUNE_MALLOC"} | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "  throughput" in r.stdout and "  coco-fid" in r.stdout and "  nfe" in r.stdout
    assert "TORCH False" in r.stdout


def test_ls_generators_knows_whether_diffusers_is_installed(capsys) -> None:
    import importlib.util

    assert main(["ls", "generators"]) == 0
    row = next(x for x in capsys.readouterr().out.splitlines() if "diffusers:PATH_OR_ID" in x)
    installed = all(importlib.util.find_spec(m) for m in ("diffusers", "transformers"))
    assert ("pip install" in row) is not installed, row
    if installed:
        from importlib.metadata import version

        assert f"installed (diffusers {version('diffusers')}" in row, row


# --- folder mode: copied files are logged as copied ------------------------------------------------------------


def test_folder_mode_logs_copied_not_sampled(env: Path, capsys) -> None:
    from PIL import Image

    folder = env / "made-elsewhere"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    args = [a for a in small(str(env / "runs"), "--images", str(folder)) if a != "--quiet"]
    assert main(args) == 0
    chunks = [x for x in capsys.readouterr().out.splitlines() if "chunk 1/1" in x]
    assert chunks and all("4 copied" in x and "sampled" not in x for x in chunks), chunks
