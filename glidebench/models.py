"""The model registry: which weights a run uses, their identities, and the random-initialised fallback.

Two families:

- ``official``: the released GLIDE (filtered) checkpoints from glide's download cache (``glide.checkpoints``):
  ``base`` (64 px), ``upsample`` (64->256), the noised CLIP (``clip/image-enc`` + ``clip/text-enc``) for CLIP
  guidance; the CLIP score uses OpenAI CLIP ViT-B/16 through open_clip (downloaded on first use).
- ``embedded``: the small models trained on the embedded caption-image set, shipped as files in
  ``glidebench/assets/models/`` (or the directory named by ``GLIDEBENCH_MODELS``). Each role has a file stem:

      base         embedded-base.safetensors          (glide.checkpoints.save_model format)
      upsample     embedded-upsample.safetensors      (same)
      noised-clip  embedded-clip-noised.safetensors   (glide.train.export.save_clip format)
      eval-clip    embedded-clip-eval.safetensors     (same, trained on clean images: the CLIP-score model)

  and an optional JSON card beside it (``<stem>.json``). A card may name another file (``"file"``), and its
  ``"sha256"`` is checked against the file before loading (a mismatch is a corrupt-checkpoint error); any
  other keys are recorded in the provenance as they are. :func:`write_card` writes a card.

Fallback: while no trained embedded base exists, the embedded family is a RANDOM-INITIALISED model of the
same architecture as ``recipes/embedded-base.json`` (seeded, built in memory; every zero-initialised output
layer is filled with small seeded noise so that the text and the guidance scale change the samples). Then
every missing role is random too, except the evaluator CLIP (a random evaluator would give a meaningless CLIP
score: the score is skipped with a warning instead). The results' model column then reads
``embedded-random-init``. As soon as the trained files appear, they are used (and, since their SHA-256 is part
of the run's fingerprint, the run goes to a new directory).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glide.checkpoints import (
    OFFICIAL,
    CheckpointError,
    cached_path,
    how_to_get,
    is_cached,
    sha256_file,
)
from glide.config import ModelConfig

ROLES = ("base", "upsample", "noised-clip", "eval-clip", "inpaint")
EMBEDDED_STEMS = {
    "base": "embedded-base",
    "upsample": "embedded-upsample",
    "noised-clip": "embedded-clip-noised",
    "eval-clip": "embedded-clip-eval",
    "inpaint": "embedded-inpaint",
}
# The embedded models fine-tuned on short captions (glidebench.data.embedded.short_caption), used by runs with
# caption_style "short"; roles without one fall back to EMBEDDED_STEMS (with a note).
EMBEDDED_SHORT_STEMS = {
    "base": "embedded-base-short",
    "noised-clip": "embedded-clip-noised-short",
    "eval-clip": "embedded-clip-eval-short",
}
OFFICIAL_NAMES = {
    "base": ("base",),
    "upsample": ("upsample",),
    "noised-clip": ("clip/image-enc", "clip/text-enc"),
}
OFFICIAL_EVAL_CLIP = ("ViT-B-16", "openai")
RANDOM_SEED = 0
CARD_FORMAT = "glidebench-model-card/1"


class ModelUnavailable(RuntimeError):
    """A requested model is not present; the message says how to get it or which option to drop."""


def models_dir() -> Path:
    """Where embedded model files live: ``$GLIDEBENCH_MODELS`` or ``glidebench/assets/models``."""
    env = os.environ.get("GLIDEBENCH_MODELS")
    if env:
        return Path(env)
    return Path(str(resources.files("glidebench"))) / "assets" / "models"


# ----------------------------------------------------------------------------------------------------------
# Cards and files


@dataclass(frozen=True)
class EmbeddedFile:
    """One embedded model file and its (optional) card."""

    role: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)
    stem: str = ""  # the name the registry found it under (EMBEDDED_STEMS or EMBEDDED_SHORT_STEMS)

    def sha256(self) -> str:
        return sha256_file(self.path)

    def verified_sha256(self) -> str:
        """The file's SHA-256, checked against the card's when the card has one."""
        if not self.path.is_file():
            raise CheckpointError(
                f"the {self.role} model file {self.path} named by its card does not exist; copy it there or "
                "delete the card"
            )
        digest = self.sha256()
        expected = self.card.get("sha256")
        if expected and str(expected).lower() != digest:
            raise CheckpointError(
                f"{self.path} has SHA-256 {digest}, but its card says {expected}: the file is corrupt or was "
                "replaced. Copy the right file (or re-export it) and update the card with glidebench.models.write_card"
            )
        return digest


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model card {path} is not readable JSON ({e}); fix or delete it") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {path} must hold a JSON object")
    return card


def _embedded_file(directory: Path, role: str, stem: str) -> EmbeddedFile | None:
    card_path = directory / f"{stem}.json"
    card = _read_card(card_path) if card_path.is_file() else {}
    path = directory / str(card.get("file", f"{stem}.safetensors"))
    return EmbeddedFile(role, path, card, stem) if card or path.is_file() else None


def embedded_files(directory: Path | None = None, caption_style: str = "exact") -> dict[str, EmbeddedFile]:
    """The embedded model files present, by role (a card without its file is an error when loaded).

    ``caption_style="short"``: the short-caption models (``EMBEDDED_SHORT_STEMS``) where present."""
    directory = directory or models_dir()
    found: dict[str, EmbeddedFile] = {}
    for role, stem in EMBEDDED_STEMS.items():
        f = None
        if caption_style == "short" and role in EMBEDDED_SHORT_STEMS:
            f = _embedded_file(directory, role, EMBEDDED_SHORT_STEMS[role])
        f = f or _embedded_file(directory, role, stem)
        if f is not None:
            found[role] = f
    return found


def short_fallbacks(files: dict[str, EmbeddedFile]) -> list[str]:
    """Roles that have a short-caption model in principle but whose file in ``files`` is an exact-caption one."""
    return [
        role for role, stem in EMBEDDED_SHORT_STEMS.items()
        if role in files and files[role].stem != stem
    ]  # fmt: skip


def write_card(model_file: str | os.PathLike, role: str, **info: Any) -> Path:
    """Write ``<stem>.json`` beside ``model_file`` with its role, file name and SHA-256 (atomic)."""
    from .store import atomic_write_json

    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    model_file = Path(model_file)
    card = {
        "format": CARD_FORMAT,
        "role": role,
        "file": model_file.name,
        "sha256": sha256_file(model_file),
    } | info
    out = model_file.with_suffix(".json")
    atomic_write_json(out, card)
    return out


# ----------------------------------------------------------------------------------------------------------
# Random-initialised fallback (the architecture of recipes/embedded-*.json)


def _embedded_vocab() -> list[str]:
    from .data.embedded import vocabulary

    return vocabulary()


def random_base_config() -> ModelConfig:
    """A small base architecture for the random-init fallback: 32 px, 32 channels, words tokenizer (the trained
    base, recipes/embedded-base.json, has 64 channels; this keeps the fallback cheap)."""
    return ModelConfig(
        image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,2", num_head_channels=32,
        attention_resolutions="8,4", dropout=0.0, text_ctx=24, xf_width=128, xf_layers=2, xf_heads=4,
        diffusion_steps=1000, noise_schedule="squaredcos_cap_v2",
        tokenizer={"kind": "words", "vocab": _embedded_vocab()},
    )  # fmt: skip


def random_upsample_config() -> ModelConfig:
    """The embedded 32->64 upsampler architecture (recipes/embedded-upsample.json)."""
    return ModelConfig(
        image_size=64, num_channels=64, num_res_blocks=1, channel_mult="1,1,2,2", num_head_channels=32,
        attention_resolutions="8", dropout=0.0, text_ctx=24, xf_width=64, xf_layers=1, xf_heads=2,
        diffusion_steps=1000, noise_schedule="linear", super_res=True,
        tokenizer={"kind": "words", "vocab": _embedded_vocab()},
    )  # fmt: skip


def random_clip_config(image_size: int = 32) -> dict[str, Any]:
    """The embedded noised-CLIP architecture (recipes/embedded-clip-noised.json)."""
    return {
        "logit_scale": 30.0, "beta_schedule": "squaredcos_cap_v2", "n_timesteps": 1000, "image_size": image_size,
        "patch_size": 8, "n_vocab": 49408, "max_text_len": 32, "n_embd": 128, "n_head_state_text": 64,
        "n_head_text": 2, "n_xf_blocks_text": 2, "n_head_state_image": 64, "n_head_image": 2, "n_xf_blocks_image": 2,
    }  # fmt: skip


def _recipe_digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def random_identity(role: str, config: Any, seed: int = RANDOM_SEED) -> str:
    cfg = config.to_dict() if hasattr(config, "to_dict") else config
    return f"random-init:{role}:seed={seed}:config={_recipe_digest(cfg)}"


def _fill_zero_params(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded small noise into every all-zero parameter (the zero-init output layers), in state-dict order."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.numel() and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def random_unet(config: ModelConfig, seed: int = RANDOM_SEED) -> torch.nn.Module:
    """A seeded random-initialised UNet of ``config`` (deterministic, independent of the global RNG)."""
    from glide.unet import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(config)
    _fill_zero_params(model, seed)
    return model.eval()


def random_clip(config: dict[str, Any], seed: int = RANDOM_SEED) -> torch.nn.Module:
    from glide.clip import ClipConfig, create_clip_model

    return create_clip_model(
        config=ClipConfig.from_dict(config), device="cpu", generator=torch.Generator().manual_seed(seed)
    ).eval()


# ----------------------------------------------------------------------------------------------------------
# Resolution: what a run will use (identities for the fingerprint) and loading


@dataclass
class ModelPlan:
    """What a run will load: per role a source (file, official name or random recipe) and its identity."""

    family: str
    label: str
    sources: dict[str, Any]  # role -> EmbeddedFile | tuple of official names | ("random", config)
    identities: dict[str, str]
    random_init: bool
    base_resolution: int
    upsample_resolution: int | None
    notes: list[str] = field(default_factory=list)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, ModelConfig] = field(default_factory=dict)  # base / upsample UNet configs

    @property
    def has_noised_clip(self) -> bool:
        return "noised-clip" in self.sources

    @property
    def has_eval_clip(self) -> bool:
        return "eval-clip" in self.sources


def _config_of_file(path: Path) -> ModelConfig:
    """The ModelConfig stored in a safetensors file's metadata (cheap: the header only)."""
    from glide.checkpoints import config_from_metadata

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for bad headers
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({type(e).__name__}: {e}); it may be truncated or "
            "corrupt: copy or export it again"
        ) from e
    return config_from_metadata(meta, str(path))


def plan_models(
    family: str,
    resolution: int | None,
    want_noised_clip: bool,
    directory: Path | None = None,
    data: str | None = None,
    caption_style: str = "exact",
) -> ModelPlan:
    """Decide the weights of a run without loading them (identities are SHA-256s or random recipes).

    ``resolution`` None means the base model's native size. The evaluator CLIP (CLIP score) follows the DATA
    (``data``, default: the family's own): OpenAI ViT-B/16 on MS-COCO, the embedded evaluator on the embedded
    set. ``caption_style="short"`` (embedded only) takes the models fine-tuned on short captions where they
    exist. Raises :class:`ModelUnavailable` or :class:`CheckpointError` with the fix when a needed model is
    missing or corrupt.
    """
    if family not in ("embedded", "official"):
        raise ValueError(f"unknown model family {family!r}; choose 'embedded' or 'official'")
    if family == "official":
        plan = _plan_official(resolution, want_noised_clip)
    else:
        plan = _plan_embedded(resolution, want_noised_clip, directory, caption_style)
    data = data or ("coco" if family == "official" else "embedded")
    if data == "coco":
        plan.sources["eval-clip"] = OFFICIAL_EVAL_CLIP
        plan.identities["eval-clip"] = "open_clip:" + ":".join(OFFICIAL_EVAL_CLIP)
    else:
        files = embedded_files(directory, caption_style)
        if caption_style == "short" and "eval-clip" in short_fallbacks(files):
            plan.notes.append(
                f"no short-caption evaluator CLIP ({EMBEDDED_SHORT_STEMS['eval-clip']}.safetensors): the CLIP "
                "score uses the exact-caption one, which has not seen short captions"
            )
        if "eval-clip" in files:
            f = files["eval-clip"]
            plan.identities["eval-clip"] = f.verified_sha256()
            plan.sources["eval-clip"] = f
            plan.cards["eval-clip"] = f.card
        else:
            plan.notes.append(
                "no embedded evaluator CLIP (embedded-clip-eval.safetensors): the CLIP score is skipped"
            )
    return plan


def _plan_embedded(
    resolution: int | None, want_noised_clip: bool, directory: Path | None, caption_style: str = "exact"
) -> ModelPlan:
    files = embedded_files(directory, caption_style)
    sources: dict[str, Any] = {}
    identities: dict[str, str] = {}
    cards: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    random_init = "base" not in files
    if caption_style == "short":
        missing = [
            r for r in short_fallbacks(files) if r != "eval-clip" and (r == "base" or want_noised_clip)
        ]
        if missing:
            notes.append(
                "short captions, but no short-caption "
                + ", ".join(f"{r} ({EMBEDDED_SHORT_STEMS[r]}.safetensors)" for r in missing)
                + ": using the exact-caption model, which has not seen short captions"
            )
    if random_init:
        notes.append(
            f"no trained embedded base model in {directory or models_dir()} (embedded-base.safetensors): using a "
            "RANDOM-INITIALISED model of the same architecture; samples and metrics are meaningless except as a "
            "plumbing check"
        )
        base_cfg = random_base_config()
        sources["base"] = ("random", base_cfg)
        identities["base"] = random_identity("base", base_cfg)
    else:
        f = files["base"]
        identities["base"] = f.verified_sha256()
        base_cfg = _config_of_file(f.path)
        sources["base"] = f
        cards["base"] = f.card
    base_res = base_cfg.image_size
    up_res = None
    if resolution is not None and resolution != base_res:
        if "upsample" in files:
            f = files["upsample"]
            identities["upsample"] = f.verified_sha256()
            up_cfg = _config_of_file(f.path)
            sources["upsample"] = f
            cards["upsample"] = f.card
        elif random_init:
            up_cfg = random_upsample_config()
            sources["upsample"] = ("random", up_cfg)
            identities["upsample"] = random_identity("upsample", up_cfg)
        else:
            raise ModelUnavailable(
                f"--resolution {resolution} needs an embedded upsampler, but {directory or models_dir()} has no "
                f"embedded-upsample.safetensors; use --resolution {base_res} (base only) or train one "
                "(python -m glide.train upsample --config recipes/embedded-upsample.json)"
            )
        up_res = up_cfg.image_size
        if resolution != up_res:
            raise ModelUnavailable(
                f"--resolution {resolution} is neither the embedded base's {base_res} px nor its upsampler's "
                f"{up_res} px; choose one of those"
            )
    if want_noised_clip:
        if "noised-clip" in files:
            f = files["noised-clip"]
            identities["noised-clip"] = f.verified_sha256()
            sources["noised-clip"] = f
            cards["noised-clip"] = f.card
        elif random_init:
            cfg = random_clip_config(base_res)
            sources["noised-clip"] = ("random", cfg)
            identities["noised-clip"] = random_identity("noised-clip", cfg)
        else:
            raise ModelUnavailable(
                f"CLIP guidance (--clip) needs an embedded noised CLIP, but {directory or models_dir()} has no "
                "embedded-clip-noised.safetensors; drop --clip or train one "
                "(python -m glide.train clip --config recipes/embedded-clip-noised.json)"
            )
    label = "embedded-random-init" if random_init else "embedded"
    if not random_init and caption_style == "short" and "base" not in short_fallbacks(files):
        label = "embedded-short"
    configs = {"base": base_cfg} | ({"upsample": up_cfg} if up_res is not None else {})
    return ModelPlan(
        "embedded", label, sources, identities, random_init, base_res, up_res, notes, cards, configs
    )


def _official_identity(name: str) -> str:
    """The SHA-256 recorded at download (``NAME.sha256``), else computed (and recorded) now."""
    from glide.checkpoints import verify

    path = cached_path(name)
    record = path.with_suffix(".sha256")
    if record.is_file():
        return record.read_text().split()[0]
    return verify(path)


def _plan_official(resolution: int | None, want_noised_clip: bool) -> ModelPlan:
    roles = ["base"]
    if resolution is not None and resolution != 64:
        if resolution != 256:
            raise ModelUnavailable(f"--resolution {resolution}: the official models give 64 (base) or 256 px")
        roles.append("upsample")
    if want_noised_clip:
        roles.append("noised-clip")
    sources: dict[str, Any] = {}
    identities: dict[str, str] = {}
    for role in roles:
        names = OFFICIAL_NAMES[role]
        for name in names:
            if not is_cached(name):
                raise ModelUnavailable(how_to_get(name))
        sources[role] = names
        identities[role] = ",".join(_official_identity(n) for n in names)
    from glide.config import preset

    configs = {"base": preset("base")} | ({"upsample": preset("upsample")} if "upsample" in roles else {})
    return ModelPlan(
        "official",
        "glide-filtered",
        sources,
        identities,
        False,
        64,
        256 if "upsample" in roles else None,
        configs=configs,
    )


def upsampler_resolution(family: str, directory: Path | None = None) -> int:
    """Output size of the family's upsampler (for ``--resolution up``); the random fallback's when absent."""
    if family == "official":
        return 256
    files = embedded_files(directory)
    if "upsample" in files and files["upsample"].path.is_file():
        return _config_of_file(files["upsample"].path).image_size
    return random_upsample_config().image_size


def official_available(resolution: int | None = None) -> bool:
    names = ["base"] + (["upsample"] if resolution == 256 else [])
    return all(is_cached(n) for n in names)


@dataclass
class LoadedModels:
    plan: ModelPlan
    base: torch.nn.Module
    upsampler: torch.nn.Module | None
    noised_clip: torch.nn.Module | None

    def pipeline(self, device: torch.device, dtype: str):
        from glide.pipeline import GlidePipeline

        return GlidePipeline(self.base, self.upsampler, self.noised_clip, dtype=dtype, device=device)


def _load_unet(source: Any, device: torch.device, fp16: bool) -> torch.nn.Module:
    from glide.checkpoints import load_model

    if isinstance(source, tuple) and source[0] == "random":
        model = random_unet(source[1])
        if fp16:
            model.convert_to_fp16()
        return model.to(device)
    if isinstance(source, EmbeddedFile):
        return load_model(source.path, device=device, fp16=fp16)
    return load_model(source[0], device=device, fp16=fp16)


def _load_clip(source: Any, device: torch.device) -> torch.nn.Module:
    from glide.checkpoints import load_clip

    if isinstance(source, tuple) and source[0] == "random":
        return random_clip(source[1]).to(device)
    if isinstance(source, EmbeddedFile):
        return load_clip(str(source.path), device=device)
    return load_clip("official", device=device)


def load_models(
    plan: ModelPlan, device: torch.device | str, dtype: str, attention: str = "einsum"
) -> LoadedModels:
    """Load the generators of ``plan`` (base, upsampler, noised CLIP) onto ``device``, with the attention
    kernel ``attention`` ("einsum": the official numerics; "sdpa": PyTorch's fused kernel)."""
    from glide.nn import set_attention_impl

    device = torch.device(device)
    fp16 = dtype == "fp16"
    base = _load_unet(plan.sources["base"], device, fp16)
    up = _load_unet(plan.sources["upsample"], device, fp16) if "upsample" in plan.sources else None
    clip = _load_clip(plan.sources["noised-clip"], device) if "noised-clip" in plan.sources else None
    for model in (base, up, clip):
        if model is not None:
            set_attention_impl(model, attention)
    return LoadedModels(plan, base, up, clip)


# ----------------------------------------------------------------------------------------------------------
# Evaluator CLIP (the CLIP score)


class GlideClipEmbedder:
    """A glide ClipModel trained on clean images, evaluated at t = 0, behind ClipEmbedder's interface."""

    def __init__(self, model: torch.nn.Module, name: str, fingerprint: str, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.name = name
        self.fingerprint = fingerprint
        self.device = device

    @torch.no_grad()
    def embed_images(self, images_uint8_nchw: torch.Tensor) -> np.ndarray:
        size = self.model.config.image_size
        x = images_uint8_nchw.to(self.device, torch.float32) / 127.5 - 1.0
        if tuple(x.shape[-2:]) != (size, size):
            x = torch.nn.functional.interpolate(x, (size, size), mode="bicubic", align_corners=False).clamp(
                -1, 1
            )
        t = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        return self.model.image_embeddings(x, t).float().cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.model.text_embeddings(list(texts)).float().cpu().numpy()

    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]:
        return {"clip_image": self.embed_images(images_uint8_nchw)}


def load_eval_clip(plan: ModelPlan, device: torch.device | str) -> tuple[Any | None, str | None]:
    """(embedder, None), or (None, warning) when the CLIP score cannot be computed (model absent/offline)."""
    device = torch.device(device)
    source = plan.sources.get("eval-clip")
    if source is None:
        return (
            None,
            "CLIP score skipped: no evaluator CLIP for this model family (see `glidebench ls models`)",
        )
    if isinstance(source, EmbeddedFile):
        from glide.checkpoints import load_clip

        model = load_clip(str(source.path), device=device)
        digest = plan.identities["eval-clip"]
        name = source.path.name.removesuffix(".safetensors")  # embedded-clip-eval or embedded-clip-eval-short
        return GlideClipEmbedder(model, name, f"glide-clip:sha256={digest}:t=0:bicubic:v1", device), None
    from .features import ClipEmbedder

    try:
        return ClipEmbedder.from_open_clip(source[0], source[1], device=device), None
    except Exception as e:  # no internet and nothing cached: open_clip raises several kinds
        return None, (
            f"CLIP score skipped: could not load OpenAI CLIP {source[0]} ({type(e).__name__}: {str(e)[:200]}); "
            "connect to the internet once so open_clip can cache it"
        )


# ----------------------------------------------------------------------------------------------------------
# Listing


def describe_models(directory: Path | None = None) -> list[dict[str, str]]:
    """Rows for `glidebench ls models`: family, role, status, where."""
    rows = []
    files = embedded_files(directory)
    for role, stem in EMBEDDED_STEMS.items():
        f = files.get(role)
        if f is None:
            status = {
                "eval-clip": "missing (CLIP score skipped)",
                "inpaint": "missing (`glidebench check` needs it)",
            }.get(role, "missing (random-init fallback)")
            rows.append(
                {"family": "embedded", "role": role, "status": status, "where": f"{stem}.safetensors"}
            )
        else:
            status = "trained" if f.path.is_file() else "card without file"
            rows.append({"family": "embedded", "role": role, "status": status, "where": str(f.path)})
    short = embedded_files(directory, "short")
    for role in EMBEDDED_SHORT_STEMS:
        if role in short and role not in short_fallbacks(short):
            f = short[role]
            status = ("trained" if f.path.is_file() else "card without file") + " (short captions)"
            rows.append({"family": "embedded", "role": role, "status": status, "where": str(f.path)})
    for role, names in OFFICIAL_NAMES.items():
        for name in names:
            status = "cached" if is_cached(name) else "not downloaded"
            rows.append(
                {"family": "official", "role": role, "status": status, "where": str(cached_path(name))}
            )
    rows.append(
        {"family": "official", "role": "eval-clip", "status": "open_clip (downloads on first use)",
         "where": "open_clip:" + ":".join(OFFICIAL_EVAL_CLIP)}
    )  # fmt: skip
    return rows


__all__ = [
    "OFFICIAL",
    "ROLES",
    "CheckpointError",
    "LoadedModels",
    "ModelPlan",
    "ModelUnavailable",
    "describe_models",
    "embedded_files",
    "short_fallbacks",
    "load_eval_clip",
    "load_models",
    "models_dir",
    "official_available",
    "plan_models",
    "random_unet",
    "write_card",
]
