"""Uncertainty of a run's numbers: intervals per setting, paired differences between settings, and
intra-caption diversity over the extra draws per caption (docs/uncertainty.md).

Owns how the metrics stage turns a setting's features into intervals and diversity:

- :class:`Draws`: the run's replicate design, made once and shared by every setting so that a difference
  between two settings is paired: for the jackknife (the default) the blocks of caption indices and of
  reference images and the random splits of precision/recall; for ``--intervals bootstrap`` the seeded
  resample counts; and the diversity captions' weights;
- :func:`diversity_groups`: which global image indices are the K images of each diversity caption (prompt j
  < M and its extra draws N + j (K - 1) ... N + (j + 1)(K - 1) - 1; :func:`extra_prompts` lists them);
- :func:`setting_uncertainty`: a setting's replicates of every metric with an interval (the first replicate
  is the full sample's estimate), its ``<metric>_lo`` / ``<metric>_hi`` columns and its diversity columns;
- :func:`comparison_pairs` / :func:`differences`: which settings are compared (neighbouring scales of a
  guidance kind, and every guided setting against the unguided one: ``none``, else classifier-free scale 1,
  the conditional model alone) and the rows of ``differences.csv`` with the ``resolved`` flag;
- :func:`attribute_items`: per-image attribute hits of the embedded set (the values its accuracies average).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import bootstrap as B
from ..metrics import jackknife as J
from ..metrics.diversity import mean_pairwise_distance, per_caption, vendi_score
from ..metrics.fid import feature_probe
from ..metrics.pairs import torch_threads
from ..schema import DIFFERENCE_METRICS

METHODS = ("jackknife", "bootstrap")
SPLIT_METRICS = ("precision", "recall")  # split-sample intervals under the "jackknife" method
METHOD_TEXT = {
    "jackknife": (
        "delete-one-block jackknife for FID, KID, CLIP score, accuracies and diversity: caption indices "
        "(generated side) and reference images cut into the same number of blocks of consecutive indices (40, or "
        "one per image below that), replicate b leaving block b of both sets out, interval estimate +- t(G-1) x "
        "jackknife SE; split samples for precision and recall: both sets split at random into q groups S times, "
        "interval estimate +- t(S(q-1)) x sqrt(mean variance of the group values / q); paired across settings "
        "(same blocks and splits)"
    ),
    "bootstrap": (
        "percentile bootstrap, shifted by the bootstrap bias (mean of replicates - estimate), over caption "
        "indices (generated side; blocks of consecutive indices above 2048), reference images resampled "
        "independently for FID, KID and precision/recall; paired across settings (too wide for FID: "
        "docs/uncertainty.md)"
    ),
}


@dataclass(frozen=True)
class Draws:
    """The run's replicate design (see the module docstring), shared by every setting so that differences
    are paired. ``gen_counts`` / ``ref_counts`` are [replicates + 1, units] weights of each unit (row 0 all
    ones: the full sample's estimate): for the jackknife, 0/1 rows leaving one block out; for the bootstrap,
    multinomial counts. ``div_counts`` are per diversity caption."""

    resamples: int
    seed: int
    confidence: float
    gen_labels: np.ndarray
    gen_counts: np.ndarray
    ref_labels: np.ndarray
    ref_counts: np.ndarray
    div_counts: np.ndarray | None
    method: str = "jackknife"
    split_gen: np.ndarray | None = None  # [S, n] group of each caption index in each split (precision/recall)
    split_ref: np.ndarray | None = None  # [S, n_ref]
    coupled: bool = False  # captions deleted and split together with their reference images
    _reference: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def make(
        cls,
        n: int,
        n_ref: int,
        n_div: int,
        resamples: int,
        seed: int,
        confidence: float = B.CONFIDENCE,
        method: str = "jackknife",
        coupling: Sequence[int] | None = None,
    ) -> Draws:
        """``coupling``: for each of the n captions, the index of the reference image it was written for (-1:
        none), when the data source says (MS-COCO and the embedded set: captions of reference images). The
        jackknife then deletes a caption with its image, and the precision/recall splits keep them in one
        group: the two sides vary together, and treating them as independent overstates the spread."""
        if method not in METHODS:
            raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")
        if coupling is not None and len(coupling) != n:
            raise ValueError(f"coupling names {len(coupling)} captions, not {n}")
        if method == "jackknife":
            blocks = min(J.DEFAULT_BLOCKS, n_ref) if coupling is not None else min(J.DEFAULT_BLOCKS, n, n_ref)
            rl = J.block_labels(n_ref, blocks)
            gl = J.coupled_labels(rl, coupling) if coupling is not None else J.block_labels(n, blocks)
            w = J.deletion_counts(blocks)
            div = None
            if n_div > 1:
                dl = J.block_labels(n_div)
                div = J.deletion_counts(int(dl.max()) + 1)[:, dl]
            q, reps = J.split_design(n)
            rng = np.random.default_rng([seed, 29])
            sr = J.split_groups(n_ref, q, reps, rng)
            sg = (
                J.coupled_groups(sr, coupling, rng)
                if coupling is not None
                else J.split_groups(n, q, reps, rng)
            )
            return cls(blocks, seed, confidence, gl, w, rl, w, div, method, sg, sr, coupling is not None)

        def side(units: int, stream: int) -> np.ndarray:
            rng = np.random.default_rng([seed, 20, stream])
            return np.vstack([np.ones((1, units)), B.resample_counts(units, resamples, rng)])

        gl, rl = B.unit_labels(n), B.unit_labels(n_ref)
        div = side(n_div, 3) if n_div > 0 else None
        return cls(
            resamples, seed, confidence, gl, side(int(gl.max()) + 1, 1), rl, side(int(rl.max()) + 1, 2), div,
            method,
        )  # fmt: skip

    @property
    def gen_weights(self) -> np.ndarray:
        """[replicates + 1, n] weight of each caption index."""
        return self.gen_counts[:, self.gen_labels]

    @property
    def ref_weights(self) -> np.ndarray:
        return self.ref_counts[:, self.ref_labels]

    def interval(self, replicates: np.ndarray, metric: str) -> tuple[float, float]:
        """The interval of ``metric`` (or of a paired difference of it) from its replicates (row 0 the
        estimate)."""
        r = np.asarray(replicates, dtype=np.float64)
        if self.method == "jackknife" and metric in SPLIT_METRICS:
            return J.split_interval(r, int(self.split_ref.max()) + 1, self.confidence)
        if self.method == "jackknife":
            return J.jackknife_interval(r, self.confidence)
        return B.percentile_interval(r[1:], self.confidence, r[0])

    def reference(self, real: np.ndarray, k: int) -> J.ReferenceSide:
        """The reference set's share of the jackknife (kernel sums, k-NN radii of the whole set and of every
        split group), computed once per run."""

        key = (k, *feature_probe(real))
        if key not in self._reference:
            self._reference.clear()
            self._reference[key] = J.reference_side(real, self.ref_labels, k, self.split_ref)
        return self._reference[key]

    def describe(self) -> str:
        """One phrase for the run log: the method and its size."""
        if self.method == "jackknife":
            q, reps = int(self.split_ref.max()) + 1, len(self.split_ref)
            coupled = ", captions with their images" if self.coupled else ""
            return (
                f"jackknife, {int(self.ref_labels.max()) + 1} blocks; P/R split samples, {reps} x {q} groups"
                f"{coupled}"
            )
        return f"bootstrap, {self.resamples} resamples"

    def record(self) -> dict[str, Any]:
        """The provenance's record of the intervals."""
        out: dict[str, Any] = {"method": METHOD_TEXT[self.method], "confidence": self.confidence}
        if self.method == "jackknife":
            out |= {"blocks": int(self.ref_labels.max()) + 1, "coupled": self.coupled,
                    "diversity_blocks": None if self.div_counts is None else len(self.div_counts) - 1,
                    "split_groups": int(self.split_ref.max()) + 1, "split_repeats": len(self.split_ref),
                    "split_rng": "numpy default_rng([seed, 29]) permutations, generated side then reference"}  # fmt: skip
            return out
        return out | {
            "resamples": self.resamples, "seed": self.seed,
            "rng": "numpy default_rng([seed, 20, side]) multinomial counts (side 1 generated, 2 reference, 3 "
                   "diversity captions)",
            "generated_units": int(self.gen_labels.max()) + 1,
            "reference_units": int(self.ref_labels.max()) + 1,
        }  # fmt: skip


def setting_uncertainty(
    draws: Draws,
    gen: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    n: int,
    k: int,
    clip: tuple[np.ndarray, np.ndarray] | None,
    items: dict[str, np.ndarray],
    groups: list[list[int]],
    device: Any = "cpu",
    pair_threads: int | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(columns, replicates) of one setting: ``<metric>_lo``/``_hi`` of every metric with an interval, the
    diversity columns (mean over the M captions) with theirs; replicates [resamples + 1] per metric.

    ``gen``: the setting's features of every index (the protocol's first ``n`` rows, then the extra draws);
    ``clip``: (image embeddings of every index, caption embeddings of the first n) or None; ``pair_threads``: torch threads of the pass over
    pairwise tiles (None: as they are). Under the jackknife, row 0 of the precision and recall
    replicates is the point value (``point_precision_recall``), from the same pass over the pairwise tiles as
    the intervals and the KID jackknife."""
    fake, real = gen["pool3"][:n], ref["pool3"]
    gw, rw = draws.gen_weights, draws.ref_weights
    reps: dict[str, np.ndarray] = {}
    if draws.method == "jackknife":
        reps["fid"] = J.fid_jackknife(fake, real, draws.gen_labels, draws.ref_labels, device=device)
        if "spatial" in gen and "spatial" in ref:  # sFID: FID's jackknife on the spatial features
            reps["sfid"] = J.fid_jackknife(
                gen["spatial"][:n], ref["spatial"], draws.gen_labels, draws.ref_labels, device=device
            )
        with torch_threads(pair_threads):
            reps |= J.pair_replicates(fake, draws.reference(real, k), draws.gen_labels, draws.split_gen)
    else:
        reps["fid"] = B.fid_replicates(
            fake, real, draws.gen_counts, draws.ref_counts, draws.gen_labels, draws.ref_labels, device=device
        )
        reps["kid_mean"] = B.kid_replicates(
            fake, real, draws.gen_counts, draws.ref_counts, draws.gen_labels, draws.ref_labels
        )
        reps["precision"], reps["recall"] = B.prc_replicates(real, fake, rw, gw, k=k)
    if clip is not None:
        img, txt = clip[0][:n], clip[1][:n]
        cos = (img * txt).sum(1) / (np.linalg.norm(img, axis=1) * np.linalg.norm(txt, axis=1))
        reps["clip_score"] = B.weighted_mean_replicates(100.0 * cos, gw)
    for name, values in items.items():
        reps[name] = B.weighted_mean_replicates(values, gw)
    cols: dict[str, float] = {}
    if groups and draws.div_counts is not None:
        per = {
            "diversity_pool3": per_caption(gen["pool3"], groups, mean_pairwise_distance),
            "vendi_pool3": per_caption(gen["pool3"], groups, vendi_score),
        }
        if clip is not None:
            per["diversity_clip"] = per_caption(
                clip[0], groups, lambda e: mean_pairwise_distance(e, "cosine")
            )
            per["vendi_clip"] = per_caption(clip[0], groups, vendi_score)
        for name, values in per.items():
            reps[name] = B.weighted_mean_replicates(values, draws.div_counts)
            cols[name] = float(reps[name][0])
    for name, r in reps.items():
        lo, hi = draws.interval(r, name)
        if name in ("precision", "recall") or name.endswith("_acc"):  # fractions stay in [0, 1]
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        cols[f"{name}_lo"], cols[f"{name}_hi"] = lo, hi
    return cols, reps


def point_precision_recall(draws: Draws, replicates: dict[str, np.ndarray]) -> tuple[float, float] | None:
    """The setting's (precision, recall) from its jackknife replicates (row 0: the full sets' values, equal to
    ``glidebench.metrics.precision_recall``'s to the bit), so the point metrics need no pass of their own;
    None under the bootstrap."""
    if draws.method != "jackknife" or "precision" not in replicates:
        return None
    return float(replicates["precision"][0]), float(replicates["recall"][0])


def comparison_pairs(settings: Sequence[Any]) -> list[tuple[str, str, str]]:
    """(a, b, comparison) setting-id pairs: neighbouring scales within each guidance kind ("neighbouring
    scales") and each guided setting against the unguided one ("vs unguided": ``none`` when the run has it,
    else classifier-free scale 1, the conditional model alone)."""
    ids = {s.setting_id for s in settings}
    base = "none" if "none" in ids else ("cfg-1" if "cfg-1" in ids else None)
    pairs: list[tuple[str, str, str]] = []
    for kind in ("cfg", "clip"):
        ordered = sorted((s for s in settings if s.guidance == kind), key=lambda s: s.scale)
        pairs += [(a.setting_id, b.setting_id, "neighbouring scales") for a, b in zip(ordered, ordered[1:])]
    seen = {(a, b) for a, b, _ in pairs}
    if base is not None:
        for s in settings:
            if s.setting_id != base and s.guidance != "none" and (base, s.setting_id) not in seen:
                pairs.append((base, s.setting_id, "vs unguided"))
    return pairs


def differences(
    pairs: Sequence[tuple[str, str, str]], replicates: dict[str, dict[str, np.ndarray]], draws: Draws
) -> list[dict[str, Any]]:
    """One row per pair and metric both settings have: b - a, its paired interval (the run's method on the
    replicates of the difference) and ``resolved`` (the interval excludes 0)."""
    rows = []
    for a, b, how in pairs:
        ra, rb = replicates.get(a, {}), replicates.get(b, {})
        for m in DIFFERENCE_METRICS:
            if m not in ra or m not in rb:
                continue
            diff = rb[m] - ra[m]
            lo, hi = draws.interval(diff, m)
            rows.append({
                "metric": m, "setting_a": a, "setting_b": b, "comparison": how,
                "value_a": float(ra[m][0]), "value_b": float(rb[m][0]), "difference": float(diff[0]),
                "difference_lo": lo, "difference_hi": hi,
                "resolved": bool(not math.isnan(lo) and (lo > 0 or hi < 0)), "resamples": len(diff) - 1,
            })  # fmt: skip
    return rows


def source_items(source: Any, store: Any, indices: list[int], batch: int) -> dict[str, np.ndarray]:
    """The data source's per-image metric values (``setting_items``; none for a source without it)."""
    fn = getattr(source, "setting_items", None)
    return fn(store, indices, batch) if fn is not None else {}
