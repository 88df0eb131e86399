"""The model registry (glidebench.models), plus the tiny-model helpers the harness tests share.

Helpers (imported by test_cli / test_resume / test_shard / test_coco):
- ``build_tiny_models(dir)``: 8 px base, 8->16 upsampler, noised CLIP and evaluator CLIP, saved in the formats
  the registry reads (save_model / save_clip) with cards;
- ``PixelFeatures`` + ``install_test_extractor()``: a cheap, deterministic stand-in for Inception (pooled
  pixels), so end-to-end runs take seconds; the real Inception path has its own test in test_cli.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glide.checkpoints import CheckpointError, save_model
from glide.config import ModelConfig
from glidebench import models as M
from glidebench.data.embedded import vocabulary

# The metric columns the resume and shard tests compare between runs.
METRICS = ("setting_id", "n_samples", "evals_per_image", "fid", "kid_mean", "kid_std", "is_mean", "is_std",
           "precision", "recall", "clip_score", "clip_score_clamped")  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]


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


def install_test_extractor() -> None:
    import glidebench.suites.coco_fid as C

    C.make_inception = lambda source, device: PixelFeatures()


# Run in a subprocess: the same CLI with the cheap extractor (for SIGKILL and torchrun tests).
RUNNER = (
    "import sys; sys.path.insert(0, {root!r}); "
    "from tests.glidebench.test_models import install_test_extractor; install_test_extractor(); "
    "from glidebench.cli import main; sys.exit(main(sys.argv[1:]))"
)


def write_runner(path: Path) -> Path:
    path.write_text(RUNNER.format(root=str(ROOT)).replace("; ", "\n") + "\n")
    return path


def base_args(out: Path, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--limit", "8", "--cfg", "1,3", "--steps", "ddim5", "--batch-size", "3",
        "--reference-size", "12", "--out", str(out), "--no-report", "--quiet", *extra,
    ]  # fmt: skip


def harness_env(monkeypatch: pytest.MonkeyPatch, models: Path, cache: Path) -> None:
    monkeypatch.setenv("GLIDEBENCH_MODELS", str(models))
    monkeypatch.setenv("GLIDEBENCH_CACHE", str(cache))
    monkeypatch.delenv("GLIDEBENCH_COCO", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the CLI then leaves the environment alone
    install_test_extractor_mp(monkeypatch)


def install_test_extractor_mp(monkeypatch: pytest.MonkeyPatch) -> None:
    import glidebench.suites.coco_fid as C

    monkeypatch.setattr(C, "make_inception", lambda source, device: PixelFeatures())


def only_run_dir(out: Path) -> Path:
    dirs = sorted(p for p in (out / "coco-fid").iterdir() if p.is_dir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def image_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "images").rglob("*.png"))}


def subprocess_env(models: Path, cache: Path) -> dict[str, str]:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIDEBENCH_COCO", "WORLD_SIZE", "RANK", "LOCAL_RANK")
    }
    return env | {"GLIDEBENCH_MODELS": str(models), "GLIDEBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


PY = sys.executable


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: on the shared 2-core machines this is many times faster for tiny models (and the
    images are the same: the harness tests also check that against multi-process runs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


# ----------------------------------------------------------------------------------------------------------
# Tests of the registry


def test_empty_dir_falls_back_to_seeded_random_model(tmp_path: Path) -> None:
    plan = M.plan_models("embedded", None, want_noised_clip=False, directory=tmp_path)
    assert plan.random_init and plan.label == "embedded-random-init"
    assert plan.identities["base"].startswith("random-init:base:seed=0:")
    assert plan.base_resolution == M.random_base_config().image_size == 32
    assert "eval-clip" not in plan.sources  # no random evaluator: the CLIP score is skipped instead
    assert any("RANDOM-INITIALISED" in n for n in plan.notes)
    a, b = M.random_unet(M.random_base_config()), M.random_unet(M.random_base_config())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # The zero-initialised output layer was filled, so the text changes eps (classifier-free guidance matters).
    x, t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    tok = a.tokenizer
    outs = []
    for caption in ("a small red circle on a grey background", ""):
        tokens, mask = tok.batch([caption], a.config.text_ctx)
        with torch.no_grad():
            outs.append(a(x, t, tokens=tokens, mask=mask))
    assert outs[0].abs().sum() > 0 and not torch.allclose(outs[0], outs[1])


def test_random_fallback_covers_upsampler_and_clip(tmp_path: Path) -> None:
    plan = M.plan_models("embedded", 64, want_noised_clip=True, directory=tmp_path)
    assert plan.upsample_resolution == 64
    assert plan.identities["upsample"].startswith("random-init:upsample")
    assert plan.identities["noised-clip"].startswith("random-init:noised-clip")
    loaded = M.load_models(plan, "cpu", "fp32")
    assert loaded.upsampler.config.super_res and loaded.noised_clip is not None


def test_trained_files_are_used_with_their_sha256(tiny_models_dir: Path) -> None:
    from glide.checkpoints import sha256_file

    plan = M.plan_models("embedded", 16, want_noised_clip=True, directory=tiny_models_dir)
    assert not plan.random_init and plan.label == "embedded"
    assert plan.identities["base"] == sha256_file(tiny_models_dir / "embedded-base.safetensors")
    assert plan.base_resolution == 8 and plan.upsample_resolution == 16
    card = json.loads((tiny_models_dir / "embedded-base.json").read_text())
    assert (
        card["role"] == "base"
        and card["sha256"] == plan.identities["base"]
        and card["name"] == "tiny test base"
    )
    loaded = M.load_models(plan, "cpu", "fp32")
    x = loaded.pipeline(torch.device("cpu"), "fp32").generate(["a small red circle on a grey background"], [0],
                                                             guidance="clip", scale=1.0, sampler="ddim", steps="ddim5")  # fmt: skip
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.uint8
    emb, warning = M.load_eval_clip(plan, "cpu")
    assert warning is None and emb.embed_images(x).shape == (1, 32)


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(tiny_models_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "models"
    shutil.copytree(tiny_models_dir, d)
    data = (d / "embedded-base.safetensors").read_bytes()
    (d / "embedded-base.safetensors").write_bytes(
        data[: len(data) // 2]
    )  # truncated: card SHA no longer matches
    with pytest.raises(CheckpointError, match=r"embedded-base\.safetensors.*corrupt"):
        M.plan_models("embedded", None, False, directory=d)
    (d / "embedded-base.json").unlink()  # without a card the truncation is found when reading the header
    with pytest.raises(CheckpointError, match=r"embedded-base\.safetensors.*(truncated|corrupt)"):
        M.plan_models("embedded", None, False, directory=d)


def test_missing_roles_with_a_trained_base_name_the_fix(tiny_models_dir: Path, tmp_path: Path) -> None:
    d = build_tiny_models(tmp_path / "m", roles=("base",))
    with pytest.raises(M.ModelUnavailable, match="embedded-upsample.safetensors"):
        M.plan_models("embedded", 16, False, directory=d)
    with pytest.raises(M.ModelUnavailable, match="drop --clip"):
        M.plan_models("embedded", None, True, directory=d)
    with pytest.raises(M.ModelUnavailable, match="neither"):
        M.plan_models("embedded", 32, False, directory=tiny_models_dir)
    plan = M.plan_models("embedded", None, False, directory=d)
    assert "eval-clip" not in plan.sources and any("CLIP score is skipped" in n for n in plan.notes)


def test_official_family_without_cache_says_how_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    assert not M.official_available(64)
    with pytest.raises(M.ModelUnavailable, match="python -m glide download base"):
        M.plan_models("official", None, False)


def test_describe_models_lists_every_role(tiny_models_dir: Path, tmp_path: Path) -> None:
    rows = M.describe_models(tiny_models_dir)
    emb = {r["role"]: r["status"] for r in rows if r["family"] == "embedded"}
    assert emb == {r: "trained" for r in M.ROLES}
    rows = M.describe_models(tmp_path)
    assert {r["role"]: r["status"] for r in rows if r["family"] == "embedded"}["base"].startswith("missing")


def test_short_captions_take_the_short_caption_models_where_present(tmp_path: Path, tiny_models_dir) -> None:
    import shutil

    from glide.checkpoints import sha256_file

    d = tmp_path / "models"
    shutil.copytree(tiny_models_dir, d)
    # no short-caption files yet: the exact-caption ones, with a note naming each missing file
    plan = M.plan_models("embedded", None, want_noised_clip=True, directory=d, caption_style="short")
    assert plan.label == "embedded"
    assert plan.identities["base"] == sha256_file(d / "embedded-base.safetensors")
    notes = " ".join(plan.notes)
    for stem in M.EMBEDDED_SHORT_STEMS.values():
        assert f"{stem}.safetensors" in notes
    # a short-caption base and evaluator CLIP (different weights): taken for short captions only
    save_model(M.random_unet(tiny_unet_config(), 9), d / "embedded-base-short.safetensors")
    M.write_card(d / "embedded-base-short.safetensors", "base")
    shutil.copy(d / "embedded-clip-eval.safetensors", d / "embedded-clip-eval-short.safetensors")
    short = M.plan_models("embedded", None, want_noised_clip=True, directory=d, caption_style="short")
    exact = M.plan_models("embedded", None, want_noised_clip=True, directory=d)
    assert short.label == "embedded-short" and exact.label == "embedded"
    assert short.identities["base"] == sha256_file(d / "embedded-base-short.safetensors")
    assert exact.identities["base"] == sha256_file(d / "embedded-base.safetensors")
    assert short.identities["base"] != exact.identities["base"]
    assert short.sources["eval-clip"].path.name == "embedded-clip-eval-short.safetensors"
    assert short.sources["noised-clip"].path.name == "embedded-clip-noised.safetensors"  # no short one
    assert any("embedded-clip-noised-short.safetensors" in n for n in short.notes)
    assert not any("embedded-base-short" in n for n in short.notes)
    rows = M.describe_models(d)
    assert {r["where"].rsplit("/", 1)[-1] for r in rows if "short captions" in r["status"]} == {
        "embedded-base-short.safetensors", "embedded-clip-eval-short.safetensors"
    }  # fmt: skip
    # the card's checksum is verified for the short files too
    (d / "embedded-base-short.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="SHA-256"):
        M.plan_models("embedded", None, want_noised_clip=False, directory=d, caption_style="short")
