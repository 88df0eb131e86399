"""Noised CLIP model and the CLIP-guidance gradient (GLIDE paper, section 2.3, eq. for CLIP guidance).

CLIP guidance perturbs the reverse-process mean with the gradient of the image-caption similarity:

    mu_hat(x_t | c) = mu(x_t | c) + s * Sigma(x_t | c) * grad_{x_t} (f(x_t, t) . g(c))

:meth:`ClipModel.cond_fn` returns the ``grad_scale * grad`` part as glide-text2im does: ``z_text = g(c)`` is
computed once, and for each (x_t, t) the loss is ``exp(logit_scale_log) * sum_batch <z_text, z_img(x_t, t)>``
with L2-normalised embeddings ``z / (||z|| + 1e-12)``. ``logit_scale_log`` is ``log(100)`` stored as float32 and
exponentiated in float32, which gives 100.0000076 (not 100) exactly as the official code.

Sampler contract: samplers call ``cond_fn(x, t, **model_kwargs)`` with ``t`` an int64 tensor of ORIGINAL-scale
timesteps (a respaced process maps its indices through ``timestep_map`` first) and add ``variance * grad`` to
the mean. Extra keyword arguments are accepted and ignored.

This module also owns checkpoint loading for the two encoders (:func:`load_clip_state_dicts`), which refuses
UNet checkpoints and swapped encoders with an error naming what was found and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .config import ClipConfig, default_config_path
from .encoders import ImageEncoder, TextEncoder
from .tokenizer import ClipTokenizer

CondFn = Callable[..., torch.Tensor]
NORM_EPS = 1e-12


def _normalize(z: torch.Tensor) -> torch.Tensor:
    return z / (torch.linalg.norm(z, dim=-1, keepdim=True) + NORM_EPS)


class ClipModel(nn.Module):
    """The two noised-CLIP encoders, the tokenizer and the logit scale.

    ``autocast`` (default False) runs the image encoder under ``torch.autocast`` (float16) when the input is on
    CUDA; on CPU it has no effect. The official code runs CLIP in float32 everywhere, which ``autocast=False``
    reproduces (golden cond_fn gradient within 2e-6 on an H200). With autocast the gradient moves by about 2e-3
    (0.1-0.2 % relative) and, at the official size and batch <= 8, a guided step is no faster (about 20 ms
    per cond_fn call either way on an H200), so it is off by default.
    """

    def __init__(
        self,
        config: ClipConfig,
        text_encoder: TextEncoder,
        image_encoder: ImageEncoder,
        tokenizer: ClipTokenizer | None = None,
        autocast: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self._tokenizer = tokenizer
        self.autocast = autocast
        device = next(text_encoder.parameters()).device
        # float32(log(logit_scale)); exponentiated in float32 in cond_fn. In neither official state dict.
        self.register_buffer(
            "logit_scale",
            torch.tensor(np.log(config.logit_scale), dtype=torch.float32, device=device),
            persistent=False,
        )

    @property
    def tokenizer(self) -> ClipTokenizer:
        """The CLIP tokenizer (created on first use: importing open_clip takes a few seconds)."""
        if self._tokenizer is None:
            self._tokenizer = ClipTokenizer()
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.image_encoder.parameters()).device

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP tokens [B, max_text_len] and text lengths [B] on the text encoder's device."""
        device = next(self.text_encoder.parameters()).device
        return self.tokenizer.encode_batch(prompts, self.text_encoder.max_text_len, device=device)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings g(c) [B, n_embd]."""
        tokens, lens = self.encode_prompts(prompts)
        return _normalize(self.text_encoder(tokens, lens))

    def image_embeddings(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings f(x_t, t) [B, n_embd] of images x in [-1, 1] at original-scale steps t."""
        use_autocast = self.autocast and x.device.type == "cuda"
        with torch.autocast(device_type=x.device.type, enabled=use_autocast):
            z = self.image_encoder((x + 1) * 127.5, t)
        return _normalize(z if z.dtype == torch.float64 else z.float())

    def cond_fn(self, prompts: Sequence[str], grad_scale: float) -> CondFn:
        """Return ``cond_fn(x, t, **kwargs) -> grad_scale * d/dx_t [exp(logit_scale) * sum <z_text, z_img>]``."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings (one per batch row or a single one)")
        with torch.no_grad():
            z_text = self.text_embeddings(prompts)

        def cond_fn(x: torch.Tensor, t: torch.Tensor, grad_scale: float = grad_scale, **kwargs: Any):
            if z_text.shape[0] not in (1, x.shape[0]):
                raise ValueError(
                    f"cond_fn was built for {z_text.shape[0]} prompts but x_t has batch {x.shape[0]}; "
                    "build it with one prompt per row (or a single prompt)"
                )
            with torch.enable_grad():
                x_var = x.detach().requires_grad_(True)
                z_img = self.image_embeddings(x_var, t)
                loss = torch.exp(self.logit_scale) * (z_text * z_img).sum()
                grad = torch.autograd.grad(loss, x_var)[0].detach()
            return grad * grad_scale

        return cond_fn


def create_clip_model(
    config_path: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
    *,
    config: ClipConfig | None = None,
    tokenizer: ClipTokenizer | None = None,
    autocast: bool = False,
    generator: torch.Generator | None = None,
) -> ClipModel:
    """Build a noised CLIP from ``config`` or a ``config.yaml`` (default: the official options).

    Weights are drawn deterministically (see :mod:`glide.clip.encoders`); load the released checkpoints with
    :func:`load_clip_state_dicts`. ``device`` defaults to CUDA when available, as in glide-text2im;
    ``torch.device("meta")`` builds without allocating or initialising weights.
    """
    if config is not None and config_path is not None:
        raise ValueError("give either config or config_path, not both")
    if config is None:
        config = ClipConfig.from_yaml(config_path if config_path is not None else default_config_path())
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    text_encoder = TextEncoder(
        n_bpe_vocab=config.n_vocab,
        max_text_len=config.max_text_len,
        n_embd=config.n_embd,
        n_head=config.n_head_text,
        n_xf_blocks=config.n_xf_blocks_text,
        n_head_state=config.n_head_state_text,
        device=device,
        generator=generator,
    )
    image_encoder = ImageEncoder(
        image_size=config.image_size,
        patch_size=config.patch_size,
        n_embd=config.n_embd,
        n_head=config.n_head_image,
        n_xf_blocks=config.n_xf_blocks_image,
        n_head_state=config.n_head_state_image,
        n_timestep=config.n_timesteps,
        device=device,
        generator=generator,
    )
    return ClipModel(config, text_encoder, image_encoder, tokenizer=tokenizer, autocast=autocast)


# Checkpoint loading ----------------------------------------------------------------------------------------

_EXPECTED = {
    "image": "a noised-CLIP image-encoder state dict ('clip/image-enc': keys 'blocks.input.w_t', "
    "'blocks.input.patch_proj', ...)",
    "text": "a CLIP text-encoder state dict ('clip/text-enc': keys 'blocks.input.w_voc', 'blocks.input.w_pos', ...)",
}


def describe_state_dict(state_dict: Mapping[str, Any]) -> tuple[str, str | None]:
    """Guess what a state dict holds from its key names: (kind, telling key).

    kind is one of 'clip-image', 'clip-image-unnoised', 'clip-text', 'clip-model', 'unet', 'unknown'.
    """
    keys = set(state_dict)
    for key, kind in (
        ("blocks.input.w_t", "clip-image"),
        ("blocks.input.patch_proj", "clip-image"),
        ("blocks.input.pred_state", "clip-image-unnoised"),
        ("blocks.input.w_voc", "clip-text"),
        ("input_blocks.0.0.weight", "unet"),
        ("time_embed.0.weight", "unet"),
    ):
        if key in keys:
            if kind == "clip-image" and "blocks.input.pred_state" in keys:
                return "clip-image-unnoised", "blocks.input.pred_state"
            return kind, key
    for key in sorted(keys):
        if key.startswith(("image_encoder.", "text_encoder.")):
            return "clip-model", key
    return "unknown", next(iter(sorted(keys)), None)


_FOUND = {
    "clip-image": "the noised-CLIP IMAGE encoder",
    "clip-image-unnoised": "an un-noised CLIP image encoder (a class token 'pred_state', no timestep table)",
    "clip-text": "the CLIP TEXT encoder",
    "clip-model": "a whole ClipModel state dict (keys prefixed 'image_encoder.' / 'text_encoder.')",
    "unet": "a GLIDE diffusion UNet checkpoint (base / upsample / inpaint), not a CLIP encoder",
    "unknown": "an unrecognised state dict",
}


def _check_kind(state_dict: Mapping[str, Any], want: str, arg: str, other_kind: str) -> None:
    kind, key = describe_state_dict(state_dict)
    if kind == f"clip-{want}":
        return
    found = _FOUND[kind] + (f" (it has key {key!r})" if key is not None else " (it is empty)")
    if kind == other_kind:
        fix = (
            "the image and text state dicts look swapped: call "
            "load_clip_state_dicts(model, image_sd=<clip/image-enc>, text_sd=<clip/text-enc>)"
        )
    elif kind == "unet":
        fix = (
            "load the CLIP checkpoints 'clip/image-enc' and 'clip/text-enc' instead of a diffusion checkpoint"
        )
    elif kind == "clip-model":
        fix = "load it with ClipModel.load_state_dict, or split it by the 'image_encoder.'/'text_encoder.' prefix"
    else:
        fix = "pass the official 'clip/image-enc' and 'clip/text-enc' checkpoints"
    raise ValueError(f"{arg} is {found}, but {_EXPECTED[want]} was expected; {fix}")


def load_clip_state_dicts(
    model: ClipModel, image_sd: Mapping[str, torch.Tensor], text_sd: Mapping[str, torch.Tensor]
) -> ClipModel:
    """Load the official encoder state dicts strictly into ``model`` (after checking which is which)."""
    _check_kind(image_sd, "image", "image_sd", other_kind="clip-text")
    _check_kind(text_sd, "text", "text_sd", other_kind="clip-image")
    for name, encoder, sd in (
        ("image", model.image_encoder, image_sd),
        ("text", model.text_encoder, text_sd),
    ):
        try:
            encoder.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise RuntimeError(
                f"the {name}-encoder state dict does not fit a model built with {model.config}; build the model "
                f"with the options the checkpoint was trained with (ClipConfig.official() for the released "
                f"weights). PyTorch says: {e}"
            ) from None
    return model
