"""The fast inference path: the same models, faster kernels, the official numerics within float rounding.

:class:`FastPath` names the optimisations; :func:`accelerate` applies them to a loaded model and returns a
:class:`FastForward`, a drop-in for the model's ``forward`` in the samplers. What each piece does, and where it
is switched on when left at ``None`` ("where it pays", from the measurements in docs/performance.md):

- ``attention="sdpa"``: PyTorch's fused scaled-dot-product attention instead of the official einsum form
  (every device).
- ``channels_last``: convolution weights and the UNet's input in NHWC, so oneDNN (CPU) runs its native layout
  instead of reordering every convolution's input and output. On by default on CPU, off on CUDA (on an H200
  it made bf16 9% slower). PyTorch's own channels-last GroupNorm accumulates its statistics less accurately
  (the golden base model's forward moves by 1.4e-5, over the 1e-5 bound), so ``groupnorm="two-pass"`` (the
  default) computes them as the mean and then the variance of the centred values, each one reduction over
  the NHWC tensor, and folds a ResBlock's scale-shift into the same ``addcmul``
  (:meth:`glide.nn.GroupNorm32.scale_shift`): within 7.0e-6 of the official code on every golden model.
  ``groupnorm="nchw"`` (an NCHW copy) is exact too but slower; ``"native"`` is PyTorch's kernel.
- ``rows_per_call``: the model is called on at most this many rows at a time. Rows are independent, so this
  changes no number beyond float rounding. It keeps each temporary under glibc's mmap threshold, so on CPU it
  is 32 unless :func:`tune_cpu_allocator` has run in the process, which removes the cause (then, as on GPU,
  unlimited: embedded base, 100 rows, allocator tuned, 0.91x the official sampling time unsplit against 0.96x
  at 32 rows).
- ``compile``: ``torch.compile`` (fuses GroupNorm + SiLU and the elementwise tails; CUDA). On the 2-core CPU it
  took 70 s to compile the embedded base and ran no faster (oneDNN convolutions are most of the time), so it
  is off on CPU unless asked for. A compile failure falls back to eager, once, with a note.
- ``cuda_graphs``: on CUDA with compile, ``mode="reduce-overhead"`` (CUDA graphs for each fixed shape: the
  host issues one replay instead of ~1,800 kernels). Outputs are cloned out of the graph's pool.

Text encodings are computed once per prompt list and reused across steps and settings
(:class:`glide.pipeline.GlidePipeline` keeps a small cache when its ``fast`` is set), and the conditional and
unconditional halves of classifier-free guidance already run as one batch
(:func:`glide.diffusion.guidance.classifier_free_guidance`).

On CPU the largest gain needs no change to the numerics at all: :func:`tune_cpu_allocator` stops glibc from
handing every large tensor fresh pages (official path, embedded default run: the same images to the bit in
about three quarters of the time). Measured on the 2-core machine (docs/performance.md), the full-size base
model's official forward runs at 85% of the machine's fp32 matmul peak with the allocator tuned, and the fast
path at 97%: the arithmetic alone bounds any fp32 path that keeps the FLOPs at 0.85x the official time.

The default everywhere else in glide stays the official numerics (einsum attention, NCHW, eager); the fast
path's tolerances (per forward <= 1e-5, 10-step classifier-free trajectories <= 1e-4 in fp32, against the
official code's outputs) are tested in tests/glide/test_fast.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .nn import GROUPNORM_MODES, GroupNorm32, set_attention_impl

CPU_ROWS_PER_CALL = 32
ALLOCATOR_THRESHOLD = 1 << 30  # bytes: glibc's mmap and trim thresholds set by tune_cpu_allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_allocator_state: str | None = None


@dataclass(frozen=True)
class FastPath:
    """Which optimisations to use; ``None`` = where it pays on the model's device (see the module docs)."""

    attention: str = "sdpa"
    channels_last: bool | None = None
    # how channels-last models normalise: "two-pass" or "nchw" (exact) or "native" (glide.nn.GroupNorm32)
    groupnorm: str = "two-pass"
    rows_per_call: int | None = None
    compile: bool | None = None
    cuda_graphs: bool | None = None

    def resolve(self, device: torch.device | str) -> ResolvedFastPath:
        """The concrete choices for ``device`` (CUDA-only pieces are off elsewhere, with a note)."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        notes: list[str] = []
        channels_last = (not cuda) if self.channels_last is None else self.channels_last
        if self.rows_per_call is not None:
            rows = self.rows_per_call
        else:  # CPU: split rows only where glibc would map fresh pages for every large temporary
            rows = 0 if cuda or _allocator_state is not None else CPU_ROWS_PER_CALL
        if rows < 0:
            raise ValueError(f"rows_per_call must be >= 0 (0 = no limit), got {rows}")
        do_compile = cuda if self.compile is None else self.compile
        graphs = (cuda and do_compile) if self.cuda_graphs is None else self.cuda_graphs
        if graphs and not cuda:
            notes.append(f"CUDA graphs need a CUDA device; not used on {device.type}")
            graphs = False
        if graphs and not do_compile:
            notes.append("CUDA graphs are taken through torch.compile(mode='reduce-overhead'); compile is on")
            do_compile = True
        if self.groupnorm not in GROUPNORM_MODES:
            raise ValueError(f"groupnorm must be one of {GROUPNORM_MODES}, got {self.groupnorm!r}")
        return ResolvedFastPath(
            self.attention, channels_last, self.groupnorm, rows, do_compile, graphs, notes
        )


@dataclass(frozen=True)
class ResolvedFastPath:
    attention: str
    channels_last: bool
    groupnorm: str
    rows_per_call: int  # 0 = no limit
    compile: bool
    cuda_graphs: bool
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What was used, for provenance (notes excluded)."""
        return {k: v for k, v in asdict(self).items() if k != "notes"}


class FastForward:
    """``model``'s forward on the fast path: same signature (x, t, **kwargs), same outputs within rounding.

    Attributes: ``model`` (the module, already switched to SDPA / channels_last), ``path`` (the resolved
    choices) and ``notes`` (what was not used and why, e.g. a compile failure).
    """

    def __init__(self, model: nn.Module, path: ResolvedFastPath) -> None:
        self.model, self.path = model, path
        self.notes = list(path.notes)
        self._compiled: Callable[..., torch.Tensor] | None = None
        if path.compile:
            mode = "reduce-overhead" if path.cuda_graphs else "default"
            try:
                self._compiled = torch.compile(model, mode=mode, dynamic=False)
            except Exception as e:  # an optimisation: fall back to eager, say so once
                self._fallback(e)

    # attribute access falls through to the model (config, tokenizer, get_text_emb ...)
    def __getattr__(self, name: str) -> Any:
        if name in ("model", "path", "_compiled", "notes"):  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def _fallback(self, error: BaseException) -> None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        note = f"torch.compile failed ({type(error).__name__}: {first[:200]}); running eager"
        self.notes.append(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)
        self._compiled = None

    def _call(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.path.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._compiled is not None:
            try:
                if self.path.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                    return self._compiled(x, t, **kwargs).clone()
                return self._compiled(x, t, **kwargs)
            except Exception as e:  # compile errors surface at the first call of each shape
                self._fallback(e)
        return self.model(x, t, **kwargs)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        rows, n = self.path.rows_per_call, x.shape[0]
        if not rows or n <= rows:
            return self._call(x, t, **kwargs).contiguous()
        parts = [
            self._call(x[i : i + rows], t[i : i + rows], **_rows(kwargs, i, i + rows, n))
            for i in range(0, n, rows)
        ]
        return torch.cat(parts).contiguous()


def _rows(kwargs: dict[str, Any], lo: int, hi: int, n: int) -> dict[str, Any]:
    """Rows lo..hi of every batched keyword argument (tensors and tuples of tensors with n rows)."""

    def cut(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n:
            return v[lo:hi]
        if isinstance(v, tuple):
            return tuple(cut(u) for u in v)
        return v

    return {k: cut(v) for k, v in kwargs.items()}


def prepare(model: nn.Module, path: ResolvedFastPath) -> nn.Module:
    """Switch ``model``'s attention and memory format in place (the weights' values do not change)."""
    set_attention_impl(model, path.attention)
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
        for m in model.modules():
            if isinstance(m, GroupNorm32):
                m.channels_last_mode = path.groupnorm
    return model


def accelerate(
    model: nn.Module, device: torch.device | str | None = None, fast: FastPath | None = None
) -> FastForward:
    """Put ``model`` on the fast path (in place: attention kernel and memory format) and return its forward.

    ``device`` defaults to the model's own; ``fast`` to :class:`FastPath` () (everything where it pays).
    """
    if device is None:
        device = next(model.parameters()).device
    path = (fast or FastPath()).resolve(device)
    return FastForward(prepare(model, path), path)


def tune_cpu_allocator(threshold: int = ALLOCATOR_THRESHOLD) -> str | None:
    """Let glibc's malloc reuse freed memory for large tensors instead of mapping fresh pages for each one.

    glibc serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh ``mmap`` pages,
    and returns them on ``free``; every large CPU tensor (a UNet's activations at 50-100 rows are 10-50 MB)
    then costs a page fault per 4 KiB page and the kernel's zeroing of it, about as much time as the
    elementwise op that fills it. ``mallopt`` raises the mmap and trim thresholds to ``threshold``, so freed
    blocks stay in the heap and the next forward reuses them. Nothing computed changes (the same kernels on
    the same values): the embedded default run's images are the same to the bit, in less time (see
    docs/performance.md). The price is that memory freed by a forward stays with the process until it ends.

    Process-wide, so the library never calls it by itself; the glidebench CLI does at start-up (opt out
    with ``GLIDEBENCH_TUNE_MALLOC=0``). Does nothing, and returns None, off Linux/glibc, when the allocator
    is not glibc's (e.g. jemalloc or tcmalloc preloaded) or when the environment already sets glibc's
    malloc variables (the user's choice stands); otherwise returns what it set (also from
    :func:`cpu_allocator_state`). Calling it again is harmless.
    """
    global _allocator_state
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _ALLOCATOR_ENV):
        return None
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "threshold" in tunables or "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version
    except (OSError, AttributeError):  # not glibc (musl has no gnu_get_libc_version)
        return None
    version.restype = ctypes.c_char_p
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_THRESHOLD, threshold) and mallopt(_M_TRIM_THRESHOLD, threshold)):
        return None
    _allocator_state = (
        f"glibc {version().decode()} malloc: mmap and trim thresholds {threshold} bytes (tune_cpu_allocator)"
    )
    return _allocator_state


def cpu_allocator_state() -> str | None:
    """What :func:`tune_cpu_allocator` set in this process (None if it did not run or did nothing)."""
    return _allocator_state
