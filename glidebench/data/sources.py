"""Data sources: where a generate-and-measure run's prompts and reference images come from.

Owns the interface between the staged runner (:mod:`glidebench.runner.stages`) and a dataset. A source is
opened once from the resolved options and then answers, without the runner knowing which dataset it is:

- ``prompts``: one :class:`Prompt` per sample index (caption, seed = base seed + index, where it came from);
- ``reference_batches`` / ``reference_fingerprint``: uint8 NCHW reference images at a resolution, and the
  identity of that set (the key of its cached Inception features);
- ``setting_metrics``: metrics of one setting's images beyond the generic ones (the embedded set's caption
  agreement; nothing for MS-COCO), and ``metric_summary`` for the run log;
- ``record`` / ``data_id``: what goes into the provenance and the run's identity;
- ``describe`` and ``warnings``: the first line of a run and the warnings every result row carries.

Implementations: :class:`glidebench.data.coco_source.CocoSource` (MS-COCO on disk) and
:class:`glidebench.data.embedded_source.EmbeddedSource` (the embedded caption-image set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..store import ImageStore


@dataclass(frozen=True)
class Prompt:
    """One sample index of a run: its caption, its seed and where the caption came from."""

    index: int
    caption: str
    seed: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "caption": self.caption, "seed": self.seed, "source": self.source}


ReferenceBatches = Callable[[], Iterator[torch.Tensor]]


class DataSource:
    """A run's captions and reference images (see the module docstring). Subclasses set the attributes in
    their constructor and implement the reference-image methods."""

    kind: str  # "embedded" | "coco": the profile of the suite file that applies, and the spec's ``data``
    split: str
    data_id: str  # the dataset's identity in the run spec
    prompts: list[Prompt]
    record: dict[str, Any]  # the provenance's data record
    reference_count: int
    warnings: tuple[str, ...] = ()
    # the reference image each protocol caption was written for (its index in the reference set, -1 for none);
    # None when captions and references are drawn independently. The intervals delete and split a caption
    # together with its image (docs/uncertainty.md).
    caption_reference_index: list[int] | None = None

    @property
    def captions(self) -> list[str]:
        return [p.caption for p in self.prompts]

    def describe(self, suite: str) -> str:
        """Where the run's data comes from, for its first line."""
        raise NotImplementedError

    def validate(self, progress: bool = False) -> None:
        """Check every reference image before any generation (a corrupt one is found now, not hours later).
        Nothing to check by default (rendered references)."""

    def reference_batches(self, resolution: int, batch: int) -> ReferenceBatches:
        """A callable returning a fresh iterator of uint8 NCHW reference batches at ``resolution``."""
        raise NotImplementedError

    def reference_fingerprint(self, resolution: int) -> str:
        """The identity of the reference image set at ``resolution`` (its cached features' key)."""
        raise NotImplementedError

    def setting_metrics(self, store: ImageStore, indices: list[int], batch: int) -> dict[str, Any]:
        """Metrics of one setting's images that only this dataset can compute (none by default)."""
        return {}

    def metric_summary(self, metrics: dict[str, Any]) -> str:
        """Extra text for the run log's line of a setting ('' by default)."""
        return ""


def data_kind(requested: str | None, coco_root: Path | None) -> str:
    """``--data`` when given, else MS-COCO when a COCO root is known (``--coco-root`` / ``GLIDEBENCH_COCO``)."""
    return requested or ("coco" if coco_root else "embedded")
