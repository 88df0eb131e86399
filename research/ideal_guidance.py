"""What a perfect model would sample under classifier-free guidance on the embedded set.

For an exact model, classifier-free guidance at scale ``w`` samples (Ho & Salimans 2021; GLIDE section 3.3)

    p_w(x | c)  ∝  p(x | c) p(c | x)^(w - 1)  ∝  p(x) P(c | x)^w.

On the embedded set the caption process ``P(c | scene)`` is known in closed form, so this distribution over
*scenes* can be sampled without any network: draw candidate scenes from the prior that agree with every part
the caption states, weight each by ``P(c | s)^w`` divided by the proposal's own extra factor, and resample one
(importance resampling; exact as the number of candidates grows). Rendering the chosen scenes gives the image
set a perfect model would produce at scale ``w``; measuring it with the harness's metrics gives the ceiling
of what guidance can do to precision and recall on this set, model error aside.

Caption processes (``CaptionProcess``):

- ``ChainCaptions(keep)``: the embedded set's own captions. ``keep=EXACT_KEEP`` is the exact caption (every
  part stated, ``P(c | s)`` is 0 or 1, so guidance leaves a perfect model's samples unchanged);
  ``keep=SHORT_KEEP`` is ``short_caption`` (tested against its empirical frequencies).
- ``OneObjectCaptions``: a what-if, not a caption style of the harness: the caption names one object chosen
  uniformly from the scene (size, colour and background each stated with SHORT_KEEP's probabilities), as
  people's captions name one salient thing of a busy photo. ``P(c | s)`` falls as 1 / n with the object count,
  the strongest pull towards simple scenes we found for these scenes.

Guidance does not sample its target exactly (Chidambaram et al. 2024): ``exact_denoiser_cfg`` runs
classifier-free guidance as GLIDE samples it, with exact denoisers for distributions given as sets of images.

``python -m research.measure_ideal_guidance`` runs both on the default run's references and captions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from glidebench.data.embedded import (
    BACKGROUNDS,
    COLOURS,
    MAX_OBJECTS,
    SHORT_KEEP,
    EmbeddedConfig,
    Scene,
    make_caption,
    sample_scene,
)

EXACT_KEEP: dict[str, float] = {"size": 1.0, "colour": 1.0, "next_object": 1.0, "background": 1.0}

# what a caption states: objects (size | None, colour | None, shape), the relations between consecutive named
# objects, the background (None = unsaid); the same layout as ``embedded.parse_stated``
Stated = Mapping[str, Any]


class CaptionProcess(Protocol):
    name: str

    def likelihood(self, stated: Stated, scene: Scene) -> float:
        """``P(c | scene)`` of the caption that states exactly ``stated``."""

    def propose(self, stated: Stated, rng: np.random.Generator) -> tuple[Scene, float]:
        """A candidate scene that agrees with ``stated`` and its proposal factor ``f``: candidates are
        distributed as ``p(s) f(s)`` over the scenes with ``P(c | s) > 0``."""


def _onehot(n: int) -> list[float]:
    return [1.0 if k == n - 1 else 0.0 for k in range(MAX_OBJECTS)]


def _overwrite(
    scene: Scene, slots: Sequence[int], stated_objects: Sequence[tuple[str | None, str | None, str]]
) -> Scene | None:
    """``scene`` with the stated shape (and colour, where stated) put into object ``slots[i]``; None where
    that breaks the scene's rules (two objects of one colour, an object of the background's colour).

    Shapes are independent and uniform in the prior, and colours a uniform draw without repetition, so
    overwriting and rejecting the clashes conditions the prior exactly."""
    objects = list(scene.objects)
    for slot, (_, colour, shape) in zip(slots, stated_objects):
        o = objects[slot]
        objects[slot] = dataclasses.replace(o, shape=shape, colour=colour or o.colour)
    colours = [o.colour for o in objects]
    if len(set(colours)) != len(colours) or BACKGROUNDS[scene.background] in {COLOURS[c] for c in colours}:
        return None
    return Scene(
        tuple(objects),
        scene.background,
        scene.relations,
        make_caption(objects, scene.relations, scene.background),
    )


def _prior_draw(
    rng: np.random.Generator, object_probs: Sequence[float], counts: Sequence[int], background: str | None
) -> Scene:
    """A prior scene with an object count in ``counts`` and the given background (None = any), distributed as
    the prior conditioned on both (the count drawn from the prior restricted to ``counts``, the background by
    rejection)."""
    p = np.array([object_probs[n - 1] if n in counts else 0.0 for n in range(1, len(object_probs) + 1)])
    if not p.any():
        raise ValueError(f"no scene has an object count in {list(counts)}")
    p /= p.sum()
    while True:
        n = int(rng.choice(len(p), p=p)) + 1
        scene = sample_scene(rng, MAX_OBJECTS, _onehot(n))
        if background is None or scene.background == background:
            return scene


@dataclasses.dataclass(frozen=True)
class ChainCaptions:
    """``short_caption``'s process with keep probabilities ``keep`` (SHORT_KEEP: the shipped short captions,
    drawn by ``embedded.short_caption``; EXACT_KEEP: the exact captions). The first object is always named;
    each next object of the relation chain with P(keep["next_object"]) while the chain lasts; size, colour and
    background independently."""

    keep: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(SHORT_KEEP))
    object_probs: tuple[float, ...] = EmbeddedConfig().eval_object_probs
    name: str = "short"

    def _agrees(self, stated: Stated, scene: Scene) -> bool:
        objs = stated["objects"]
        if len(objs) > scene.n_objects or list(scene.relations[: len(objs) - 1]) != list(stated["relations"]):
            return False
        if stated["background"] is not None and stated["background"] != scene.background:
            return False
        return all(
            shape == o.shape and size in (None, o.size) and colour in (None, o.colour)
            for (size, colour, shape), o in zip(objs, scene.objects)
        )

    def likelihood(self, stated: Stated, scene: Scene) -> float:
        if not self._agrees(stated, scene):
            return 0.0
        k, j = self.keep, len(stated["objects"])
        p = k["next_object"] ** (j - 1) * ((1 - k["next_object"]) if j < scene.n_objects else 1.0)
        for size, colour, _ in stated["objects"]:
            p *= (k["size"] if size else 1 - k["size"]) * (k["colour"] if colour else 1 - k["colour"])
        return p * (k["background"] if stated["background"] else 1 - k["background"])

    def propose(self, stated: Stated, rng: np.random.Generator) -> tuple[Scene, float]:
        objs = stated["objects"]
        j = len(objs)
        # the counts that can give j named objects: exactly j where the chain never stops early
        counts = [j] if self.keep["next_object"] >= 1 else list(range(j, len(self.object_probs) + 1))
        while True:
            scene = _prior_draw(rng, self.object_probs, counts, stated["background"])
            if list(scene.relations[: len(objs) - 1]) != list(stated["relations"]):
                continue
            if any(size not in (None, o.size) for (size, _, _), o in zip(objs, scene.objects)):
                continue
            out = _overwrite(scene, range(len(objs)), objs)
            if out is not None:
                return out, 1.0


@dataclasses.dataclass(frozen=True)
class OneObjectCaptions:
    """What-if: the caption names one object of the scene, chosen uniformly, with its size, colour and the
    background each stated independently (``keep``); no relations."""

    keep: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(SHORT_KEEP))
    object_probs: tuple[float, ...] = EmbeddedConfig().eval_object_probs
    name: str = "one-object"

    def draw(self, scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
        o = scene.objects[int(rng.integers(scene.n_objects))]
        k = self.keep
        size = o.size if rng.random() < k["size"] else None
        colour = o.colour if rng.random() < k["colour"] else None
        background = scene.background if rng.random() < k["background"] else None
        return {"objects": [(size, colour, o.shape)], "relations": [], "background": background}

    @staticmethod
    def _matches(stated: Stated, scene: Scene) -> int:
        ((size, colour, shape),) = stated["objects"]
        return sum(
            o.shape == shape and size in (None, o.size) and colour in (None, o.colour) for o in scene.objects
        )

    def likelihood(self, stated: Stated, scene: Scene) -> float:
        if stated["background"] is not None and stated["background"] != scene.background:
            return 0.0
        ((size, colour, _),) = stated["objects"]
        k = self.keep
        p = self._matches(stated, scene) / scene.n_objects
        p *= (k["size"] if size else 1 - k["size"]) * (k["colour"] if colour else 1 - k["colour"])
        return p * (k["background"] if stated["background"] else 1 - k["background"])

    def propose(self, stated: Stated, rng: np.random.Generator) -> tuple[Scene, float]:
        ((size, _, _),) = stated["objects"]
        while True:
            scene = _prior_draw(
                rng, self.object_probs, range(1, len(self.object_probs) + 1), stated["background"]
            )
            slot = int(rng.integers(scene.n_objects))
            if size not in (None, scene.objects[slot].size):
                continue
            out = _overwrite(scene, [slot], stated["objects"])
            if out is not None:
                # a uniformly chosen slot made to match: each matching object of the result could have been it
                return out, self._matches(stated, out) / out.n_objects


def ideal_guided_scenes(
    process: CaptionProcess,
    stated: Sequence[Stated],
    scales: Sequence[float],
    rng: np.random.Generator,
    n_candidates: int = 200,
) -> dict[float, list[Scene]]:
    """For each caption, one scene per guidance scale from ``p(s) P(c | s)^w`` (importance resampling over
    ``n_candidates`` proposals shared by the scales, so the scales differ only by their weights)."""
    out: dict[float, list[Scene]] = {float(w): [] for w in scales}
    for st in stated:
        cands, lik, q = weighted_candidates(process, st, n_candidates, rng)
        u = rng.random()  # one uniform per caption: the scales pick by inverse CDF from the same draw
        for w in out:
            weights = lik**w / q
            cdf = np.cumsum(weights / weights.sum())
            out[w].append(cands[min(int(np.searchsorted(cdf, u)), len(cands) - 1)])
    return out


def weighted_candidates(
    process: CaptionProcess, stated: Stated, n: int, rng: np.random.Generator
) -> tuple[list[Scene], np.ndarray, np.ndarray]:
    """``n`` proposals for one caption with their ``P(c | s)`` and proposal factors: ``p(s | c)`` is the
    candidates weighted by ``P(c | s) / f``, the guidance target at scale w by ``P(c | s)^w / f``."""
    proposals = [process.propose(stated, rng) for _ in range(n)]
    # P(c | s) may be 0 for a proposal where a keep probability is 0 or 1 (exact captions never stop the chain
    # early): such candidates get no weight
    lik = np.array([process.likelihood(stated, s) for s, _ in proposals])
    if not lik.any():
        raise ValueError(f"{process.name}: none of {n} candidates can give the caption {stated}")
    return [s for s, _ in proposals], lik, np.array([f for _, f in proposals])


# ----------------------------------------------------------------------------------------------------------
# Classifier-free guidance with an exact denoiser
#
# The tilted distribution above is what guidance aims at, not what it samples: the guided eps at noise level t
# is not the score of the noised tilted distribution (Chidambaram et al. 2024, "What does guidance do?"). For
# distributions given as finite sets of images the exact denoiser is known in closed form (the posterior mean
# over the set), so classifier-free guidance can be run as GLIDE runs it with a denoiser that makes no error.


def mixture_x0(
    x_t: torch.Tensor, alpha_bar: float, images: torch.Tensor, log_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x0 | x_t] under x0 ~ sum_i w_i delta(images_i), x_t = sqrt(abar) x0 + sqrt(1 - abar) eps.

    ``x_t`` [B, D]; ``images`` [M, D] shared or [B, M, D] per row; ``log_weights`` [M] or [B, M] (normalised or
    not). Returns (x0 [B, D], per-row log posterior weights [B, M], unnormalised)."""
    logits = _mixture_logits(x_t, alpha_bar, images, log_weights)
    return _weighted_mean(torch.softmax(logits, 1), images), logits


def _mixture_logits(
    x_t: torch.Tensor, alpha_bar: float, images: torch.Tensor, log_weights: torch.Tensor
) -> torch.Tensor:
    """Unnormalised log posterior weights [B, M] of the mixture's images given ``x_t`` (see ``mixture_x0``)."""
    a = float(alpha_bar)
    if images.dim() == 2:
        d2 = (
            (x_t * x_t).sum(1, keepdim=True)
            - 2 * a**0.5 * x_t @ images.T
            + a * (images * images).sum(1)[None]
        )
        return log_weights.reshape(1, -1) - d2 / (2 * (1 - a))
    d2 = ((x_t[:, None] - a**0.5 * images) ** 2).sum(-1)
    return log_weights - d2 / (2 * (1 - a))


def _weighted_mean(p: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``sum_m p[b, m] images[(b,) m]``: ``images`` [M, D] shared or [B, M, D] per row."""
    return p @ images if images.dim() == 2 else torch.einsum("bm,bmd->bd", p, images)


def exact_denoiser_cfg(
    cond: torch.Tensor,
    cond_log_weights: torch.Tensor,
    uncond: torch.Tensor,
    log_pc: torch.Tensor,
    scale: float,
    steps: str = "50",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Classifier-free guidance at ``scale`` with exact conditional and unconditional denoisers; GLIDE's
    ancestral sampler on the cosine schedule respaced to ``steps``, x0 clipped to [-1, 1] at every step.

    ``cond`` [B, K, D]: each caption's p(x | c) as K images with log weights ``cond_log_weights`` [B, K].
    ``uncond`` [M, D]: a prior sample (equal weights) standing for p(x) away from the caption; p(x) itself is
    the mixture ``(1 - p(c)) uncond + p(c) cond`` with ``log_pc`` [B], so the caption's own images are in p(x)
    (without them the unconditional denoiser would pull every sample off them at low noise). float64 in, out
    [B, D]."""
    from glide.diffusion.gaussian import create_gaussian_diffusion

    diff = create_gaussian_diffusion(1000, "squaredcos_cap_v2", steps)
    b, _, d = cond.shape
    cond_log_weights = cond_log_weights - torch.logsumexp(cond_log_weights, 1, keepdim=True)
    log_u = torch.full((uncond.shape[0],), -math.log(uncond.shape[0]), dtype=cond.dtype)
    x = torch.randn(b, d, generator=generator, dtype=cond.dtype)
    for i in reversed(range(diff.num_timesteps)):
        a = float(diff.alphas_cumprod[i])
        x0_c, logits_c = mixture_x0(x, a, cond, cond_log_weights)
        logits_u = _mixture_logits(x, a, uncond, log_u)
        logits = torch.cat([logits_u + torch.log1p(-log_pc.exp())[:, None], logits_c + log_pc[:, None]], 1)
        p = torch.softmax(logits, 1)
        m = uncond.shape[0]
        x0_u = _weighted_mean(p[:, :m], uncond) + _weighted_mean(p[:, m:], cond)
        eps_c = (x - a**0.5 * x0_c) / (1 - a) ** 0.5
        eps_u = (x - a**0.5 * x0_u) / (1 - a) ** 0.5
        eps = eps_u + scale * (eps_c - eps_u)
        x0 = ((x - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)
        if i == 0:
            return x0
        mean = diff.posterior_mean_coef1[i] * x0 + diff.posterior_mean_coef2[i] * x
        x = mean + float(diff.posterior_variance[i]) ** 0.5 * torch.randn(
            b, d, generator=generator, dtype=cond.dtype
        )
    raise AssertionError("unreachable")
