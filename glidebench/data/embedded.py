"""The embedded caption-image set: simple rendered scenes with captions that are exact by construction.

This module owns the bundled synthetic dataset that glidebench uses when no real MS-COCO is on disk, and the
tiny GLIDE models are trained on: one to three coloured shapes on a plain background, e.g.

    "a small red circle above a large blue square on a grey background"

Everything is derived from attributes (``Scene``), never the other way round: the caption is generated from
the attributes and the renderer places the objects so that every stated relation holds in pixel geometry.

Layout (all coordinates are normalised to [0, 1], x to the right and y downwards, as in images):

- a single object is placed anywhere it fits, with a small margin;
- several objects are chained: ``relations[i]`` relates ``objects[i]`` to ``objects[i + 1]``. Each object
  occupies one cell of an implicit grid with pitch ``1/3`` (so at most three in a row or column), cells are
  distinct, and an object's extent plus ``MIN_GAP`` is smaller than the pitch. Hence for ``"above"`` the
  bottom edge of the first object lies at least ``MIN_GAP`` above the top edge of the second one, and the
  offset across the relation axis is at most ``2 * MAX_JITTER`` (so the stated relation is the dominant one).
- objects in one scene have distinct colours, and no object has the background's colour.

Randomness: every example owns a ``numpy.random.Generator`` seeded from ``SeedSequence(entropy, spawn_key)``
with ``spawn_key = (split_key, global_index)``. Training uses ``entropy = seed`` and ``split_key = 0``; the
fixed evaluation splits use a fixed entropy and their own split keys, so they never share a seed state with
any training example, and example ``i`` of the training stream can be built without replaying ``0..i-1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..keys import check_keys

DATASET_VERSION = "embedded-v1"

# Object colours: saturated, far apart in RGB and in hue, still distinct when an object is ~10 px wide.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
# Backgrounds; an object never has the colour of its background (white on white is excluded).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": COLOURS["white"],
    "black": COLOURS["black"],
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: tuple[str, ...] = ("small", "large")
# Normalised extent (side of the bounding box) range per size class: about 10-13 px and 17-19 px at 64 px.
SIZE_EXTENTS: dict[str, tuple[float, float]] = {"small": (0.16, 0.20), "large": (0.26, 0.30)}
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")
# Grid step of a relation: (d_col, d_row) of objects[i + 1] relative to objects[i] ("A above B": B one row down).
_RELATION_STEP: dict[str, tuple[int, int]] = {
    "above": (0, 1),
    "below": (0, -1),
    "left of": (1, 0),
    "right of": (-1, 0),
}
PITCH = 1.0 / 3.0  # grid cell size for multi-object layouts
MIN_GAP = 0.02  # minimal normalised gap between two objects' boxes along their relation axis
MAX_JITTER = 0.03  # per-object offset from its cell centre (further limited so MIN_GAP holds)
MARGIN = 0.02  # distance between a single object and the image border

MAX_OBJECTS = 3
SUPERSAMPLE = 4  # render at 4x and box-filter down: anti-aliased and deterministic

# SeedSequence spawn keys; training takes its entropy from the user's seed, evaluation from EVAL_ENTROPY.
TRAIN_KEY = 0
SPLIT_KEYS: dict[str, int] = {"val": 1, "test": 2}
# short captions draw from their own streams, so a scene is the same whichever caption it is shown with
SHORT_CAPTION_KEY = 100  # added to TRAIN_KEY / a split key

# Short captions ("a red circle", "a large square above a circle on a black background"): the scene is the
# same, the caption leaves some of it unsaid, as people's captions do (MS-COCO's never list every object and
# attribute). The first object and every shape noun are always kept; each other part is kept with this
# probability, independently; later objects are dropped from the end of the relation chain.
SHORT_KEEP: dict[str, float] = {"size": 0.4, "colour": 0.6, "next_object": 0.5, "background": 0.4}
EVAL_ENTROPY = 20211220  # GLIDE's arXiv date; any fixed constant works, it must just never change
DEFAULT_SPLIT_SIZES: dict[str, int] = {"val": 1000, "test": 1000}


# ----------------------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------------------


def _check_keys(cls: type, data: Mapping[str, Any]) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    hint = f"was the record written by another DATASET_VERSION than {DATASET_VERSION!r}?"
    check_keys(f"{cls.__name__}.from_dict", data, names, names, hint)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object: attributes named in the caption, plus its normalised centre and extent."""

    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    extent: float

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose one of {sorted(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose one of {list(SHAPES)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose one of {list(SIZES)}")
        lo, hi = SIZE_EXTENTS[self.size]
        if not lo - 1e-9 <= self.extent <= hi + 1e-9:
            raise ValueError(f"extent {self.extent} is outside [{lo}, {hi}] for size {self.size!r}")
        half = self.extent / 2
        for name, v in (("cx", self.cx), ("cy", self.cy)):
            if not half - 1e-9 <= v <= 1 - half + 1e-9:
                raise ValueError(f"{name}={v} puts a {self.size} object (extent {self.extent}) off the image")

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"

    def box(self) -> tuple[float, float, float, float]:
        """Normalised bounding box (x0, y0, x1, y1)."""
        h = self.extent / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneObject:
        _check_keys(cls, data)
        return cls(**data)


def short_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of ``scene`` that leaves parts unsaid (``SHORT_KEEP``); every word it keeps is true.

    Always draws ``3 * n_objects`` uniforms from ``rng`` (n - 1 for the chain, two per object, one for the
    background), whatever it keeps.
    """
    n = scene.n_objects
    u = rng.random(3 * n)
    n_kept = 1
    while n_kept < n and u[n_kept - 1] < SHORT_KEEP["next_object"]:
        n_kept += 1
    phrases = []
    for i, obj in enumerate(scene.objects[:n_kept]):
        size = obj.size if u[n - 1 + 2 * i] < SHORT_KEEP["size"] else None
        colour = obj.colour if u[n + 2 * i] < SHORT_KEEP["colour"] else None
        phrases.append(" ".join(w for w in ("a", size, colour, obj.shape) if w))
    parts = [phrases[0]]
    for rel, phrase in zip(scene.relations, phrases[1:]):
        parts += [rel, phrase]
    if u[3 * n - 1] < SHORT_KEEP["background"]:
        parts.append(f"on a {scene.background} background")
    return " ".join(parts)


def make_caption(objects: Sequence[SceneObject], relations: Sequence[str], background: str) -> str:
    """The exact caption: object phrases joined by their chained relations, then the background."""
    parts = [objects[0].phrase]
    for rel, obj in zip(relations, objects[1:]):
        parts += [rel, obj.phrase]
    return " ".join(parts) + f" on a {background} background"


@dataclasses.dataclass(frozen=True)
class Scene:
    """A full scene; ``relations[i]`` holds between ``objects[i]`` and ``objects[i + 1]``."""

    objects: tuple[SceneObject, ...]
    background: str
    relations: tuple[str, ...]
    caption: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; choose one of {sorted(BACKGROUNDS)}")
        if len(self.relations) != len(self.objects) - 1:
            raise ValueError(
                f"{len(self.objects)} objects need {len(self.objects) - 1} relations, got {len(self.relations)}"
            )
        for rel in self.relations:
            if rel not in RELATIONS:
                raise ValueError(f"unknown relation {rel!r}; choose one of {list(RELATIONS)}")
        colours = [o.colour for o in self.objects]
        if len(set(colours)) != len(colours):
            raise ValueError(f"objects in one scene must have distinct colours, got {colours}")
        if BACKGROUNDS[self.background] in {COLOURS[c] for c in colours}:
            raise ValueError(f"an object has the background's colour ({self.background}); pick another")
        expected = make_caption(self.objects, self.relations, self.background)
        if self.caption != expected:
            raise ValueError(
                f"caption {self.caption!r} does not match the attributes (expected {expected!r})"
            )

    @property
    def relation(self) -> str | None:
        """The relation of a two-object scene (the first one of a chain); None for a single object."""
        return self.relations[0] if self.relations else None

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [o.to_dict() for o in self.objects],
            "background": self.background,
            "relations": list(self.relations),
            "caption": self.caption,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        _check_keys(cls, data)
        return cls(
            objects=tuple(SceneObject.from_dict(o) for o in data["objects"]),
            background=str(data["background"]),
            relations=tuple(data["relations"]),
            caption=str(data["caption"]),
        )


def vocabulary() -> list[str]:
    """Every word that can appear in a caption (sorted, no duplicates); "left of" counts as two words."""
    words = {"a", "on", "background", *COLOURS, *BACKGROUNDS, *SHAPES, *SIZES}
    for rel in RELATIONS:
        words.update(rel.split())
    return sorted(words)


def parse_caption(caption: str) -> dict[str, Any]:
    """Invert ``make_caption``: ``{"objects": [(size, colour, shape), ...], "relations": [...], "background"}``.

    Raises ``ValueError`` for any caption the grammar cannot produce (a short caption included).
    """
    stated = parse_stated(caption)
    if stated["background"] is None:
        raise ValueError(f"caption {caption!r} does not end with 'on a <colour> background'")
    for size, colour, shape in stated["objects"]:
        if size is None or colour is None:
            raise ValueError(
                f"caption {caption!r}: object phrase about a {shape} leaves its size or colour unsaid; an exact "
                "caption states 'a <size> <colour> <shape>'"
            )
    return stated


def parse_stated(caption: str) -> dict[str, Any]:
    """What an exact or short caption states: ``{"objects": [(size | None, colour | None, shape), ...],
    "relations": [...], "background": str | None}`` (None = left unsaid).

    Raises ``ValueError`` for any caption neither ``make_caption`` nor ``short_caption`` can produce.
    """
    words = caption.split()
    background = None
    if len(words) >= 4 and words[-4:-2] == ["on", "a"] and words[-1] == "background":
        background = words[-2]
        if background not in BACKGROUNDS:
            raise ValueError(f"caption {caption!r}: unknown background {background!r}")
        words = words[:-4]
    objects: list[tuple[str | None, str | None, str]] = []
    relations: list[str] = []
    i = 0
    while True:
        if i >= len(words) or words[i] != "a":
            raise ValueError(f"caption {caption!r}: expected 'a [size] [colour] <shape>' at word {i}")
        i += 1
        size = colour = None
        if i < len(words) and words[i] in SIZES:
            size, i = words[i], i + 1
        if i < len(words) and words[i] in COLOURS:
            colour, i = words[i], i + 1
        if i >= len(words) or words[i] not in SHAPES:
            raise ValueError(f"caption {caption!r}: expected a shape ({', '.join(SHAPES)}) at word {i}")
        objects.append((size, colour, words[i]))
        i += 1
        if i == len(words):
            break
        for rel in RELATIONS:
            n = len(rel.split())
            if words[i : i + n] == rel.split():
                relations.append(rel)
                i += n
                break
        else:
            raise ValueError(f"caption {caption!r}: expected a relation at word {i}")
    return {"objects": objects, "relations": relations, "background": background}


# ----------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------


def _validate_probs(object_probs: Sequence[float], max_objects: int) -> np.ndarray:
    p = np.asarray(object_probs, dtype=np.float64)
    if p.ndim != 1 or len(p) < 1 or len(p) > MAX_OBJECTS:
        raise ValueError(
            f"object_probs gives P(1 object), P(2), ...: 1 to {MAX_OBJECTS} entries, got {list(object_probs)}"
        )
    if np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"object_probs must be non-negative and sum to 1, got {list(object_probs)}")
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
    if np.any(p[max_objects:] > 0):
        raise ValueError(f"object_probs {list(object_probs)} gives weight to more than {max_objects} objects")
    return p / p.sum()


def _chain_cells(relations: Sequence[str]) -> list[tuple[int, int]] | None:
    """Grid cells (col, row) of a relation chain, shifted to start at 0; None if cells collide or exceed 3."""
    cells = [(0, 0)]
    for rel in relations:
        dc, dr = _RELATION_STEP[rel]
        cells.append((cells[-1][0] + dc, cells[-1][1] + dr))
    if len(set(cells)) != len(cells):
        return None
    c0 = min(c for c, _ in cells)
    r0 = min(r for _, r in cells)
    cells = [(c - c0, r - r0) for c, r in cells]
    if max(c for c, _ in cells) >= 3 or max(r for _, r in cells) >= 3:
        return None
    return cells


def sample_scene(
    rng: np.random.Generator,
    max_objects: int = MAX_OBJECTS,
    object_probs: Sequence[float] | None = None,
) -> Scene:
    """Draw a random scene. ``object_probs[k]`` is P(k + 1 objects); default: uniform over 1..max_objects."""
    if object_probs is None:
        object_probs = [1.0 / max_objects] * max_objects
    p = _validate_probs(object_probs, max_objects)
    n = int(rng.choice(len(p), p=p)) + 1
    background = str(rng.choice(list(BACKGROUNDS)))
    allowed = [c for c in COLOURS if COLOURS[c] != BACKGROUNDS[background]]
    colours = [allowed[i] for i in rng.permutation(len(allowed))[:n]]
    shapes = [SHAPES[int(i)] for i in rng.integers(0, len(SHAPES), size=n)]
    sizes = [SIZES[int(i)] for i in rng.integers(0, len(SIZES), size=n)]
    extents = [float(rng.uniform(*SIZE_EXTENTS[s])) for s in sizes]

    if n == 1:
        half = extents[0] / 2
        centres = [tuple(float(v) for v in rng.uniform(half + MARGIN, 1 - half - MARGIN, size=2))]
        relations: list[str] = []
    else:
        while True:  # rejection over relation chains only (at most 4 of 16 three-object chains collide)
            relations = [RELATIONS[int(i)] for i in rng.integers(0, len(RELATIONS), size=n - 1)]
            cells = _chain_cells(relations)
            if cells is not None:
                break
        ncols = max(c for c, _ in cells) + 1
        nrows = max(r for _, r in cells) + 1
        ox = float(rng.uniform(0.0, 1.0 - ncols * PITCH))
        oy = float(rng.uniform(0.0, 1.0 - nrows * PITCH))
        centres = []
        for (c, r), ext in zip(cells, extents):
            j = min(MAX_JITTER, (PITCH - ext - MIN_GAP) / 2)
            jx, jy = (float(v) for v in rng.uniform(-j, j, size=2))
            centres.append((ox + (c + 0.5) * PITCH + jx, oy + (r + 0.5) * PITCH + jy))
    objects = tuple(
        SceneObject(colour=c, shape=s, size=z, cx=x, cy=y, extent=e)
        for c, s, z, e, (x, y) in zip(colours, shapes, sizes, extents, centres)
    )
    return Scene(objects, background, tuple(relations), make_caption(objects, relations, background))


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


def _shape_polygon(shape: str, cx: float, cy: float, ext: float) -> list[tuple[float, float]]:
    h = ext / 2
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # apex up, base = height = extent
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "cross":  # a plus sign with arms one third of the extent thick
        t = ext / 6
        return [
            (cx - t, cy - h), (cx + t, cy - h), (cx + t, cy - t), (cx + h, cy - t),
            (cx + h, cy + t), (cx + t, cy + t), (cx + t, cy + h), (cx - t, cy + h),
            (cx - t, cy + t), (cx - h, cy + t), (cx - h, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    raise ValueError(f"no polygon for shape {shape!r}")


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """Render a scene to ``uint8 [size, size, 3]``; deterministic (drawn at 4x, box-filtered down)."""
    if size < 8:
        raise ValueError(f"render size must be at least 8 px, got {size}")
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        cx, cy, ext = obj.cx * big, obj.cy * big, obj.extent * big
        if obj.shape == "circle":
            h = ext / 2
            draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
        else:
            draw.polygon(_shape_polygon(obj.shape, cx, cy, ext), fill=fill)
    img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.uint8).copy()


def to_model_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> float32 torch tensor ``[N, 3, H, W]`` in [-1, 1] (the diffusion convention)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------
# Streams and splits
# ----------------------------------------------------------------------------------------------------------


def example_rng(entropy: int, split_key: int, index: int) -> np.random.Generator:
    """The generator that owns example ``index`` of a split: ``SeedSequence(entropy, (split_key, index))``."""
    if index < 0:
        raise ValueError(f"example index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(split_key, index)))


@dataclasses.dataclass(frozen=True)
class EvalRecord:
    """One fixed evaluation example: its index in the split, its caption and ground-truth scene."""

    split: str
    index: int
    caption: str
    scene: Scene

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "index": self.index,
            "caption": self.caption,
            "scene": self.scene.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalRecord:
        _check_keys(cls, data)
        return cls(
            str(data["split"]), int(data["index"]), str(data["caption"]), Scene.from_dict(data["scene"])
        )


@dataclasses.dataclass(frozen=True)
class EmbeddedConfig:
    """Resolved options of the embedded set (part of its fingerprint).

    ``object_probs`` is the training mix (P(1), P(2), P(3) objects): single objects dominate by default so a
    tiny model learns colour and shape first. ``eval_object_probs`` is the fixed mix of the evaluation splits.
    """

    size: int = 64
    object_probs: tuple[float, ...] = (0.6, 0.25, 0.15)
    eval_object_probs: tuple[float, ...] = (0.5, 0.3, 0.2)
    max_objects: int = MAX_OBJECTS
    # fraction of training captions replaced by a short caption of the same scene (``short_caption``); 0 =
    # every caption exact. Not written into ``to_dict`` (nor the fingerprint) while 0.
    short_captions: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"size must be an int >= 8 (pixels), got {self.size!r}")
        object.__setattr__(self, "object_probs", tuple(float(v) for v in self.object_probs))
        object.__setattr__(self, "eval_object_probs", tuple(float(v) for v in self.eval_object_probs))
        _validate_probs(self.object_probs, self.max_objects)
        _validate_probs(self.eval_object_probs, self.max_objects)
        if not 0.0 <= float(self.short_captions) <= 1.0:
            raise ValueError(f"short_captions is a fraction in [0, 1], got {self.short_captions!r}")

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if not self.short_captions:
            del out["short_captions"]  # configs from before short captions keep their fingerprints
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddedConfig:
        check_keys(
            "EmbeddedConfig", data, {f.name for f in dataclasses.fields(cls)}, hint="remove the others"
        )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def fingerprint(config: EmbeddedConfig | None = None, splits: Mapping[str, int] | None = None) -> str:
    """A 16-hex-digit key over (DATASET_VERSION, config incl. size, evaluation split sizes)."""
    config = config or EmbeddedConfig()
    splits = dict(DEFAULT_SPLIT_SIZES if splits is None else splits)
    payload = {
        "version": DATASET_VERSION,
        "config": config.to_dict(),
        "splits": {k: [SPLIT_KEYS[k], int(v)] for k, v in sorted(splits.items())},
        "eval_entropy": EVAL_ENTROPY,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class EmbeddedCaptionSet:
    """The embedded caption-image set: an infinite, resumable training stream and fixed evaluation splits."""

    def __init__(self, config: EmbeddedConfig | None = None, **overrides: Any) -> None:
        base = config or EmbeddedConfig()
        self.config = dataclasses.replace(base, **overrides) if overrides else base

    @property
    def size(self) -> int:
        return self.config.size

    def train_scene(self, seed: int, index: int) -> Scene:
        """Scene of training example ``index`` (global, counted over the whole stream)."""
        rng = example_rng(seed, TRAIN_KEY, index)
        return sample_scene(rng, self.config.max_objects, self.config.object_probs)

    def train_batch(
        self, seed: int, step: int, batch_size: int
    ) -> tuple[torch.Tensor, list[str], list[Scene]]:
        """Batch ``step`` of the stream: examples ``step * batch_size`` .. ``(step + 1) * batch_size - 1``."""
        if batch_size < 1 or step < 0:
            raise ValueError(f"need batch_size >= 1 and step >= 0, got batch_size={batch_size}, step={step}")
        first = step * batch_size
        scenes = [self.train_scene(seed, first + i) for i in range(batch_size)]
        images = np.stack([render(s, self.size) for s in scenes])
        return (
            to_model_tensor(images),
            [self.train_caption(seed, first + i, s) for i, s in enumerate(scenes)],
            scenes,
        )

    def train_caption(self, seed: int, index: int, scene: Scene) -> str:
        """The caption training example ``index`` is shown with: exact, or short with P(short_captions)."""
        if not self.config.short_captions:
            return scene.caption
        rng = example_rng(seed, TRAIN_KEY + SHORT_CAPTION_KEY, index)
        return short_caption(scene, rng) if rng.random() < self.config.short_captions else scene.caption

    def train_iter(
        self, seed: int, batch_size: int, start_step: int = 0
    ) -> Iterator[tuple[torch.Tensor, list[str], list[Scene]]]:
        """Yield ``(images [N,3,H,W] in [-1,1], captions, scenes)`` forever from batch ``start_step`` on.

        Resuming at step k yields exactly what a run from step 0 yields at step k (no replay needed).
        """
        step = start_step
        while True:
            yield self.train_batch(seed, step, batch_size)
            step += 1

    def eval_split(self, name: str = "val", n: int | None = None, short: bool = False) -> list[EvalRecord]:
        """The first ``n`` records of a fixed evaluation split (default size from ``DEFAULT_SPLIT_SIZES``).

        ``short``: each record's caption is a short caption of its scene (``short_caption``, from a stream of
        its own), the scenes are the same."""
        if name not in SPLIT_KEYS:
            raise ValueError(f"unknown split {name!r}; choose one of {sorted(SPLIT_KEYS)}")
        n = DEFAULT_SPLIT_SIZES[name] if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        records = []
        for i in range(n):
            rng = example_rng(EVAL_ENTROPY, SPLIT_KEYS[name], i)
            scene = sample_scene(rng, self.config.max_objects, self.config.eval_object_probs)
            caption = scene.caption
            if short:
                caption = short_caption(
                    scene, example_rng(EVAL_ENTROPY, SPLIT_KEYS[name] + SHORT_CAPTION_KEY, i)
                )
            records.append(EvalRecord(name, i, caption, scene))
        return records

    def render_records(self, records: Sequence[EvalRecord]) -> np.ndarray:
        """Reference images ``uint8 [N, H, W, 3]`` for evaluation records."""
        if not records:
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return np.stack([render(r.scene, self.size) for r in records])

    def fingerprint(self, splits: Mapping[str, int] | None = None) -> str:
        return fingerprint(self.config, splits)


def single_object(records: Sequence[EvalRecord]) -> list[EvalRecord]:
    """The records whose scene holds exactly one object (what the attribute classifier can judge)."""
    return [r for r in records if r.scene.n_objects == 1]
