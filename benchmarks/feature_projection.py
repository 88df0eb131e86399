"""Projection (run by hand, not a test): the paper protocol's feature stage on one H100, from FLOP counts.

    python benchmarks/feature_projection.py [--device cpu|cuda] [--threads 2] [--images 16] [--batch 8]
        [--utilisation 0.3,0.5] [--out runs/feature-projection]

The feature stage of the paper protocol (docs/reproducing.md; coco-fid's ``paper`` preset, 4 settings as the
issue sizes it): 4 x 30,000 generated images at 256 px through Inception (299 x 299, TF1 bilinear resize) and
the evaluator CLIP (OpenAI ViT-B/16 at 224 x 224, open_clip's eval preprocessing), the 40,504 val2014
references through Inception, and 30,000 captions through CLIP's text tower (77 tokens; once per run: the
settings share their captions).

FLOPs are counted with ``glidebench.profile.count_flops`` (torch's FlopCounterMode, 2 per multiply-add) on the
real architectures with random weights, which changes no FLOP: torch-fidelity's ``inception-v3-compat`` built
without its weight file (its load is skipped here; the run loads the real file), cross-checked on
fid-helper's TorchScript Inception (the offline run's, weights bundled) and torchvision's
``inception_v3(weights=None, aux_logits=False, init_weights=False)``; open_clip's ``ViT-B-16`` with
``pretrained=None``.

H100 peaks assumed (dense, no sparsity; NVIDIA H100 Tensor Core GPU datasheet, SXM5; the same table as
``glidebench.profile.PEAK_FLOPS``): FP32 67 TFLOP/s, TF32 tensor 494.7, FP16/BF16 tensor 989.4. PyTorch's
defaults decide which applies: cuDNN convolutions in TF32 (``torch.backends.cudnn.allow_tf32`` is True), so
Inception's convolutions run on TF32 tensor cores; fp32 matmuls in full FP32
(``torch.backends.cuda.matmul.allow_tf32`` is False), so the fp32 evaluator CLIP's linear layers and
attention run at the FP32 peak unless it is cast to fp16 / bf16. The projection is arithmetic / (peak x
utilisation) at each ``--utilisation`` (in minutes) and is a floor: decoding PNGs and CLIP's PIL preprocessing run on
the host (measured here per image, one thread) and are not in it.

The measured columns: images (or captions) per second on ``--device`` (on a CPU at ``--threads`` threads),
fp32 as the harness runs them, in batches of ``--batch`` (default: the harness's feature batch, 8 on CPU and
64 on CUDA), a warm-up batch first, the 1-minute load average beside them; ``measured_h`` is the hours at
that rate. On CUDA the CLIP image rate is also measured in fp16 (the FP16 row).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from glidebench.profile import PEAK_FLOPS, count_flops  # noqa: E402

GENERATED, SETTINGS, REFERENCES, CAPTIONS = 30_000, 4, 40_504, 30_000
H100 = {k: v / 1e12 for k, v in PEAK_FLOPS["H100"].items()}  # TFLOP/s


def torch_fidelity_inception() -> torch.nn.Module:
    """torch-fidelity's inception-v3-compat (the online run's Inception) with random weights: its weight
    download / load is skipped, the architecture and forward (TF1 bilinear resize to 299 included) are its own."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf

    with (
        mock.patch.object(tf, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
    ):
        return tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).eval()


def fid_helper_inception() -> Callable[[torch.Tensor], Any]:
    """fid-helper's TorchScript Inception (the offline run's, with its bundled weights) behind the harness's
    own preprocessing (TF1 bilinear resize to 299)."""
    from glidebench.features import InceptionExtractor

    ext = InceptionExtractor("fid-helper", device="cpu")
    return lambda x: ext._net(ext.preprocess_fid_helper(x))


def torchvision_inception() -> Callable[[torch.Tensor], Any]:
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    return lambda x: net(torch.nn.functional.interpolate(x.float(), (299, 299), mode="bilinear"))


def vit_b16() -> Any:
    import logging

    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded" is the point here
    return open_clip.create_model("ViT-B-16", pretrained=None).eval()


def per_item_flops(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    with torch.inference_mode():
        return count_flops(lambda: fn(x)) / len(x)


def items_per_s(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, total: int) -> float:
    """Items per second over ``total`` items in batches of len(x), after one warm-up batch."""
    from glidebench.profile import synchronize

    with torch.inference_mode():
        fn(x)
        synchronize(x.device)
        t0, done = time.perf_counter(), 0
        while done < total:
            fn(x)
            done += len(x)
        synchronize(x.device)
    return done / (time.perf_counter() - t0)


def host_seconds_per_image(n: int = 32) -> dict[str, float]:
    """Host-side work per image that no GPU takes over: PNG decode of a 256-px image, CLIP's PIL preprocessing."""
    import io

    import numpy as np
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ToTensor / Normalize: one core, as a data-loader worker would
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # smooth-ish content, like a sample
    img = Image.fromarray(base).resize((256, 256), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    t0 = time.perf_counter()
    for _ in range(n):
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    decode = (time.perf_counter() - t0) / n
    pre = image_transform_v2(PreprocessCfg(**vit_b16().visual.preprocess_cfg), is_train=False)
    t0 = time.perf_counter()
    for _ in range(n):
        pre(img)
    out = {"png_decode_s": decode, "clip_preprocess_s": (time.perf_counter() - t0) / n}
    torch.set_num_threads(threads)
    return out


def project(rows: list[dict[str, Any]], utilisation: Sequence[float]) -> list[dict[str, Any]]:
    """Add the H100 minutes at each utilisation and the hours at the measured rate."""
    for r in rows:
        tflop = r["gflop_per_item"] * r["items"] / 1e3
        r["total_tflop"] = tflop
        for u in utilisation:
            r[f"h100_min_at_{u:.0%}"] = tflop / (r["peak_tflops"] * u) / 60
        r["measured_h"] = r["items"] / r["measured_items_per_s"] / 3600
    return rows


def main(argv: Sequence[str] | None = None) -> Any:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=16, help="images (captions: 4x) timed per network")
    p.add_argument("--batch", type=int, help="images per call (default 8 on CPU, 64 on CUDA)")
    p.add_argument("--utilisation", default="0.3,0.5", help="fractions of the H100 peak")
    p.add_argument("--out", type=Path, default=Path("runs/feature-projection"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    utilisation = [float(u) for u in args.utilisation.split(",")]
    load1 = os.getloadavg()[0]

    device = torch.device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 8)
    imgs = torch.randint(0, 256, (8, 3, 256, 256), dtype=torch.uint8)
    inception = torch_fidelity_inception()
    clip = vit_b16()
    pixels = torch.randn(8, 3, 224, 224)
    tokens = torch.randint(1, 49407, (32, 77))
    counts = {
        "inception (torch-fidelity compat)": per_item_flops(inception, imgs),
        "inception (fid-helper TorchScript)": per_item_flops(fid_helper_inception(), imgs),
        "inception (torchvision, weights=None)": per_item_flops(torchvision_inception(), imgs),
        "clip image (ViT-B/16, 224)": per_item_flops(clip.encode_image, pixels),
        "clip text (ViT-B/16, 77 tokens)": per_item_flops(clip.encode_text, tokens),
    }
    inception, clip = inception.to(device), clip.to(device)
    big = {
        "imgs": torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=device),
        "pixels": torch.randn(batch, 3, 224, 224, device=device),
        "tokens": torch.randint(1, 49407, (4 * batch, 77), device=device),
    }
    rates = {
        "inception": items_per_s(inception, big["imgs"], args.images),
        "clip image": items_per_s(clip.encode_image, big["pixels"], args.images),
        "clip text": items_per_s(clip.encode_text, big["tokens"], 4 * args.images),
    }
    rates["clip image fp16"] = float("nan")
    if device.type == "cuda":
        rates["clip image fp16"] = items_per_s(clip.half().encode_image, big["pixels"].half(), args.images)
    g_inc = counts["inception (torch-fidelity compat)"] / 1e9
    g_img = counts["clip image (ViT-B/16, 224)"] / 1e9
    g_txt = counts["clip text (ViT-B/16, 77 tokens)"] / 1e9
    rows = [
        {"work": "Inception, generated (4 x 30k)", "items": SETTINGS * GENERATED, "gflop_per_item": g_inc,
         "precision": "TF32 (cuDNN default)", "peak_tflops": H100["tf32"], "measured_items_per_s": rates["inception"]},
        {"work": "Inception, references (40,504; cached once)", "items": REFERENCES, "gflop_per_item": g_inc,
         "precision": "TF32 (cuDNN default)", "peak_tflops": H100["tf32"], "measured_items_per_s": rates["inception"]},
        {"work": "CLIP image, generated (4 x 30k)", "items": SETTINGS * GENERATED, "gflop_per_item": g_img,
         "precision": "FP32 (matmul default)", "peak_tflops": H100["fp32"], "measured_items_per_s": rates["clip image"]},
        {"work": "CLIP image, generated (4 x 30k)", "items": SETTINGS * GENERATED, "gflop_per_item": g_img,
         "precision": "FP16 / BF16", "peak_tflops": H100["fp16"], "measured_items_per_s": rates["clip image fp16"]},
        {"work": "CLIP text, captions (30k)", "items": CAPTIONS, "gflop_per_item": g_txt,
         "precision": "FP32 (matmul default)", "peak_tflops": H100["fp32"], "measured_items_per_s": rates["clip text"]},
    ]  # fmt: skip
    rows = project(rows, utilisation)
    totals = {}
    for name, picks in (("default precisions", (0, 1, 2, 4)), ("CLIP in FP16 / BF16", (0, 1, 3, 4))):
        totals[name] = {
            k: sum(rows[i][k] for i in picks)
            for k in ["total_tflop", *(f"h100_min_at_{u:.0%}" for u in utilisation), "measured_h"]
        }
    host = host_seconds_per_image()
    import pandas as pd
    from bench_fast import markdown

    from glidebench.store import atomic_write_text

    table = pd.DataFrame(rows)
    for name, t in totals.items():
        table.loc[len(table)] = {"work": f"total, {name}", **t}
    n_images = SETTINGS * GENERATED + REFERENCES
    header = [
        "# The paper protocol's feature stage: FLOPs, projected H100 time, measured CPU rate",
        "",
        "GFLOP per item (2 per multiply-add, torch's FlopCounterMode): "
        + "; ".join(f"{k} {v / 1e9:.2f}" for k, v in counts.items()),
        f"H100 SXM5 dense peaks (TFLOP/s): FP32 {H100['fp32']:g}, TF32 {H100['tf32']:g}, FP16/BF16 {H100['fp16']:g}. "
        f"Measured on {device}"
        + (
            f" at {args.threads} threads"
            if device.type == "cpu"
            else f" ({torch.cuda.get_device_name(device)})"
        )
        + f", fp32, batches of {batch}, 1-minute load average {load1:.2f} at the start ({os.cpu_count()} CPUs): "
        f"Inception {rates['inception']:.2f} images/s, CLIP image {rates['clip image']:.2f} images/s, CLIP text "
        f"{rates['clip text']:.2f} captions/s.",
    ]
    footer = [
        f"Host-side per image, one thread, not in the projection: PNG decode (256 px) {host['png_decode_s'] * 1e3:.2f} ms, "
        f"CLIP PIL preprocessing {host['clip_preprocess_s'] * 1e3:.2f} ms; for the {n_images:,} images (decode) "
        f"and {SETTINGS * GENERATED:,} CLIP inputs: "
        f"{(n_images * host['png_decode_s'] + SETTINGS * GENERATED * host['clip_preprocess_s']) / 60:.1f} min on one core.",
        "measured_h of the FP16 CLIP row and the second total: only on CUDA (the CPU has no fp16 arithmetic).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "feature_projection.csv", table.to_csv(index=False))
    text = markdown(table, header, footer)
    atomic_write_text(args.out / "feature_projection.md", text)
    print(text)
    return table


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
