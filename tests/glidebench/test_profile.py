"""The throughput profiler: FLOP counts against hand counts, timing mechanics and the suite on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from glide.text import Transformer
from glidebench.profile import Case, count_flops, profile_call, time_fn
from glidebench.suites.throughput import cases, run_throughput


def test_flops_of_text_transformer_match_hand_count():
    """Per layer: qkv 2nw(3w) + QK^T 2n^2w + AV 2n^2w + proj 2nw^2 + MLP 2nw(4w)*2 = 24nw^2 + 4n^2w."""
    b, n, w, layers = 3, 10, 32, 2
    xf = Transformer(w, layers, heads=4)
    x = torch.randn(b, n, w)
    hand = b * layers * (24 * n * w * w + 4 * n * n * w)
    assert count_flops(lambda: xf(x)) == hand


def test_flops_of_a_convolution_match_hand_count():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 12, 12)
    assert count_flops(lambda: conv(x)) == 2 * 2 * 8 * 16 * 9 * 12 * 12


def test_time_fn_warms_up_and_repeats():
    calls = []
    times = time_fn(lambda: calls.append(1), "cpu", warmup=3, repeats=4)
    assert len(calls) == 7 and len(times) == 4 and all(t >= 0 for t in times)


def test_case_validation():
    with pytest.raises(ValueError, match="dtype"):
        Case("base", 1, dtype="fp8")
    with pytest.raises(ValueError, match="attention"):
        Case("base", 1, attention="flash")


def test_profile_call_row():
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(4, 16)
    row = profile_call(Case("lin", 4), lambda: lin(x), torch.device("cpu"), 4, warmup=1, repeats=3)
    assert row["gflop_per_eval"] == pytest.approx(2 * 4 * 16 * 16 / 1e9)
    assert row["ms_per_eval"] > 0 and row["utilisation"] is None  # no peak FLOP/s table entry for CPUs


def test_throughput_suite_on_tiny_models(tmp_path):
    case_list = cases(["base", "upsample", "clip-step"], [1, 2], ["fp32", "fp16"], ["einsum", "sdpa"])
    case_list.append(Case("base", 1, dtype="bf16"))
    table = run_throughput(case_list, tmp_path, size="tiny", warmup=0, repeats=1, base_steps=10)
    ok = table[table["error"].isna()] if "error" in table else table
    # fp16 (the official conversion) needs CUDA: those rows carry an error instead of a crash.
    assert set(table[table["dtype"] == "fp16"]["error"].dropna().str.contains("CUDA|fp32")) == {True}
    assert len(ok) == 3 * 2 * 2 + 1
    assert (ok["ms_per_eval"] > 0).all() and (ok["gflop_per_eval"] > 0).all()
    rows = json.loads((tmp_path / "throughput.json").read_text())
    assert len(rows) == len(table)
    base = ok[(ok["model"] == "base") & (ok["dtype"] == "fp32")]
    # The same model's FLOPs do not depend on the attention implementation.
    assert base.groupby("batch_size")["gflop_per_eval"].nunique().eq(1).all()


def test_trace_export(tmp_path):
    table = run_throughput([Case("base", 1)], tmp_path, size="tiny", warmup=0, repeats=1, trace=True)
    trace = tmp_path / table.loc[0, "trace"].split("/")[-1]
    assert trace.exists() and json.loads(trace.read_text())["traceEvents"]


def test_profile_run_models_measures_each_generator_at_the_runs_settings():
    """A run's --profile: base (2 x chunk rows), upsampler (chunk rows, the run's base resolution as low-res
    input) and CLIP step, labelled with the run's chunk size / dtype / attention, left in that attention."""
    from glide.nn import set_attention_impl
    from glide.unet import create_model
    from glidebench.profile import bind_unet, profile_run_models
    from glidebench.suites.throughput import _clip, _unet_config

    base, up = create_model(_unet_config("base", "tiny")), create_model(_unet_config("upsample", "tiny"))
    clip = _clip("tiny", torch.device("cpu"))
    rows = profile_run_models(base, up, clip, 2, "fp32", "sdpa", torch.device("cpu"), base_resolution=32)
    assert [r["model"] for r in rows] == ["base", "upsample", "clip-step"]
    assert all(r["batch_size"] == 2 and r["attention"] == "sdpa" and r["ms_per_eval"] > 0 for r in rows)
    assert all(m.attention_impl == "sdpa" for m in up.modules() if hasattr(m, "attention_impl"))
    # FLOPs are counted on the einsum path: the base row equals a direct count of its 4-row evaluation
    call, _ = bind_unet(set_attention_impl(base, "einsum").eval(), Case("base", 2), torch.device("cpu"))
    with torch.no_grad():
        assert rows[0]["gflop_per_eval"] == pytest.approx(count_flops(call) / 1e9)


def test_cuda_device_description_records_tf32(monkeypatch):
    """fp32 on a recent GPU means TF32 convolutions unless switched off; the provenance says which."""
    from glidebench.provenance import device_description

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda idx=None: "NVIDIA H200")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:  # torch's backend flags are properties that monkeypatch cannot undo
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False
        assert device_description("cuda") == "cuda:0 NVIDIA H200 (TF32 convolutions on, matmul off)"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert "TF32" not in device_description("cpu")


def test_profile_of_a_fast_run_times_the_fast_forward(monkeypatch):
    """--profile on a --fast run measures the UNets through glide.fast's forward (the CLIP step as it is)."""
    import glide.fast
    from glide.unet import create_model
    from glidebench.profile import profile_run_models
    from glidebench.suites.throughput import _clip, _unet_config

    calls = []
    original = glide.fast.FastForward.__call__
    monkeypatch.setattr(
        glide.fast.FastForward, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    base, clip = create_model(_unet_config("base", "tiny")), _clip("tiny", torch.device("cpu"))
    rows = profile_run_models(base, None, clip, 2, "fp32", "sdpa", torch.device("cpu"), fast=True, repeats=2)
    assert [(r["model"], r["fast"]) for r in rows] == [("base", True), ("clip-step", True)]
    assert len(calls) == 1 + 2  # warm-up + repeats, base only
    plain = profile_run_models(
        create_model(_unet_config("base", "tiny")), None, None, 2, "fp32", "sdpa", torch.device("cpu")
    )
    assert plain[0]["fast"] is False and len(calls) == 3
