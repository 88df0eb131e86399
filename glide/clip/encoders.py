"""The noised CLIP's image and text transformers (GLIDE paper, section 2.3 / appendix: CLIP guidance).

Parameter names and shapes equal glide-text2im's ``glide_text2im/clip/encoders.py`` so the released
``clip/image-enc`` and ``clip/text-enc`` checkpoints load with ``load_state_dict(strict=True)``:
LayerNorms hold ``g``/``b``, Affine layers hold ``w`` (shaped ``[out, in]``) and optionally ``b``; the
modules sit in ``blocks`` = {``input``, ``block_0`` .. ``block_{n-1}``, ``output``}.

Numerics follow the official dense code path:

* The context is padded up to a multiple of 32 (257 image tokens -> 288, 77 text tokens -> 96), as the
  official block-sparse layout does; padded keys (and, for text, future keys) get an additive ``-1e10`` bias,
  which gives them exactly zero attention weight. Padded query rows are cut off again.
* Heads are contiguous ``n_head_state`` slices of the width; q and k are each scaled by ``d**-1/4`` (computed
  as ``sqrt(1/sqrt(d))``), the softmax runs in float32. LayerNorm (eps 1e-5, float32), exact-erf GELU.
* Image encoder: pixels in 0..255 normalised by CLIP's channel means/stds (0-255 units), bias-free stride-p
  patch conv, token 0 = ``w_t[t]`` (learned per original-scale timestep) instead of a class token, ``+ w_pos``,
  LayerNorm (``blocks.input.ln``), blocks, LN(token 0), bias-free Affine to ``n_embd``.
* Text encoder: ``w_voc[tok] + w_pos``, causal blocks, LN(h[text_len - 1]) (the EOT position), bias-free
  Affine to ``n_embd``.

Initialisation: the official code draws embeddings from normals (std 0.02 / 0.01 for text, 1/sqrt(width) and
sqrt(2/(width*p*p)) for the image) and leaves every Affine weight uninitialised (``torch.empty``) although it
computes a std for each. Here every Affine weight is drawn from a normal with exactly that declared std
(1/sqrt(width) for q/k/v, 1/sqrt(width*n_resblocks**2) for the output projections, sqrt(2/(4*width)) for the
MLP input and sqrt(2/(n_in+n_out)) for the final projection), biases are zero and LayerNorms are (1, 0). All
draws use one explicit ``torch.Generator`` (seed 0 when none is given), so an encoder built without a checkpoint
is deterministic. Building on ``torch.device("meta")`` skips initialisation.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# CLIP's pixel statistics in 0..255 units (the official constants).
IMAGE_CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)
BLOCK_SIZE = 32  # the official block-sparse block size: contexts are padded to a multiple of it
MASK_VALUE = -1e10


def _default_generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


@torch.no_grad()
def _normal_(param: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Fill ``param`` with N(0, std^2) drawn on the CPU from ``generator`` (device-independent results)."""
    if param.device.type == "meta":
        return
    param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float32) * std)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for norms and softmax (official); float64 inputs stay float64 (gradient checks)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _ZeroKeyBiasGrad(torch.autograd.Function):
    """Identity forward; backward zeroes the middle third of the gradient (official ``ZeroKeyBiasGrad``).

    The official code wraps the q and v biases in it; it only changes those biases' gradients in training.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        grad.chunk(3)[1].zero_()
        return grad


class LayerNorm(nn.Module):
    """LayerNorm over the last dim with parameters ``g`` (gain) and ``b`` (bias), computed in float32 (or float64)."""

    def __init__(self, n_state: int, eps: float = 1e-5, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.n_state = n_state
        self.eps = eps
        self.g = nn.Parameter(torch.ones(n_state, dtype=torch.float32, device=device))
        self.b = nn.Parameter(torch.zeros(n_state, dtype=torch.float32, device=device))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.g.fill_(1.0)
            self.b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 as in the official code (float64 stays float64, e.g. for gradient checks)
        dtype = _compute_dtype(x)
        g, b = self.g.to(dtype), self.b.to(dtype)
        return F.layer_norm(x.to(dtype), (self.n_state,), g, b, self.eps)


class Affine(nn.Module):
    """Linear layer with weight ``w`` of shape ``[n_out, n_in]`` and optional bias ``b``."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        use_bias: bool = True,
        std: float | None = None,
        zero_key_bias_grad: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.std = std if std is not None else math.sqrt(2 / (n_in + n_out))
        self.zero_key_bias_grad = zero_key_bias_grad
        self.w = nn.Parameter(torch.empty(n_out, n_in, dtype=torch.float32, device=device))
        if use_bias:
            self.b = nn.Parameter(torch.zeros(n_out, dtype=torch.float32, device=device))
        else:
            self.register_parameter("b", None)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        _normal_(self.w, self.std, _default_generator(generator))
        if self.b is not None:
            with torch.no_grad():
                self.b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.w if self.w.dtype == x.dtype else self.w.to(x.dtype)
        b = self.b
        if b is not None:
            b = b if b.dtype == x.dtype else b.to(x.dtype)
            if self.zero_key_bias_grad and torch.is_grad_enabled() and b.requires_grad:
                b = _ZeroKeyBiasGrad.apply(b)
        return F.linear(x, w, b)


def attention_bias(n_context: int, causal: bool, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive attention bias ``[n_pad, n_pad]`` of the official dense layout (n_pad = ceil(n/32)*32).

    Entry (q, k) is 0 where query q may attend to key k and -1e10 elsewhere: keys and queries >= n_context
    are masked, and with ``causal`` so is every k > q.
    """
    n_padded = BLOCK_SIZE * math.ceil(n_context / BLOCK_SIZE)
    idx = torch.arange(n_padded)
    allowed = (idx[:, None] < n_context) & (idx[None, :] < n_context)
    if causal:
        allowed &= idx[None, :] <= idx[:, None]
    bias = torch.zeros(n_padded, n_padded, dtype=torch.float32)
    bias.masked_fill_(~allowed, MASK_VALUE)
    return bias.to(device)


class AttentionResblock(nn.Module):
    """Pre-LN multi-head self-attention with a residual: m + f_c(attn(ln(m)))."""

    def __init__(
        self, n_state: int, n_heads: int, n_resblocks: int, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        if n_state % n_heads:
            raise ValueError(f"width {n_state} is not divisible by {n_heads} heads")
        self.n_state, self.n_heads = n_state, n_heads
        self.n_head_state = n_state // n_heads
        self.qk_scale = math.sqrt(1 / math.sqrt(self.n_head_state))  # applied to q and to k
        std = 1 / math.sqrt(n_state)
        self.ln = LayerNorm(n_state, device=device)
        self.f_q = Affine(n_state, n_state, True, std, zero_key_bias_grad=True, device=device)
        self.f_k = Affine(n_state, n_state, False, std, device=device)
        self.f_v = Affine(n_state, n_state, True, std, zero_key_bias_grad=True, device=device)
        self.f_c = Affine(n_state, n_state, True, 1 / math.sqrt(n_state * n_resblocks**2), device=device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.n_heads, self.n_head_state).permute(0, 2, 1, 3)

    def forward(self, m: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n_context, n_padded = m.shape[1], bias.shape[-1]
        n_pad = n_padded - n_context
        if n_pad < 0:
            raise ValueError(
                f"sequence of {n_context} tokens is longer than the attention layout ({n_padded})"
            )
        r = self.ln(m)
        q, k, v = self.f_q(r), self.f_k(r), self.f_v(r)
        if n_pad:
            q, k, v = (F.pad(y, (0, 0, 0, n_pad)) for y in (q, k, v))
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        w = torch.einsum("bhcd,bhkd->bhck", q * self.qk_scale, k * self.qk_scale)
        w = torch.softmax(w.to(_compute_dtype(w)) + bias, dim=-1).to(v.dtype)
        r = torch.einsum("bhck,bhkd->bhcd", w, v)
        r = r.permute(0, 2, 1, 3).reshape(r.shape[0], n_padded, self.n_state)[:, :n_context]
        return m + self.f_c(r)


class FullyConnectedResblock(nn.Module):
    """Pre-LN MLP with a residual: m + f_2(gelu(f_1(ln(m)))), hidden width 4x."""

    def __init__(self, n_state: int, n_resblocks: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.ln = LayerNorm(n_state, device=device)
        self.f_1 = Affine(n_state, 4 * n_state, True, math.sqrt(2 / (4 * n_state)), device=device)
        self.f_2 = Affine(4 * n_state, n_state, True, 1 / math.sqrt(n_state * n_resblocks**2), device=device)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return m + self.f_2(F.gelu(self.f_1(self.ln(m))))


class TransformerBlock(nn.Module):
    def __init__(
        self, n_state: int, n_heads: int, n_resblocks: int, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.f_attn = AttentionResblock(n_state, n_heads, n_resblocks, device=device)
        self.f_mlp = FullyConnectedResblock(n_state, n_resblocks, device=device)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.f_mlp(self.f_attn(x, bias))


class TextEmbedding(nn.Module):
    """Token table ``w_voc`` [n_vocab, width] plus learned positions ``w_pos`` [n_context, width]."""

    def __init__(
        self, n_vocab: int, n_context: int, n_state: int, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.n_vocab, self.n_context = n_vocab, n_context
        self.w_voc = nn.Parameter(torch.empty(n_vocab, n_state, dtype=torch.float32, device=device))
        self.w_pos = nn.Parameter(torch.empty(n_context, n_state, dtype=torch.float32, device=device))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        generator = _default_generator(generator)
        _normal_(self.w_voc, 0.02, generator)
        _normal_(self.w_pos, 0.01, generator)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.n_context:
            raise ValueError(
                f"expected tokens of shape [batch, {self.n_context}], got {list(tokens.shape)}; "
                "pad them with ClipTokenizer.encode_batch"
            )
        return F.embedding(tokens, self.w_voc) + self.w_pos[None]


class ImageEmbedding(nn.Module):
    """Pixel normalisation, patch conv, the timestep token ``w_t[t]``, positions and ``ln`` (ln_pre)."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        n_state: int,
        n_timestep: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.n_state = image_size, patch_size, n_state
        self.n_timestep = n_timestep
        self.n_patch = image_size // patch_size
        kw = dict(dtype=torch.float32, device=device)
        # Registration order = the official state-dict order.
        if n_timestep == 0:
            self.pred_state = nn.Parameter(torch.empty(n_state, **kw))
        else:
            self.w_t = nn.Parameter(torch.empty(n_timestep, n_state, **kw))
        self.patch_proj = nn.Parameter(torch.empty(n_state, 3, patch_size, patch_size, **kw))
        self.w_pos = nn.Parameter(torch.empty(1 + self.n_patch**2, n_state, **kw))
        self.register_buffer(
            "channel_means", torch.tensor(IMAGE_CHANNEL_MEANS, **kw)[None, :, None, None], persistent=False
        )
        self.register_buffer(
            "channel_stds", torch.tensor(IMAGE_CHANNEL_STDS, **kw)[None, :, None, None], persistent=False
        )
        self.ln = LayerNorm(n_state, device=device)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        generator = _default_generator(generator)
        std = 1 / math.sqrt(self.n_state)
        _normal_(self.pred_state if self.n_timestep == 0 else self.w_t, std, generator)
        _normal_(self.patch_proj, math.sqrt(2 / (self.n_state * self.patch_size**2)), generator)
        _normal_(self.w_pos, std, generator)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        size = self.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(f"expected images of shape [batch, 3, {size}, {size}], got {list(x.shape)}")
        if self.n_timestep == 0:
            if t is not None:
                raise ValueError("this image encoder has no timestep table (n_timestep=0); pass t=None")
        else:
            t = self._check_timesteps(t, x)
        x = (x - self.channel_means) / self.channel_stds
        x = F.conv2d(x, self.patch_proj, stride=self.patch_size)
        x = x.reshape(x.shape[0], self.n_state, self.n_patch**2).permute(0, 2, 1)
        if self.n_timestep == 0:
            first = self.pred_state[None, None].expand(x.shape[0], -1, -1)
        else:
            first = F.embedding(t, self.w_t)[:, None]
        x = torch.cat((first, x), dim=1) + self.w_pos[None]
        return self.ln(x)

    def _check_timesteps(self, t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        if t is None:
            raise ValueError("the noised CLIP image encoder needs the timesteps t of x_t")
        t = torch.as_tensor(t, device=x.device)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(
                f"timesteps must be integers on the original 0..{self.n_timestep - 1} scale, got dtype "
                f"{t.dtype}; pass the respaced process's timestep_map[t] as int64"
            )
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"expected timesteps of shape [{x.shape[0]}], got {list(t.shape)}")
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.n_timestep):
            raise ValueError(
                f"timesteps must lie in 0..{self.n_timestep - 1} (original scale), got "
                f"{t.min().item()}..{t.max().item()}"
            )
        return t.long()


class TextFeatureExtractor(nn.Module):
    """LN of the hidden state at ``text_len - 1`` (the EOT position), then a bias-free projection."""

    def __init__(self, n_state: int, n_embd: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.ln = LayerNorm(n_state, device=device)
        self.f = Affine(n_state, n_embd, use_bias=False, device=device)

    def forward(self, h: torch.Tensor, text_len: torch.Tensor, return_probe_features: bool = False):
        index = (text_len - 1)[:, None, None].expand(-1, 1, h.shape[2])
        x = torch.gather(h, dim=1, index=index)
        if return_probe_features:
            return x[:, 0]
        return self.f(self.ln(x)[:, 0])


class ImageFeatureExtractor(nn.Module):
    """LN of token 0 (the timestep token), then a bias-free projection."""

    def __init__(self, n_state: int, n_embd: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.ln = LayerNorm(n_state, device=device)
        self.f = Affine(n_state, n_embd, use_bias=False, device=device)

    def forward(self, h: torch.Tensor, return_probe_features: bool = False) -> torch.Tensor:
        if return_probe_features:
            return h[:, 0]
        return self.f(self.ln(h[:, :1])[:, 0])


class _Encoder(nn.Module):
    """Shared scaffolding: ``blocks`` ModuleDict, the attention-bias buffer and deterministic init."""

    blocks: nn.ModuleDict
    n_xf_blocks: int

    def _finish(
        self,
        blocks: list[tuple[str, nn.Module]],
        n_context: int,
        causal: bool,
        device: torch.device | str | None,
        generator: torch.Generator | None,
    ) -> None:
        self.blocks = nn.ModuleDict(OrderedDict(blocks))
        self.register_buffer("attn_bias", attention_bias(n_context, causal, device), persistent=False)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw every parameter (see the module docstring) from ``generator`` (seed 0 if None)."""
        generator = _default_generator(generator)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters(generator)

    def _run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_xf_blocks):
            h = self.blocks[f"block_{i}"](h, self.attn_bias)
        return h


class TextEncoder(_Encoder):
    """CLIP text transformer: tokens [B, max_text_len] and lengths [B] -> unnormalised z_text [B, n_embd]."""

    def __init__(
        self,
        n_bpe_vocab: int,
        max_text_len: int,
        n_embd: int,
        n_head: int,
        n_xf_blocks: int,
        n_head_state: int = 64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_bpe_vocab, self.max_text_len, self.n_embd = n_bpe_vocab, max_text_len, n_embd
        self.n_head, self.n_xf_blocks, self.n_head_state = n_head, n_xf_blocks, n_head_state
        self.n_state = n_head * n_head_state
        n_resblocks = 2 * n_xf_blocks
        blocks: list[tuple[str, nn.Module]] = [
            ("input", TextEmbedding(n_bpe_vocab, max_text_len, self.n_state, device=device))
        ]
        for i in range(n_xf_blocks):
            blocks.append((f"block_{i}", TransformerBlock(self.n_state, n_head, n_resblocks, device=device)))
        blocks.append(("output", TextFeatureExtractor(self.n_state, n_embd, device=device)))
        self._finish(blocks, max_text_len, causal=True, device=device, generator=generator)

    def forward(
        self, text: torch.Tensor, text_len: torch.Tensor, return_probe_features: bool = False
    ) -> torch.Tensor:
        if text_len.ndim != 1 or text_len.shape[0] != text.shape[0]:
            raise ValueError(
                f"text_len must have shape [{text.shape[0]}] (one length per row), got {list(text_len.shape)}"
            )
        if text_len.device.type == "cpu" and text_len.numel():
            lo, hi = int(text_len.min()), int(text_len.max())
            if lo < 1 or hi > self.max_text_len:
                raise ValueError(
                    f"text_len must lie in 1..{self.max_text_len} (SOT/EOT included), got {lo}..{hi}"
                )
        h = self._run_blocks(self.blocks["input"](text))
        return self.blocks["output"](h, text_len, return_probe_features=return_probe_features)


class ImageEncoder(_Encoder):
    """Noised CLIP image transformer: images in 0..255 [B,3,S,S] and timesteps [B] -> z_img [B, n_embd]."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        n_embd: int,
        n_head: int,
        n_xf_blocks: int,
        n_head_state: int = 64,
        n_timestep: int = 0,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.n_embd = image_size, patch_size, n_embd
        self.n_head, self.n_xf_blocks, self.n_head_state = n_head, n_xf_blocks, n_head_state
        self.n_timestep = n_timestep
        self.n_state = n_head * n_head_state
        self.n_context = 1 + (image_size // patch_size) ** 2
        n_resblocks = 2 * n_xf_blocks
        blocks: list[tuple[str, nn.Module]] = [
            ("input", ImageEmbedding(image_size, patch_size, self.n_state, n_timestep, device=device))
        ]
        for i in range(n_xf_blocks):
            blocks.append((f"block_{i}", TransformerBlock(self.n_state, n_head, n_resblocks, device=device)))
        blocks.append(("output", ImageFeatureExtractor(self.n_state, n_embd, device=device)))
        self._finish(blocks, self.n_context, causal=False, device=device, generator=generator)

    def forward(
        self, image: torch.Tensor, timesteps: torch.Tensor | None = None, return_probe_features: bool = False
    ) -> torch.Tensor:
        h = self._run_blocks(self.blocks["input"](image, t=timesteps))
        return self.blocks["output"](h, return_probe_features=return_probe_features)
