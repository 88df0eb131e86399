"""RunSpec: validation, a stable fingerprint that changes with every field, the run directory, shards and workers."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from glidebench.spec import (
    RunSpec,
    Setting,
    Shard,
    Worker,
    format_interval,
    make_settings,
    parse_interval,
    parse_scales,
)


def make_spec(**changes) -> RunSpec:
    base = dict(
        suite="coco-fid", suite_version=1, model="embedded", model_label="embedded",
        weights=(("base", "ab" * 32), ("eval-clip", "cd" * 32)), data="embedded", split="test", data_id="0123456789abcdef",
        captions="one-per-image", num_samples=200, reference_size=500, seed=0,
        settings=(Setting("cfg", 1.0), Setting("cfg", 3.0), Setting("clip", 2.0)), sampler="ddim", steps="ddim25",
        resolution=32, base_resolution=32, up_sampler="ddim", up_steps="fast27", upsample_temp=0.997, batch_size=50,
        dtype="fp32", device_type="cpu",
    )  # fmt: skip
    return RunSpec(**(base | changes))


def test_fingerprint_is_sha256_of_canonical_json_and_roundtrips() -> None:
    spec = make_spec()
    canonical = json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":"))
    assert spec.fingerprint == hashlib.sha256(canonical.encode()).hexdigest()
    record = json.loads(json.dumps(spec.record()))
    assert record["fingerprint"] == spec.fingerprint and record["spec_version"] == 1
    again = RunSpec.from_dict(record)
    assert again == spec and again.fingerprint == spec.fingerprint
    # Order of the weights does not matter; their content does.
    assert make_spec(weights=tuple(reversed(spec.weights))).fingerprint == spec.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"weights": (("base", "ef" * 32), ("eval-clip", "cd" * 32))},
        {"model_label": "embedded-random-init", "random_init": True},
        {"data_id": "fedcba9876543210"},
        {"captions": "random"},
        {"num_samples": 201},
        {"reference_size": 501},
        {"seed": 1},
        {"settings": (Setting("cfg", 1.0), Setting("cfg", 3.5), Setting("clip", 2.0))},
        {"steps": "ddim50"},
        {"sampler": "ancestral"},
        {"batch_size": 25},
        {"dtype": "bf16"},
        {"device_type": "cuda"},
        {"resolution": 64},
        {"inception": "fid-helper"},
        {"prc_k": 5},
        {"cfg_interval": (100, 700)},
        {"attention": "sdpa"},
        {"caption_style": "short"},
        {"samples_per_prompt": 4},
        {"samples_per_prompt": 4, "diversity_prompts": 10},
        {"bootstrap_resamples": 200},
        {"intervals": "bootstrap"},
        {"fast": True},
    ],
)
def test_every_field_changes_the_fingerprint_and_the_run_dir(change, tmp_path) -> None:
    a, b = make_spec(), make_spec(**change)
    assert a.fingerprint != b.fingerprint
    assert a.run_dir(tmp_path) != b.run_dir(tmp_path)
    assert a.run_dir(tmp_path).parent == tmp_path / "coco-fid"
    assert a.run_dir(tmp_path).name.endswith(a.fingerprint[:12])


def test_every_field_is_covered_by_the_fingerprint_test() -> None:
    names = {f.name for f in dataclasses.fields(RunSpec)}
    covered = {"weights", "model_label", "random_init", "data_id", "captions", "num_samples", "reference_size",
               "seed", "settings", "steps", "sampler", "batch_size", "dtype", "device_type", "resolution",
               "inception", "prc_k", "cfg_interval", "attention", "caption_style"}  # fmt: skip
    covered |= {"fid_resize", "reference_stats"}  # covered by test_tracking's fingerprint test
    covered |= {
        "samples_per_prompt",
        "diversity_prompts",
        "bootstrap_resamples",
    }  # the K-images-per-caption fields
    covered |= {"fast"}  # the fast inference path
    covered |= {"intervals"}
    covered |= {"reference_protocol", "kid_seed"}  # covered by test_statfiles's fingerprint test
    covered |= {"sfid"}  # covered by test_sfid_run's fingerprint test
    # The rest are constants of one suite/run kind or derived from the covered ones.
    rest = {"suite", "suite_version", "model", "data", "split", "base_resolution", "up_sampler", "up_steps",
            "upsample_temp", "kid_subset_size", "spec_version"}  # fmt: skip
    assert names == covered | rest
    for name, value in (
        ("up_steps", "ddim10"),
        ("upsample_temp", 1.0),
        ("kid_subset_size", 500),
        ("split", "val"),
    ):
        assert make_spec(**{name: value}).fingerprint != make_spec().fingerprint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "dalle"}, "model must be one of"),
        ({"steps": "fast"}, "not a respacing"),
        ({"sampler": "euler"}, "sampler must be one of"),
        ({"num_samples": 3}, "num_samples=3 is too few samples"),
        ({"reference_size": 2}, "reference_size=2 is too few"),
        ({"settings": ()}, "at least one setting"),
        ({"settings": (Setting("cfg", 2.0), Setting("cfg", 2))}, "duplicate settings"),
        ({"resolution": 16}, "below the base model"),
        ({"dtype": "fp8"}, "dtype must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
    ],
)
def test_invalid_specs_are_rejected_with_the_reason(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_spec(**change)


@pytest.mark.parametrize("steps", ["250", "10,10,3,2,2", "ddim25", "quad12", "fast27"])
def test_every_respacing_form_is_a_valid_spec(steps) -> None:
    assert make_spec(steps=steps).steps == steps


def test_unknown_or_missing_keys_are_errors() -> None:
    record = make_spec().record()
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        RunSpec.from_dict(record | {"colour": "red"})
    del record["seed"]
    with pytest.raises(ValueError, match=r"missing keys \['seed'\]"):
        RunSpec.from_dict(record)


def test_settings_ids_seeds_and_records() -> None:
    assert [s.setting_id for s in make_settings([1, 1.5], [2], unguided=True)] == [
        "none",
        "cfg-1",
        "cfg-1.5",
        "clip-2",
    ]
    with pytest.raises(ValueError):
        Setting("none", 2.0)
    with pytest.raises(ValueError):
        Setting("cfg", -1.0)
    spec = make_spec(seed=7, num_samples=5, reference_size=10)
    assert spec.seeds() == [7, 8, 9, 10, 11]
    rec = spec.setting_record(spec.settings[1])
    assert rec == {"guidance": "cfg", "scale": 3.0, "sampler": "ddim", "steps": "ddim25", "resolution": 32,
                   "model": "embedded", "up_sampler": None, "up_steps": None}  # fmt: skip
    assert make_spec(resolution=64).upsample and not spec.upsample


def test_parse_scales() -> None:
    assert parse_scales("1,1.5, 2", "--cfg") == [1.0, 1.5, 2.0]
    assert parse_scales("", "--clip") == [] and parse_scales(None, "--clip") == []
    with pytest.raises(ValueError, match="--cfg: 'a' is not a number"):
        parse_scales("1,a", "--cfg")
    with pytest.raises(ValueError, match=">= 0"):
        parse_scales("-1", "--clip")


def test_shards_and_workers_compose() -> None:
    assert Shard.parse(None) == Shard(0, 1)
    assert Shard.parse(" 2 / 4 ") == Shard(2, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    # Shard i of n with torchrun rank r of world w is worker i * w + r of n * w: every worker exactly once.
    workers = [Worker.make(Shard(i, 3), r, 2) for i in range(3) for r in range(2)]
    assert sorted(w.index for w in workers) == list(range(6)) and {w.count for w in workers} == {6}


def test_harness_samplers_are_glides() -> None:
    from glide.diffusion.samplers import SAMPLERS as GLIDE_SAMPLERS
    from glidebench.spec import SAMPLERS

    assert set(SAMPLERS) == set(GLIDE_SAMPLERS)


def test_guidance_interval_parses_validates_and_leaves_older_specs_alone() -> None:
    assert (
        parse_interval("100,700", "x")
        == parse_interval("100-700", "x")
        == parse_interval([100, 700], "x")
        == (100, 700)
    )
    assert format_interval((100, 700)) == "100-700" and format_interval(None) == ""
    for bad in ("700,100", "-1,5", "a,b", "1", "1,2,3", 5):
        with pytest.raises(ValueError, match="0 <= lo <= hi"):
            parse_interval(bad, "--cfg-interval")
    plain = make_spec()
    assert (
        "cfg_interval" not in plain.to_dict()
    )  # a spec without it hashes exactly as before the field existed
    limited = make_spec(cfg_interval=[100, 700])
    assert limited.cfg_interval == (100, 700) and limited.to_dict()["cfg_interval"] == [100, 700]
    assert RunSpec.from_dict(json.loads(json.dumps(limited.record()))) == limited
    assert limited.setting_record(limited.settings[1])["cfg_interval"] == [100, 700]
    with pytest.raises(ValueError, match="0 <= lo <= hi"):
        make_spec(cfg_interval=(7, 3))


def test_attention_is_validated_and_absent_from_older_specs() -> None:
    """The default (einsum) is left out of the canonical JSON, so runs from before the option keep their
    fingerprints; sdpa is recorded; anything else is refused with the choices named."""
    assert "attention" not in make_spec().to_dict()
    assert make_spec(attention="sdpa").to_dict()["attention"] == "sdpa"
    assert RunSpec.from_dict(make_spec(attention="sdpa").to_dict()).attention == "sdpa"
    with pytest.raises(ValueError, match="attention must be one of"):
        make_spec(attention="flash")


def test_attention_choices_match_the_model_library() -> None:
    """spec.py keeps its own copy so it stays torch-free; it must name the kernels glide.nn accepts."""
    from glide.nn import ATTENTION_IMPLS as GLIDE_IMPLS
    from glidebench.spec import ATTENTION_IMPLS

    assert ATTENTION_IMPLS == GLIDE_IMPLS


def test_caption_style_is_validated_and_absent_from_older_specs() -> None:
    """exact (the default) is left out of the canonical JSON, so runs from before the option keep their
    fingerprints; short is recorded, and only for the embedded set."""
    assert "caption_style" not in make_spec().to_dict()
    short = make_spec(caption_style="short")
    assert short.to_dict()["caption_style"] == "short"
    assert RunSpec.from_dict(json.loads(json.dumps(short.record()))) == short
    with pytest.raises(ValueError, match="caption_style must be one of"):
        make_spec(caption_style="terse")
    with pytest.raises(ValueError, match="for the embedded set"):
        make_spec(caption_style="short", data="coco", split="val2014")


def test_extra_draws_and_resamples_at_their_defaults_keep_the_fingerprint() -> None:
    """The diversity and interval fields are left out of the canonical JSON at their defaults (existing runs keep their
    directories); K images for M captions add M (K - 1) indices after num_samples."""
    a = make_spec()
    assert (
        make_spec(
            samples_per_prompt=1, diversity_prompts=0, bootstrap_resamples=1000, intervals="jackknife"
        ).fingerprint
        == a.fingerprint
    )
    assert "intervals" not in a.canonical_json()  # the jackknife default keeps every earlier fingerprint
    assert "samples_per_prompt" not in a.canonical_json() and a.total_samples == a.num_samples
    assert make_spec(samples_per_prompt=4, diversity_prompts=10).total_samples == a.num_samples + 30
    assert len(make_spec(samples_per_prompt=3).seeds()) == 3 * a.num_samples  # M = 0: every caption
