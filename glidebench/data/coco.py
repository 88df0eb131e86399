"""MS-COCO captions and reference images from a local copy (no downloads), with reproducible caption choice.

Owns the real-data side of the coco-fid protocol (PROTOCOL.md, "Zero-shot MS-COCO FID"):

- layout: ``ROOT/annotations/captions_<split>.json`` and ``ROOT/<split>/<file_name>`` for split ``val2014``
  (the community's "COCO-30k") or ``val2017``;
- caption selection, recorded with the result (:meth:`CocoCaptions.selection_record`):
    * ``one-per-image``: the images that have captions, sorted by id, in a seeded permutation
      (``numpy.random.default_rng(seed)``); the first N images, each with one of its captions chosen by
      ``default_rng([seed, image_id])``. Distinct images, and N is a prefix of N' > N.
    * ``random``: all captions sorted by annotation id, in a seeded permutation; the first N (several may
      belong to one image), as "random validation captions".
- reference images: every image of the split (or a seeded subset), center-cropped to a square (not squeezed)
  and resized to the evaluation resolution with PIL bicubic (antialiased), converted to RGB. EXIF orientation
  tags are ignored: pixels are used as stored, the protocol's rule (COCO's own width/height annotations
  describe the stored orientation, and the reference implementations read images the same way).
- validation: every reference image is checked before any generation (:func:`validate_images`: decoded in
  full once, then known by its SHA-256), and the reference features are keyed by the files' content.
- null or blank captions are dropped (counted in the selection record), never prompted as "None". A caption
  that is not a string (a list, an object) is refused, naming the annotation id: prompting its repr would
  give "['a', 'b']", and splitting it into several captions would change the caption count and make one
  annotation id stand for several prompts, so the choice rule above would no longer describe the run. An
  image id listed twice is refused too (which file its captions describe is not known).
- errors: a missing annotations file, a malformed one, missing image files or an unreadable image raise
  :class:`CocoError`, whose message names the file(s) and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from glide.checkpoints import sha256_file

from ..images_io import to_rgb, to_rgb_array
from ..store import atomic_write_text

SPLITS = ("val2014", "val2017")
CAPTION_MODES = ("one-per-image", "random")
PREPROCESS = "center-crop+PIL-bicubic:v1"
COCO_URLS = {
    "val2014": ("http://images.cocodataset.org/zips/val2014.zip",
                "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"),
    "val2017": ("http://images.cocodataset.org/zips/val2017.zip",
                "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"),
}  # fmt: skip


class CocoError(RuntimeError):
    """Something is wrong with the local MS-COCO copy; the message names the file(s) and the fix."""


@dataclass(frozen=True)
class CocoCaption:
    image_id: int
    caption_id: int
    caption: str
    file_name: str

    @property
    def source(self) -> str:
        return f"coco:{self.image_id}"


def _clean(text: Any) -> str:
    """Whitespace folded; a null caption is the empty string (and is then dropped), never the text "None"."""
    return "" if text is None else re.sub(r"\s+", " ", str(text)).strip()


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def resolve_root(root: str | os.PathLike | None) -> Path | None:
    """``root``, else ``$GLIDEBENCH_COCO``, else None."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("GLIDEBENCH_COCO")
    return Path(env).expanduser() if env else None


class CocoCaptions:
    """The captions and images of one MS-COCO validation split on disk."""

    def __init__(self, root: str | os.PathLike, split: str = "val2014") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown COCO split {split!r}; choose one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.annotations_path = self.root / "annotations" / f"captions_{split}.json"
        self.images_dir = self.root / split
        self._load()

    def _fix(self) -> str:
        images, annotations = COCO_URLS[self.split]
        return (
            f"expected {self.annotations_path} and the images in {self.images_dir}/; unpack {annotations} and "
            f"{images} into {self.root} (or point --coco-root / GLIDEBENCH_COCO at such a directory)"
        )

    def _load(self) -> None:
        if not self.root.is_dir():
            raise CocoError(f"COCO root {self.root} does not exist; {self._fix()}")
        if not self.annotations_path.is_file():
            raise CocoError(f"missing COCO annotations file {self.annotations_path}; {self._fix()}")
        try:
            data = json.loads(self.annotations_path.read_text(encoding="utf-8"))
            image_list = [(int(im["id"]), str(im["file_name"])) for im in data["images"]]
            raw = [(int(a["image_id"]), int(a["id"]), a.get("caption")) for a in data["annotations"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CocoError(
                f"{self.annotations_path} is not a COCO captions file ({type(e).__name__}: {e}); it may be "
                f"truncated: {self._fix()}"
            ) from e
        images = self._unique_images(image_list)
        # a caption is one string (or null): a list or an object would be prompted as its repr
        odd = [(ann_id, text) for _, ann_id, text in raw if text is not None and not isinstance(text, str)]
        if odd:
            ann_id, text = odd[0]
            raise CocoError(
                f"{self.annotations_path}: annotation id {ann_id} has a caption of type {type(text).__name__} "
                f"({_short(text)}){f' (and {len(odd) - 1} more)' if len(odd) > 1 else ''}; a COCO caption is one "
                "string per annotation: give each caption its own annotation (with its own id) or use the "
                f"official file. {self._fix()}"
            )
        anns = [(image_id, ann_id, _clean(text)) for image_id, ann_id, text in raw]
        unknown = sorted({i for i, _, _ in anns if i not in images})
        if unknown:
            raise CocoError(
                f"{self.annotations_path} has captions for {len(unknown)} image ids not in its image list "
                f"(e.g. {unknown[:3]}); the file is corrupt: {self._fix()}"
            )
        self.images = images
        self.empty_captions = sum(1 for _, _, text in anns if not text)  # null or blank: never a prompt
        self.captions: dict[int, list[tuple[int, str]]] = {}
        for image_id, ann_id, text in sorted(anns, key=lambda a: a[1]):
            if text:
                self.captions.setdefault(image_id, []).append((ann_id, text))
        if not self.captions:
            raise CocoError(
                f"{self.annotations_path} has no usable captions ({len(images)} images, {len(anns)} annotations, "
                f"{self.empty_captions} of them null or empty): is it the captions file of {self.split}? "
                f"{self._fix()}"
            )
        self.annotations_sha256 = sha256_file(self.annotations_path)

    def _unique_images(self, image_list: list[tuple[int, str]]) -> dict[int, str]:
        """The image list as id -> file name; an id listed twice is refused (a dict would keep the last)."""
        images: dict[int, str] = {}
        dupes: list[int] = []
        for image_id, name in image_list:
            if image_id in images:
                dupes.append(image_id)
            images[image_id] = name
        if dupes:
            first, others = dupes[0], len(set(dupes)) - 1
            names = sorted({name for i, name in image_list if i == first})
            count = sum(i == first for i, _ in image_list)
            more = f"; {others} more ids repeat" if others else ""
            raise CocoError(
                f"{self.annotations_path}: image id {first} is listed {count} times (files "
                f"{', '.join(names)}){more}; an image id must be listed once: remove the repeated entries or "
                f"use the official file. {self._fix()}"
            )
        return images

    # -- captions ----------------------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        """Ids of the images that have at least one caption, sorted."""
        return sorted(self.captions)

    def select(self, n: int, mode: str = "one-per-image", seed: int = 0) -> list[CocoCaption]:
        """``n`` captions chosen reproducibly (see the module docstring)."""
        if mode not in CAPTION_MODES:
            raise ValueError(f"caption mode must be one of {CAPTION_MODES}, got {mode!r}")
        if mode == "one-per-image":
            ids = self.image_ids
            if n > len(ids):
                raise CocoError(
                    f"{n} samples requested with one caption per image, but {self.split} has {len(ids)} captioned "
                    f"images; use --num-samples <= {len(ids)} or --captions random"
                )
            order = np.random.default_rng(seed).permutation(len(ids))[:n]
            out = []
            for k in order:
                image_id = ids[int(k)]
                caps = self.captions[image_id]
                j = int(np.random.default_rng([seed, image_id]).integers(len(caps)))
                out.append(CocoCaption(image_id, caps[j][0], caps[j][1], self.images[image_id]))
            return out
        flat = [(ann_id, image_id, text) for image_id, caps in self.captions.items() for ann_id, text in caps]
        flat.sort()
        if n > len(flat):
            raise CocoError(f"{n} samples requested but {self.split} has only {len(flat)} captions")
        order = np.random.default_rng(seed).permutation(len(flat))[:n]
        return [
            CocoCaption(flat[k][1], flat[k][0], flat[k][2], self.images[flat[k][1]])
            for k in (int(i) for i in order)
        ]

    def selection_record(self, n: int, mode: str, seed: int) -> dict[str, Any]:
        return {
            "dataset": "MS-COCO",
            "split": self.split,
            "annotations": str(self.annotations_path),
            "annotations_sha256": self.annotations_sha256,
            "captions": mode,
            "seed": seed,
            "num_samples": n,
            "rule": (
                "one caption per distinct image: seeded permutation of the captioned image ids (sorted), first N, "
                "caption j = default_rng([seed, image_id]).integers(#captions)"
                if mode == "one-per-image"
                else "seeded permutation of all captions sorted by annotation id, first N"
            ),
            "n_images_in_split": len(self.images),
            "n_captions_in_split": sum(len(c) for c in self.captions.values()),
            "n_empty_captions_dropped": self.empty_captions,
            "exif_orientation": "ignored: pixels used as stored (COCO's width/height describe the stored image)",
        }

    # -- reference images --------------------------------------------------------------------------------
    def reference_files(self, size: int = 0, seed: int = 0) -> list[Path]:
        """All image files of the split sorted by id (``size`` > 0: a seeded subset, kept in id order)."""
        ids = sorted(self.images)
        if size > len(ids):
            raise CocoError(
                f"--reference-size {size} is more than the {len(ids)} images of {self.split} "
                f"({self.annotations_path}); use --reference-size {len(ids)} or less (0: all of them)"
            )
        if size and size < len(ids):
            keep = np.sort(np.random.default_rng([seed, 1]).permutation(len(ids))[:size])
            ids = [ids[int(i)] for i in keep]
        return [self.images_dir / self.images[i] for i in ids]

    def check_files(self, paths: Sequence[Path]) -> None:
        """Raise CocoError naming the missing image files, if any."""
        missing = [p for p in paths if not p.is_file()]
        if missing:
            names = ", ".join(str(p) for p in missing[:5])
            raise CocoError(
                f"{len(missing)} of {len(paths)} COCO images are missing (e.g. {names}); {self._fix()}"
            )

    def reference_fingerprint(self, paths: Sequence[Path], resolution: int, digests: Sequence[str]) -> str:
        """Identity of the reference image set: split, annotations, each file's name and content (SHA-256, from
        :func:`validate_images`), resolution and resize rule. Keyed by content, a changed image (even of the same
        size, even restored later) never reuses features computed from other bytes."""
        if len(digests) != len(paths):
            raise ValueError(f"{len(paths)} reference files but {len(digests)} digests")
        h = hashlib.sha256(f"coco:{self.split}:{self.annotations_sha256}:{resolution}:{PREPROCESS}".encode())
        for p, d in zip(paths, digests):
            h.update(f"{p.name}:{d};".encode())
        return h.hexdigest()


def validate_images(paths: Sequence[Path], manifest: Path | None = None, progress: bool = False) -> list[str]:
    """The SHA-256 of every file in ``paths``, after checking that each one decodes: a file whose digest is
    not yet in ``manifest`` (a list of digests of images that decoded before) is decoded in full with PIL, as
    :func:`load_reference_image` will. A missing, corrupt or truncated image is a :class:`CocoError` naming it,
    before any generation. New good digests are added to ``manifest`` (atomically)."""

    known = set(manifest.read_text().split()) if manifest is not None and manifest.is_file() else set()
    digests, bad, new = [], [], []
    for p in tqdm(paths, desc="checking reference images", unit="img", disable=not progress):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            bad.append(f"{p} (missing)")
            continue
        digest = hashlib.sha256(data).hexdigest()
        digests.append(digest)
        if digest in known:
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                to_rgb_array(im, p)  # decodes it; a mode of unknown range is refused here, before generation
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            bad.append(f"{p} ({type(e).__name__}: {e})")
            continue
        known.add(digest)
        new.append(digest)
    if bad:
        raise CocoError(
            f"{len(bad)} of {len(paths)} reference images are corrupt or unreadable: {'; '.join(bad[:5])}. Replace them with "
            "the originals from the COCO zip (or re-download the split), then run again"
        )
    if new and manifest is not None:
        atomic_write_text(manifest, "\n".join(sorted(known)) + "\n")
    return digests


def load_reference_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: RGB, center-cropped to a square, resized with PIL bicubic. Errors name the file."""
    try:
        with Image.open(path) as im:
            im = to_rgb(im, path)  # by its real range: 16-bit grey scaled, not clipped to white
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if s != size:
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise CocoError(f"reference image {path} is missing; restore it from the COCO zip") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CocoError(
            f"reference image {path} is corrupt or unreadable ({type(e).__name__}: {e}); replace it with the "
            "original from the COCO zip (or re-download the split), then run again"
        ) from e


def reference_batches(paths: Sequence[Path], size: int, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of center-cropped, resized reference images."""
    for lo in range(0, len(paths), batch_size):
        arrays = [load_reference_image(p, size) for p in paths[lo : lo + batch_size]]
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
