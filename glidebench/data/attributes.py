"""The attribute check for the embedded set (GenEval-like): does a generated image show what its caption says?

This module owns

- ``AttributeNet``: a small CNN (RGB plus a polarity-free foreground channel, four 3x3 conv layers, global
  average + max pooling) with one head per attribute of a single-object scene: object colour, shape, size and
  the background colour;
- ``AttributeClassifier``: the trained net plus its label lists, loaded from safetensors (the weights shipped
  in ``glidebench/assets`` by default; ``scripts/train_attribute_classifier.py`` trains them);
- ``attribute_accuracy``: per-attribute accuracy of a batch of images against the scenes they were generated
  from (single-object scenes are judged by the classifier);
- ``position_accuracy``: for multi-object scenes, a rule-based check that every stated relation holds between
  the centroids of the objects' colour masks (objects in one scene have distinct colours by construction);
- ``degrade``: the noise / blur / colour-cast augmentation the classifier is trained with, so that it judges
  slightly noisy diffusion samples fairly.

Image conventions: ``uint8`` input is ``[N, H, W, 3]`` in [0, 255] (what ImageStore and ``render`` give);
floating-point input is ``[N, 3, H, W]`` in [-1, 1] (what the diffusion models give). Any resolution works;
images are resized to the classifier's ``input_size``.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from glide.checkpoints import sha256_file
from glide.fileio import atomic_write, save_safetensors
from glidebench.data.embedded import (
    BACKGROUNDS,
    COLOURS,
    DATASET_VERSION,
    SHAPES,
    SIZES,
    Scene,
    parse_stated,
)

FORMAT = "glidebench-attribute-classifier/1"
HEADS: tuple[str, ...] = ("colour", "shape", "size", "background")
LABELS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "background": tuple(BACKGROUNDS),
}
DEFAULT_WEIGHTS = "attribute_classifier.safetensors"


def default_weights_path() -> Path:
    """The shipped weights: ``glidebench/assets/attribute_classifier.safetensors``."""
    return Path(str(resources.files("glidebench"))) / "assets" / DEFAULT_WEIGHTS


def config_path_for(weights: Path) -> Path:
    """The json config that sits next to a weights file (same stem)."""
    return weights.with_suffix(".json")


class AttributeNet(nn.Module):
    """RGB + ``foreground`` channel -> four conv(3x3)-BatchNorm-ReLU-maxpool(2) blocks -> global avg+max pool
    -> one linear head per attribute."""

    def __init__(self, width: int = 16, n_classes: dict[str, int] | None = None) -> None:
        super().__init__()
        n_classes = n_classes or {k: len(v) for k, v in LABELS.items()}
        chans = [4, width, 2 * width, 4 * width, 4 * width]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(chans[:-1], chans[1:])
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in chans[1:])
        self.heads = nn.ModuleDict({k: nn.Linear(2 * chans[-1], n) for k, n in n_classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.cat([x, foreground(x)], dim=1)
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        feats = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return {k: head(feats) for k, head in self.heads.items()}


def foreground(x: torch.Tensor, border: int = 2) -> torch.Tensor:
    """Per-pixel RGB distance from the background colour (median of a ``border``-pixel frame): ``[N, 1, H, W]``.

    A polarity-free "is this the object" channel: a white square on black and a black square on white look the
    same here, which lets the tiny net learn shape independently of colour.
    """
    n, c, h, w = x.shape
    frame = torch.cat(
        [x[:, :, :border].reshape(n, c, -1), x[:, :, -border:].reshape(n, c, -1),
         x[:, :, :, :border].reshape(n, c, -1), x[:, :, :, -border:].reshape(n, c, -1)], dim=2
    )  # fmt: skip
    bg = frame.median(dim=2).values[:, :, None, None]
    return (x - bg).norm(dim=1, keepdim=True) - 0.5


def to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Bring images to float32 ``[N, 3, H, W]`` in [-1, 1] (see the module docstring for accepted layouts)."""
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(
            f"expected a batch of images [N, H, W, 3] (uint8) or [N, 3, H, W] (float), got {x.shape}"
        )
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be [N, H, W, 3] in [0, 255], got shape {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 [N,H,W,3] or float [N,3,H,W] in [-1,1], got dtype {x.dtype}")
    if x.shape[1] != 3:
        raise ValueError(f"float images must be [N, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
    return x.float()


def to_uint8_nhwc(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bring images to ``uint8 [N, H, W, 3]`` (inverse of ``to_float_nchw`` up to rounding)."""
    x = to_float_nchw(images)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def resize_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[N, 3, H, W]`` to ``size`` x ``size`` (antialiased bilinear)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def degrade(
    x: torch.Tensor,
    generator: torch.Generator,
    max_blur: float = 1.2,
    max_noise: float = 0.15,
    max_cast: float = 0.06,
) -> torch.Tensor:
    """Random gaussian blur (sigma in px, up to ``max_blur``), colour cast and gaussian noise on [-1, 1] images.

    Each image gets its own blur sigma, per-channel gain/offset (up to ``max_cast``) and noise level (up to
    ``max_noise`` in [-1, 1] units); half the images are left unblurred. The result is clamped to [-1, 1].
    """
    n, c, h, w = x.shape
    sigma = torch.rand(n, generator=generator) * max_blur
    sigma = torch.where(torch.rand(n, generator=generator) < 0.5, torch.zeros_like(sigma), sigma)
    radius = max(1, math.ceil(3 * max_blur))
    k = _gaussian_kernels(sigma, radius)  # [n, 2r+1]; sigma ~ 0 gives a delta kernel
    k = k.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=n * c)
    y = y.reshape(n, c, h, w)
    gain = 1 + (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * max_cast
    offset = (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * max_cast
    y = y * gain + offset
    noise = torch.rand(n, 1, 1, 1, generator=generator) * max_noise
    y = y + noise * torch.randn(y.shape, generator=generator)
    return y.clamp(-1, 1)


class AttributeClassifier:
    """A trained ``AttributeNet`` with its labels; judge single-object images of the embedded set."""

    def __init__(self, net: AttributeNet, config: dict[str, Any]) -> None:
        self.net = net.eval()
        self.config = config
        self.input_size = int(config["input_size"])
        self.labels = {k: tuple(config["labels"][k]) for k in HEADS}

    @classmethod
    def load(cls, path: str | Path | None = None) -> AttributeClassifier:
        """Load weights (safetensors) and the json config beside them; default: the shipped classifier."""

        weights = Path(path) if path is not None else default_weights_path()
        cfg_path = config_path_for(weights)
        fix = "retrain with `python scripts/train_attribute_classifier.py` (or restore the file from git)"
        for p in (weights, cfg_path):
            if not p.is_file():
                raise FileNotFoundError(f"attribute classifier file {p} is missing; {fix}")
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"attribute classifier config {cfg_path} is not valid json ({e}); {fix}") from e
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{cfg_path} is not a {FORMAT} config; {fix}")
        if config.get("weights_sha256") != sha256_file(weights):
            raise ValueError(
                f"attribute classifier weights {weights} do not match the sha256 in {cfg_path} "
                f"(corrupt or swapped file); {fix}"
            )
        if config.get("dataset_version") != DATASET_VERSION:
            raise ValueError(
                f"classifier {weights} was trained on dataset {config.get('dataset_version')!r} but the "
                f"embedded set is {DATASET_VERSION!r}; {fix}"
            )
        labels = config.get("labels", {})
        for head in HEADS:
            if tuple(labels.get(head, ())) != LABELS[head]:
                raise ValueError(
                    f"classifier {weights} has {head} labels {labels.get(head)} but the embedded set uses "
                    f"{list(LABELS[head])}; {fix}"
                )
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"attribute classifier weights {weights} are corrupt ({e}); {fix}") from e
        net = AttributeNet(width=int(config["width"]))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"weights {weights} do not fit the configured AttributeNet ({e}); {fix}") from e
        return cls(net, config)

    def save(self, path: str | Path) -> None:
        """Write weights + config, each atomically (:mod:`glide.fileio`)."""
        save_classifier(self.net, self.config, Path(path))

    @torch.no_grad()
    def logits(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        x = to_float_nchw(images)
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in HEADS}
        for i in range(0, x.shape[0], batch_size):
            out = self.net(resize_to(x[i : i + batch_size], self.input_size))
            for k in HEADS:
                outs[k].append(out[k])
        if x.shape[0] == 0:
            return {k: torch.zeros(0, len(self.labels[k])) for k in HEADS}
        return {k: torch.cat(v) for k, v in outs.items()}

    def predict(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Per head: predicted labels (``str`` array) and ``<head>_probs`` (``float32 [N, n_classes]``)."""
        out: dict[str, np.ndarray] = {}
        for k, logit in self.logits(images).items():
            probs = logit.softmax(dim=1).numpy()
            out[k] = np.asarray(self.labels[k], dtype=object)[probs.argmax(axis=1)].astype(str)
            out[f"{k}_probs"] = probs.astype(np.float32)
        return out


@functools.lru_cache(maxsize=1)
def _default_classifier() -> AttributeClassifier:
    return AttributeClassifier.load()


def save_classifier(net: AttributeNet, config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Save ``net`` to ``path`` (safetensors) and ``config`` (with the weights' sha256) beside it, atomically."""

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    digest = save_safetensors(state, path, metadata={"format": FORMAT, "dataset_version": DATASET_VERSION})
    os.chmod(path, 0o644)  # an asset, readable by everyone
    config = {**config, "format": FORMAT, "weights_sha256": digest}
    atomic_write(config_path_for(path), json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def attribute_accuracy(
    images: np.ndarray | torch.Tensor,
    scenes: Sequence[Scene],
    classifier: AttributeClassifier | None = None,
    captions: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy of each attribute over the single-object scenes, plus ``position_acc`` over the others.

    Returns ``colour_acc, shape_acc, size_acc, background_acc, object_acc`` (colour, shape and size all right)
    and ``n`` (single-object images judged), then ``position_acc`` and ``n_position`` from
    ``position_accuracy``. An accuracy over zero images is NaN.

    ``captions`` (the prompts, e.g. short captions): judge only what each caption states. An attribute counts
    over the images whose caption states it (``object_acc``: every stated one right); position counts over
    the scenes whose caption names two or more objects and states all their colours, and checks the relations
    between those objects only.
    """
    x = to_float_nchw(images)
    if x.shape[0] != len(scenes):
        raise ValueError(f"got {x.shape[0]} images but {len(scenes)} scenes; pass one scene per image")
    if captions is not None and len(captions) != len(scenes):
        raise ValueError(f"got {len(captions)} captions but {len(scenes)} scenes; pass one caption per image")
    stated = [parse_stated(c) for c in captions] if captions is not None else None
    single = [i for i, s in enumerate(scenes) if s.n_objects == 1]
    result: dict[str, float] = {}
    if single:
        classifier = classifier or _default_classifier()
        pred = classifier.predict(x[single])
        truth = {
            "colour": np.array([scenes[i].objects[0].colour for i in single]),
            "shape": np.array([scenes[i].objects[0].shape for i in single]),
            "size": np.array([scenes[i].objects[0].size for i in single]),
            "background": np.array([scenes[i].background for i in single]),
        }
        hits = {k: pred[k] == truth[k] for k in HEADS}
        if stated is None:
            judged = {k: np.ones(len(single), bool) for k in HEADS}
        else:
            said = [stated[i] for i in single]
            size, colour, shape = (np.array([s["objects"][0][j] is not None for s in said]) for j in range(3))
            judged = {"size": size, "colour": colour, "shape": shape}
            judged["background"] = np.array([s["background"] is not None for s in said])
        for k in HEADS:
            result[f"{k}_acc"] = float(hits[k][judged[k]].mean()) if judged[k].any() else float("nan")
        obj = [hits[k] | ~judged[k] for k in ("colour", "shape", "size")]
        result["object_acc"] = float((obj[0] & obj[1] & obj[2]).mean())
    else:
        for k in (*HEADS, "object"):
            result[f"{k}_acc"] = float("nan")
    result["n"] = float(len(single))
    multi = [i for i, s in enumerate(scenes) if s.n_objects > 1]
    named = None
    if stated is not None:
        multi = [
            i for i in multi
            if len(stated[i]["objects"]) > 1 and all(c is not None for _, c, _ in stated[i]["objects"])
        ]  # fmt: skip
        named = [len(stated[i]["objects"]) for i in multi]
    pos = position_accuracy(x[multi], [scenes[i] for i in multi], named)
    result["position_acc"] = pos["position_acc"]
    result["n_position"] = pos["n"]
    return result


def colour_centroids(
    image: np.ndarray, scene: Scene, max_dist: float = 90.0
) -> list[tuple[float, float] | None]:
    """Normalised (x, y) centroid of each object's colour mask in one ``uint8 [H, W, 3]`` image.

    Each pixel is assigned to the nearest colour among every object colour and the background (RGB
    distance, at most ``max_dist``); an object whose mask is empty gets ``None``.
    """
    h, w, _ = image.shape
    names = sorted(set(COLOURS) | {scene.background})
    palette = np.array(
        [BACKGROUNDS[n] if n == scene.background else COLOURS[n] for n in names], dtype=np.float32
    )
    px = image.reshape(-1, 3).astype(np.float32)
    d = np.linalg.norm(px[:, None, :] - palette[None, :, :], axis=2)
    nearest = d.argmin(axis=1)
    ok = d[np.arange(len(px)), nearest] <= max_dist
    ys, xs = np.divmod(np.arange(h * w), w)
    cents: list[tuple[float, float] | None] = []
    for obj in scene.objects:
        m = ok & (nearest == names.index(obj.colour))
        if obj.colour == scene.background or not m.any():
            cents.append(None)
        else:
            cents.append(((xs[m].mean() + 0.5) / w, (ys[m].mean() + 0.5) / h))
    return cents


def relation_holds(
    a: tuple[float, float], b: tuple[float, float], relation: str, margin: float = 0.1
) -> bool:
    """Whether centroid ``a`` is ``relation`` of centroid ``b`` by more than ``margin`` (normalised units)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    return {"above": dy, "below": -dy, "left of": dx, "right of": -dx}[relation] > margin


def position_accuracy(
    images: np.ndarray | torch.Tensor, scenes: Sequence[Scene], named: Sequence[int] | None = None
) -> dict[str, float]:
    """Fraction of multi-object scenes in which every stated relation holds between colour-mask centroids.

    ``named[i]``: the caption names only the first ``named[i]`` objects of scene i (a short caption), so only
    the relations among those are checked."""
    imgs = to_uint8_nhwc(images) if len(scenes) else np.zeros((0, 1, 1, 3), np.uint8)
    if len(imgs) != len(scenes):
        raise ValueError(f"got {len(imgs)} images but {len(scenes)} scenes; pass one scene per image")
    ok = []
    for k, (img, scene) in enumerate(zip(imgs, scenes)):
        m = scene.n_objects if named is None else named[k]
        if m < 2:
            continue
        cents = colour_centroids(img, scene)[:m]
        good = all(
            a is not None and b is not None and relation_holds(a, b, rel)
            for a, b, rel in zip(cents[:-1], cents[1:], scene.relations)
        )
        ok.append(good)
    return {"position_acc": float(np.mean(ok)) if ok else float("nan"), "n": float(len(ok))}
