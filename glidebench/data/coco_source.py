"""MS-COCO on disk as a data source of the generate-and-measure suites (see :mod:`glidebench.data.sources`).

Owns the options that only make sense for MS-COCO and the translation of the caption and reference choice of
:class:`glidebench.data.coco.CocoCaptions` into prompts and reference batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..features import cache_root
from .coco import CocoCaptions, CocoError, reference_batches, validate_images
from .sources import DataSource, Prompt, ReferenceBatches

REFERENCE_PREPROCESS = "center crop, PIL bicubic"


class CocoSource(DataSource):
    """Prompts and references from the MS-COCO split ``opts['split']`` under ``root``.

    ``opts`` holds the resolved suite options: split, num_samples, reference_size (0 = the whole split), seed,
    captions (one-per-image or random), caption_style (exact only: MS-COCO captions are people's own).
    """

    kind = "coco"

    def __init__(self, root: Path | None, opts: dict[str, Any]) -> None:
        check_options(opts)
        if root is None:
            raise CocoError("--data coco needs the dataset: pass --coco-root DIR or set GLIDEBENCH_COCO")
        n, seed, mode = int(opts["num_samples"]), int(opts["seed"]), opts["captions"]
        self.root = root
        self.coco = CocoCaptions(root, opts["split"])
        self.split = self.coco.split
        chosen = self.coco.select(n, mode, seed)
        self.prompts = [Prompt(i, c.caption, seed + i, c.source) for i, c in enumerate(chosen)]
        # with --reference-stats FILE.npz no reference image is read (FID comes from the file's mu / sigma)
        stats = opts.get("reference_stats")
        self.files = [] if stats else self.coco.reference_files(int(opts["reference_size"]), seed)
        self.coco.check_files(self.files)
        self.reference_count = len(self.files)
        position = {p.name: i for i, p in enumerate(self.files)}  # a caption's image among the references
        self.caption_reference_index = (
            [position.get(Path(c.file_name).name, -1) for c in chosen] if self.files else None
        )
        self.record = self.coco.selection_record(len(self.prompts), mode, seed) | {
            "reference_size": len(self.files),
            "reference_preprocess": REFERENCE_PREPROCESS,
        }
        self.data_id = self.coco.annotations_sha256[:16]
        self._digests: list[str] | None = None

    def describe(self, suite: str) -> str:
        return f"MS-COCO {self.split} from {self.root}"

    def reference_batches(self, resolution: int, batch: int) -> ReferenceBatches:
        return lambda: reference_batches(self.files, resolution, batch)

    def validate(self, progress: bool = False) -> None:
        """Check that every reference image decodes (before any generation); their digests key the features."""

        self._digests = validate_images(self.files, cache_root() / "validated-images.txt", progress)

    def reference_fingerprint(self, resolution: int) -> str:
        if self._digests is None:
            self.validate()
        return self.coco.reference_fingerprint(self.files, resolution, self._digests)


def check_options(opts: dict[str, Any]) -> None:
    """Refuse the options that belong to the embedded set (before any file is read)."""
    if opts.get("captions") == "single-object":
        raise ValueError(
            "--captions single-object is for the embedded set; MS-COCO takes one-per-image or random"
        )
    if opts.get("caption_style", "exact") != "exact":
        raise ValueError("--caption-style short is for the embedded set; MS-COCO captions are people's own")
