"""REGRESSION SNAPSHOT of the model plan: which weights each run uses and under which identity.

The identities (SHA-256s of the shipped files, random-init recipes, official digests, the open_clip tag) feed
every run's fingerprint, so the shipped reports (reports/*/spec.json) stay valid only while they do not
change. The literals below were computed with ``glidebench/models.py`` as it stood before it became the
``glidebench.models`` package (a labelled snapshot, not an independent derivation), except:

- the official identities, which are the SHA-256 of small stand-in files computed here with hashlib;
- the shipped reports' ``weights``, read from reports/*/spec.json (written by the runs themselves).

Planning reads file headers and hashes only; nothing is loaded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from glidebench import models as M

ROOT = Path(__file__).resolve().parents[2]

# The shipped embedded files (glidebench/assets/models), by SHA-256.
BASE = "f968e3b5763d573d3b8602f63c9be069402ff63a4b9165f458d57f9a6aef7331"
BASE_SHORT = "5b0f73e5253e4469674262d2276f5802e4419a4fbea6b71004a6deeaaad86ece"
UP = "f9feed11967525dae0132fbd314e889625cf95634a596c6db7e671f795ba9e8b"
NOISED = "6bbe172df3b2ca62ed4049de3b8712e4712883b13db026ff9a9b643f868b59b7"
NOISED_SHORT = "2db17194282839ffddd5709261ca47fea9c3d7be4a5eddc40421578fec6cc88b"
EVAL = "0c8747eeba5ad56644d97e8edf5cb293dd1138b62b72c0f7513f52c6e4a941da"
EVAL_SHORT = "eb63b8990ab912d5cd9164f71874acfc5856824559102920160d3960cdaab6f1"
OPEN_CLIP = "open_clip:ViT-B-16:openai"
# The random-initialised fallback's recipes.
R_BASE = "random-init:base:seed=0:config=f1c16b3ae93e2336"
R_UP = "random-init:upsample:seed=0:config=aa18630fef68137e"
R_CLIP = "random-init:noised-clip:seed=0:config=853faf7861300132"

# (resolution, caption_style, want_noised_clip, data) -> (label, identities in plan order)
SHIPPED = {
    (None, "exact", False, "embedded"): ("embedded", [("base", BASE), ("eval-clip", EVAL)]),
    (None, "exact", False, "coco"): ("embedded", [("base", BASE), ("eval-clip", OPEN_CLIP)]),
    (None, "exact", True, "embedded"): (
        "embedded",
        [("base", BASE), ("noised-clip", NOISED), ("eval-clip", EVAL)],
    ),
    (None, "exact", True, "coco"): (
        "embedded",
        [("base", BASE), ("noised-clip", NOISED), ("eval-clip", OPEN_CLIP)],
    ),
    (None, "short", False, "embedded"): ("embedded-short", [("base", BASE_SHORT), ("eval-clip", EVAL_SHORT)]),
    (None, "short", False, "coco"): ("embedded-short", [("base", BASE_SHORT), ("eval-clip", OPEN_CLIP)]),
    (None, "short", True, "embedded"): (
        "embedded-short",
        [("base", BASE_SHORT), ("noised-clip", NOISED_SHORT), ("eval-clip", EVAL_SHORT)],
    ),
    (None, "short", True, "coco"): (
        "embedded-short",
        [("base", BASE_SHORT), ("noised-clip", NOISED_SHORT), ("eval-clip", OPEN_CLIP)],
    ),
    (64, "exact", False, "embedded"): ("embedded", [("base", BASE), ("upsample", UP), ("eval-clip", EVAL)]),
    (64, "exact", False, "coco"): ("embedded", [("base", BASE), ("upsample", UP), ("eval-clip", OPEN_CLIP)]),
    (64, "exact", True, "embedded"): (
        "embedded",
        [("base", BASE), ("upsample", UP), ("noised-clip", NOISED), ("eval-clip", EVAL)],
    ),
    (64, "exact", True, "coco"): (
        "embedded",
        [("base", BASE), ("upsample", UP), ("noised-clip", NOISED), ("eval-clip", OPEN_CLIP)],
    ),
    (64, "short", False, "embedded"): (
        "embedded-short",
        [("base", BASE_SHORT), ("upsample", UP), ("eval-clip", EVAL_SHORT)],
    ),
    (64, "short", False, "coco"): (
        "embedded-short",
        [("base", BASE_SHORT), ("upsample", UP), ("eval-clip", OPEN_CLIP)],
    ),
    (64, "short", True, "embedded"): (
        "embedded-short",
        [("base", BASE_SHORT), ("upsample", UP), ("noised-clip", NOISED_SHORT), ("eval-clip", EVAL_SHORT)],
    ),
    (64, "short", True, "coco"): (
        "embedded-short",
        [("base", BASE_SHORT), ("upsample", UP), ("noised-clip", NOISED_SHORT), ("eval-clip", OPEN_CLIP)],
    ),
}

RANDOM_NOTE = (
    "no trained embedded base model in {dir} (embedded-base.safetensors): using a RANDOM-INITIALISED model of "
    "the same architecture; samples and metrics are meaningless except as a plumbing check"
)
NO_EVAL_NOTE = "no embedded evaluator CLIP (embedded-clip-eval.safetensors): the CLIP score is skipped"


@pytest.fixture
def shipped_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIDEBENCH_MODELS", raising=False)
    assert (M.models_dir() / "embedded-base.safetensors").is_file(), "the shipped models are missing"


def _items(plan: M.ModelPlan) -> list[tuple[str, str]]:
    return list(plan.identities.items())


@pytest.mark.parametrize(("resolution", "style", "clip", "data"), sorted(SHIPPED, key=repr))
def test_shipped_embedded_plans(shipped_models, resolution, style, clip, data) -> None:
    label, identities = SHIPPED[(resolution, style, clip, data)]
    plan = M.plan_models("embedded", resolution, want_noised_clip=clip, data=data, caption_style=style)
    assert _items(plan) == identities
    assert sorted(plan.sources) == sorted(role for role, _ in identities)
    assert (plan.label, plan.random_init, plan.base_resolution) == (label, False, 32)
    assert plan.upsample_resolution == resolution
    assert plan.notes == []
    assert plan.family == "embedded"


def test_upsampler_resolution_of_the_shipped_models(shipped_models) -> None:
    assert M.upsampler_resolution("embedded") == 64
    assert M.upsampler_resolution("official") == 256


def test_shipped_plan_errors_name_the_fix(shipped_models) -> None:
    with pytest.raises(M.ModelUnavailable) as e:
        M.plan_models("embedded", 48, False)
    assert str(e.value) == (
        "--resolution 48 is neither the embedded base's 32 px nor its upsampler's 64 px; choose one of those"
    )


@pytest.mark.parametrize(
    ("resolution", "style", "clip", "data"),
    list(itertools.product([None, 64], ["exact", "short"], [False, True], ["embedded", "coco"])),
)
def test_random_init_fallback_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolution, style, clip, data
) -> None:
    monkeypatch.setenv("GLIDEBENCH_MODELS", str(tmp_path))
    plan = M.plan_models("embedded", resolution, want_noised_clip=clip, data=data, caption_style=style)
    expected = [("base", R_BASE)]
    expected += [("upsample", R_UP)] if resolution else []
    expected += [("noised-clip", R_CLIP)] if clip else []
    expected += [("eval-clip", OPEN_CLIP)] if data == "coco" else []
    assert _items(plan) == expected
    assert (plan.label, plan.random_init, plan.base_resolution) == ("embedded-random-init", True, 32)
    assert plan.upsample_resolution == resolution
    assert plan.notes == [RANDOM_NOTE.format(dir=tmp_path)] + ([NO_EVAL_NOTE] if data == "embedded" else [])


def _official_cache(directory: Path) -> dict[str, str]:
    """Small stand-in files for the official checkpoints, each with the SHA-256 record a download leaves
    beside it (``NAME.sha256``); their SHA-256 (hashlib) by name."""
    digests = {}
    for name in ("base", "upsample", "clip/image-enc", "clip/text-enc"):
        data = f"official {name}".encode()
        path = directory / (name.replace("/", "_") + ".pt")
        path.write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
        path.with_suffix(".sha256").write_text(digests[name] + "\n")
    return digests


@pytest.mark.parametrize(
    ("resolution", "clip", "data"),
    list(itertools.product([None, 64, 256], [False, True], [None, "coco", "embedded"])),
)
def test_official_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolution, clip, data) -> None:
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    monkeypatch.delenv("GLIDEBENCH_MODELS", raising=False)
    sha = _official_cache(tmp_path)
    plan = M.plan_models("official", resolution, want_noised_clip=clip, data=data)
    expected = [("base", sha["base"])]
    expected += [("upsample", sha["upsample"])] if resolution == 256 else []
    expected += [("noised-clip", f"{sha['clip/image-enc']},{sha['clip/text-enc']}")] if clip else []
    expected += [("eval-clip", EVAL if data == "embedded" else OPEN_CLIP)]
    assert _items(plan) == expected
    assert (plan.family, plan.label, plan.random_init, plan.base_resolution) == (
        "official",
        "glide-filtered",
        False,
        64,
    )
    assert plan.upsample_resolution == (256 if resolution == 256 else None)
    assert plan.notes == []
    assert M.official_available(resolution) and M.official_available(256)


def test_official_identity_is_the_digest_recorded_at_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    sha = _official_cache(tmp_path)
    recorded = "ab" * 32
    (tmp_path / "base.sha256").write_text(recorded + "\n")
    plan = M.plan_models("official", None, want_noised_clip=False)
    assert plan.identities["base"] == recorded != sha["base"]
    # without a record the digest is computed from the file
    (tmp_path / "base.sha256").unlink()
    assert M.plan_models("official", None, want_noised_clip=False).identities["base"] == sha["base"]
    with pytest.raises(M.ModelUnavailable) as e:
        M.plan_models("official", 128, want_noised_clip=False)
    assert str(e.value) == "--resolution 128: the official models give 64 (base) or 256 px"


def _shipped_specs() -> list[Path]:
    specs = sorted(ROOT.glob("reports/*/spec.json"))
    assert specs, "no shipped reports with a spec.json"
    return specs


@pytest.mark.parametrize("spec_path", _shipped_specs(), ids=lambda p: p.parent.name)
def test_shipped_reports_replan_to_their_recorded_weights(shipped_models, spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    if spec["model"] != "embedded":
        pytest.skip(f"{spec_path.parent.name} uses the {spec['model']} family (weights not shipped)")
    resolution = None if spec["resolution"] == spec["base_resolution"] else spec["resolution"]
    plan = M.plan_models(
        "embedded",
        resolution,
        want_noised_clip=any(s["guidance"] == "clip" for s in spec["settings"]),
        data=spec["data"],
        caption_style=spec.get("caption_style") or "exact",
    )
    assert dict(plan.identities) == spec["weights"]
    assert plan.label == spec["model_label"]
    assert plan.base_resolution == spec["base_resolution"] and plan.random_init == spec["random_init"]
