"""Images made elsewhere, scored under the protocol: ``run coco-fid --images DIR`` (one setting, or one
sub-folder per setting id) or ``--images-setting cfg-3=DIR ...``.

A folder holds ``<index>.png|jpg|jpeg|webp`` for the run's global indices 0..N-1 (``glidebench prompts`` lists
them with their captions and seeds; leading zeros are optional). The folder is checked before any work:
missing indices, two files for one index and unreadable files are errors that name them; files beyond N and
files that are not images are listed in a note and ignored; non-RGB images are converted to RGB and images of
another size are brought to the evaluation resolution by the protocol's rule (both with a note). The content
of every used file goes into the run's identity, so a changed image makes another run.

As a :class:`~glidebench.generators.base.Generator`, the folder "generates" index ``i`` by reading it: the
index is ``seed - base_seed`` (the protocol's per-index seeds), so scoring a folder and generating the same
images through a generator give identical results, bit for bit.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images_io import to_rgb_array
from .base import Capabilities, Generator, GeneratorError, SamplingDescription, SamplingOptions, resize_to

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_NAME = re.compile(r"^(\d+)$")


def scan_folder(directory: Path, n: int) -> tuple[dict[int, Path], list[str]]:
    """{index: file} for indices 0..n-1 and notes; errors for a missing folder, missing or duplicate indices."""
    if not directory.is_dir():
        raise GeneratorError(f"--images {directory}: no such folder")
    found: dict[int, list[Path]] = {}
    ignored: list[str] = []
    for p in sorted(directory.iterdir()):
        m = _NAME.match(p.stem)
        if not p.is_file() or p.suffix.lower() not in SUFFIXES or not m:
            if not p.name.startswith("."):
                ignored.append(p.name)
            continue
        found.setdefault(int(m.group(1)), []).append(p)
    dupes = {i: ps for i, ps in found.items() if len(ps) > 1}
    if dupes:
        i, ps = next(iter(sorted(dupes.items())))
        raise GeneratorError(
            f"--images {directory}: {len(dupes)} indices have more than one file (e.g. {i}: "
            f"{', '.join(p.name for p in ps)}); keep one file per index"
        )
    missing = [i for i in range(n) if i not in found]
    if missing:
        raise GeneratorError(
            f"--images {directory}: {len(missing)} of the run's {n} images are missing (e.g. indices "
            f"{missing[:5]}); expected <index>.png|jpg|webp for 0..{n - 1} (`glidebench prompts` lists them), or run "
            "with --limit/--num-samples equal to what the folder holds"
        )
    extra = sorted(i for i in found if i >= n)
    notes = []
    if extra:
        notes.append(f"{directory}: {len(extra)} images beyond the run's {n} ignored (indices {extra[0]}..)")
    if ignored:
        notes.append(
            f"{directory}: {len(ignored)} files that are not <index>.png|jpg|webp ignored ({ignored[:3]})"
        )
    return {i: found[i][0] for i in range(n)}, notes


def read_rgb(path: Path, data: bytes | None = None) -> tuple[np.ndarray, bool]:
    """uint8 [H, W, 3] and whether it was converted from another mode (``data``: the file's bytes, when already
    read); unreadable files name themselves."""

    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            converted = im.mode != "RGB"
            return to_rgb_array(im, path), converted
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise GeneratorError(
            f"image {path} is unreadable ({type(e).__name__}: {e}); replace it and run the same command again"
        ) from e


class FolderGenerator(Generator):
    """The images of one or more folders, one per setting id (see the module docstring)."""

    verb = "copied"  # what the run's log says of its chunks (a model's are "sampled")

    def __init__(self, folders: dict[str, Path], n: int, base_seed: int) -> None:
        self.folders = {k: Path(v) for k, v in folders.items()}
        self.base_seed = base_seed
        self.files: dict[str, dict[int, Path]] = {}
        self.notes: list[str] = []
        converted, sizes = 0, set()
        digest = hashlib.sha256()
        for setting_id, folder in sorted(self.folders.items()):
            files, notes = scan_folder(folder, n)
            self.files[setting_id], self.notes = files, self.notes + notes
            for i, p in files.items():
                data = p.read_bytes()  # read once: hashed for the identity and decoded for the check
                img, conv = read_rgb(p, data)
                converted += conv
                sizes.add(img.shape[:2])
                digest.update(f"{setting_id}/{i}:".encode() + hashlib.sha256(data).digest())
        if converted:
            self.notes.append(
                f"{converted} images were not RGB (grey, RGBA or palette) and were converted to RGB"
            )
        self.content_sha256 = digest.hexdigest()
        self.sizes = sorted(sizes)
        self.name = folder_run_name(self.folders)
        kinds = {"none" if sid == "none" else sid.split("-", 1)[0] for sid in self.folders}
        h, w = self.sizes[0] if self.sizes else (0, 0)
        self.capabilities = Capabilities(
            guidance=tuple(sorted(kinds)), resolution=min(h, w), dtypes=("fp32", "fp16", "bf16"),
            devices=("cpu", "cuda", "mps"),
        )  # fmt: skip

    def identity(self) -> dict[str, str]:
        return {"images": self.content_sha256}

    def describe(self, options: SamplingOptions) -> SamplingDescription:
        return SamplingDescription(
            self.name, "images made elsewhere", "", "not known (made elsewhere)",
            "whatever the folder's maker used for the setting its folder names", reads=(),
        )  # fmt: skip

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> np.ndarray:
        files = self.files.get(setting.setting_id)
        if files is None:
            raise GeneratorError(
                f"no image folder for setting {setting.setting_id} (folders: {sorted(self.files)}); give "
                f"--images-setting {setting.setting_id}=DIR"
            )
        images = [read_rgb(files[s - self.base_seed])[0] for s in seeds]

        if len({im.shape for im in images}) > 1:  # mixed sizes: bring each to the evaluation size here
            images = [resize_to(im, options.resolution) for im in images]
        return np.stack(images)


def folder_run_name(folders: dict[str, Path]) -> str:
    """The results' model name of a folder run: the folder's name (``--images DIR``, with or without one
    sub-folder per setting id), else the folders' common parent's (``--images-setting`` folders side by side),
    as one plain word (characters other than letters, digits, ``.``, ``_``, ``+`` and ``-`` become ``-``)."""
    paths = {Path(p) for p in folders.values()}
    if len(paths) == 1:
        (only,) = paths
        name = only.parent.name if _setting_id(only.name) and only.name in folders else only.name
        name = name or only.resolve().name
    else:
        parents = {p.resolve().parent for p in paths}
        name = parents.pop().name if len(parents) == 1 else "images"
    return re.sub(r"[^\w.+-]+", "-", name, flags=re.ASCII).strip("-.") or "images"


def folders_from_options(
    images: str | None, images_setting: Sequence[str] | None, setting_ids: list[str]
) -> dict:
    """{setting id: folder} from ``--images DIR`` and ``--images-setting NAME=DIR ...``.

    ``--images DIR``: its sub-folders named like setting ids (``cfg-3``, ``clip-2``, ``none``) when it has any,
    else the one setting of the run (``setting_ids`` must then hold exactly one)."""
    folders: dict[str, Path] = {}
    for item in images_setting or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise GeneratorError(
                f"--images-setting {item!r}: use NAME=DIR, e.g. --images-setting cfg-3=out/cfg3"
            )
        if name in folders:
            raise GeneratorError(f"--images-setting names {name} twice")
        folders[name] = Path(path)
    if images:
        root = Path(images)
        subs = (
            sorted(p for p in root.iterdir() if p.is_dir() and _setting_id(p.name)) if root.is_dir() else []
        )
        if subs:
            folders |= {p.name: p for p in subs}
        elif len(setting_ids) == 1:
            folders.setdefault(setting_ids[0], root)
        else:
            raise GeneratorError(
                f"--images {images} holds the images of one setting, but the run has {len(setting_ids)} "
                f"({', '.join(setting_ids)}): give the one they were made with (e.g. --cfg 3 --clip ''), put one "
                "sub-folder per setting id in it (cfg-3/, clip-2/), or use --images-setting NAME=DIR"
            )
    for name in folders:
        if not _setting_id(name):
            raise GeneratorError(f"{name!r} is not a setting id: use cfg-<scale>, clip-<scale> or none")
    return folders


def _setting_id(name: str) -> bool:
    return name == "none" or re.fullmatch(r"(cfg|clip)-\d+(\.\d+)?", name) is not None


def settings_of(folders: dict[str, Path]) -> tuple[list[float], list[float], bool]:
    """(cfg scales, clip scales, unguided) named by the folders' setting ids."""
    cfg = sorted(float(k.split("-", 1)[1]) for k in folders if k.startswith("cfg-"))
    clip = sorted(float(k.split("-", 1)[1]) for k in folders if k.startswith("clip-"))
    return cfg, clip, "none" in folders
