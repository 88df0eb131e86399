"""The offline worked example of docs/other-models.md (section 4), run as written: its code blocks are taken
from the page, the Python ones saved under the file name of their first comment line, the shell ones run with
bash from an empty folder with the installed ``glidebench`` console script first on PATH. Docs and test cannot
drift: change the page and this test runs the new text."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "other-models.md"
SECTION = "## 4. A worked example, offline: a tiny diffusers pipeline"
BIN = Path(sys.executable).parent  # the environment's scripts: glidebench and python


def recipe_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of the recipe's section, in page order."""
    text = DOC.read_text()
    assert SECTION in text, f"{DOC} lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, flags=re.S | re.M)


def script_name(code: str) -> str:
    """The file a Python block is saved as: its first line is ``# NAME.py: ...``."""
    m = re.match(r"# ([\w.-]+\.py)\b", code)
    assert m, f"a Python block of the recipe must start with '# NAME.py': {code.splitlines()[0]!r}"
    return m.group(1)


def commands(code: str) -> list[list[str]]:
    """The command lines of a shell block (continuations joined), split as the shell would."""
    joined = code.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_the_recipe_names_real_files_and_flags() -> None:
    from glidebench.cli import build_parser

    blocks = recipe_blocks()
    langs = [lang for lang, _ in blocks]
    assert langs == ["python", "bash", "python", "bash"], langs
    scripts = {script_name(code) for lang, code in blocks if lang == "python"}
    assert scripts == {"make_tiny_pipeline.py", "write_images.py"}
    parser = build_parser()
    seen = []
    for lang, code in blocks:
        if lang != "bash":
            continue
        for argv in commands(code):
            if argv[0] == "python":
                assert argv[1:] and argv[1] in scripts, argv
            elif argv[0] == "glidebench":
                parser.parse_args(argv[1:])  # an unknown flag or a bad value exits here
                seen.append(argv[1:3])
            else:
                assert argv[0] == "export", argv
    assert seen == [["run", "coco-fid"], ["prompts", "coco-fid"], ["run", "coco-fid"]], seen


def _results(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_the_recipe_runs_as_written(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    glidebench = shutil.which("glidebench", path=str(BIN))
    if glidebench is None:
        pytest.skip(
            f"no glidebench console script in {BIN}; install the project (pip install -e '.[diffusers]')"
        )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIDEBENCH_COCO", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # glidebench and python of this environment
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "GLIDEBENCH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    work = tmp_path / "work"
    work.mkdir()
    for lang, code in recipe_blocks():
        if lang == "python":
            (work / script_name(code)).write_text(code)
            continue
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, (
            f"{code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )

    assert json.loads((work / "tiny-sd" / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionPipeline"
    )
    assert (work / "tiny-sd" / "tokenizer").is_dir()
    runs = sorted(p for p in (work / "runs" / "coco-fid").iterdir() if p.is_dir())
    assert len(runs) == 2, runs
    adapter = [r for r in runs if r.name.startswith("tiny-sd")]
    assert len(adapter) == 1, runs
    rows = _results(adapter[0])
    assert sorted(r["setting_id"] for r in rows) == ["cfg-1", "cfg-3"], rows
    assert {r["model"] for r in rows} == {"tiny-sd"}
    assert len(list((adapter[0] / "images").rglob("*.png"))) == 16

    prompts = [json.loads(line) for line in (work / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 16 and {p["setting"] for p in prompts} == {"cfg-1", "cfg-3"}
    assert {p["resolution"] for p in prompts} == {64}
    assert sorted(str(p.relative_to(work / "images")) for p in (work / "images").rglob("*.png")) == sorted(
        p["file"] for p in prompts
    )
    (folder,) = [r for r in runs if r not in adapter]
    rows = _results(folder)
    assert sorted(r["setting_id"] for r in rows) == ["cfg-1", "cfg-3"], rows
    assert all(r["fid"] not in ("", "nan") for r in rows), rows
