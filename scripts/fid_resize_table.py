"""Measure how much FID's resize to 299 px changes FID: tf-bilinear (torch-fidelity's TF1 bilinear, the default)
vs clean (clean-fid's PIL bicubic with antialiasing), on

1. a COCO-format folder of real photographs built from the sample images that ship in scikit-image's and
   matplotlib's wheels (random square crops of each photo; two disjoint halves of the crops are compared, after
   the COCO reference preprocessing to each evaluation resolution), and
2. the images of a finished default run (``RUN_DIR``) against its embedded-set references.

Usage: ``python scripts/fid_resize_table.py --photos-out DIR [--run RUN_DIR] [--inception fid-helper]``.
Prints a Markdown table (the one in docs/reproducing.md) and writes it to DIR/fid_resize_table.json.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg", "brick.png", "grass.png",
    "gravel.png", "coins.png", "ihc.png",
)  # fmt: skip
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


def photo_paths() -> list[Path]:
    """The sample photographs shipped in the scikit-image and matplotlib wheels."""
    import matplotlib
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    return [sk / n for n in SKIMAGE_PHOTOS] + [mpl / n for n in MATPLOTLIB_PHOTOS]


def build_photo_coco(root: Path, crops_per_photo: int = 8, seed: int = 0, split: str = "val2014") -> Path:
    """A COCO-shaped tree (annotations/captions_<split>.json + <split>/*.png) of random square crops (half to
    full of the short side) of each sample photograph, RGB."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for p_idx, path in enumerate(photo_paths()):
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            for c in range(crops_per_photo):
                s = int(rng.integers(min(w, h) // 2, min(w, h) + 1))
                x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
                image_id = 1000 * p_idx + c
                name = f"COCO_{split}_{image_id:012d}.png"
                im.crop((x, y, x + s, y + s)).save(root / split / name)
                images.append({"id": image_id, "file_name": name, "width": s, "height": s})
                annotations.append(
                    {"id": image_id, "image_id": image_id, "caption": f"a crop of {path.stem}"}
                )
    (root / "annotations" / f"captions_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    return root


def _features(extractor, batches) -> np.ndarray:
    from glidebench.features import extract_features

    return extract_features(extractor, batches, batch_size=16, progress=False)["pool3"]


def photo_rows(root: Path, source: str, resolutions: tuple[int, ...] = (64, 256)) -> list[dict]:
    from glidebench.data.coco import CocoCaptions, reference_batches
    from glidebench.features import InceptionExtractor
    from glidebench.metrics import fid_from_features

    coco = CocoCaptions(root, "val2014")
    files = coco.reference_files()
    halves = files[0::2], files[1::2]
    rows = []
    for res in resolutions:
        row = {"set": f"photographs, {len(halves[0])} vs {len(halves[1])} crops", "resolution": res}
        feats = {}
        for mode in ("tf-bilinear", "clean"):
            ext = InceptionExtractor(source, resize=mode)
            a = _features(ext, reference_batches(halves[0], res, 16))
            b = _features(ext, reference_batches(halves[1], res, 16))
            feats[mode] = (a, b)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                row[f"fid_{mode}"] = fid_from_features(a, b)
        row["feature_shift"] = _relative_shift(feats)
        rows.append(row)
    return rows


def _relative_shift(feats: dict) -> float:
    """Mean per-image pool3 distance between the modes, relative to the mean distance between images."""
    a_tf, a_clean = feats["tf-bilinear"][0], feats["clean"][0]
    per_image = np.linalg.norm(a_tf - a_clean, axis=1).mean()
    between = np.linalg.norm(a_tf[:, None] - a_tf[None], axis=2)
    return float(per_image / between[np.triu_indices(len(a_tf), 1)].mean())


def run_rows(run_dir: Path, source: str) -> list[dict]:
    from glidebench.data.embedded_source import EmbeddedSource
    from glidebench.features import InceptionExtractor
    from glidebench.metrics import fid_from_features
    from glidebench.store import ImageStore

    spec = json.loads((run_dir / "spec.json").read_text())
    opts = {k: spec[k] for k in ("split", "reference_size", "num_samples", "seed", "captions")}
    opts["caption_style"] = spec.get("caption_style", "exact")
    source_ = EmbeddedSource(opts)
    res, n = int(spec["resolution"]), int(spec["num_samples"])
    rows = []
    ref = {m: _features(InceptionExtractor(source, resize=m), source_.reference_batches(res, 16)()) for m in
           ("tf-bilinear", "clean")}  # fmt: skip
    for s in spec["settings"]:
        sid = "none" if s["guidance"] == "none" else f"{s['guidance']}-{s['scale']:g}"
        store = ImageStore(run_dir / "images" / sid)
        row = {"set": f"default run {sid}, {n} vs {len(ref['clean'])} references", "resolution": res}
        feats = {}
        for mode in ("tf-bilinear", "clean"):
            gen = _features(InceptionExtractor(source, resize=mode), store.batches(list(range(n)), 16))
            feats[mode] = (gen, ref[mode])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                row[f"fid_{mode}"] = fid_from_features(gen, ref[mode])
        row["feature_shift"] = _relative_shift(feats)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos-out", type=Path, required=True)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--inception", default="auto", choices=["auto", "torch-fidelity", "fid-helper"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    from glidebench.features import resolve_inception_source

    source = resolve_inception_source(args.inception)
    root = build_photo_coco(args.photos_out / "coco")
    rows = photo_rows(root, source)
    if args.run:
        rows += run_rows(args.run, source)
    print(f"Inception: {source}\n")
    print("| images | px | FID tf-bilinear | FID clean | clean - tf | relative feature shift |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['resolution']} | {r['fid_tf-bilinear']:.2f} | {r['fid_clean']:.2f} | "
              f"{r['fid_clean'] - r['fid_tf-bilinear']:+.2f} | {r['feature_shift']:.3f} |")  # fmt: skip
    (args.photos_out / "fid_resize_table.json").write_text(
        json.dumps({"inception": source, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
