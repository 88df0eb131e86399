"""The fast inference path (glide.fast) against the official code's outputs and the official-numerics path.

Tolerances: per forward <= 1e-5 in fp32 on the golden configurations; 10-step classifier-free
trajectories <= 1e-4. The golden values are glide-text2im's own outputs (tests/data), so these tests bound the
fast path against an independent reference, not against itself.
"""

from __future__ import annotations

import copy

import pytest
import torch

from glide.fast import CPU_ROWS_PER_CALL, FastForward, FastPath, accelerate
from glide.pipeline import GlidePipeline

from .helpers import T, build, golden_cfg_run, maxdiff, tiny_model

# rows_per_call=1 splits even the golden batches (2-4 rows), so the row-splitting path is what is bounded.
PATHS = {
    "cpu-default": FastPath(),
    "nchw": FastPath(channels_last=False, rows_per_call=1),
    "split-rows": FastPath(rows_per_call=1),
    "no-row-split": FastPath(rows_per_call=0),
    "channels-last": FastPath(channels_last=True, rows_per_call=1),
    "channels-last-nchw-groupnorm": FastPath(channels_last=True, groupnorm="nchw", rows_per_call=1),
}


@pytest.fixture(params=list(PATHS))
def fast_base(request, golden, golden_meta, gpt2_dir):
    model = build(golden, golden_meta, gpt2_dir, "sd/")
    return accelerate(model, "cpu", PATHS[request.param])


def test_cpu_resolution_and_cuda_only_pieces_fall_back(monkeypatch):
    import glide.fast

    monkeypatch.setattr(glide.fast, "_allocator_state", None)  # glibc's default allocator: split rows
    path = FastPath().resolve("cpu")
    assert (path.attention, path.channels_last, path.rows_per_call) == ("sdpa", True, CPU_ROWS_PER_CALL)
    assert path.groupnorm == "two-pass"  # the exact channels-last GroupNorm
    assert not path.compile and not path.cuda_graphs and path.notes == []
    asked = FastPath(cuda_graphs=True).resolve("cpu")
    assert not asked.cuda_graphs and "CUDA graphs need a CUDA device" in asked.notes[0]
    cuda = FastPath().resolve("cuda")  # resolving needs no GPU
    assert (cuda.compile, cuda.cuda_graphs, cuda.channels_last, cuda.rows_per_call) == (True, True, False, 0)
    monkeypatch.setattr(glide.fast, "_allocator_state", "glibc malloc: tuned")  # tuned: no need to split
    assert FastPath().resolve("cpu").rows_per_call == 0
    assert FastPath(rows_per_call=8).resolve("cpu").rows_per_call == 8
    with pytest.raises(ValueError, match="rows_per_call"):
        FastPath(rows_per_call=-1).resolve("cpu")
    with pytest.raises(ValueError, match="groupnorm"):
        FastPath(groupnorm="welford").resolve("cpu")


def test_forward_within_1e5_of_the_official_code(fast_base, golden):
    with torch.no_grad():
        out = fast_base(
            T(golden, "fwd/x"), T(golden, "fwd/t"), tokens=T(golden, "fwd/tokens"), mask=T(golden, "fwd/mask")
        )
    assert out.is_contiguous()
    assert maxdiff(out, T(golden, "fwd/out")) < 1e-5


def test_forward_within_1e5_of_the_official_numerics_path(golden, golden_meta, gpt2_dir):
    official = build(golden, golden_meta, gpt2_dir, "sd/")
    fast = accelerate(copy.deepcopy(official), "cpu", FastPath(rows_per_call=1))
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 700, 400, 100, 0])
    tokens, mask = T(golden, "fwd/tokens"), T(golden, "fwd/mask")
    tokens, mask = tokens[:1].repeat(5, 1), mask[:1].repeat(5, 1)
    with torch.no_grad():
        ref = official(x, t, tokens=tokens, mask=mask)
        got = fast(x, t, tokens=tokens, mask=mask)
    assert maxdiff(got, ref) < 1e-5


def test_upsampler_and_inpainting_forwards_within_1e5(golden, golden_meta, gpt2_dir):
    up = accelerate(build(golden, golden_meta, gpt2_dir, "sd_up/"), "cpu", FastPath(rows_per_call=1))
    kwargs = dict(tokens=T(golden, "up/tokens"), mask=T(golden, "up/mask"), low_res=T(golden, "up/low_res"))
    with torch.no_grad():
        out = up(T(golden, "up/fwd_x"), torch.tensor([500]), **kwargs)
    assert maxdiff(out, T(golden, "up/fwd_out")) < 1e-5
    inp = accelerate(build(golden, golden_meta, gpt2_dir, "sd_inpaint/"), "cpu", FastPath(rows_per_call=1))
    src, m = T(golden, "inp/source_image"), T(golden, "inp/mask")
    with torch.no_grad():
        out = inp(
            T(golden, "inp/fwd_x"),
            torch.tensor([999, 250]),
            tokens=T(golden, "inp/tokens"),
            mask=T(golden, "inp/token_mask"),
            inpaint_image=(src * m).repeat(2, 1, 1, 1),
            inpaint_mask=m.repeat(2, 1, 1, 1),
        )
    assert maxdiff(out, T(golden, "inp/fwd_out")) < 1e-5


def test_classifier_free_trajectory_within_1e4(fast_base, golden):
    _, _, steps = golden_cfg_run(fast_base, golden)
    expected = T(golden, "cfg/samples")
    assert len(steps) == len(expected) == 10
    for k, out in enumerate(steps):
        assert maxdiff(out["sample"], expected[k]) < 1e-4, f"step {k}"


# Bounds of the free-running pipeline comparison below, from the measured envelope with a stated factor
# (benchmarks/tolerance_envelope.py, 2026-12-07, 2-core CPU under load, torch threads 1 and 2, seeds 3-5, 10-12
# and 20-22). Benign differences, worst over all: fast vs official max 7.1e-3, 99.9th percentile 1.1e-3, mean
# 2.5e-5; the official path alone, one caption at a time vs one batch, the same (7.1e-3, 1.1e-3, 2.5e-5); the
# official path at 2 threads vs 1, 4.5e-3, 7.7e-4, 2.2e-5. So a bound set from the envelope of the machine the
# test runs on (3x single-vs-batch, as before) moved with the machine: 3.2e-3 on one busy machine, where the
# fast path's max was 5.7e-3. The bounds are ~4x the worst benign value; the smallest bug tried (GroupNorm eps
# x10; output weights x1.001; guidance scale x1.01) gives max >= 7.3e-2, 99.9th >= 2.1e-2, mean >= 7.5e-4.
PIPELINE_BOUNDS = {"max": 3e-2, "p999": 5e-3, "mean": 1e-4}


def _diff_stats(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = (a.double() - b.double()).abs().flatten()
    return {"max": d.max().item(), "p999": d.quantile(0.999).item(), "mean": d.mean().item()}


def _within(stats: dict[str, float]) -> bool:
    return all(stats[k] <= bound for k, bound in PIPELINE_BOUNDS.items())


def test_pipeline_fast_matches_official_and_reuses_text_encodings(golden, golden_meta, gpt2_dir):
    """The golden base model through the whole pipeline (10 ancestral steps, s = 3), official vs fast.

    Free-running, this random-weight model amplifies rounding at a few pixels (the per-forward difference is
    <= 1e-5; one pixel of 36,864 moves by up to 7e-3), and by how much depends on the machine's kernels and
    thread count. The fast path is held within fixed bounds on the max, the 99.9th percentile and the mean
    (PIPELINE_BOUNDS); the official path's own batch-vs-one-by-one difference must lie within them too, and a
    1 % guidance-scale error must not. The 1e-4 trajectory bound is the golden test above."""
    prompts, seeds = ["a corgi", "an oil painting of a fox", "a red cube"], [3, 4, 5]
    official = GlidePipeline(build(golden, golden_meta, gpt2_dir, "sd/"))
    ref = official.sample_base(prompts, seeds, "cfg", 3.0, "ancestral", "10")
    one = torch.cat(
        [official.sample_base([p], [s], "cfg", 3.0, "ancestral", "10") for p, s in zip(prompts, seeds)]
    )
    envelope = _diff_stats(one, ref)
    assert _within(envelope), (
        f"the official path alone moved by {envelope}: the bounds do not fit this machine"
    )
    fast = GlidePipeline(copy.deepcopy(official.base), fast=FastPath(rows_per_call=2))
    assert isinstance(fast.forward_of(fast.base), FastForward)
    calls = []
    encode = fast.base.get_text_emb
    fast.base.get_text_emb = lambda *a: calls.append(1) or encode(*a)
    got = fast.sample_base(prompts, seeds, "cfg", 3.0, "ancestral", "10")
    stats = _diff_stats(got, ref)
    assert _within(stats), f"fast vs official {stats}, bounds {PIPELINE_BOUNDS} (official alone: {envelope})"
    assert len(calls) == 2  # conditional + unconditional
    again = fast.sample_base(prompts, seeds, "cfg", 3.03, "ancestral", "10")  # another setting, same captions
    assert len(calls) == 2
    off = _diff_stats(again, ref)  # a 1 % error in the guidance scale: outside every bound
    assert all(off[k] > 2 * bound for k, bound in PIPELINE_BOUNDS.items()), off
    assert fast.last_evals_per_image["base"] == official.last_evals_per_image["base"] == 20
    assert fast.fast_notes == [] and official.fast_notes == []


def test_compile_failure_falls_back_to_eager_with_a_note(monkeypatch):
    model = tiny_model(seed=3)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 900])
    tokens, mask = model.tokenizer.batch(["a red circle"] * 2, model.config.text_ctx)
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor: no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda *a, **k: broken)
    fwd = accelerate(model, "cpu", FastPath(compile=True))
    with pytest.warns(RuntimeWarning, match="torch.compile failed"), torch.no_grad():
        out = fwd(x, t, tokens=tokens, mask=mask)
    assert fwd.notes and "no C++ compiler found" in fwd.notes[0] and "second line" not in fwd.notes[0]
    assert maxdiff(out, ref) < 1e-5
    with torch.no_grad():  # later calls stay eager, without a second note
        fwd(x, t, tokens=tokens, mask=mask)
    assert len(fwd.notes) == 1


@pytest.mark.parametrize("prefix", ["sd/", "sd_up/", "sd_inpaint/"])
def test_channels_last_forwards_of_every_golden_model(prefix, golden, golden_meta, gpt2_dir):
    """channels_last keeps the weights' values; with either exact GroupNorm ("two-pass", the default, and
    statistics on an NCHW copy) every golden model's forward is within 1e-5 of the official code's, while
    PyTorch's own channels-last GroupNorm ("native") is only within 2e-5 (1.4e-5 measured on the base model)."""
    official = build(golden, golden_meta, gpt2_dir, prefix)
    if prefix == "sd/":
        x, t = T(golden, "fwd/x"), T(golden, "fwd/t")
        kwargs = dict(tokens=T(golden, "fwd/tokens"), mask=T(golden, "fwd/mask"))
        expected = T(golden, "fwd/out")
    elif prefix == "sd_up/":
        x, t = T(golden, "up/fwd_x"), torch.tensor([500])
        kwargs = dict(
            tokens=T(golden, "up/tokens"), mask=T(golden, "up/mask"), low_res=T(golden, "up/low_res")
        )
        expected = T(golden, "up/fwd_out")
    else:
        src, m = T(golden, "inp/source_image"), T(golden, "inp/mask")
        x, t = T(golden, "inp/fwd_x"), torch.tensor([999, 250])
        kwargs = dict(
            tokens=T(golden, "inp/tokens"),
            mask=T(golden, "inp/token_mask"),
            inpaint_image=(src * m).repeat(2, 1, 1, 1),
            inpaint_mask=m.repeat(2, 1, 1, 1),
        )
        expected = T(golden, "inp/fwd_out")
    for groupnorm, bound in (("two-pass", 1e-5), ("nchw", 1e-5), ("native", 2e-5)):
        fast = accelerate(copy.deepcopy(official), "cpu", FastPath(channels_last=True, groupnorm=groupnorm))
        conv = fast.model.input_blocks[0][0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert official.input_blocks[0][0].weight.is_contiguous()  # the copy was changed, not the original
        assert torch.equal(conv, official.input_blocks[0][0].weight)
        with torch.no_grad():
            out = fast(x, t, **kwargs)
        assert maxdiff(out, expected) < bound, groupnorm


@pytest.mark.parametrize("mode", ["two-pass", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_exact_channels_last_groupnorm_against_float64(mode, dtype):
    """The exact channels-last GroupNorms against GroupNorm in float64 (an independent answer) on activations
    whose mean is large against their spread, where the native channels-last kernel loses accuracy: equal
    within float rounding, channels-last in, channels-last out."""
    from glide.nn import GroupNorm32

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 64, 16, 16, generator=g) * 2 + 40 + torch.randn(1, 64, 1, 1, generator=g) * 5
    norm = GroupNorm32(64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=g))
        norm.bias.copy_(torch.randn(64, generator=g))
    expected = torch.nn.functional.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), 1e-5)
    norm.channels_last_mode = mode
    xin = x.to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = norm(xin)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    # fp32: a few ulps of outputs of size ~5 (native: 7.6e-4 here); fp16: the output's rounding (2^-9 at 4-8)
    bound = 2e-5 if dtype == torch.float32 else 4e-3
    reference = (
        expected
        if dtype == torch.float32
        else torch.nn.functional.group_norm(
            xin.double().contiguous(), 32, norm.weight.double(), norm.bias.double(), 1e-5
        )
    )
    assert maxdiff(got, reference) < bound
    norm.channels_last_mode = "native"  # an NCHW input never takes the channels-last paths
    assert torch.equal(norm(x), torch.nn.functional.group_norm(x, 32, norm.weight, norm.bias, 1e-5))


def test_two_pass_scale_shift_against_float64():
    """The folded scale-shift (GroupNorm, then * (1 + scale) + shift, in one addcmul) on channels-last input
    against the unfolded expression in float64; NCHW input takes the official expression unchanged."""
    from glide.nn import GroupNorm32

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 64, 8, 8, generator=g) * 3 + 7
    scale, shift = torch.randn(2, 64, 1, 1, generator=g), torch.randn(2, 64, 1, 1, generator=g)
    norm = GroupNorm32(64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=g))
        norm.bias.copy_(torch.randn(64, generator=g))
        gn = torch.nn.functional.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), 1e-5)
        expected = gn * (1 + scale.double()) + shift.double()
        norm.channels_last_mode = "two-pass"
        got = norm.scale_shift(x.contiguous(memory_format=torch.channels_last), scale, shift)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert maxdiff(got, expected) < 2e-5
        official = norm(x) * (1 + scale) + shift
        assert torch.equal(norm.scale_shift(x, scale, shift), official)
