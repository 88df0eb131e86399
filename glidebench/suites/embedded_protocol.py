"""The embedded caption-image set's side of the generate-and-measure suites (coco-fid, attributes, nfe).

Owns the prompt record (``Prompt``), how captions and reference images are chosen from the embedded set's
fixed splits (one per image, random, or the one-object scenes the attribute classifier judges), the
reference rendering, and the caption-agreement metrics of a setting's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..store import ImageStore


@dataclass(frozen=True)
class Prompt:
    index: int
    caption: str
    seed: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "caption": self.caption, "seed": self.seed, "source": self.source}


def embedded_prompts(opts: dict[str, Any]) -> tuple[list[Prompt], list[Any], dict[str, Any], str]:
    from ..data.embedded import DATASET_VERSION, DEFAULT_SPLIT_SIZES, EmbeddedCaptionSet, single_object
    from ..spec import CAPTION_STYLES

    ds = EmbeddedCaptionSet()
    split = opts["split"]
    if split not in DEFAULT_SPLIT_SIZES:
        raise ValueError(f"embedded split {split!r} does not exist; use one of {sorted(DEFAULT_SPLIT_SIZES)}")
    r = int(opts["reference_size"]) or DEFAULT_SPLIT_SIZES[split]
    n, seed = int(opts["num_samples"]), int(opts["seed"])
    style = opts.get("caption_style", "exact")
    if style not in CAPTION_STYLES:
        raise ValueError(f"caption style {style!r} is unknown; use one of {CAPTION_STYLES}")
    records = ds.eval_split(split, r, short=style == "short")
    if opts["captions"] == "single-object":
        # the attribute check's protocol: references and captions are the one-object scenes among the first
        # reference_size records (what the attribute classifier can judge), one caption per image
        records = single_object(records)
        if n > len(records):
            raise ValueError(
                f"{n} single-object captions need more than the {len(records)} one-object scenes among the first "
                f"{r} {split} records; raise --reference-size (about 3 x {n}) or lower --num-samples"
            )
        picks = [int(i) for i in np.random.default_rng(seed).permutation(len(records))[:n]]
    elif opts["captions"] == "one-per-image":
        if n > r:
            raise ValueError(
                f"{n} samples with one caption per image need a reference set of >= {n} images; use "
                f"--reference-size {n} (or more), fewer --num-samples, or --captions random"
            )
        picks = [int(i) for i in np.random.default_rng(seed).permutation(r)[:n]]
    else:
        picks = [int(i) for i in np.random.default_rng(seed).integers(0, r, size=n)]
    prompts = [
        Prompt(i, records[k].caption, seed + i, f"embedded:{split}:{records[k].index}")
        for i, k in enumerate(picks)
    ]
    data_id = ds.fingerprint()
    record = {
        "dataset": "embedded",
        "version": DATASET_VERSION,
        "fingerprint": data_id,
        "split": split,
        "captions": opts["captions"],
        "caption_style": style,
        "seed": seed,
        "num_samples": n,
        "reference_size": r,
        "rule": {
            "one-per-image": "the first reference_size records of the fixed split are the reference set; "
            "captions: a seeded permutation (numpy default_rng(seed)) of them, first N (one per image)",
            "random": "captions drawn uniformly with replacement from the reference records (default_rng(seed))",
            "single-object": "the one-object scenes among the first reference_size records of the fixed split "
            "are the reference set; captions: a seeded permutation of them, first N (one per image)",
        }[opts["captions"]],
        "reference_records": len(records),
        "reference_images": "render(scene) at the set's 64 px, box-downsampled to the resolution (as training)",
    }
    return prompts, records, record, data_id


def embedded_reference_image(scene: Any, size: int, native: int) -> np.ndarray:
    from ..data.embedded import render

    if size <= native and native % size == 0:
        img = render(scene, native).astype(np.float64)
        f = native // size
        return np.round(img.reshape(size, f, size, f, 3).mean(axis=(1, 3))).astype(np.uint8)
    return render(scene, size)


ATTRIBUTE_COLUMNS = ("colour_acc", "shape_acc", "size_acc", "background_acc", "object_acc", "position_acc")


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
    from ..data.attributes import attribute_accuracy

    images = torch.cat(list(store.batches(indices, max(batch, 64))))
    acc = attribute_accuracy(images.permute(0, 2, 3, 1).numpy(), scenes, captions=captions)  # uint8 NHWC
    return {k: acc[k] for k in ATTRIBUTE_COLUMNS} | {
        "n_single_object": int(acc["n"]),
        "n_multi_object": int(acc["n_position"]),
    }
