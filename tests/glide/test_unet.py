"""Full-size architectures: names, shapes, fp16 dtypes and parameter counts of the official checkpoints."""

from __future__ import annotations

import pytest
import torch

from glide.config import ModelConfig, preset
from glide.nn import set_attention_impl
from glide.unet import create_model

from .helpers import tiny_config, tiny_model

# Stated in the GLIDE model card / glide_facts.md; independent of this code.
PARAM_COUNTS = {
    "base": 385_030_726,
    "upsample": 398_361_286,
    "base-inpaint": 385_037_638,
    "upsample-inpaint": 398_368_198,
}


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_counts(name):
    # A 50,255-word vocabulary gives the GPT-2 table's 50,257 rows without needing the BPE files.
    cfg = preset(name).replace(tokenizer={"kind": "words", "vocab": [str(i) for i in range(50255)]})
    model = create_model(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_state_dict_matches_official_spec(name, state_dict_spec, gpt2_dir):
    spec = state_dict_spec[name]
    cfg = ModelConfig.from_dict(spec["options"] | {"tokenizer": {"kind": "gpt2", "path": str(gpt2_dir)}})
    model = create_model(cfg, device="meta")
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (n, s) for n, s, _ in spec["entries"]
    ]
    model.convert_to_fp16()
    got = [str(v.dtype).removeprefix("torch.") for v in model.state_dict().values()]
    assert got == [d for _, _, d in spec["entries"]]
    fp16 = sum(v.numel() for v in model.state_dict().values() if v.dtype == torch.float16)
    assert fp16 == spec["fp16_params_after_convert_to_fp16"]


def test_fresh_model_outputs_zero():
    model = create_model(tiny_config())
    tokens, mask = model.tokenizer.batch(["a red circle"], 12)
    out = model(torch.randn(1, 3, 32, 32), torch.tensor([10]), tokens=tokens, mask=mask)
    assert out.shape == (1, 6, 32, 32) and torch.count_nonzero(out) == 0


def test_sdpa_equals_einsum_in_fp32():
    model = tiny_model()
    tokens, mask = model.tokenizer.batch(["a red circle", ""], 12)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([999, 3])
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)
        got = set_attention_impl(model, "sdpa")(x, t, tokens=tokens, mask=mask)
    assert (ref - got).abs().max() < 1e-5


def test_sdpa_takes_a_fused_kernel_not_the_math_fallback():
    """SDPA given transposed (non-unit-stride) q/k/v runs its unfused math path, which on an H200 cost a third
    of a full-size forward; every attention layer of the UNet and the text encoder must reach a fused kernel."""
    from torch.profiler import ProfilerActivity, profile

    model = set_attention_impl(tiny_model(), "sdpa")
    tokens, mask = model.tokenizer.batch(["a red circle", ""], 12)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(torch.randn(2, 3, 32, 32), torch.tensor([999, 3]), tokens=tokens, mask=mask)
    calls = {e.key: e.count for e in prof.key_averages()}
    n_attention = calls.get("aten::scaled_dot_product_attention", 0)
    assert n_attention >= 2  # the text encoder's layer and the UNet's
    assert calls.get("aten::_scaled_dot_product_attention_math", 0) == 0, calls
    assert calls.get("aten::_scaled_dot_product_flash_attention_for_cpu", 0) == n_attention


def test_text_emb_can_be_passed_once():
    model = tiny_model()
    tokens, mask = model.tokenizer.batch(["a blue square"], 12)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    with torch.no_grad():
        a = model(x, t, tokens=tokens, mask=mask)
        b = model(x, t, text_emb=model.get_text_emb(tokens, mask))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "bad", [dict(channel_mult="1,2"), dict(noise_schedule="cosine"), dict(num_channels=40)]
)
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        tiny_config(**bad)


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown model option"):
        ModelConfig.from_dict({"image_size": 64, "num_chanels": 3})


def test_output_block_stays_fp32_under_bf16_autocast():
    """eps feeds pred_xstart with a ~1e4 gain at t = 999, so the output block must not run in bf16."""
    model = tiny_model()
    tokens, mask = model.tokenizer.batch(["a red circle"], 12)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([999])
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x, t, tokens=tokens, mask=mask)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
