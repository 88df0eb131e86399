"""The model registry (glidebench.models): embedded files, random-init fallback, typed sources, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glide.checkpoints import CheckpointError, save_model
from glidebench import models as M

from .harness import build_tiny_models, tiny_clip, tiny_unet_config  # noqa: F401

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


# ----------------------------------------------------------------------------------------------------------
# Typed sources


def test_each_role_gets_a_typed_source_that_loads_itself(tiny_models_dir: Path, tmp_path: Path) -> None:
    plan = M.plan_models("embedded", 16, want_noised_clip=True, directory=tiny_models_dir)
    assert {role: type(s).__name__ for role, s in plan.sources.items()} == {
        "base": "FileSource", "upsample": "FileSource", "noised-clip": "FileSource", "eval-clip": "FileSource"
    }  # fmt: skip
    for role, source in plan.sources.items():
        assert source.role == role and source.identity == plan.identities[role] and not source.may_download
        assert "\n" not in source.describe() and str(source.path) in source.describe()
    assert plan.sources["base"].config == plan.configs["base"] and plan.sources["base"].config.image_size == 8
    assert plan.sources["noised-clip"].config is None and plan.cards["eval-clip"]["role"] == "eval-clip"
    with pytest.raises(ValueError, match="float32"):
        plan.sources["noised-clip"].load("cpu", fp16=True)
    base = plan.sources["base"].load("cpu", fp16=True)
    assert base.dtype == torch.float16 and base.config.image_size == 8

    rnd = M.plan_models("embedded", 64, want_noised_clip=True, directory=tmp_path)
    assert {type(s).__name__ for r, s in rnd.sources.items()} == {"RandomSource"}
    assert all(
        s.identity == rnd.identities[r] and "RANDOM-INITIALISED" in s.describe()
        for r, s in rnd.sources.items()
    )
    a = rnd.sources["base"].load("cpu")
    b = M.random_unet(M.random_base_config(), M.RANDOM_SEED)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_eval_clip_note_only_for_the_open_clip_evaluator(tiny_models_dir: Path, tmp_path: Path) -> None:
    coco = M.plan_models("embedded", None, False, directory=tiny_models_dir, data="coco")
    source = coco.sources["eval-clip"]
    assert type(source).__name__ == "OpenClipSource" and source.may_download
    assert coco.identities["eval-clip"] == "open_clip:ViT-B-16:openai"
    assert coco.eval_clip_note() == (
        "CLIP score: loading OpenAI CLIP ViT-B/16 through open_clip (downloaded on first use)"
    )
    assert M.plan_models("embedded", None, False, directory=tiny_models_dir).eval_clip_note() is None
    assert M.plan_models("embedded", None, False, directory=tmp_path).eval_clip_note() is None  # no evaluator


def test_offline_open_clip_gives_a_warning_not_an_error(tiny_models_dir: Path, monkeypatch) -> None:
    from glidebench.features import ClipEmbedder

    def offline(model_name, pretrained, device="cpu"):
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(ClipEmbedder, "from_open_clip", staticmethod(offline))
    plan = M.plan_models("embedded", None, False, directory=tiny_models_dir, data="coco")
    assert M.load_eval_clip(plan, "cpu") == (
        None,
        "CLIP score skipped: could not load OpenAI CLIP ViT-B-16 (RuntimeError: Failed to download weights for "
        "tag 'openai'); connect to the internet once so open_clip can cache it",
    )
    empty = M.plan_models("embedded", None, False, directory=tiny_models_dir)
    empty.sources.pop("eval-clip")
    assert M.load_eval_clip(empty, "cpu") == (
        None,
        "CLIP score skipped: no evaluator CLIP for this model family (see `glidebench ls models`)",
    )


def test_embedded_evaluator_fingerprint_names_its_file_and_sha256(tiny_models_dir: Path) -> None:
    from glide.checkpoints import sha256_file

    plan = M.plan_models("embedded", None, False, directory=tiny_models_dir)
    emb, warning = M.load_eval_clip(plan, "cpu")
    digest = sha256_file(tiny_models_dir / "embedded-clip-eval.safetensors")
    assert warning is None and isinstance(emb, M.GlideClipEmbedder)
    assert (emb.name, emb.fingerprint) == ("embedded-clip-eval", f"glide-clip:sha256={digest}:t=0:bicubic:v1")
