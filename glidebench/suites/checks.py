"""Checks of the embedded GLIDE family that the coco-fid style suites do not cover.

    python -m glidebench check                   # all three checks, results in runs/checks/<models hash>/

- **Evaluator retrieval** (``retrieval_accuracy``): for each held-out test image, is its own caption the
  evaluator CLIP's best match among itself and 9 other captions of the split (drawn with a seed, all
  different from it)? The evaluator is what gives the embedded set's CLIP score, so it must read captions.
- **Inpainting** (``inpaint_check``): one-object test scenes at the base resolution, the object's bounding
  box (plus a one-pixel margin) erased, the hole filled by the inpainting model under a caption whose object
  has a *different* colour and shape than the erased one (seeded), classifier-free scale 3. Reported: the
  largest change of any kept pixel (0 means the known region is kept exactly), and the attribute
  classifier's colour / shape accuracy against the *requested* attributes (the fill follows the caption, not
  the erased object; chance is 1/7 and 1/4).
- **Upsampler** (``upsample_check``): test scenes rendered at the base resolution (the box-downsampled,
  8-bit render the base model learns) are upsampled with the text-conditional upsampler (the harness's
  upsampling settings: DDIM fast27, temperature 0.997) and compared with the true render at the upsampler's
  resolution. Reported: RMSE in grey levels of the upsampled images and of plain bilinear upsampling (the
  upsampler's own view of its low-res input), and how far the upsampled images, box-downsampled again, are
  from the low-res input (an upsampler must keep what it was given).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from glide.checkpoints import load_clip, load_model
from glide.pipeline import GlidePipeline

from .. import models as M
from ..data.attributes import attribute_accuracy
from ..data.embedded import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    EmbeddedCaptionSet,
    EvalRecord,
    Scene,
    make_caption,
    single_object,
)
from ..data.embedded_source import embedded_reference_image
from ..features import GlideClipEmbedder
from ..store import atomic_write_json, atomic_write_text


def retrieval_accuracy(
    embedder: Any, records: list[EvalRecord], k: int = 10, seed: int = 0, batch: int = 100
) -> dict[str, float]:
    """Top-1 accuracy of picking each image's caption among ``k`` candidates (its own + ``k - 1`` others);
    a tie with a distractor counts as a miss, so an embedder that ignores its input scores 0.

    ``embedder`` has ``embed_images(uint8 NCHW) -> [N, D]`` and ``embed_texts(list) -> [N, D]``.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 (the true caption and at least one distractor), got {k}")
    captions = sorted({r.caption for r in records})
    if len(captions) < k:
        raise ValueError(f"need at least {k} distinct captions, the records have {len(captions)}")
    t = _normalise(embedder.embed_texts(captions))
    row = {c: i for i, c in enumerate(captions)}
    data = EmbeddedCaptionSet()
    hits = []
    rng = np.random.default_rng(seed)
    for lo in range(0, len(records), batch):
        chunk = records[lo : lo + batch]
        imgs = torch.from_numpy(data.render_records(chunk)).permute(0, 3, 1, 2)
        z = _normalise(embedder.embed_images(imgs.contiguous()))
        for r, zi in zip(chunk, z):
            own = row[r.caption]
            others = rng.choice([j for j in range(len(captions)) if j != own], size=k - 1, replace=False)
            scores = t[np.concatenate([[own], others])] @ zi
            hits.append(bool(scores[0] > scores[1:].max()))  # strict: a tie is a miss
    return {"retrieval_top1": float(np.mean(hits)), "k": float(k), "n": float(len(hits))}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def box_mask(scene: Scene, size: int, margin: int = 1) -> torch.Tensor:
    """``[1, size, size]`` mask, 1 = keep, 0 over the first object's bounding box grown by ``margin`` px."""
    x0, y0, x1, y1 = scene.objects[0].box()
    m = torch.ones(1, size, size)
    lo_x, lo_y = max(int(np.floor(x0 * size)) - margin, 0), max(int(np.floor(y0 * size)) - margin, 0)
    hi_x, hi_y = min(int(np.ceil(x1 * size)) + margin, size), min(int(np.ceil(y1 * size)) + margin, size)
    m[:, lo_y:hi_y, lo_x:hi_x] = 0
    return m


def edited_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """The one-object ``scene`` with its object's colour and shape both changed (seeded; the colour stays
    distinct from the background's)."""

    obj = scene.objects[0]
    bg = BACKGROUNDS[scene.background]
    colours = [c for c in sorted(COLOURS) if c != obj.colour and COLOURS[c] != bg]
    shapes = [s for s in SHAPES if s != obj.shape]
    new = dataclasses.replace(obj, colour=str(rng.choice(colours)), shape=str(rng.choice(shapes)))
    return Scene((new,), scene.background, (), make_caption((new,), (), scene.background))


def inpaint_check(
    pipeline: Any,
    records: list[EvalRecord],
    scale: float = 3.0,
    sampler: str = "ddim",
    steps: str = "25",
    seed: int = 0,
    batch: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill each one-object scene's erased object box under an edited caption; see the module docstring."""

    size = pipeline.base.config.image_size
    native = EmbeddedCaptionSet().size
    rng = np.random.default_rng(seed)
    edits = [edited_scene(r.scene, rng) for r in records]
    outs, kept_err, hole_frac = [], 0, []
    for lo in tqdm(range(0, len(records), batch), desc="inpaint check", disable=not progress):
        chunk = records[lo : lo + batch]
        ref = np.stack([embedded_reference_image(r.scene, size, native) for r in chunk])
        ref_t = torch.from_numpy(ref).permute(0, 3, 1, 2).contiguous()
        image = ref_t.float() / 127.5 - 1
        mask = torch.stack([box_mask(r.scene, size) for r in chunk])
        prompts = [e.caption for e in edits[lo : lo + batch]]
        out = pipeline.inpaint(image, mask, prompts, [seed + lo + i for i in range(len(chunk))], scale=scale,
                               sampler=sampler, steps=steps)  # fmt: skip
        keep = mask.bool().expand_as(out)
        kept_err = max(kept_err, int((out.int() - ref_t.int()).abs()[keep].max()))
        hole_frac += (1 - mask.mean(dim=(1, 2, 3))).tolist()
        outs.append(out)
    images = torch.cat(outs)
    acc = attribute_accuracy(images.permute(0, 2, 3, 1).numpy(), edits)  # uint8 NHWC
    return {
        "n": len(records),
        "scale": scale,
        "sampler": f"{sampler} {steps}",
        "kept_region_max_abs_diff": kept_err,
        "hole_fraction_mean": float(np.mean(hole_frac)),
        "requested_colour_acc": acc["colour_acc"],
        "requested_shape_acc": acc["shape_acc"],
        "background_acc": acc["background_acc"],
        "images": images,
        "captions": [e.caption for e in edits],
    }


def _grey_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMSE of two [-1, 1] image batches, in 8-bit grey levels."""
    return float(((a.double() - b.double()) * 127.5).pow(2).mean().sqrt())


def upsample_check(
    pipeline: Any,
    records: list[EvalRecord],
    sampler: str = "ddim",
    steps: str = "fast27",
    temp: float = 0.997,
    seed: int = 0,
    batch: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Upsample each scene's low-resolution render and compare with its true high-resolution render; see the
    module docstring. ``images``: uint8 [3, N, 3, H, W], the true renders, bilinear, upsampled."""

    low_size = pipeline.base.config.image_size
    size = pipeline.upsampler.config.image_size
    if size % low_size:
        raise ValueError(f"upsampler resolution {size} is not a multiple of the base resolution {low_size}")
    native = EmbeddedCaptionSet().size

    def as_tensor(images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    truth, bilinear, ups, lows = [], [], [], []
    for lo in tqdm(range(0, len(records), batch), desc="upsample check", disable=not progress):
        chunk = records[lo : lo + batch]
        low = as_tensor([embedded_reference_image(r.scene, low_size, native) for r in chunk])
        truth.append(as_tensor([embedded_reference_image(r.scene, size, native) for r in chunk]))
        bilinear.append(F.interpolate(low, (size, size), mode="bilinear", align_corners=False).clamp(-1, 1))
        seeds = [seed + lo + i for i in range(len(chunk))]
        ups.append(pipeline.upsample(low, [r.caption for r in chunk], seeds, sampler=sampler, steps=steps,
                                     temp=temp).cpu().float())  # fmt: skip
        lows.append(low)
    truth_t, bil_t, up_t, low_t = (torch.cat(x) for x in (truth, bilinear, ups, lows))
    if not torch.isfinite(up_t).all():
        raise ValueError("the upsampler produced NaN/inf samples")
    per_image = ((up_t - truth_t) * 127.5).pow(2).mean(dim=(1, 2, 3))
    per_image_bil = ((bil_t - truth_t) * 127.5).pow(2).mean(dim=(1, 2, 3))

    def u8(x: torch.Tensor) -> torch.Tensor:
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    return {
        "n": len(records),
        "resolution": f"{low_size} -> {size}",
        "sampler": f"{sampler} {steps}, temperature {temp:g}",
        "rmse_grey_levels": _grey_rmse(up_t, truth_t),
        "bilinear_rmse_grey_levels": _grey_rmse(bil_t, truth_t),
        "beats_bilinear_fraction": float((per_image < per_image_bil).double().mean()),
        "low_res_consistency_rmse_grey_levels": _grey_rmse(F.avg_pool2d(up_t, size // low_size), low_t),
        "images": torch.stack([u8(truth_t), u8(bil_t), u8(up_t)]),
    }


def _models_key(files: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for role in sorted(files):
        h.update(f"{role}:{files[role].verified_sha256()}".encode())
    return h.hexdigest()[:12]


def run_checks(args: argparse.Namespace) -> int:

    files = M.embedded_files()
    missing = [r for r in ("eval-clip", "inpaint", "base", "upsample") if r not in files]
    if missing:
        raise FileNotFoundError(
            f"the embedded family lacks {missing} in {M.models_dir()}; restore glidebench/assets/models from git "
            "or train them (python scripts/train_embedded.py train)"
        )
    out = Path(args.out) / "checks" / _models_key(files)
    out.mkdir(parents=True, exist_ok=True)
    data = EmbeddedCaptionSet()
    result: dict[str, Any] = {"models": {r: f.verified_sha256() for r, f in sorted(files.items())}}
    t0 = time.monotonic()
    clip = load_clip(str(files["eval-clip"].path))
    emb = GlideClipEmbedder(clip, "embedded-clip-eval", "", torch.device("cpu"))
    test = data.eval_split("test", args.num_retrieval)
    result["retrieval"] = retrieval_accuracy(emb, test, k=10, seed=args.seed)
    print(
        f"evaluator retrieval among 10, {len(test)} test images: {result['retrieval']['retrieval_top1']:.3f}"
    )
    short = M.embedded_files(caption_style="short")
    if "eval-clip" in short and "eval-clip" not in M.short_fallbacks(short):
        # the short-caption evaluator (fine-tuned on a mix of exact and short captions) must still tell exact
        # captions apart; retrieval among short captions is ill-posed (a distractor is often true of the image)
        clip_s = load_clip(str(short["eval-clip"].path))
        emb_s = GlideClipEmbedder(clip_s, "embedded-clip-eval-short", "", torch.device("cpu"))
        result["models"]["eval-clip-short"] = short["eval-clip"].verified_sha256()
        result["retrieval_short_evaluator"] = retrieval_accuracy(emb_s, test, k=10, seed=args.seed)
        print(
            f"short-caption evaluator retrieval among 10 (exact captions), {len(test)} test images: "
            f"{result['retrieval_short_evaluator']['retrieval_top1']:.3f}"
        )
    singles = single_object(data.eval_split("test", 3 * args.num_inpaint + 100))[: args.num_inpaint]
    pipe = GlidePipeline(load_model(str(files["inpaint"].path)))
    inp = inpaint_check(pipe, singles, scale=args.scale, seed=args.seed, progress=True)
    images, captions = inp.pop("images"), inp.pop("captions")
    result["inpaint"] = inp
    print(
        f"inpainting ({inp['n']} one-object scenes, object box erased, edited caption, CFG {args.scale:g}): kept "
        f"region max |diff| {inp['kept_region_max_abs_diff']}, requested colour {inp['requested_colour_acc']:.3f}, "
        f"shape {inp['requested_shape_acc']:.3f}"
    )
    grid = images[:16].permute(0, 2, 3, 1).numpy()
    strip = np.concatenate(list(grid), axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.Resampling.NEAREST).save(
        out / "inpaint-examples.png"
    )
    atomic_write_text(out / "inpaint-examples.txt", "\n".join(captions[:16]) + "\n")
    up_pipe = GlidePipeline(
        load_model(str(files["base"].path)), upsampler=load_model(str(files["upsample"].path))
    )
    up = upsample_check(up_pipe, data.eval_split("test", args.num_upsample), seed=args.seed, progress=True)
    up_images = up.pop("images")
    result["upsample"] = up
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(
        f"upsampler ({up['n']} test scenes, {up['resolution']} px, {up['sampler']}): RMSE "
        f"{up['rmse_grey_levels']:.1f} grey levels (bilinear {up['bilinear_rmse_grey_levels']:.1f}), better than "
        f"bilinear on {up['beats_bilinear_fraction']:.0%}, low-res consistency RMSE "
        f"{up['low_res_consistency_rmse_grey_levels']:.1f}"
    )
    rows = [np.concatenate(list(kind[:8].permute(0, 2, 3, 1).numpy()), axis=1) for kind in up_images]
    Image.fromarray(np.concatenate(rows, axis=0)).resize(
        (rows[0].shape[1] * 2, rows[0].shape[0] * 6), Image.Resampling.NEAREST
    ).save(out / "upsample-examples.png")  # rows: true render, bilinear, upsampler
    atomic_write_json(out / "checks.json", result)
    print(f"wrote {out / 'checks.json'}")
    print(json.dumps(result, indent=1))
    return 0
