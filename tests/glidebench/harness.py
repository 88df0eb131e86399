"""Helpers the harness tests share (fixtures built on them live in conftest.py).

- ``build_tiny_models(dir)``: 8 px base, 8->16 upsampler, noised CLIP and evaluator CLIP, saved in the formats
  the registry reads (save_model / save_clip) with cards;
- ``PixelFeatures`` + ``install_test_extractor()``: a cheap, deterministic stand-in for Inception (pooled
  pixels), so end-to-end runs take seconds (``SpatialPixelFeatures`` when a run asks for sFID's spatial
  features); the real Inception path has its own test in test_cli;
- ``base_args``, ``harness_env``, ``subprocess_env``, ``write_runner``: the command lines and environments of
  end-to-end runs, in-process and in subprocesses;
- ``only_run_dir``, ``image_bytes``: reading a finished run back.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from glide.checkpoints import save_model
from glide.config import ModelConfig
from glidebench import models as M
from glidebench.data.embedded import vocabulary

# The metric columns the resume and shard tests compare between runs.
METRICS = ("setting_id", "n_samples", "evals_per_image", "fid", "kid_mean", "kid_std", "is_mean", "is_std",
           "precision", "recall", "clip_score", "clip_score_clamped")  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_unet_config(**overrides) -> ModelConfig:
    base = dict(
        image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1", num_head_channels=32,
        attention_resolutions="4", xf_width=32, xf_layers=1, xf_heads=2, text_ctx=24, dropout=0.0,
        diffusion_steps=50, tokenizer={"kind": "words", "vocab": vocabulary()},
    )  # fmt: skip
    return ModelConfig.from_dict(base | overrides)


def tiny_clip(seed: int = 0, image_size: int = 8):
    from glide.clip import ClipConfig, create_clip_model

    cfg = ClipConfig(
        image_size=image_size, patch_size=4, n_embd=32, n_head_text=1, n_head_state_text=32, n_xf_blocks_text=1,
        n_head_image=1, n_head_state_image=32, n_xf_blocks_image=1, max_text_len=32,
    )  # fmt: skip
    return create_clip_model(config=cfg, device="cpu", generator=torch.Generator().manual_seed(seed)).eval()


def build_tiny_models(
    directory: Path,
    roles: tuple[str, ...] = ("base", "upsample", "noised-clip", "eval-clip", "inpaint"),
    nan_base: bool = False,
) -> Path:
    """Save tiny models (all weights seeded random) where the registry looks for the embedded family."""
    from glide.train.export import save_clip

    directory.mkdir(parents=True, exist_ok=True)
    if "base" in roles:
        base = M.random_unet(tiny_unet_config(), 1)
        if nan_base:
            with torch.no_grad():
                base.out[2].bias.fill_(float("nan"))
        save_model(base, directory / "embedded-base.safetensors")
        M.write_card(directory / "embedded-base.safetensors", "base", name="tiny test base")
    if "inpaint" in roles:
        from glide.train.loop import inpaint_from_base

        inp = inpaint_from_base(M.random_unet(tiny_unet_config(), 5))
        save_model(inp, directory / "embedded-inpaint.safetensors")
        M.write_card(directory / "embedded-inpaint.safetensors", "inpaint")
    if "upsample" in roles:
        up = M.random_unet(
            tiny_unet_config(image_size=16, channel_mult="1,1", super_res=True, noise_schedule="linear"), 2
        )
        save_model(up, directory / "embedded-upsample.safetensors")
        M.write_card(directory / "embedded-upsample.safetensors", "upsample")
    if "noised-clip" in roles:
        save_clip(tiny_clip(3), directory / "embedded-clip-noised.safetensors", fp16=False)
        M.write_card(directory / "embedded-clip-noised.safetensors", "noised-clip")
    if "eval-clip" in roles:
        save_clip(tiny_clip(4), directory / "embedded-clip-eval.safetensors", fp16=False)
        M.write_card(directory / "embedded-clip-eval.safetensors", "eval-clip")
    return directory


class PixelFeatures:
    """Test stand-in for Inception: 4x4 average-pooled pixels (48-d 'pool3') and 10 'logits'. Deterministic."""

    name = "test-pixels"
    source = "test"
    fingerprint = "test-pixels:adaptive-avg-4x4:v1"

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        x = images.float() / 255.0
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return {
            "pool3": pooled.numpy().astype(np.float32),
            "logits": (pooled[:, :10] * 10).numpy().astype(np.float32),
        }


class SpatialPixelFeatures(PixelFeatures):
    """The pixel stand-in with sFID's 'spatial' output (2 x 2 pooled pixels, 12-d) and a fingerprint of its own
    (as Inception's with ``spatial=True``: its own feature cache, the network's fingerprint kept for sidecars)."""

    network_fingerprint = PixelFeatures.fingerprint
    fingerprint = PixelFeatures.fingerprint + ":spatial"

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255.0, 2).flatten(1)
        return super().__call__(images) | {"spatial": pooled.numpy().astype(np.float32)}


def stand_in_inception(source: str, device: object, spatial: bool = False) -> PixelFeatures:
    """The stand-in ``make_inception``: the pixel features, with spatial ones when the run asks for sFID."""
    return SpatialPixelFeatures() if spatial else PixelFeatures()


class CountingFeatures(PixelFeatures):
    """PixelFeatures that appends each batch's size to ``log`` (how many images it was asked to embed)."""

    def __init__(self, log: list[int]) -> None:
        self.log = log

    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        self.log.append(int(images.shape[0]))
        return super().__call__(images)


def install_test_extractor() -> None:
    import glidebench.runner.stages as C

    C.make_inception = stand_in_inception


# Run in a subprocess: the same CLI with the cheap extractor (for SIGKILL and torchrun tests).
RUNNER = (
    "import sys; sys.path.insert(0, {root!r}); "
    "from tests.glidebench.harness import install_test_extractor; install_test_extractor(); "
    "from glidebench.cli import main; sys.exit(main(sys.argv[1:]))"
)


def write_runner(path: Path) -> Path:
    path.write_text(RUNNER.format(root=str(ROOT)).replace("; ", "\n") + "\n")
    return path


def base_args(out: Path, *extra: str) -> list[str]:
    """A small coco-fid run; 12 references unless a statistics file or a captions file decides them."""
    own = any(a in ("--reference-stats", "--captions-file") for a in extra)
    return [
        "run", "coco-fid", "--limit", "8", "--cfg", "1,3", "--steps", "ddim5", "--batch-size", "3",
        *([] if own else ["--reference-size", "12"]), "--out", str(out), "--no-report", "--quiet", *extra,
    ]  # fmt: skip


def harness_env(monkeypatch: pytest.MonkeyPatch, models: Path, cache: Path) -> None:
    monkeypatch.setenv("GLIDEBENCH_MODELS", str(models))
    monkeypatch.setenv("GLIDEBENCH_CACHE", str(cache))
    monkeypatch.delenv("GLIDEBENCH_COCO", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the CLI then leaves the environment alone
    install_test_extractor_mp(monkeypatch)


def install_test_extractor_mp(monkeypatch: pytest.MonkeyPatch) -> None:
    import glidebench.runner.stages as C

    monkeypatch.setattr(C, "make_inception", stand_in_inception)


def install_prepare_extractor(monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare`` builds its extractor directly (a run's is ``make_inception``): the stand-in there too."""
    import glidebench.features as F

    monkeypatch.setattr(F, "InceptionExtractor", lambda source, device, resize="tf-bilinear", spatial=False:
                        stand_in_inception(source, device, spatial))  # fmt: skip
    monkeypatch.setattr(F, "resolve_inception_source", lambda source: PixelFeatures.source)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """The :data:`METRICS` columns of a finished run's results.csv."""
    import csv

    with open(run_dir / "results.csv", newline="") as f:
        return [{k: r[k] for k in METRICS} for r in csv.DictReader(f)]


def only_run_dir(out: Path) -> Path:
    dirs = sorted(p for p in (out / "coco-fid").iterdir() if p.is_dir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def image_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "images").rglob("*.png"))}


def subprocess_env(models: Path, cache: Path) -> dict[str, str]:

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIDEBENCH_COCO", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    return env | {"GLIDEBENCH_MODELS": str(models), "GLIDEBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


PY = sys.executable
