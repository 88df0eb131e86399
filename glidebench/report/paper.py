"""The GLIDE paper's reference numbers, as data, and the table that sets a run beside them.

This module owns every number the report quotes from the paper, and the honest comparison of a run with
them. The numbers were transcribed by hand (not read at run time) from:

- Nichol et al., "GLIDE: Towards Photorealistic Image Generation and Editing with Text-Guided Diffusion
  Models", arXiv:2112.10741: Table 2 (zero-shot MS-COCO FID at 256x256), Figure 6 (Pareto curves of
  classifier-free vs CLIP guidance at 64x64) and Table 1 (human Elo);
- the released glide-text2im notebooks and model card (sampling settings of the released model, which has
  no published metrics).

The paper's headline FID uses 30,000 samples from MS-COCO validation captions with the 3.5B model; a
glidebench run almost always differs in model, data, resolution or sample count, and the comparison says so
in plain words instead of implying a like-for-like number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

SOURCE = "Nichol et al. 2021, GLIDE, arXiv:2112.10741"


@dataclass(frozen=True)
class CocoFidEntry:
    """One row of the paper's Table 2 (FID on MS-COCO 256x256; lower is better)."""

    model: str
    fid_trained_on_coco: float | None
    zero_shot_fid: float | None
    approximate: bool = False  # the paper prints DALL-E's zero-shot FID as "~28"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("CocoFidEntry.model must be a non-empty name")
        for v in (self.fid_trained_on_coco, self.zero_shot_fid):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"CocoFidEntry FID values must be positive finite numbers, got {v!r}")


# Paper, Table 2 (as published).
TABLE2: tuple[CocoFidEntry, ...] = (
    CocoFidEntry("AttnGAN", 35.49, None),
    CocoFidEntry("DM-GAN", 32.64, None),
    CocoFidEntry("DF-GAN", 21.42, None),
    CocoFidEntry("DM-GAN + CL", 20.79, None),
    CocoFidEntry("XMC-GAN", 9.33, None),
    CocoFidEntry("LAFITE", 8.12, 26.94),
    CocoFidEntry("DALL-E", None, 28.0, approximate=True),
    CocoFidEntry("GLIDE (3.5B)", None, 12.24),
    CocoFidEntry("GLIDE (3.5B), reference de-duplicated against training data", None, 12.89),
)

# How the headline number (GLIDE 3.5B, zero-shot FID 12.24) was produced (paper, section 5 and Table 2).
HEADLINE_FID = 12.24
HEADLINE = {
    "model": "GLIDE 3.5B (never released)",
    "guidance": "cfg",
    "scale": 1.5,
    "n_samples": 30_000,
    "resolution": 256,
    "data": "MS-COCO validation captions (split and caption choice unstated; usually filed as COCO-30k val2014)",
    "reference": "the whole validation set, center-cropped",
    "sampler": "250 base steps, upsampler 'fast27' (27 steps)",
}
FIGURE6_RESOLUTION = 64  # Figure 6's Pareto curves use the 64x64 base model only

# Paper, Table 1: human Elo at 256x256, classifier-free scale 3.0 vs CLIP guidance scale 2.0.
ELO: tuple[tuple[str, float, float], ...] = (
    ("unguided", -88.6, -106.2),
    ("CLIP guidance (scale 2.0)", -73.2, 29.3),
    ("classifier-free guidance (scale 3.0)", 82.7, 110.9),
)

# Figure 6's qualitative findings (the swept scales, roughly 1 to 10 for both kinds, appear only in the plots).
FIGURE6_FINDINGS: tuple[str, ...] = (
    "classifier-free guidance is (nearly) Pareto-optimal on FID vs IS and on precision vs recall",
    "CLIP guidance reaches the higher CLIP score, which the authors attribute to adversarial examples "
    "against the evaluating CLIP",
)

RELEASED_MODEL = (
    "the released 'GLIDE (filtered)' model (about 385M parameters in the base model, trained on about 67M "
    "people-free pairs) has no published metrics: no paper-grade COCO-30k FID is known for it"
)
NOTEBOOK_SETTINGS = (
    "base 100 steps, guidance scale 3.0, upsampler fast27 (DDIM, noise temperature 0.997), fp16"
)
CLIP_SCORE_DEFINITION = "OpenAI CLIP ViT-B/16, mean of 100 x cosine(image, caption), no clamp"

KIND_NAMES = {"cfg": "classifier-free", "clip": "CLIP guidance", "none": "unguided"}


@dataclass(frozen=True)
class OurRun:
    """What the comparison needs to know about one run."""

    label: str
    results: pd.DataFrame
    data_kind: str  # "MS-COCO", "embedded" or "unknown"
    models: tuple[str, ...]
    clip_model: str | None = None
    random_model: bool = False
    glide: bool = True  # a GLIDE run (the notes on the released GLIDE apply), not another generator's

    def __post_init__(self) -> None:
        if self.data_kind not in ("MS-COCO", "embedded", "unknown"):
            raise ValueError(
                f"OurRun.data_kind must be 'MS-COCO', 'embedded' or 'unknown', got {self.data_kind!r}"
            )


def _num(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v


def _setting_words(row: pd.Series) -> str:
    kind = str(row.get("guidance", ""))
    words = KIND_NAMES.get(kind, kind)
    if kind != "none":
        words += f" {_num(row.get('scale')):g}"
    n = _num(row.get("n_samples"))
    extra = [f"n={int(n):,}" if math.isfinite(n) else "n=?"]
    res = _num(row.get("resolution"))
    if math.isfinite(res):
        extra.append(f"{int(res)}px")
    sampler = row.get("sampler")
    if isinstance(sampler, str) and sampler:
        extra.append(f"{sampler} {row.get('steps', '')}".strip())
    return ", ".join([words, *extra])


def _best(df: pd.DataFrame, column: str, lowest: bool) -> pd.Series | None:
    if column not in df.columns:
        return None
    vals = pd.to_numeric(df[column], errors="coerce")
    if not vals.notna().any():
        return None
    return df.loc[vals.idxmin() if lowest else vals.idxmax()]


def _best_by_kind(df: pd.DataFrame, column: str, lowest: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    if column not in df.columns:
        return out
    for kind, sub in df.groupby("guidance", sort=True):
        vals = pd.to_numeric(sub[column], errors="coerce").dropna()
        if len(vals):
            out[str(kind)] = float(vals.min() if lowest else vals.max())
    return out


def _kind_verdict(by_kind: dict[str, float], winner: str, loser: str, lowest: bool, fmt: str) -> str:
    if winner not in by_kind or loser not in by_kind:
        return "not measured (needs both guidance kinds)"
    w, lo = by_kind[winner], by_kind[loser]
    agrees = w < lo if lowest else w > lo
    tie = w == lo
    verdict = "tie" if tie else ("agrees" if agrees else "differs")
    return f"{KIND_NAMES[winner]} {w:{fmt}} vs {KIND_NAMES[loser]} {lo:{fmt}}: {verdict}"


def comparison_table(runs: Sequence[OurRun]) -> pd.DataFrame:
    """The paper's reference numbers (column 'paper') beside each run's (one column per run label).

    Rows: best FID and the setting that reached it, FID at the headline setting (classifier-free 1.5),
    Figure 6's two findings checked on this run, and the facts that make the numbers (in)comparable:
    model, data, resolution, sample count and the CLIP used for the CLIP score.
    """
    rows: dict[str, dict[str, str]] = {
        "Best FID (setting)": {"paper": f"{HEADLINE_FID} (GLIDE 3.5B, classifier-free 1.5, n=30,000, 256px)"},
        "FID at classifier-free scale 1.5": {"paper": f"{HEADLINE_FID}"},
        "Fig. 6: classifier-free has the better best FID": {
            "paper": "classifier-free Pareto-optimal (FID vs IS)"
        },
        "Fig. 6: CLIP guidance has the higher CLIP score": {"paper": "CLIP guidance wins on CLIP score"},
        "Model": {"paper": "GLIDE 3.5B (unreleased)"},
        "Data": {"paper": "MS-COCO validation captions"},
        "Resolution": {"paper": "256 (Table 2); 64 (Fig. 6)"},
        "Samples per setting": {"paper": "30,000"},
        "CLIP score model": {"paper": CLIP_SCORE_DEFINITION},
    }
    for run in runs:
        df = run.results
        col = run.label
        best = _best(df, "fid", lowest=True)
        rows["Best FID (setting)"][col] = (
            "not measured" if best is None else f"{_num(best['fid']):.2f} ({_setting_words(best)})"
        )
        at15 = df[(df["guidance"] == "cfg") & (pd.to_numeric(df["scale"], errors="coerce").round(6) == 1.5)]
        fid15 = pd.to_numeric(at15.get("fid", pd.Series(dtype=float)), errors="coerce").dropna()
        rows["FID at classifier-free scale 1.5"][col] = (
            ", ".join(f"{v:.2f}" for v in fid15) if len(fid15) else "not run"
        )
        rows["Fig. 6: classifier-free has the better best FID"][col] = _kind_verdict(
            _best_by_kind(df, "fid", lowest=True), "cfg", "clip", lowest=True, fmt=".2f"
        )
        rows["Fig. 6: CLIP guidance has the higher CLIP score"][col] = _kind_verdict(
            _best_by_kind(df, "clip_score", lowest=False), "clip", "cfg", lowest=False, fmt=".2f"
        )
        model = ", ".join(run.models) or "unknown"
        rows["Model"][col] = model + (" (random weights)" if run.random_model else "")
        rows["Data"][col] = {
            "MS-COCO": "MS-COCO captions",
            "embedded": "embedded synthetic shapes (not COCO)",
            "unknown": "not recorded",
        }[run.data_kind]
        res = sorted({int(v) for v in pd.to_numeric(df["resolution"], errors="coerce").dropna()})
        rows["Resolution"][col] = ", ".join(str(r) for r in res) or "not recorded"
        ns = pd.to_numeric(df["n_samples"], errors="coerce").dropna()
        rows["Samples per setting"][col] = (
            "not recorded"
            if not len(ns)
            else (f"{int(ns.min()):,}" if ns.min() == ns.max() else f"{int(ns.min()):,} to {int(ns.max()):,}")
        )
        rows["CLIP score model"][col] = run.clip_model or "not recorded"
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "quantity"
    return table.reset_index()


def table2_with_ours(runs: Sequence[OurRun]) -> pd.DataFrame:
    """The paper's Table 2 with each run's best FID appended as a row, and a note on comparability."""
    rows = [
        (
            e.model,
            "" if e.fid_trained_on_coco is None else f"{e.fid_trained_on_coco:.2f}",
            ""
            if e.zero_shot_fid is None
            else (f"~{e.zero_shot_fid:g}" if e.approximate else f"{e.zero_shot_fid:.2f}"),
            "paper, Table 2",
        )
        for e in TABLE2
    ]
    for run in runs:
        best = _best(run.results, "fid", lowest=True)
        fid = "not measured" if best is None else f"{_num(best['fid']):.2f}"
        comparable = run.data_kind == "MS-COCO" and not caveats(run)
        note = "glidebench" + ("" if comparable else ": not comparable (see the notes above)")
        rows.append((f"{run.label}: {', '.join(run.models) or 'model not recorded'}", "", fid, note))
    return pd.DataFrame(rows, columns=["model", "FID trained on COCO", "zero-shot FID", "source"])


def caveats(run: OurRun) -> list[str]:
    """Plain-words reasons why this run's numbers are not the paper's numbers (empty when none apply)."""
    out: list[str] = []
    df = run.results
    if run.random_model:
        out.append("the model has random weights: its metrics test the harness, not GLIDE")
    if run.data_kind != "MS-COCO":
        out.append(
            "the captions and reference images are not MS-COCO, so no FID here is comparable to Table 2 "
            "(FID depends on the reference set)"
        )
    ns = pd.to_numeric(df["n_samples"], errors="coerce").dropna()
    if len(ns) and ns.max() < HEADLINE["n_samples"]:
        out.append(
            f"at most {int(ns.max()):,} samples per setting instead of 30,000: FID is biased upwards at small "
            "sample counts, so it is larger than a 30k FID of the same model would be"
        )
    res = set(pd.to_numeric(df["resolution"], errors="coerce").dropna().astype(int))
    if res and res != {256}:
        out.append(
            f"resolution {', '.join(str(r) for r in sorted(res))} px: Table 2 is at 256 px "
            f"(Figure 6 is at {FIGURE6_RESOLUTION} px)"
        )
    if not run.glide:
        out.append("a different model from the paper's GLIDE 3.5B (another generator made these images)")
    elif not any("3.5" in m for m in run.models):
        out.append(f"a different model from the paper's 3.5B one; {RELEASED_MODEL}")
    clip = (run.clip_model or "").lower().replace("-", "").replace("/", "")
    if run.clip_model and "vitb16" not in clip:
        out.append(
            f"CLIP score from {run.clip_model}, not the paper's ViT-B/16: CLIP scores are not comparable"
        )
    return out
