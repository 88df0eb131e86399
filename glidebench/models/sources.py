"""Typed model sources: where one role's weights come from, under which identity, and how to load them.

Each source is a small frozen dataclass with ``role``, ``identity`` (what the run's fingerprint records),
``config``, ``may_download`` (whether loading it may reach the network), a one-line :meth:`describe` and a
``load(device, ...)`` method; the evaluator-CLIP sources also build the CLIP-score embedder
(:meth:`embedder`). Callers ask the source; they never test its shape.

- :class:`FileSource`: an embedded file (``glidebench/assets/models`` or ``$GLIDEBENCH_MODELS``), identity
  its SHA-256 (checked against its card when planned);
- :class:`OfficialSource`: released GLIDE checkpoints in glide's download cache, identity their SHA-256s;
- :class:`RandomSource`: the seeded random-initialised fallback, identity its recipe;
- :class:`OpenClipSource`: the evaluator CLIP of MS-COCO runs (OpenAI CLIP through open_clip, downloaded on
  first use), identity ``open_clip:MODEL:TAG``.

UNet roles (base, upsample, inpaint) load as UNets, in fp16 when asked; the CLIP roles (noised-clip,
eval-clip) load as glide noised CLIPs in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from glide.checkpoints import load_clip, load_model
from glide.config import ModelConfig

from ..features import ClipEmbedder, GlideClipEmbedder
from .random_init import RANDOM_SEED, random_clip, random_identity, random_unet
from .registry import CLIP_ROLES, OFFICIAL_EVAL_CLIP, EmbeddedFile, ModelUnavailable


@runtime_checkable
class ModelSource(Protocol):
    """Where one role's weights come from."""

    @property
    def role(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def config(self) -> Any: ...

    @property
    def may_download(self) -> bool: ...

    def describe(self) -> str: ...

    def load(self, device: torch.device | str, fp16: bool = False) -> Any: ...


@runtime_checkable
class EvalClipSource(ModelSource, Protocol):
    """A source of the evaluator CLIP: it also builds the CLIP-score embedder (a FeatureExtractor with
    ``embed_images`` / ``embed_texts``)."""

    def embedder(self, device: torch.device | str) -> Any: ...


def _clip_in_fp32(role: str, fp16: bool) -> None:
    if fp16:
        raise ValueError(f"the {role} model loads in float32 only; load it with fp16=False")


@dataclass(frozen=True)
class FileSource:
    """An embedded model file; ``identity`` is its verified SHA-256, ``config`` the UNet config of its header
    (None for the CLIP roles)."""

    file: EmbeddedFile
    identity: str
    config: ModelConfig | None = None

    @property
    def role(self) -> str:
        return self.file.role

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def card(self) -> dict[str, Any]:
        return self.file.card

    @property
    def may_download(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.role}: file {self.path} (sha256 {self.identity[:12]})"

    def load(self, device: torch.device | str, fp16: bool = False) -> torch.nn.Module:
        if self.role in CLIP_ROLES:
            _clip_in_fp32(self.role, fp16)
            return load_clip(str(self.path), device=torch.device(device))

        return load_model(self.path, device=torch.device(device), fp16=fp16)

    def embedder(self, device: torch.device | str) -> Any:
        """The CLIP-score embedder of an evaluator-CLIP file (a glide CLIP evaluated at t = 0)."""

        device = torch.device(device)
        name = self.path.name.removesuffix(".safetensors")  # embedded-clip-eval or embedded-clip-eval-short
        fingerprint = f"glide-clip:sha256={self.identity}:t=0:bicubic:v1"
        return GlideClipEmbedder(self.load(device), name, fingerprint, device)


@dataclass(frozen=True)
class OfficialSource:
    """Released GLIDE (filtered) checkpoints from glide's download cache (``names``: one UNet, or the noised
    CLIP's image and text encoders); ``identity`` their SHA-256s joined by commas."""

    role: str
    names: tuple[str, ...]
    identity: str
    config: ModelConfig | None = None

    @property
    def may_download(self) -> bool:
        return False  # planning requires them cached; loading never downloads

    def describe(self) -> str:
        return f"{self.role}: official GLIDE {' + '.join(self.names)} from glide's cache"

    def load(self, device: torch.device | str, fp16: bool = False) -> torch.nn.Module:
        if self.role in CLIP_ROLES:
            _clip_in_fp32(self.role, fp16)
            return load_clip("official", device=torch.device(device))

        return load_model(self.names[0], device=torch.device(device), fp16=fp16)


@dataclass(frozen=True)
class RandomSource:
    """A seeded random-initialised model: ``config`` is a UNet ModelConfig, or a ClipConfig dict for the CLIP
    roles."""

    role: str
    config: ModelConfig | dict[str, Any]
    seed: int = RANDOM_SEED

    @property
    def identity(self) -> str:
        return random_identity(self.role, self.config, self.seed)

    @property
    def may_download(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.role}: RANDOM-INITIALISED ({self.identity})"

    def load(self, device: torch.device | str, fp16: bool = False) -> torch.nn.Module:
        if self.role in CLIP_ROLES:
            _clip_in_fp32(self.role, fp16)
            return random_clip(self.config, self.seed).to(torch.device(device))
        model = random_unet(self.config, self.seed)
        if fp16:
            model.convert_to_fp16()
        return model.to(torch.device(device))


@dataclass(frozen=True)
class OpenClipSource:
    """An evaluator CLIP from open_clip: ``model_name`` and ``pretrained`` (a tag such as "openai", which
    downloads on first use, or a local file); ``title`` names it in messages."""

    model_name: str
    pretrained: str
    title: str
    role: str = "eval-clip"

    @property
    def identity(self) -> str:
        return f"open_clip:{self.model_name}:{self.pretrained}"

    @property
    def config(self) -> dict[str, str]:
        return {"model_name": self.model_name, "pretrained": self.pretrained}

    @property
    def may_download(self) -> bool:
        return not Path(self.pretrained).is_file()

    def describe(self) -> str:
        return f"{self.title} through open_clip" + (" (downloaded on first use)" if self.may_download else "")

    def load(self, device: torch.device | str, fp16: bool = False) -> Any:
        """The open_clip embedder (glidebench.features.ClipEmbedder); :class:`ModelUnavailable` when open_clip
        cannot load it (offline with nothing cached), with the fix."""

        _clip_in_fp32(self.role, fp16)
        try:
            return ClipEmbedder.from_open_clip(self.model_name, self.pretrained, device=torch.device(device))
        except Exception as e:  # no internet and nothing cached: open_clip raises several kinds
            who = "OpenAI CLIP" if self.pretrained == "openai" else f"CLIP ({self.pretrained})"
            raise ModelUnavailable(
                f"could not load {who} {self.model_name} ({type(e).__name__}: {str(e)[:200]}); "
                "connect to the internet once so open_clip can cache it"
            ) from e

    def embedder(self, device: torch.device | str) -> Any:
        """The CLIP-score embedder (the same as :meth:`load`)."""
        return self.load(device)


OPENAI_CLIP_B16 = OpenClipSource(*OFFICIAL_EVAL_CLIP, title="OpenAI CLIP ViT-B/16")
