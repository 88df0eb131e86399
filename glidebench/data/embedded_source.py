"""The embedded caption-image set as a data source of the generate-and-measure suites (coco-fid, attributes,
nfe).

Owns how captions and reference images are chosen from the embedded set's fixed splits (one per image,
random, or the one-object scenes the attribute classifier judges), the caption styles (exact, short), the
reference rendering, and the caption-agreement metrics of a setting's images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..schema import ATTRIBUTE_COLUMNS
from ..spec import CAPTION_STYLES
from ..store import ImageStore
from .attributes import attribute_accuracy
from .embedded import (
    DATASET_VERSION,
    DEFAULT_SPLIT_SIZES,
    EmbeddedCaptionSet,
    EmbeddedConfig,
    render,
    single_object,
)
from .sources import DataSource, Prompt, ReferenceBatches

# The embedded splits are drawn record by record without end; glidebench gives them this size, above the largest
# protocol's reference set (MS-COCO val2014's 40,504 images).
MAX_REFERENCE_SIZE = 50_000
WARNING = "embedded caption-image set, not MS-COCO: not comparable with the paper's numbers"
_RULES = {
    "one-per-image": "the first reference_size records of the fixed split are the reference set; "
    "captions: a seeded permutation (numpy default_rng(seed)) of them, first N (one per image)",
    "random": "captions drawn uniformly with replacement from the reference records (default_rng(seed))",
    "single-object": "the one-object scenes among the first reference_size records of the fixed split "
    "are the reference set; captions: a seeded permutation of them, first N (one per image)",
}


def _picks(mode: str, n: int, r: int, n_records: int, split: str, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    if mode == "single-object":
        if n > n_records:
            raise ValueError(
                f"{n} single-object captions need more than the {n_records} one-object scenes among the first "
                f"{r} {split} records; raise --reference-size (about 3 x {n}) or lower --num-samples"
            )
        return [int(i) for i in rng.permutation(n_records)[:n]]
    if mode == "one-per-image":
        if n > r:
            raise ValueError(
                f"{n} samples with one caption per image need a reference set of >= {n} images; use "
                f"--reference-size {n} (or more), fewer --num-samples, or --captions random"
            )
        return [int(i) for i in rng.permutation(r)[:n]]
    return [int(i) for i in rng.integers(0, r, size=n)]


class EmbeddedSource(DataSource):
    """Prompts and references from the embedded set's fixed split ``opts['split']`` (see the module docstring).

    ``opts`` holds the resolved suite options: split, num_samples, reference_size (0 = the whole split),
    seed, captions, caption_style.
    """

    kind = "embedded"
    warnings = (WARNING,)

    def __init__(self, opts: dict[str, Any]) -> None:

        ds = EmbeddedCaptionSet()
        split = opts["split"]
        if split not in DEFAULT_SPLIT_SIZES:
            raise ValueError(
                f"embedded split {split!r} does not exist; use one of {sorted(DEFAULT_SPLIT_SIZES)}"
            )
        r = int(opts["reference_size"]) or DEFAULT_SPLIT_SIZES[split]
        if r > MAX_REFERENCE_SIZE:  # refused before a record is drawn (each costs about 1 kB and 5 ms)
            raise ValueError(f"--reference-size {r} is more than the embedded {split} split holds ({MAX_REFERENCE_SIZE}"
                             f" records); use --reference-size {MAX_REFERENCE_SIZE} or less (0: its {DEFAULT_SPLIT_SIZES[split]})")  # fmt: skip
        n, seed, mode = int(opts["num_samples"]), int(opts["seed"]), opts["captions"]
        style = opts.get("caption_style", "exact")
        if style not in CAPTION_STYLES:
            raise ValueError(f"caption style {style!r} is unknown; use one of {CAPTION_STYLES}")
        records = ds.eval_split(split, r, short=style == "short")
        if mode == "single-object":
            # the attribute check's protocol: references and captions are the one-object scenes among the first
            # reference_size records (what the attribute classifier can judge), one caption per image
            records = single_object(records)
        picks = _picks(mode, n, r, len(records), split, seed)
        self.split, self.caption_style, self.records = split, style, records
        self.native = EmbeddedConfig().size
        self.prompts = [
            Prompt(i, records[k].caption, seed + i, f"embedded:{split}:{records[k].index}")
            for i, k in enumerate(picks)
        ]
        self.data_id = ds.fingerprint()
        self.reference_count = len(records)
        self.caption_reference_index = list(picks)  # captions of the reference records themselves
        self.record = {
            "dataset": "embedded",
            "version": DATASET_VERSION,
            "fingerprint": self.data_id,
            "split": split,
            "captions": mode,
            "caption_style": style,
            "seed": seed,
            "num_samples": n,
            "reference_size": r,
            "rule": _RULES[mode],
            "reference_records": len(records),
            "reference_images": "render(scene) at the set's 64 px, box-downsampled to the resolution (as training)",
        }
        self._scenes = prompt_scenes(self.prompts, records)

    def describe(self, suite: str) -> str:
        return (
            f"no MS-COCO given (--coco-root / GLIDEBENCH_COCO): running the {suite} protocol on the EMBEDDED "
            f"caption-image set ({self.split} split, {self.caption_style} captions)"
        )

    def reference_batches(self, resolution: int, batch: int) -> ReferenceBatches:
        def gen():
            for lo in range(0, len(self.records), batch):
                arr = np.stack(
                    [
                        embedded_reference_image(r.scene, resolution, self.native)
                        for r in self.records[lo : lo + batch]
                    ]
                )
                yield torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

        return gen

    def reference_fingerprint(self, resolution: int) -> str:
        return f"embedded:{self.data_id}:{self.split}:{len(self.records)}:{resolution}:render{self.native}+box:v1"

    def setting_metrics(self, store: ImageStore, indices: list[int], batch: int) -> dict[str, Any]:
        stated = self.captions[: len(indices)] if self.caption_style == "short" else None
        return embedded_attribute_metrics(store, indices, self._scenes, batch, stated)

    def setting_items(self, store: ImageStore, indices: list[int], batch: int) -> dict[str, Any]:
        """Per-image values of the accuracies of :meth:`setting_metrics` (their bootstrap intervals)."""
        images = torch.cat(list(store.batches(indices, max(batch, 64)))).permute(0, 2, 3, 1).numpy()
        stated = self.captions[: len(indices)] if self.caption_style == "short" else None
        return attribute_items(images, self._scenes, stated)

    def metric_summary(self, metrics: dict[str, Any]) -> str:
        return (
            f"  colour {metrics['colour_acc']:.2f} shape {metrics['shape_acc']:.2f} "
            f"position {metrics['position_acc']:.2f}"
        )


def embedded_reference_image(scene: Any, size: int, native: int) -> np.ndarray:
    """A reference image: ``scene`` rendered at the set's native size and box-downsampled to ``size`` (as in
    training), or rendered at ``size`` directly when that is not an integer downsampling."""

    if size <= native and native % size == 0:
        img = render(scene, native).astype(np.float64)
        f = native // size
        return np.round(img.reshape(size, f, size, f, 3).mean(axis=(1, 3))).astype(np.uint8)
    return render(scene, size)


def prompt_scenes(prompts: list[Prompt], records: list[Any]) -> list[Any]:
    """The ground-truth scene of each embedded prompt (its source is ``embedded:<split>:<record index>``)."""
    by_index = {r.index: r.scene for r in records}
    return [by_index[int(p.source.rsplit(":", 1)[1])] for p in prompts]


def embedded_attribute_metrics(
    store: ImageStore, indices: list[int], scenes: list[Any], batch: int, captions: list[str] | None = None
) -> dict:
    """GenEval-style caption agreement of one setting's images (embedded set only; see
    :mod:`glidebench.data.attributes`): colour/shape/size/background/object accuracy over the one-object
    captions, position accuracy (every stated relation holds) over the others; NaN where there are none.
    ``captions`` (short captions): judge only what each caption states."""

    images = torch.cat(list(store.batches(indices, max(batch, 64))))
    acc = attribute_accuracy(images.permute(0, 2, 3, 1).numpy(), scenes, captions=captions)  # uint8 NHWC
    return {k: acc[k] for k in ATTRIBUTE_COLUMNS} | {
        "n_single_object": int(acc["n"]),
        "n_multi_object": int(acc["n_position"]),
    }


def attribute_items(images: np.ndarray, scenes: list[Any], captions: list[str] | None) -> dict:
    """Per-image values of the embedded set's accuracies (1 hit, 0 miss, NaN not judged): the accuracy of a
    set of images is the mean of its judged values, so these resample like any per-caption mean."""

    out = {k: np.full(len(scenes), np.nan) for k in ATTRIBUTE_COLUMNS}
    for i in range(len(scenes)):
        acc = attribute_accuracy(
            images[i : i + 1], [scenes[i]], captions=None if captions is None else [captions[i]]
        )
        for k in ATTRIBUTE_COLUMNS:
            out[k][i] = acc[k]
    return out
