"""Fixed caption lists (--captions-file): each format, bad files with clear errors, and runs that take their prompts
in order, with COCO references by image id or reference statistics, recording the file's hash and row count."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from glidebench.cli import main
from glidebench.data.captions_file import CaptionsFileError, read_captions_file

from .harness import base_args, install_prepare_extractor, only_run_dir
from .test_coco import make_coco

CAPTIONS = ["a red bus on a street", "two dogs, one brown", 'a "quoted" kite', "a plate of food"]


def test_each_format_reads_the_rows_in_order(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("\n".join(CAPTIONS) + "\n\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"image_id": 10 + i, "caption": c}) for i, c in enumerate(CAPTIONS)),
        encoding="utf-8",
    )
    csv_text = "image_id,caption\n" + "".join(
        f'{10 + i},"{c.replace(chr(34), chr(34) * 2)}"\n' for i, c in enumerate(CAPTIONS)
    )
    (tmp_path / "c.csv").write_text(csv_text, encoding="utf-8")
    (tmp_path / "nocol.csv").write_text(
        "caption\n" + "".join(f'"{c.replace(chr(34), chr(34) * 2)}"\n' for c in CAPTIONS)
    )
    for name, ids in (
        ("c.txt", None),
        ("c.jsonl", [10, 11, 12, 13]),
        ("c.csv", [10, 11, 12, 13]),
        ("nocol.csv", None),
    ):
        rows, digest = read_captions_file(tmp_path / name)
        assert [r.caption for r in rows] == CAPTIONS, name
        assert [r.image_id for r in rows] == (ids or [None] * 4), name
        assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    rows, _ = read_captions_file(tmp_path / "c.csv")
    assert [r.line for r in rows] == [2, 3, 4, 5]  # the header is line 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text,image_id\nhello,1\n", r"a.csv, line 1: no 'caption' column \(the header has text, image_id\)"),
        ("b.txt", "", r"b.txt is empty"),
        ("c.csv", "caption\n", r"c.csv is empty"),
        ("d.jsonl", '{"caption": "x", "image_id": 5}\n{"caption": "y", "image_id": 5}\n',
         r"d.jsonl, line 2: duplicate image_id 5 \(first on line 1\)"),
        ("e.txt", b"a cat\n\xff\xfe dog\n", r"e.txt, line 2: not UTF-8"),
        ("f.txt", "a cat\n   \na dog\n", r"f.txt, line 2: blank caption"),
        ("g.jsonl", '{"caption": "x"}\n{"text": "y"}\n', r'g.jsonl, line 2: each line must be a JSON object with a "caption"'),
        ("h.csv", "caption,image_id\nx,1\ny,\n", r"h.csv, line 3: no image_id, but other rows have one"),
        ("i.csv", "caption,image_id\nx,abc\n", r"i.csv, line 2: image_id 'abc' is not a non-negative integer"),
        ("j.json", "[]", r"unknown format .json"),
    ],
)  # fmt: skip
def test_bad_files_name_the_file_line_and_fix(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(CaptionsFileError, match=message):
        read_captions_file(path)


@pytest.fixture
def env(env, monkeypatch):
    install_prepare_extractor(monkeypatch)
    return env


COMMON = ("--model", "embedded", "--cfg", "2", "--clip", "", "--resolution", "8")


def test_run_with_image_ids_uses_the_matching_coco_images(env: Path) -> None:
    root = make_coco(env / "coco")
    coco_ids = [500 + 7 * k for k in (3, 0, 7, 5, 9, 1)]
    path = env / "list.jsonl"
    path.write_text(
        "\n".join(json.dumps({"image_id": i, "caption": f"caption of {i}"}) for i in coco_ids) + "\n"
    )
    out = env / "runs"
    assert (
        main(base_args(out, *COMMON, "--coco-root", str(root), "--captions-file", str(path), "--limit", "5"))
        == 0
    )
    run = only_run_dir(out)
    prompts = json.loads((run / "prompts.json").read_text())
    assert [p["caption"] for p in prompts] == [f"caption of {i}" for i in coco_ids[:5]]
    assert [p["seed"] for p in prompts] == list(range(5))
    spec = json.loads((run / "spec.json").read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (
        spec["captions"] == "file"
        and spec["data_id"] == f"file:{digest[:16]}"
        and spec["reference_size"] == 5
    )
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["data"]["captions_file_sha256"] == digest and prov["data"]["captions_file_rows"] == 6
    assert json.loads((run / "results.json").read_text())[0]["n_reference"] == 5


def test_run_without_references_needs_reference_stats(env: Path, capsys) -> None:
    path = env / "list.txt"
    path.write_text("\n".join(f"caption {i}" for i in range(10)) + "\n")
    code = main(base_args(env / "runs", *COMMON, "--captions-file", str(path)))
    err = capsys.readouterr().err
    assert code == 1 and "no reference images (its rows have no image_id); pass --reference-stats" in err
    code = main(base_args(env / "runs", *COMMON, "--captions-file", str(path), "--limit", "20"))
    assert code == 1 and "20 samples requested but captions file" in capsys.readouterr().err
    # with statistics (made from a COCO-shaped folder) the run needs no image at all
    root = make_coco(env / "coco")
    stats = env / "ref.npz"
    assert (
        main(["prepare", "coco", "--coco-root", str(root), "--resolution", "8", "--export-stats", str(stats)])
        == 0
    )
    out = env / "stats_runs"
    assert main(base_args(out, *COMMON, "--captions-file", str(path), "--reference-stats", str(stats))) == 0
    run = only_run_dir(out)
    assert [p["caption"] for p in json.loads((run / "prompts.json").read_text())] == [
        f"caption {i}" for i in range(8)
    ]
    row = json.loads((run / "results.json").read_text())[0]
    assert row["fid"] > 0 and row["kid_mean"] is None


def test_a_reference_size_with_a_captions_or_statistics_file_is_refused() -> None:
    """Both decide the references themselves: an explicit --reference-size was ignored before; now a one-line
    refusal before any work."""
    from glidebench.runner.options import RunOptions, check_comparable

    with pytest.raises(
        ValueError, match=r"--reference-size 100 does not apply with --captions-file: the refer"
    ):
        check_comparable(RunOptions(captions_file="caps.jsonl", reference_size=100))
    with pytest.raises(
        ValueError, match=r"--reference-size 0 does not apply with --reference-stats: .*leave out"
    ):
        check_comparable(RunOptions(reference_stats="ref.npz", reference_size=0))
    check_comparable(RunOptions(captions_file="caps.jsonl"))  # no reference size: accepted
    check_comparable(RunOptions(reference_size=100))
