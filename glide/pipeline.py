"""The high-level API: prompts -> 64 px -> 256 px with classifier-free or CLIP guidance, and inpainting.

Mirrors the released notebooks (text2im, clip_guided, inpaint) with the paper's defaults, and adds what a
benchmark needs: per-sample seeds (a sample never depends on its batch), text encodings computed once per
sampling run, a count of model evaluations, NaN checks, and fp16 / bf16 paths on GPU.

Randomness: sample i draws x_T and every step's noise from ``torch.Generator().manual_seed(seeds[i])``; the
upsampler uses a second generator seeded with ``seeds[i] + UPSAMPLER_SEED_OFFSET``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .diffusion import samplers
from .diffusion.gaussian import create_gaussian_diffusion
from .diffusion.guidance import classifier_free_guidance, inpaint_denoised_fn
from .fast import FastForward, FastPath
from .fast import prepare as prepare_model
from .images import quantize_8bit, to_uint8
from .nn import set_attention_impl
from .unet import Text2ImUNet

UPSAMPLER_SEED_OFFSET = 2**32
TEXT_CACHE_SIZE = 8  # prompt lists whose encodings the fast path keeps (a run's chunks x [cond, uncond])
GUIDANCE_KINDS = ("cfg", "clip", "none")
DTYPES = ("fp32", "fp16", "bf16")


class SamplingError(RuntimeError):
    """Sampling produced unusable output (for example NaNs). ``stage`` is the model whose output it was
    ("base" or "upsample"; None when not known), so a caller can name that model's checkpoint."""

    def __init__(self, message: str, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class Counter:
    """Counts model evaluations per image (both halves of a classifier-free batch count)."""

    evals: int = 0

    def wrap(self, fn):
        def counted(x, t, **kwargs):
            self.evals += x.shape[0]
            return fn(x, t, **kwargs)

        return counted


@dataclass
class GlidePipeline:
    base: Text2ImUNet
    upsampler: Text2ImUNet | None = None
    clip: torch.nn.Module | None = None
    dtype: str = "fp32"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    last_evals_per_image: dict[str, float] = field(default_factory=dict)
    fast: FastPath | None = None  # None: the official numerics; see glide.fast

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        self.device = torch.device(self.device)
        if self.dtype == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device; use dtype='fp32' (or 'bf16') on CPU")
        self._forwards: dict[int, FastForward] = {}
        self._text_cache: dict[tuple, tuple] = {}
        if self.fast is not None:
            path = self.fast.resolve(self.device)
            for model in (self.base, self.upsampler):
                if model is not None:
                    self._forwards[id(model)] = FastForward(prepare_model(model, path), path)
            if self.clip is not None:
                set_attention_impl(self.clip, path.attention)

    @property
    def fast_notes(self) -> list[str]:
        """What the fast path did not use and why (empty on the official path)."""
        return [n for f in self._forwards.values() for n in f.notes]

    def forward_of(self, model: Text2ImUNet):
        """The model's forward for sampling: the fast path's when ``fast`` is set, else the model itself."""
        return self._forwards.get(id(model), model)

    @classmethod
    def from_pretrained(
        cls,
        base: str = "base",
        upsampler: str | None = None,
        clip: str | tuple[str, str] | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        fast: FastPath | None = None,
    ) -> GlidePipeline:
        """Load by official name ('base', 'upsample', ...) or by file path.

        ``clip`` is 'official' for the released noised CLIP, or (image_enc_path, text_enc_path). ``fast``
        (e.g. ``FastPath()``) samples on the fast path (:mod:`glide.fast`); None keeps the official numerics.
        """
        from .checkpoints import load_clip, load_model

        fp16 = dtype == "fp16"
        b = load_model(base, device=device, fp16=fp16)
        u = load_model(upsampler, device=device, fp16=fp16) if upsampler else None
        c = None
        if clip is not None:
            c = load_clip(clip, device=device)
        return cls(b, u, c, dtype=dtype, device=torch.device(device), fast=fast)

    def _autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _text_emb(self, model: Text2ImUNet, prompts: Sequence[str]):
        """The text encodings of ``prompts`` (on the fast path, kept for reuse by later calls with the same
        prompts: the settings of a run share their captions)."""
        key = (id(model), self.dtype, tuple(prompts))
        if key in self._text_cache:
            return self._text_cache[key]
        tokens, mask = model.tokenizer.batch(list(prompts), model.config.text_ctx)
        with torch.no_grad(), self._autocast():
            emb = model.get_text_emb(tokens.to(self.device), mask.to(self.device))
        if self.fast is not None:
            while len(self._text_cache) >= TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[key] = emb
        return emb

    def _noise(self, seeds: Sequence[int], offset: int = 0):
        return samplers.per_sample_noise(samplers.make_generators([int(s) + offset for s in seeds]))

    def _run(
        self,
        model,
        diffusion_steps,
        schedule,
        respacing,
        sampler,
        shape,
        noise_fn,
        model_fn,
        temp=1.0,
        stage="base",
        **kw,
    ):
        diffusion = create_gaussian_diffusion(diffusion_steps, schedule, respacing)
        x_T = noise_fn(torch.empty(shape, device=self.device)) * temp
        extra = {"eta": kw.pop("eta", 0.0)} if sampler == "ddim" else {}
        with self._autocast():
            x0 = samplers.sample_loop(sampler, diffusion, model_fn, x_T, noise_fn=noise_fn, **kw, **extra)
        if not torch.isfinite(x0).all():
            raise SamplingError(
                f"sampling produced NaN/inf values (the {stage} model's output); with fp16 try dtype='bf16' or "
                "'fp32', and check the checkpoint",
                stage=stage,
            )
        return x0.float()

    def sample_base(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        guidance: str = "cfg",
        scale: float = 3.0,
        sampler: str = "ancestral",
        steps: str = "100",
        progress: bool = False,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cfg_interval: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """64-px samples in [-1, 1] (``image``/``mask`` make it inpainting; mask 1 = keep).

        ``cfg_interval`` = (lo, hi): classifier-free guidance only at timesteps lo..hi (see
        :func:`~glide.diffusion.guidance.classifier_free_guidance`); None (GLIDE's way) guides every step.
        """
        if cfg_interval is not None and guidance != "cfg":
            raise ValueError("cfg_interval applies to classifier-free guidance only (guidance='cfg')")
        if guidance not in GUIDANCE_KINDS:
            raise ValueError(f"guidance must be one of {GUIDANCE_KINDS}, got {guidance!r}")
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        model, cfg = self.base, self.base.config
        counter = Counter()
        b = len(prompts)
        cond = {"text_emb": self._text_emb(model, prompts)}
        img_kwargs: dict[str, torch.Tensor] = {}
        denoised_fn = None
        if image is not None or mask is not None:
            if not cfg.inpaint:
                raise ValueError("image/mask given but the base model is not an inpainting model")
            image, mask = image.to(self.device), mask.to(self.device)
            img_kwargs = {"inpaint_image": image * mask, "inpaint_mask": mask}
            denoised_fn = inpaint_denoised_fn(image, mask)
        cond_fn = None
        if guidance == "cfg" and scale != 1.0:
            uncond = {"text_emb": self._text_emb(model, [""] * b)} | img_kwargs
            model_fn = classifier_free_guidance(
                counter.wrap(self.forward_of(model)), scale, uncond, cfg_interval
            )
        else:
            model_fn = counter.wrap(self.forward_of(model))
            if guidance == "clip":
                if self.clip is None:
                    raise ValueError("CLIP guidance needs a noised CLIP (from_pretrained(clip=...))")
                cond_fn = self.clip.cond_fn(list(prompts), scale)
        shape = (b, 3, cfg.image_size, cfg.image_size)
        x0 = self._run(
            model,
            cfg.diffusion_steps,
            cfg.noise_schedule,
            steps,
            sampler,
            shape,
            self._noise(seeds),
            model_fn,
            model_kwargs=cond | img_kwargs,
            cond_fn=cond_fn,
            denoised_fn=denoised_fn,
            progress=progress,
        )
        self.last_evals_per_image["base"] = counter.evals / b
        return x0

    def upsample(
        self,
        low_res: torch.Tensor,
        prompts: Sequence[str],
        seeds: Sequence[int],
        sampler: str = "ddim",
        steps: str = "fast27",
        temp: float = 0.997,
        progress: bool = False,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Upsample [-1, 1] images with the prompt only (no guidance), as the notebooks do."""
        if self.upsampler is None:
            raise ValueError("no upsampler loaded (from_pretrained(upsampler=...))")
        model, cfg = self.upsampler, self.upsampler.config
        counter = Counter()
        kwargs = {
            "text_emb": self._text_emb(model, prompts),
            "low_res": quantize_8bit(low_res.to(self.device)),
        }
        denoised_fn = None
        if image is not None:
            kwargs |= {"inpaint_image": (image * mask).to(self.device), "inpaint_mask": mask.to(self.device)}
            denoised_fn = inpaint_denoised_fn(image.to(self.device), mask.to(self.device))
        shape = (len(prompts), 3, cfg.image_size, cfg.image_size)
        x0 = self._run(
            model,
            cfg.diffusion_steps,
            cfg.noise_schedule,
            steps,
            sampler,
            shape,
            self._noise(seeds, UPSAMPLER_SEED_OFFSET),
            counter.wrap(self.forward_of(model)),
            temp=temp,
            stage="upsample",
            model_kwargs=kwargs,
            denoised_fn=denoised_fn,
            progress=progress,
        )
        self.last_evals_per_image["upsample"] = counter.evals / len(prompts)
        return x0

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        guidance: str = "cfg",
        scale: float = 3.0,
        sampler: str = "ancestral",
        steps: str = "100",
        upsample: bool = False,
        up_sampler: str = "ddim",
        up_steps: str = "fast27",
        upsample_temp: float = 0.997,
        progress: bool = False,
        cfg_interval: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """uint8 images [B, 3, H, W]: the base model's 64 px, or the upsampler's output when ``upsample``."""
        self.last_evals_per_image = {}
        x = self.sample_base(
            prompts, seeds, guidance, scale, sampler, steps, progress, cfg_interval=cfg_interval
        )
        if upsample:
            x = self.upsample(x, prompts, seeds, up_sampler, up_steps, upsample_temp, progress)
        return to_uint8(x)

    def inpaint(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        prompts: Sequence[str],
        seeds: Sequence[int],
        scale: float = 5.0,
        sampler: str = "ancestral",
        steps: str = "100",
        upsample: bool = False,
        up_steps: str = "fast27",
        progress: bool = False,
    ) -> torch.Tensor:
        """Fill the region where ``mask`` is 0 (image in [-1, 1], [B, 3, S, S]; mask [B, 1, S, S], 1 = keep; S is
        the base model's size, 64 for the official one)."""
        self.last_evals_per_image = {}
        x = self.sample_base(prompts, seeds, "cfg", scale, sampler, steps, progress, image=image, mask=mask)
        if upsample:
            size = self.upsampler.config.image_size
            up_img = torch.nn.functional.interpolate(image, (size, size), mode="bicubic", align_corners=False)
            up_mask = torch.nn.functional.interpolate(mask, (size, size), mode="nearest")
            x = self.upsample(x, prompts, seeds, "ancestral", up_steps, 0.997, progress, up_img, up_mask)
        return to_uint8(x)
