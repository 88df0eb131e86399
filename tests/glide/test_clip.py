"""Tests for glide.clip: config, tokenizer, encoders, cond_fn and checkpoint loading.

Golden values come from the official glide-text2im code: golden_small.npz / .json and
glide_state_dict_spec.json in tests/data, read through the fixtures of tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide.clip import (
    ClipConfig,
    ClipTokenizer,
    ImageEncoder,
    TextEncoder,
    create_clip_model,
    default_config_path,
    describe_state_dict,
    load_clip_state_dicts,
)
from glide.clip.encoders import attention_bias

GOLDEN_CONFIG_KEY = "clip (sd_clip_text/, sd_clip_image/)"
TOL = 1e-5


def _sub_state_dict(golden, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: torch.from_numpy(golden[k]) for k in golden.files if k.startswith(prefix)}


@pytest.fixture(scope="module")
def golden_model(golden, golden_meta):
    config = ClipConfig.from_dict(golden_meta["configs"][GOLDEN_CONFIG_KEY])
    model = create_clip_model(config=config, device="cpu")
    load_clip_state_dicts(
        model, _sub_state_dict(golden, "sd_clip_image/"), _sub_state_dict(golden, "sd_clip_text/")
    )
    return model.eval()


def _tiny_config(**overrides) -> ClipConfig:
    options = dict(
        n_embd=16,
        n_head_state_text=8,
        n_head_text=2,
        n_xf_blocks_text=1,
        n_head_state_image=8,
        n_head_image=2,
        n_xf_blocks_image=1,
        image_size=16,
        patch_size=4,
        n_timesteps=10,
    )
    options.update(overrides)
    return ClipConfig(**options)


# Config ------------------------------------------------------------------------------------------------


def test_packaged_yaml_is_the_official_preset():
    config = ClipConfig.from_yaml(default_config_path())
    assert config == ClipConfig.official()
    assert config.text_width == 512 and config.image_width == 768
    assert (config.n_vocab, config.max_text_len, config.n_embd, config.logit_scale) == (65536, 77, 512, 100.0)


def test_official_preset_matches_the_official_options(state_dict_spec):
    for name in ("clip/image-enc", "clip/text-enc"):
        assert ClipConfig.official().to_dict() == state_dict_spec[name]["options"]


def test_config_rejects_unknown_and_invalid_options(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("image_size: 64\nn_layers: 3\n")
    with pytest.raises(ValueError, match="n_layers"):
        ClipConfig.from_yaml(path)
    with pytest.raises(ValueError, match="patch_size"):
        ClipConfig(image_size=30, patch_size=4)
    with pytest.raises(TypeError, match="n_head_text"):
        ClipConfig(n_head_text=True)
    with pytest.raises(ValueError, match="beta_schedule"):
        ClipConfig(beta_schedule="cosine")
    with pytest.raises(ValueError, match="n_vocab"):
        ClipConfig(n_vocab=1000)


def test_config_yaml_roundtrip(tmp_path):
    config = _tiny_config(logit_scale=50)
    config.to_yaml(tmp_path / "sub" / "c.yaml")
    assert ClipConfig.from_yaml(tmp_path / "sub" / "c.yaml") == config
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.yaml"]  # no temporary left behind


# Tokenizer ---------------------------------------------------------------------------------------------


def test_tokens_and_lengths_match_golden(golden, golden_meta):
    tokens, lens = ClipTokenizer().encode_batch(golden_meta["prompts"], 77)
    assert len(golden_meta["prompts"]) == 21
    np.testing.assert_array_equal(tokens.numpy(), golden["tok/clip_tokens"])
    np.testing.assert_array_equal(lens.numpy(), golden["tok/clip_len"])
    tokens, lens = ClipTokenizer().encode_batch(golden_meta["clip_prompts"], 77)
    np.testing.assert_array_equal(tokens.numpy(), golden["clip/text_tokens"])
    np.testing.assert_array_equal(lens.numpy(), golden["clip/text_len"])


def test_tokenizer_padding_convention():
    tok = ClipTokenizer()
    row, n = tok.padded_tokens_and_len(list(range(1, 101)), 77)
    assert n == 77 and len(row) == 77
    assert row[0] == 49406 and row[1:76] == list(range(1, 76)) and row[76] == 49407
    row, n = tok.padded_tokens_and_len(tok.encode(""), 77)
    assert n == 2 and row[:2] == [49406, 49407] and set(row[2:]) == {0}
    assert tok.encode("<|endoftext|>") == [49407]
    assert tok.encode("<|startoftext|>a") == [49406, 320]
    assert tok.encode("A  Corgi") == tok.encode("a corgi")


# State dict layout and parameter counts ------------------------------------------------------------------


def _meta_model(config: ClipConfig):
    return create_clip_model(config=config, device=torch.device("meta"))


def test_official_parameter_counts():
    model = _meta_model(ClipConfig.official())
    assert sum(p.numel() for p in model.image_encoder.parameters()) == 86_443_776
    assert sum(p.numel() for p in model.text_encoder.parameters()) == 71_679_488


def test_official_state_dict_names_and_shapes(state_dict_spec):
    model = _meta_model(ClipConfig.official())
    for name, encoder in (("clip/image-enc", model.image_encoder), ("clip/text-enc", model.text_encoder)):
        expected = [(k, list(shape)) for k, shape, _ in state_dict_spec[name]["entries"]]
        got = [(k, list(v.shape)) for k, v in encoder.state_dict().items()]
        assert got == expected  # same names, shapes and order
        assert all(v.dtype == torch.float32 for v in encoder.state_dict().values())
        assert sum(p.numel() for p in encoder.parameters()) == state_dict_spec[name]["total_params"]


def test_golden_state_dict_layout(golden_meta):
    config = ClipConfig.from_dict(golden_meta["configs"][GOLDEN_CONFIG_KEY])
    model = _meta_model(config)
    for prefix, encoder in (("sd_clip_image/", model.image_encoder), ("sd_clip_text/", model.text_encoder)):
        expected = [
            (k, list(s)) for k, s in golden_meta["state_dicts"][prefix]["entries_in_state_dict_order"]
        ]
        assert [(k, list(v.shape)) for k, v in encoder.state_dict().items()] == expected


# Golden numerics -----------------------------------------------------------------------------------------


def _max_err(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().numpy().astype(np.float64) - b.astype(np.float64)).max())


def test_text_embeddings_match_golden(golden, golden_meta, golden_model):
    tokens, lens = golden_model.encode_prompts(golden_meta["clip_prompts"])
    with torch.no_grad():
        raw = golden_model.text_encoder(tokens, lens)
        z = golden_model.text_embeddings(golden_meta["clip_prompts"])
    assert _max_err(raw, golden["clip/text_z_raw"]) < TOL
    assert _max_err(z, golden["clip/text_z"]) < TOL


def test_image_embeddings_match_golden(golden, golden_model):
    x = torch.from_numpy(golden["clip/image_x"])
    t = torch.from_numpy(golden["clip/image_t"])
    with torch.no_grad():
        raw = golden_model.image_encoder((x + 1) * 127.5, t)
        z = golden_model.image_embeddings(x, t)
    assert _max_err(raw, golden["clip/image_z_raw"]) < TOL
    assert _max_err(z, golden["clip/image_z"]) < TOL


def test_cond_fn_gradient_matches_golden(golden, golden_model):
    x = torch.from_numpy(golden["clip/image_x"])
    t = torch.from_numpy(golden["clip/image_t"])
    cond_fn = golden_model.cond_fn(["an oil painting of a corgi"] * 2, 3.0)
    # The sampler passes the model kwargs too; cond_fn must accept and ignore them.
    grad = cond_fn(x, t, tokens=torch.zeros(2, 128, dtype=torch.long), mask=None)
    assert grad.shape == x.shape and not grad.requires_grad and not x.requires_grad
    assert _max_err(grad, golden["clip/cond_fn_grad"]) < TOL
    assert all(p.grad is None for p in golden_model.parameters())
    # grad_scale enters linearly and can be overridden per call.
    torch.testing.assert_close(cond_fn(x, t, grad_scale=6.0), 2 * grad, rtol=1e-6, atol=0)


def test_logit_scale_is_float32_exp_of_log_100():
    model = _meta_model(ClipConfig.official())
    assert model.logit_scale.dtype == torch.float32
    model = create_clip_model(config=_tiny_config(), device="cpu")
    value = float(torch.exp(model.logit_scale))
    # exp(float32(log 100)) correctly rounded to float32; glide_state_dict_spec.json records the same value
    expected = float(np.float32(np.exp(np.float64(np.float32(np.log(100.0))))))
    assert value == expected == 100.00000762939453
    assert "logit_scale" not in model.image_encoder.state_dict() and "logit_scale" not in model.state_dict()


@pytest.mark.gpu
def test_cuda_float32_matches_golden(golden, golden_meta, golden_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = golden_model.to("cuda")
    try:
        x = torch.from_numpy(golden["clip/image_x"]).cuda()
        t = torch.from_numpy(golden["clip/image_t"]).cuda()
        with torch.no_grad():
            z_text = model.text_embeddings(golden_meta["clip_prompts"]).cpu()
            assert _max_err(z_text, golden["clip/text_z"]) < TOL
            assert _max_err(model.image_embeddings(x, t).cpu(), golden["clip/image_z"]) < TOL
        grad = model.cond_fn(["an oil painting of a corgi"] * 2, 3.0)(x, t)
        assert _max_err(grad.cpu(), golden["clip/cond_fn_grad"]) < TOL
    finally:
        model.to("cpu")


# Behaviour on tiny models --------------------------------------------------------------------------------


def test_cond_fn_equals_finite_difference_of_the_loss():
    torch.manual_seed(0)
    model = create_clip_model(config=_tiny_config(), device="cpu").double()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    t = torch.tensor([3, 9])
    prompts = ["a corgi", "a cat"]
    grad = model.cond_fn(prompts, 2.0)(x, t)

    def loss(xx):
        with torch.no_grad():
            z_text = model.text_embeddings(prompts)
            return float(torch.exp(model.logit_scale) * (z_text * model.image_embeddings(xx, t)).sum())

    direction = torch.randn_like(x)
    eps = 1e-5
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    assert abs(2.0 * numeric - float((grad * direction).sum())) < 1e-6 * max(1.0, abs(numeric))


def test_text_encoder_is_causal_and_pools_at_text_len():
    model = create_clip_model(config=_tiny_config(), device="cpu")
    tokens = torch.randint(1, 49000, (1, 77))
    other = tokens.clone()
    other[0, 5:] = torch.randint(1, 49000, (72,))
    lens = torch.tensor([5])
    with torch.no_grad():
        a = model.text_encoder(tokens, lens)
        b = model.text_encoder(other, lens)
        c = model.text_encoder(other, torch.tensor([6]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_attention_bias_layout():
    bias = attention_bias(77, causal=True)
    assert bias.shape == (96, 96)
    allowed = bias == 0
    assert torch.equal(allowed[:77, :77], torch.ones(77, 77, dtype=torch.bool).tril())
    assert not allowed[77:].any() and not allowed[:, 77:].any()
    bias = attention_bias(257, causal=False)
    assert bias.shape == (288, 288) and (bias[:257, :257] == 0).all() and (bias[:, 257:] == -1e10).all()


def test_init_is_deterministic_and_finite():
    config = _tiny_config()
    a = create_clip_model(config=config, device="cpu", generator=torch.Generator().manual_seed(5))
    b = create_clip_model(config=config, device="cpu", generator=torch.Generator().manual_seed(5))
    c = create_clip_model(config=config, device="cpu", generator=torch.Generator().manual_seed(6))
    differ = 0
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.isfinite(p).all(), name
        assert torch.equal(p, q), name
        differ += not torch.equal(p, r)
    # every weight and embedding is random (LayerNorms start at (1, 0), Affine biases at 0)
    n_random = sum(n.endswith((".w", "w_voc", "w_pos", "w_t", "patch_proj")) for n, _ in a.named_parameters())
    assert differ == n_random > 0
    f_1 = a.image_encoder.blocks["block_0"].f_mlp.f_1.w  # declared std sqrt(2 / (4 * width))
    assert abs(float(f_1.detach().std()) - (2 / (4 * 16)) ** 0.5) < 0.03


def test_zero_key_bias_grad_only_touches_bias_gradients():
    model = create_clip_model(config=_tiny_config(), device="cpu")
    x = torch.rand(2, 3, 16, 16) * 255
    t = torch.tensor([0, 9])
    model.image_encoder(x, t).square().sum().backward()
    attn = model.image_encoder.blocks["block_0"].f_attn
    for affine in (attn.f_q, attn.f_v):
        g = affine.b.grad.chunk(3)
        assert torch.equal(g[1], torch.zeros_like(g[1])) and g[0].abs().sum() > 0
    assert attn.f_c.b.grad.chunk(3)[1].abs().sum() > 0  # f_c is not filtered


def test_image_encoder_rejects_bad_timesteps():
    model = create_clip_model(config=_tiny_config(), device="cpu")
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(TypeError, match="timestep_map"):
        model.image_embeddings(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        model.image_embeddings(x, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="16, 16"):
        model.image_embeddings(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    z = model.image_embeddings(x, torch.tensor(4))  # a scalar t is broadcast over the batch
    torch.testing.assert_close(z, model.image_embeddings(x, torch.tensor([4, 4])))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2))


# Checkpoint loading errors -------------------------------------------------------------------------------


def test_wrong_checkpoints_give_clear_errors():
    model = create_clip_model(config=_tiny_config(), device="cpu")
    image_sd = model.image_encoder.state_dict()
    text_sd = model.text_encoder.state_dict()
    unet_sd = {"time_embed.0.weight": torch.zeros(4, 4), "input_blocks.0.0.weight": torch.zeros(4, 3, 3, 3)}
    assert describe_state_dict(image_sd)[0] == "clip-image"
    assert describe_state_dict(text_sd)[0] == "clip-text"
    assert describe_state_dict(unet_sd)[0] == "unet"
    with pytest.raises(ValueError, match="swapped"):
        load_clip_state_dicts(model, text_sd, image_sd)
    with pytest.raises(ValueError, match=r"image_sd is a GLIDE diffusion UNet.*'input_blocks\.0\.0\.weight'"):
        load_clip_state_dicts(model, unet_sd, text_sd)
    with pytest.raises(ValueError, match="text_sd is a GLIDE diffusion UNet.*clip/text-enc"):
        load_clip_state_dicts(model, image_sd, unet_sd)
    with pytest.raises(ValueError, match="whole ClipModel"):
        load_clip_state_dicts(model, model.state_dict(), text_sd)
    other = create_clip_model(config=_tiny_config(n_head_image=1), device="cpu")
    with pytest.raises(RuntimeError, match="image-encoder state dict does not fit.*ClipConfig.official"):
        load_clip_state_dicts(other, image_sd, text_sd)
    assert load_clip_state_dicts(model, image_sd, text_sd) is model


def test_encoders_load_official_state_dicts_directly(golden, golden_meta):
    config = ClipConfig.from_dict(golden_meta["configs"][GOLDEN_CONFIG_KEY])
    text = TextEncoder(config.n_vocab, config.max_text_len, config.n_embd, config.n_head_text, 2, 32)
    image = ImageEncoder(64, 4, config.n_embd, config.n_head_image, 2, 32, n_timestep=1000)
    text.load_state_dict(_sub_state_dict(golden, "sd_clip_text/"), strict=True)
    image.load_state_dict(_sub_state_dict(golden, "sd_clip_image/"), strict=True)
