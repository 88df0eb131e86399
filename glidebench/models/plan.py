"""Model planning: which weights a run will use, decided without loading them.

Owns :class:`ModelPlan` (per role a typed source from :mod:`.sources` and its identity, the label, the
resolutions and the notes) and :func:`plan_models` with its two families:

- ``official``: the released GLIDE (filtered) checkpoints from glide's download cache: ``base`` (64 px),
  ``upsample`` (64->256) and the noised CLIP;
- ``embedded``: the files of :mod:`.registry`, or the random-initialised fallback of :mod:`.random_init` while
  no trained base exists (then every missing generator role is random too, but never the evaluator CLIP).

The evaluator CLIP follows the data: OpenAI CLIP ViT-B/16 through open_clip on MS-COCO, the embedded evaluator
on the embedded set. Also :func:`upsampler_resolution` and :func:`official_available`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glide.checkpoints import cached_path, how_to_get, is_cached, verify
from glide.config import ModelConfig, preset

from .random_init import random_base_config, random_clip_config, random_upsample_config
from .registry import (
    EMBEDDED_SHORT_STEMS,
    OFFICIAL_NAMES,
    EmbeddedFile,
    ModelUnavailable,
    config_of_file,
    embedded_files,
    models_dir,
    short_fallbacks,
)
from .sources import OPENAI_CLIP_B16, FileSource, ModelSource, OfficialSource, RandomSource


@dataclass
class ModelPlan:
    """What a run will load: per role a source (file, official checkpoints, random recipe or open_clip) and its
    identity (the run's fingerprint records ``identities``)."""

    family: str
    label: str
    sources: dict[str, ModelSource]
    identities: dict[str, str]
    random_init: bool
    base_resolution: int
    upsample_resolution: int | None
    notes: list[str] = field(default_factory=list)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    # models already loaded for this run, by role and device (the feature pass and the metric stage share the
    # evaluator CLIP instead of loading it twice)
    loaded: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    configs: dict[str, ModelConfig] = field(default_factory=dict)  # base / upsample UNet configs

    @property
    def has_noised_clip(self) -> bool:
        return "noised-clip" in self.sources

    @property
    def has_eval_clip(self) -> bool:
        return "eval-clip" in self.sources

    def add(self, source: ModelSource, card: dict[str, Any] | None = None) -> None:
        """Record ``source`` (and its card) for its role."""
        self.sources[source.role] = source
        self.identities[source.role] = source.identity
        if card is not None:
            self.cards[source.role] = card

    def eval_clip_note(self) -> str | None:
        """What to print before loading the evaluator CLIP when that may download (open_clip), else None."""
        source = self.sources.get("eval-clip")
        if source is None or not source.may_download:
            return None
        return f"CLIP score: loading {source.describe()}"


def _clip_file(f: EmbeddedFile) -> FileSource:
    return FileSource(f, f.verified_sha256())


def _unet_file(f: EmbeddedFile) -> tuple[FileSource, ModelConfig]:
    identity = f.verified_sha256()  # first: a corrupt file with a card is a checksum error, not a header one
    config = config_of_file(f.path)
    return FileSource(f, identity, config), config


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
    add_evaluator(plan, data or ("coco" if family == "official" else "embedded"), directory, caption_style)
    return plan


def plan_for_generator(
    label: str,
    identities: dict[str, str],
    resolution: int,
    data: str,
    caption_style: str = "exact",
    directory: Path | None = None,
) -> ModelPlan:
    """The plan of a run whose images come from a generator other than GLIDE (a plug-in, a diffusers pipeline):
    its identities as the generator states them, and the data's evaluator CLIP (as for GLIDE)."""
    plan = ModelPlan("plugin", label, {}, dict(identities), False, resolution, None)
    add_evaluator(plan, data, directory, caption_style)
    return plan


def add_evaluator(plan: ModelPlan, data: str, directory: Path | None, caption_style: str) -> None:
    """Add the evaluator CLIP of the DATA to ``plan``: OpenAI ViT-B/16 on MS-COCO, the embedded one on the
    embedded set (a note when it is missing: the CLIP score is then skipped)."""
    if data == "coco":
        plan.add(OPENAI_CLIP_B16)
        return
    files = embedded_files(directory, caption_style)
    if caption_style == "short" and "eval-clip" in short_fallbacks(files):
        plan.notes.append(
            f"no short-caption evaluator CLIP ({EMBEDDED_SHORT_STEMS['eval-clip']}.safetensors): the CLIP "
            "score uses the exact-caption one, which has not seen short captions"
        )
    if "eval-clip" in files:
        plan.add(_clip_file(files["eval-clip"]), files["eval-clip"].card)
    else:
        plan.notes.append(
            "no embedded evaluator CLIP (embedded-clip-eval.safetensors): the CLIP score is skipped"
        )


def _plan_embedded(
    resolution: int | None, want_noised_clip: bool, directory: Path | None, caption_style: str = "exact"
) -> ModelPlan:
    files = embedded_files(directory, caption_style)
    random_init = "base" not in files
    where = directory or models_dir()
    notes: list[str] = []
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
            f"no trained embedded base model in {where} (embedded-base.safetensors): using a "
            "RANDOM-INITIALISED model of the same architecture; samples and metrics are meaningless except as a "
            "plumbing check"
        )
    label = "embedded-random-init" if random_init else "embedded"
    if not random_init and caption_style == "short" and "base" not in short_fallbacks(files):
        label = "embedded-short"
    plan = ModelPlan("embedded", label, {}, {}, random_init, 0, None, notes)

    if random_init:
        base_cfg = random_base_config()
        plan.add(RandomSource("base", base_cfg))
    else:
        base, base_cfg = _unet_file(files["base"])
        plan.add(base, files["base"].card)
    plan.base_resolution = base_cfg.image_size
    plan.configs["base"] = base_cfg

    if resolution is not None and resolution != plan.base_resolution:
        if "upsample" in files:
            up, up_cfg = _unet_file(files["upsample"])
            plan.add(up, files["upsample"].card)
        elif random_init:
            up_cfg = random_upsample_config()
            plan.add(RandomSource("upsample", up_cfg))
        else:
            raise ModelUnavailable(
                f"--resolution {resolution} needs an embedded upsampler, but {where} has no "
                f"embedded-upsample.safetensors; use --resolution {plan.base_resolution} (base only) or train one "
                "(python -m glide.train upsample --config recipes/embedded-upsample.json)"
            )
        if resolution != up_cfg.image_size:
            raise ModelUnavailable(
                f"--resolution {resolution} is neither the embedded base's {plan.base_resolution} px nor its "
                f"upsampler's {up_cfg.image_size} px; choose one of those"
            )
        plan.upsample_resolution = up_cfg.image_size
        plan.configs["upsample"] = up_cfg

    if want_noised_clip:
        if "noised-clip" in files:
            plan.add(_clip_file(files["noised-clip"]), files["noised-clip"].card)
        elif random_init:
            plan.add(RandomSource("noised-clip", random_clip_config(plan.base_resolution)))
        else:
            raise ModelUnavailable(
                f"CLIP guidance (--clip) needs an embedded noised CLIP, but {where} has no "
                "embedded-clip-noised.safetensors; drop --clip or train one "
                "(python -m glide.train clip --config recipes/embedded-clip-noised.json)"
            )
    return plan


def _official_identity(name: str) -> str:
    """The SHA-256 recorded at download or first successful load (``NAME.sha256``), else computed now."""

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
    plan = ModelPlan("official", "glide-filtered", {}, {}, False, 64, 256 if "upsample" in roles else None)
    for role in roles:
        names = OFFICIAL_NAMES[role]
        for name in names:
            if not is_cached(name):
                raise ModelUnavailable(how_to_get(name))
        config = preset(role) if role in ("base", "upsample") else None
        plan.add(OfficialSource(role, names, ",".join(_official_identity(n) for n in names), config))
        if config is not None:
            plan.configs[role] = config
    return plan


def upsampler_resolution(family: str, directory: Path | None = None) -> int:
    """Output size of the family's upsampler (for ``--resolution up``); the random fallback's when absent."""
    if family == "official":
        return 256
    files = embedded_files(directory)
    if "upsample" in files and files["upsample"].path.is_file():
        return config_of_file(files["upsample"].path).image_size
    return random_upsample_config().image_size


def official_available(resolution: int | None = None) -> bool:
    """Whether the official base (and, for 256 px, the upsampler) are in glide's download cache."""
    names = ["base"] + (["upsample"] if resolution == 256 else [])
    return all(is_cached(n) for n in names)
