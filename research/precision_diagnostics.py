"""What Inception precision/recall measure on the embedded set: a diagnostic for one finished embedded run.

    python -m research.precision_diagnostics runs/attributes/<run> [--held 500] [--out diag.json]

The embedded set's references are flat renders (a handful of exact palette colours, anti-aliased edges). This
script measures, against the run's own reference set and with the harness's precision/recall (k = 3,
Inception pool3):

1. real vs real: held-out renders of the same split (records after the reference set, same caption rule) against
   the references: the ceiling a perfect model would reach at this sample count;
2. the same held-out renders after small pixel-level changes (Gaussian noise of 0.5 / 1 / 2 grey levels,
   Gaussian blur of 0.5 / 0.8 px, a uniform brightness shift of up to +-20 levels): how much of the precision
   scale such changes use up;
3. each setting of the run as generated, and with its +-1-level dither removed (a pixel within 1.5 levels of
   its 3x3 median is set to that median), with the fraction of locally flat pixels that carry such dither.

It prints a table and writes the numbers as JSON (``--out``). It changes nothing in the run directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter, median_filter

from glidebench.data.embedded_source import EmbeddedSource, embedded_reference_image
from glidebench.features import InceptionExtractor
from glidebench.metrics.prc import precision_recall
from glidebench.store import atomic_write_json


def prc_reference_subset(real: np.ndarray, n_fake: int, seed: int) -> np.ndarray:
    """The seeded equal-size reference subset that precision/recall used before version 5 of coco-fid (the
    harness now uses the whole reference set; kept here for this comparison)."""
    if len(real) <= n_fake:
        return real
    return real[np.sort(np.random.default_rng([seed, 2]).permutation(len(real))[:n_fake])]


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def dither_fraction(images: np.ndarray) -> float:
    """Fraction of locally flat pixels (7x7 neighbourhood of one colour) that differ from their 5x5 median by
    at least one grey level."""
    x = images.astype(np.float64)
    med = median_filter(x, size=(1, 5, 5, 1))
    flat = np.abs(median_filter(x, size=(1, 7, 7, 1)) - med).max(-1) < 1
    return float((np.abs(x - med).max(-1)[flat] >= 1).mean())


def remove_dither(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64)
    med = median_filter(x, size=(1, 3, 3, 1))
    return _uint8(np.where(np.abs(x - med) <= 1.5, med, x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished run directory on the embedded set")
    ap.add_argument("--held", type=int, default=500, help="held-out real renders (at most)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the numbers here as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    spec = json.loads((args.run / "spec.json").read_text())
    if spec.get("data") != "embedded":
        ap.error(f"{args.run} is not a run on the embedded set (data={spec.get('data')!r})")
    data = json.loads((args.run / "provenance.json").read_text())["data"]  # the requested reference_size
    opts = {k: data[k] for k in ("split", "captions", "num_samples", "reference_size", "seed")}
    records = EmbeddedSource(opts).records
    size, native = int(spec["resolution"]), 64
    ref_imgs = np.stack([embedded_reference_image(r.scene, size, native) for r in records])
    # held-out renders: the records after the reference set, with the same one-object rule where it applies
    from glidebench.data.embedded import EmbeddedCaptionSet, single_object

    r = int(data["reference_size"])
    later = EmbeddedCaptionSet().eval_split(spec["split"], 3 * r)[r:]
    if spec["captions"] == "single-object":
        later = single_object(later)
    n = min(args.held, len(later), len(ref_imgs), int(spec["num_samples"]))
    held = np.stack([embedded_reference_image(rec.scene, size, native) for rec in later[:n]])

    ex = InceptionExtractor(spec.get("inception", "auto"))

    def feats(images: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return np.concatenate([ex(t[i : i + 100])["pool3"] for i in range(0, len(t), 100)])

    ref = feats(ref_imgs)
    real = prc_reference_subset(ref, n, int(spec["seed"]))  # the harness's equal-sized reference subset
    k = int(spec.get("prc_k", 3))

    def pr(images: np.ndarray) -> dict[str, float]:
        return precision_recall(real, feats(images[:n]), k=k)

    rng = np.random.default_rng(0)
    heldf = held.astype(np.float64)
    rows: list[dict] = []

    def add(name: str, images: np.ndarray) -> None:
        row = (
            {"set": name, "n": int(min(n, len(images)))}
            | pr(images)
            | {"dither": dither_fraction(images[:n])}
        )
        rows.append(row)
        print(
            f"{name:42s} P {row['precision']:.3f}  R {row['recall']:.3f}  dither {row['dither']:.3f}",
            flush=True,
        )

    add("real (held-out renders)", held)
    for s in (0.5, 1.0, 2.0):
        add(f"real + Gaussian noise {s:g} grey levels", _uint8(heldf + rng.normal(0, s, heldf.shape)))
    for s in (0.5, 0.8):
        add(f"real, blurred {s:g} px", _uint8(gaussian_filter(heldf, (0, s, s, 0))))
    add("real, brightness shift U(-20, 20)", _uint8(heldf + rng.uniform(-20, 20, (len(heldf), 1, 1, 1))))
    for setting in sorted(p.name for p in (args.run / "images").iterdir() if p.is_dir()):
        files = sorted((args.run / "images" / setting).glob("*.png"))[:n]
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        add(f"{setting} (generated)", images)
        add(f"{setting}, +-1-level dither removed", remove_dither(images))
    if args.out:
        atomic_write_json(args.out, {"run": str(args.run), "k": k, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
