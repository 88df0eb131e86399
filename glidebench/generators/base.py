"""The generator interface: the one way images enter a run.

A generator turns the protocol's prompts, their per-index seeds and one guidance setting into images. It
declares what it supports (:class:`Capabilities`: guidance kinds, native resolution, dtypes, device types,
whether its images depend only on (prompt, seed, setting)), so that a run refuses an unsupported setting
before any work, and what determines its images (:meth:`Generator.identity`, recorded in the run's spec and
fingerprint). The GLIDE models (:mod:`.glide`), a user's own code (:mod:`.plugins`: ``module:factory`` or a
``glidebench.generators`` entry point) and diffusers pipelines (:mod:`.diffusers`) all implement it.

:func:`as_uint8_images` checks what a generator returned (count, shape, dtype, range, NaN) and brings it to
the evaluation resolution by the protocol's rule (center crop to a square, PIL bicubic with antialiasing: the
rule the reference images follow); every problem is a :class:`GeneratorError` that names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..images_io import to_rgb_array

GUIDANCE_KINDS = ("cfg", "clip", "none")


class GeneratorError(RuntimeError):
    """A generator that cannot be loaded, cannot do what the run asks, or returned unusable images."""


@dataclass(frozen=True)
class Capabilities:
    """What a generator supports (checked before any work)."""

    guidance: tuple[str, ...] = ("cfg", "none")  # of GUIDANCE_KINDS
    resolution: int = 64  # native output size in pixels (square)
    dtypes: tuple[str, ...] = ("fp32",)
    devices: tuple[str, ...] = ("cpu", "cuda")
    deterministic: bool = True  # images depend only on (prompt, seed, setting, options)
    min_cfg_scale: float = 0.0  # the least classifier-free scale it guides with (diffusers pipelines: 1)
    cfg_interval: bool = True  # whether it can guide only inside --cfg-interval (GLIDE's samplers can)


@dataclass(frozen=True)
class SamplingOptions:
    """The run's sampling options, as a generator sees them (a generator uses what applies to it)."""

    sampler: str
    steps: str
    resolution: int  # the evaluation resolution the images are brought to
    dtype: str = "fp32"
    device: str = "cpu"
    upsample: bool = False
    up_sampler: str = "ddim"
    up_steps: str = "fast27"
    upsample_temp: float = 0.997
    cfg_interval: tuple[int, int] | None = None
    progress: bool = False


# GLIDE's sampling options (RunOptions field -> flag): a generator that does not read one refuses it
GLIDE_OPTIONS = {
    "sampler": "--sampler", "steps": "--steps", "up_sampler": "--up-sampler", "up_steps": "--up-steps",
    "upsample_temp": "--upsample-temp", "cfg_interval": "--cfg-interval", "attention": "--attention",
    "fast": "--fast",
}  # fmt: skip


@dataclass(frozen=True)
class SamplingDescription:
    """How a generator samples, in its own terms: the run's first lines, its results (``sampler`` and ``steps``
    columns), results.md and the report show this, never GLIDE's options when GLIDE does not sample.

    ``reads``: which of :data:`GLIDE_OPTIONS` it reads from :class:`SamplingOptions` (a run refuses the others
    when given); None when it does not say (they are then passed on, with a note)."""

    model: str  # the results' model name
    sampler: str  # its sampler or scheduler ("DDIMScheduler", "dpm++2m-sde", "images made elsewhere")
    steps: str = ""  # its steps ("" when it has none or does not say)
    evals_per_image: str = ""  # model evaluations per image, in words ("" when unknown before sampling)
    guidance: str = ""  # what a --cfg (or --clip) scale means for it
    reads: tuple[str, ...] | None = None

    def short(self) -> str:
        """``sampler steps`` (the run-shape line and the results' columns)."""
        return f"{self.sampler} {self.steps}".strip()

    def text(self) -> str:
        """One line: model, sampler, steps, evaluations per image, guidance."""
        parts = [f"{self.model}: {self.sampler}" + (f", {self.steps} steps" if self.steps else "")]
        if self.evals_per_image:
            parts.append(f"model evaluations per image: {self.evals_per_image}")
        if self.guidance:
            parts.append(f"guidance: {self.guidance}")
        return "; ".join(parts)

    def record(self) -> dict[str, Any]:
        """For provenance.json (the report reads it)."""
        return {
            "model": self.model, "sampler": self.sampler, "steps": self.steps,
            "evals_per_image": self.evals_per_image, "guidance": self.guidance, "text": self.text(),
        }  # fmt: skip


class Generator:
    """Base class of generators (duck typing works too: ``name``, ``capabilities``, ``identity()``,
    ``generate()``).

    ``generate(captions, seeds, setting, options)`` returns one image per caption: a uint8 array or tensor
    [N, H, W, 3] or [N, 3, H, W], a float one in [0, 1], or a list of PIL images. Image ``i`` must depend only
    on ``captions[i]``, ``seeds[i]``, the setting and the options (not on its batch mates), or resumed and
    sharded runs will differ from an uninterrupted one. ``evals_per_image`` (optional) reports the model
    evaluations per image of the last call, by model.
    """

    name: str = "generator"
    capabilities: Capabilities = Capabilities()
    evals_per_image: dict[str, float] | None = None
    verb: str = "sampled"  # what the run's log says it did to a chunk's images (a folder: "copied")

    def identity(self) -> dict[str, str]:
        """What determines the images (weights' hashes, versions, arguments): part of the run's identity."""
        return {"generator": type(self).__module__ + "." + type(self).__qualname__}

    def describe(self, options: SamplingOptions) -> SamplingDescription:
        """How it samples under ``options`` (override it: the default says only that it does not say)."""
        return SamplingDescription(self.name, "its own sampler (the generator does not describe it)")

    def check(self, settings: Sequence[Any], options: SamplingOptions) -> None:
        """Refuse (raise :class:`GeneratorError`) what it cannot do that :class:`Capabilities` cannot say.
        Called when the run is planned, before any work and before the run directory exists (``--dry-run``
        too); optional for duck-typed generators."""

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the generator holds (weights on a device)."""


def describe_sampling(generator: Any, options: SamplingOptions) -> SamplingDescription:
    """``generator.describe(options)``; a duck-typed generator without it is described by its name only."""
    describe = getattr(generator, "describe", None)
    if callable(describe):
        return describe(options)
    return Generator.describe(generator, options)  # uses only ``name``


def unread_glide_options(generator: Any, given: Sequence[str], options: SamplingOptions) -> str | None:
    """A one-line refusal when flags of :data:`GLIDE_OPTIONS` (``given``: their RunOptions field names) are
    given to a generator whose description says it does not read them; None when it reads them all or does not
    say (see :func:`glide_options_note`)."""
    desc = describe_sampling(generator, options)
    if desc.reads is None:
        return None
    unread = [GLIDE_OPTIONS[f] for f in given if f in GLIDE_OPTIONS and f not in desc.reads]
    if not unread:
        return None
    return (
        f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} GLIDE's sampling option"
        f"{'' if len(unread) == 1 else 's'}; generator {desc.model} does not use "
        f"{'it' if len(unread) == 1 else 'them'} (it samples with {desc.short()}); leave "
        f"{'it' if len(unread) == 1 else 'them'} out"
    )


def glide_options_note(generator: Any, given: Sequence[str], options: SamplingOptions) -> str | None:
    """A one-line note when GLIDE's flags are given to a generator that does not say which options it reads."""
    desc = describe_sampling(generator, options)
    flags = [GLIDE_OPTIONS[f] for f in given if f in GLIDE_OPTIONS]
    if desc.reads is not None or not flags:
        return None
    return (
        f"{', '.join(flags)}: GLIDE's sampling options are passed to generator {desc.model}, which does not "
        "describe its sampling (whether it uses them is up to it; a generator says so in describe())"
    )


def check_supported(
    generator: Any,
    settings: Sequence[Any],
    dtype: str,
    device_type: str,
    options: SamplingOptions | None = None,
) -> None:
    """Refuse, before any work, a setting or option the generator does not declare. ``settings``: the run's
    settings (:class:`glidebench.spec.Setting`) or their guidance kinds; with ``options`` the scales, the
    guidance interval and the generator's own :meth:`Generator.check` are checked too."""
    caps = generator.capabilities
    name = getattr(generator, "name", type(generator).__name__)
    guidance_kinds = [getattr(s, "guidance", s) for s in settings]
    bad = sorted(set(guidance_kinds) - set(caps.guidance))
    if bad:
        raise GeneratorError(
            f"generator {name} does not support guidance {bad} (it supports {list(caps.guidance)}); drop those "
            "settings (e.g. --clip '' for CLIP guidance, --cfg '' for classifier-free guidance)"
        )
    if dtype not in caps.dtypes:
        raise GeneratorError(
            f"generator {name} does not run in {dtype}; use --dtype {' or '.join(caps.dtypes)}"
        )
    if device_type not in caps.devices:
        raise GeneratorError(
            f"generator {name} does not run on {device_type}; use --device {' or '.join(caps.devices)}"
        )
    if options is None:
        return
    for s in settings:
        if getattr(s, "guidance", None) == "cfg" and s.scale < caps.min_cfg_scale:
            raise GeneratorError(cfg_scale_refusal(name, s.scale, caps.min_cfg_scale))
    guided = any(getattr(s, "guidance", None) == "cfg" and s.scale != 1 for s in settings)
    if options.cfg_interval is not None and guided and not caps.cfg_interval:
        raise GeneratorError(
            f"generator {name} guides every step: --cfg-interval is applied by GLIDE's samplers only; drop it"
        )
    check = getattr(generator, "check", None)
    if callable(check):
        check([s for s in settings if not isinstance(s, str)], options)


def cfg_scale_refusal(name: str, scale: float, least: float) -> str:
    """The message for a classifier-free scale below what a generator guides with."""
    return (
        f"{name}: classifier-free scale {scale:g} < {least:g}: this generator guides only at scales >= {least:g}"
        + (" (1 runs the conditional model alone)" if least == 1 else "")
        + f"; use --cfg scales >= {least:g}"
    )


def _to_array(images: Any) -> np.ndarray:
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):  # PIL images
        return np.stack([to_rgb_array(im) for im in images])
    if hasattr(images, "detach"):  # torch
        images = images.detach().cpu()
        if str(images.dtype) in ("torch.float16", "torch.bfloat16"):
            images = images.float()
        images = images.numpy()
    return np.asarray(images)


def resize_to(image: np.ndarray, size: int) -> np.ndarray:
    """The protocol's rule for bringing an image to ``size``: center crop to a square, then PIL bicubic with
    antialiasing (as the MS-COCO reference images are prepared)."""

    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(np.ascontiguousarray(image[top : top + s, left : left + s]), "RGB")
    if s != size:
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8).copy()


def as_uint8_images(images: Any, n: int, resolution: int, where: str) -> tuple[np.ndarray, bool]:
    """Check a generator's output and return (uint8 [n, resolution, resolution, 3], resized?)."""
    try:
        a = _to_array(images)
    except Exception as e:  # noqa: BLE001 - anything a plug-in returns
        raise GeneratorError(
            f"{where}: the generator returned {type(images).__name__}, not images ({e})"
        ) from e
    if a.ndim == 4 and a.shape[1] == 3 and a.shape[-1] != 3:
        a = a.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    if a.ndim != 4 or a.shape[-1] != 3:
        raise GeneratorError(
            f"{where}: the generator returned an array of shape {tuple(a.shape)}; expected [N, H, W, 3] or "
            "[N, 3, H, W] RGB images (or a list of PIL images)"
        )
    if a.shape[0] != n:
        raise GeneratorError(f"{where}: the generator returned {a.shape[0]} images for {n} captions")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise GeneratorError(
                f"{where}: the generator returned NaN or infinite pixel values in "
                f"{int((~np.isfinite(a)).any(axis=(1, 2, 3)).sum())} of {n} images (a diverged sampler?); nothing "
                "was written"
            )
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise GeneratorError(
                f"{where}: float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; return uint8 "
                "0..255, or scale to [0, 1] (e.g. (x + 1) / 2 for [-1, 1] images)"
            )
        a = np.round(a * 255.0).astype(np.uint8)
    else:
        raise GeneratorError(f"{where}: images of dtype {a.dtype}; return uint8 (0..255) or float (0..1)")
    if a.shape[1:3] == (resolution, resolution):
        return np.ascontiguousarray(a), False
    return np.stack([resize_to(img, resolution) for img in a]), True
