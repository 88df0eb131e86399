"""A fixed caption list as a data source (``--captions-file FILE``): the widely shared 30k-caption lists.

Owns reading, checking and using such a file:

- formats, told by the suffix: ``.csv`` with a ``caption`` column (and optionally ``image_id``), ``.jsonl`` with
  one object per line holding ``caption`` (and optionally ``image_id``), ``.txt`` with one caption per line;
- checks, each a :class:`CaptionsFileError` naming the file, the line and the fix: not UTF-8, empty, no
  ``caption`` column, a blank caption, a bad or duplicate image id, ids on some rows only, malformed JSON;
- prompts: the file's rows in order, the first N (``--num-samples`` / ``--limit``), sample i with seed
  ``seed + i``; nothing is shuffled or re-chosen;
- references: with image ids and an MS-COCO root (``--coco-root``), the COCO images of those rows (center crop,
  PIL bicubic, as :mod:`glidebench.data.coco`); else the run needs ``--reference-stats FILE.npz`` (refused
  with that fix otherwise);
- identity: the file's SHA-256 and row count (in the data record; ``data_id`` = ``file:`` + SHA-256 prefix).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glide.checkpoints import sha256_file

from ..features import cache_root
from .coco import CocoCaptions, _clean, reference_batches, validate_images
from .sources import DataSource, Prompt, ReferenceBatches

FORMATS = (".csv", ".jsonl", ".txt")
PREPROCESS = "captions-file+center-crop+PIL-bicubic:v1"


class CaptionsFileError(ValueError):
    """A captions file cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class CaptionRow:
    line: int  # 1-based line of the file (the header is line 1 of a CSV)
    caption: str
    image_id: int | None


def _image_id(path: Path, line: int, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise CaptionsFileError(
        f"{path}, line {line}: image_id {value!r} is not a non-negative integer (COCO image ids are integers)"
    )


def read_captions_file(path: str | Path) -> tuple[list[CaptionRow], str]:
    """The rows of ``path`` and the file's SHA-256 (see the module docstring for formats and checks)."""

    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CaptionsFileError(
            f"captions file {path}: unknown format {path.suffix or '(no suffix)'}; use .csv (a caption column), "
            ".jsonl (caption fields) or .txt (one caption per line)"
        )
    if not path.is_file():
        raise CaptionsFileError(f"captions file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CaptionsFileError(
            f"{path}, line {line}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); re-save the file as "
            "UTF-8"
        ) from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = _read_txt(path, text)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path, text)
    else:
        rows = _read_csv(path, text)
    if not rows:
        raise CaptionsFileError(f"captions file {path} is empty: it has no caption rows")
    with_ids = [r for r in rows if r.image_id is not None]
    if with_ids and len(with_ids) != len(rows):
        first = next(r for r in rows if r.image_id is None)
        raise CaptionsFileError(
            f"{path}, line {first.line}: no image_id, but other rows have one; give every row an id or none"
        )
    seen: dict[int, int] = {}
    for r in with_ids:
        if r.image_id in seen:
            raise CaptionsFileError(
                f"{path}, line {r.line}: duplicate image_id {r.image_id} (first on line {seen[r.image_id]}); each "
                "row's image is a reference image, so ids must be distinct"
            )
        seen[r.image_id] = r.line
    return rows, sha256_file(path)


def _caption(path: Path, line: int, value: Any) -> str:
    text = _clean(value) if isinstance(value, str) or value is None else None
    if text is None:
        raise CaptionsFileError(f"{path}, line {line}: the caption is not text ({value!r})")
    if not text:
        raise CaptionsFileError(f"{path}, line {line}: blank caption; remove the row or write its caption")
    return text


def _read_txt(path: Path, text: str) -> list[CaptionRow]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing newlines at the end of the file
        lines.pop()
    return [CaptionRow(i, _caption(path, i, t), None) for i, t in enumerate(lines, start=1)]


def _read_jsonl(path: Path, text: str) -> list[CaptionRow]:
    rows = []
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise CaptionsFileError(f"{path}, line {i}: not JSON ({e})") from None
        if not isinstance(obj, dict) or "caption" not in obj:
            raise CaptionsFileError(
                f'{path}, line {i}: each line must be a JSON object with a "caption" field (and optionally '
                '"image_id")'
            )
        image_id = obj.get("image_id")
        rows.append(
            CaptionRow(
                i,
                _caption(path, i, obj["caption"]),
                None if image_id is None else _image_id(path, i, image_id),
            )
        )
    return rows


def _read_csv(path: Path, text: str) -> list[CaptionRow]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if not fields:
        raise CaptionsFileError(f"captions file {path} is empty: no header row")
    if "caption" not in fields:
        raise CaptionsFileError(
            f"{path}, line 1: no 'caption' column (the header has {', '.join(fields)}); name the column of "
            "captions 'caption' (and the optional one of COCO image ids 'image_id')"
        )
    reader.fieldnames = fields
    rows = []
    for record in reader:
        line = reader.line_num
        if all(v in (None, "") for v in record.values()):
            continue
        image_id = record.get("image_id")
        rows.append(
            CaptionRow(
                line,
                _caption(path, line, record.get("caption")),
                None if image_id in (None, "") else _image_id(path, line, image_id),
            )
        )
    return rows


class CaptionsFileSource(DataSource):
    """Prompts from a captions file; references from MS-COCO by image id or from reference statistics.

    ``opts``: num_samples, seed, captions_file, reference_stats (a path or None), split (the COCO split of the
    references, when used)."""

    kind = "coco"

    def __init__(self, path: str | Path, coco_root: Path | None, opts: dict[str, Any]) -> None:
        self.path = Path(path)
        rows, self.sha256 = read_captions_file(self.path)
        n, seed = int(opts["num_samples"]), int(opts["seed"])
        if n > len(rows):
            raise CaptionsFileError(
                f"{n} samples requested but captions file {self.path} has {len(rows)} rows; use --num-samples <= "
                f"{len(rows)} (or --limit)"
            )
        self.rows = rows[:n]
        has_ids = rows[0].image_id is not None
        self.prompts = [
            Prompt(
                i,
                r.caption,
                seed + i,
                f"{self.path.name}:{r.line}" + (f":coco:{r.image_id}" if has_ids else ""),
            )
            for i, r in enumerate(self.rows)
        ]
        self.data_id = f"file:{self.sha256[:16]}"
        self.files: list[Path] = []
        self.coco = None
        stats = opts.get("reference_stats")
        if not stats:
            if not has_ids or coco_root is None:
                why = "its rows have no image_id" if not has_ids else "no MS-COCO root is given"
                raise CaptionsFileError(
                    f"captions file {self.path}: no reference images ({why}); pass --reference-stats FILE.npz (from "
                    "`glidebench prepare coco --export-stats`), or give image ids and --coco-root DIR"
                )
            self._coco_references(coco_root, opts["split"])
        self.split = self.coco.split if self.coco is not None else "captions-file"
        self.reference_count = len(self.files)
        self._digests: list[str] | None = None
        self.record = {
            "dataset": "captions file",
            "captions_file": str(self.path),
            "captions_file_sha256": self.sha256,
            "captions_file_rows": len(rows),
            "num_samples": n,
            "seed": seed,
            "rule": "the file's rows in order, the first N; sample i has seed + i",
            "image_ids": has_ids,
            "references": (
                f"the MS-COCO {self.split} images of the first {n} rows' image ids" if self.files else
                "reference statistics (--reference-stats)"
            ),
        }  # fmt: skip

    def _coco_references(self, root: Path, split: str) -> None:

        self.coco = CocoCaptions(root, split)
        missing = [r for r in self.rows if r.image_id not in self.coco.images]
        if missing:
            r = missing[0]
            raise CaptionsFileError(
                f"{self.path}, line {r.line}: image_id {r.image_id} is not an image of MS-COCO {split} "
                f"({len(missing)} rows like it); pass --coco-split of the list's split, or --reference-stats"
            )
        self.files = [self.coco.images_dir / self.coco.images[int(r.image_id)] for r in self.rows]  # type: ignore[arg-type]
        self.coco.check_files(self.files)

    def describe(self, suite: str) -> str:
        where = f" with MS-COCO {self.split} references" if self.files else " with reference statistics"
        return f"captions file {self.path} ({len(self.prompts)} of its rows){where}"

    def validate(self, progress: bool = False) -> None:

        if self.files:
            self._digests = validate_images(self.files, cache_root() / "validated-images.txt", progress)

    def reference_batches(self, resolution: int, batch: int) -> ReferenceBatches:
        return lambda: reference_batches(self.files, resolution, batch)

    def reference_fingerprint(self, resolution: int) -> str:

        if self._digests is None:
            self.validate()
        h = hashlib.sha256(f"{PREPROCESS}:{self.sha256}:{len(self.rows)}:{resolution}".encode())
        for p, d in zip(self.files, self._digests or []):
            h.update(f"{p.name}:{d};".encode())
        return h.hexdigest()
