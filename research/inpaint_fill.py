"""What the embedded inpainting model draws into a masked region, measured through ``python -m glide inpaint``'s
own input path (a 64 px PNG read and resized to the model's 32 px, a white = keep mask).

    python -m research.inpaint_fill [--n 12] [--steps 25] [--scale 5] [--cases a,b] [--grid DIR] [--out F]

Cases (one-object test scenes of the embedded set, seeds 0..n-1, classifier-free guidance at ``--scale``, the
CLI's ancestral sampler):

- ``scene``: the scene rendered at 64 px, its object's box (plus one pixel) erased, its own caption: the model
  must redraw the object;
- ``base``: the embedded base model's unmasked samples of the same captions and seeds (what the text-to-image
  model draws; its measures are taken over the same boxes);
- ``scene+noise``: the scene with Gaussian pixel noise (``--noise`` grey levels) before it is masked: a
  context with texture, as a photo or a JPEG has;
- ``gradient`` and ``gradient s=1``: a smooth colour gradient (no such image is in the training set) with a
  16 x 16 centre square erased, the scene's caption; ``s=1`` runs the conditional model alone;
- ``flat``: one flat colour that is not among the set's backgrounds (teal), the same centre square erased.

Measures, per image, in 8-bit grey levels:

- ``hole_hf``: mean |x - median3x3(x)| over the erased pixels whose 3 x 3 neighbourhood is erased too: pixel
  noise (flat renders give about 0-1, anti-aliased object edges a few levels, noise tens of levels);
- ``kept_hf``: the same over the kept pixels (the context's own texture);
- ``noisy``: the fraction of images with ``hole_hf`` > 8;
- ``hole_colour_err``: the distance between the mean colour of the erased region and of the same region of
  the input (the original render for ``scene``), RGB Euclidean;
- colour / shape / background accuracy of the attribute classifier against the caption (scene cases).

A probe of the denoiser itself (``--probe``; ``--probe --cases none`` runs only the probe, in seconds): each
context with its hole holding the true content (the erased object; the gradient or flat colour itself), noised
to t = 50, 200, 500, and the model's conditional x_0 prediction compared with the truth over the hole (RMSE in
grey levels). A denoiser that knows the context recovers the hole at low noise; one that does not leaves the
noise in.

Prints a table and writes the numbers as JSON (``--out``). On the project's shared 2-core machine at one
thread: about 5 minutes with the defaults; ``--steps 25,100`` (the numbers in docs/glide.md) took 17
minutes under a load of about 9.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_erosion, median_filter

from glide.__main__ import EMBEDDED_DIR, _read_image
from glide.checkpoints import load_model
from glide.pipeline import GlidePipeline
from glidebench.data.attributes import attribute_accuracy
from glidebench.data.embedded import EmbeddedCaptionSet, render, single_object
from glidebench.store import atomic_write_json
from glidebench.suites.checks import box_mask

NOISY = 8.0  # grey levels of hole_hf above which a fill counts as noise
FLAT = (40, 150, 150)  # teal: no background of the embedded set has it


def gradient_image(size: int = 64) -> np.ndarray:
    """A smooth RGB gradient, uint8 [size, size, 3] (nothing like the training set's flat scenes)."""
    x = np.linspace(0.0, 255.0, size)
    r = np.add.outer(x, x) / 2
    g = np.tile(x, (size, 1))
    b = 255.0 - g.T
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def centre_mask(size: int, side: int) -> torch.Tensor:
    m = torch.ones(1, size, size)
    lo = (size - side) // 2
    m[:, lo : lo + side, lo : lo + side] = 0
    return m


def cli_inputs(images64: list[np.ndarray], size: int, tmp: Path) -> torch.Tensor:
    """The images as the CLI reads them: PNG files, RGB, bicubic-resized to ``size``, in [-1, 1]."""
    out = []
    for i, img in enumerate(images64):
        path = tmp / f"in{i}.png"
        Image.fromarray(img).save(path)
        out.append(_read_image(path, size))
    return torch.cat(out)


def hf_noise(img: np.ndarray, region: np.ndarray) -> float:
    """Mean |x - median3x3(x)| (grey levels) over ``region`` eroded by one pixel (HWC uint8, HW bool)."""
    inner = binary_erosion(region, np.ones((3, 3), bool))
    if not inner.any():
        inner = region
    x = img.astype(np.float64)
    return float(np.abs(x - median_filter(x, size=(3, 3, 1)))[inner].mean())


def measure(images: np.ndarray, inputs: np.ndarray, masks: np.ndarray, scenes: list | None) -> dict[str, Any]:
    """The measures of one case (images and inputs uint8 NHWC, masks [N, H, W] with 1 = keep)."""
    holes = masks < 0.5
    hole_hf = [hf_noise(im, h) for im, h in zip(images, holes)]
    kept_hf = [hf_noise(inp, ~h) for inp, h in zip(inputs, holes)]
    colour_err = [
        float(np.linalg.norm(im[h].astype(float).mean(0) - inp[h].astype(float).mean(0)))
        for im, inp, h in zip(images, inputs, holes)
    ]
    row: dict[str, Any] = {
        "hole_hf": float(np.mean(hole_hf)),
        "hole_hf_max": float(np.max(hole_hf)),
        "kept_hf": float(np.mean(kept_hf)),
        "noisy": float(np.mean(np.array(hole_hf) > NOISY)),
        "hole_colour_err": float(np.mean(colour_err)),
        "per_image_hole_hf": [round(v, 2) for v in hole_hf],
    }
    if scenes is not None:
        acc = attribute_accuracy(images, scenes)
        row |= {k: acc[f"{k}_acc"] for k in ("colour", "shape", "background")}
    return row


def to_nhwc(x: torch.Tensor) -> np.ndarray:
    """uint8 NCHW (the pipeline's output) or [-1, 1] float NCHW -> uint8 NHWC."""
    if x.dtype != torch.uint8:
        x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    torch.manual_seed(0)
    inpaint = GlidePipeline(load_model(f"{EMBEDDED_DIR}/embedded-inpaint.safetensors"))
    base = GlidePipeline(load_model(f"{EMBEDDED_DIR}/embedded-base.safetensors"))
    size = inpaint.base.config.image_size
    records = single_object(EmbeddedCaptionSet().eval_split("test", 4 * args.n + 40))[: args.n]
    scenes = [r.scene for r in records]
    captions = [r.caption for r in records]
    seeds = list(range(args.n))
    rng = np.random.default_rng(0)
    renders = [render(s, 64) for s in scenes]
    noisy = [
        np.clip(r + rng.normal(0, args.noise, r.shape), 0, 255).round().astype(np.uint8) for r in renders
    ]
    box = torch.stack([box_mask(s, size) for s in scenes])
    centre = torch.stack([centre_mask(size, size // 2)] * args.n)
    results: dict[str, Any] = {"n": args.n, "scale": args.scale, "noise": args.noise, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {
            "scene": (cli_inputs(renders, size, Path(tmp)), box, scenes),
            "scene+noise": (cli_inputs(noisy, size, Path(tmp)), box, scenes),
            "gradient": (cli_inputs([gradient_image()] * args.n, size, Path(tmp)), centre, None),
            "flat": (
                cli_inputs([np.full((64, 64, 3), FLAT, np.uint8)] * args.n, size, Path(tmp)),
                centre,
                None,
            ),
        }
    plan = [
        (case, steps, args.scale)
        for steps in args.steps
        for case in ("base", "scene", "scene+noise", "gradient")
    ]
    plan += [("gradient s=1", args.steps[0], 1.0), ("flat", args.steps[0], args.scale)]
    if args.cases:
        plan = [p for p in plan if p[0] in args.cases]
    if args.probe:
        truth = {"scene": inputs["scene"][0], "gradient": inputs["gradient"][0], "flat": inputs["flat"][0]}
        results["probe"] = {}
        for case, image in truth.items():
            row = denoise_probe(inpaint, image, inputs[case][1], captions)
            results["probe"][case] = row
            print(
                f"probe {case:<16} x_0 RMSE over the hole: "
                + ", ".join(f"{k} {v:5.1f}" for k, v in row.items())
            )
    for case, steps, scale in plan:
        t0 = time.monotonic()
        if case == "base":
            x = base.generate(captions, seeds, "cfg", scale, "ancestral", str(steps))
            image, mask, judged = inputs["scene"]
        else:
            image, mask, judged = inputs[case.split(" ")[0]]
            x = inpaint.inpaint(image, mask, captions, seeds, scale, "ancestral", str(steps))
        row = measure(to_nhwc(x), to_nhwc(image), mask[:, 0].numpy(), judged)
        row |= {"steps": steps, "scale": scale, "seconds": round(time.monotonic() - t0, 1)}
        results["cases"][f"{case} @{steps}"] = row
        print(_line(f"{case} @{steps}", row), flush=True)
        if args.grid:
            Image.fromarray(np.concatenate(list(to_nhwc(x)[:8]), axis=1)).resize(
                (8 * size * 4, size * 4), Image.Resampling.NEAREST
            ).save(Path(args.grid) / f"{case.replace(' ', '_').replace('=', '')}_{steps}.png")
    return results


def denoise_probe(
    pipe: GlidePipeline, image: torch.Tensor, mask: torch.Tensor, captions: list[str], ts=(50, 200, 500)
) -> dict[str, float]:
    """RMSE (grey levels) over the hole of the model's x_0 prediction from ``image`` noised to each t."""
    from glide.diffusion.gaussian import create_gaussian_diffusion

    cfg = pipe.base.config
    diffusion = create_gaussian_diffusion(cfg.diffusion_steps, cfg.noise_schedule, "")
    g = torch.Generator().manual_seed(0)
    emb = pipe._text_emb(pipe.base, captions)
    hole = (mask < 0.5).expand_as(image)
    out = {}
    for t in ts:
        tt = torch.full((image.shape[0],), t, dtype=torch.long)
        x_t = diffusion.q_sample(image, tt, torch.randn(image.shape, generator=g))
        with torch.no_grad():
            eps = pipe.base(x_t, tt, text_emb=emb, inpaint_image=image * mask, inpaint_mask=mask)[:, :3]
        x0 = diffusion._predict_xstart_from_eps(x_t, tt, eps).clamp(-1, 1)
        out[f"t={t}"] = float(((x0 - image)[hole] * 127.5).pow(2).mean().sqrt())
        raw = (x_t / diffusion.sqrt_alphas_cumprod[t]).clamp(-1, 1)  # no denoising at all
        out[f"t={t} undenoised"] = float(((raw - image)[hole] * 127.5).pow(2).mean().sqrt())
    return out


def _line(name: str, row: dict[str, Any]) -> str:
    acc = (
        f"  colour {row['colour']:.2f} shape {row['shape']:.2f} background {row['background']:.2f}"
        if "colour" in row
        else ""
    )
    return (
        f"{name:<22} hole_hf {row['hole_hf']:6.2f} (max {row['hole_hf_max']:6.2f})  kept_hf {row['kept_hf']:5.2f}  "
        f"noisy {row['noisy']:.2f}  hole colour err {row['hole_colour_err']:6.1f}{acc}  ({row['seconds']} s)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=12, help="one-object test scenes (and seeds)")
    p.add_argument("--steps", default="25", help="ancestral step counts, e.g. 25,100")
    p.add_argument(
        "--scale", type=float, default=5.0, help="classifier-free scale (the CLI's inpaint default)"
    )
    p.add_argument("--noise", type=float, default=8.0, help="std of the pixel noise of scene+noise (levels)")
    p.add_argument("--probe", action="store_true", help="also probe the denoiser's x_0 error in the hole")
    p.add_argument(
        "--cases", default="", help="only these cases, comma-separated (default: all; none: no sampling)"
    )
    p.add_argument("--grid", default=None, help="folder for PNG strips of the first 8 images of each case")
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    args = p.parse_args(argv)
    args.steps = [int(s) for s in str(args.steps).split(",")]
    args.cases = [c for c in args.cases.split(",") if c]
    if args.grid:
        Path(args.grid).mkdir(parents=True, exist_ok=True)
    results = run(args)
    if args.out:
        atomic_write_json(Path(args.out), results)
    else:
        print(json.dumps({k: v for k, v in results.items() if k != "cases"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
