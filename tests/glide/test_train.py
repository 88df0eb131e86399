"""Tests of glide.train: hybrid-loss pieces against closed forms, inpaint channel surgery, exact resume,
classifier-free dropout, checkpoints and exports, and the contrastive CLIP loss."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from glide.checkpoints import load_model
from glide.diffusion.gaussian import create_gaussian_diffusion
from glide.train import data as D
from glide.train.export import load_trained_clip
from glide.train.loop import Trainer, inpaint_from_base
from glide.train.losses import (
    contrastive_loss,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    normal_kl,
    vb_terms_bpd,
)
from glide.train.recipes import Recipe, resolve_factory
from glide.unet import create_model

TINY_MODEL = {
    "image_size": 8,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1",
    "num_head_channels": 32,
    "attention_resolutions": "4",
    "dropout": 0.1,
    "text_ctx": 6,
    "xf_width": 32,
    "xf_layers": 1,
    "xf_heads": 2,
    "diffusion_steps": 50,
    "tokenizer": {"kind": "words", "vocab_from": "glide.train.data:solid_vocabulary"},
}


def tiny_recipe(**changes) -> Recipe:
    base = {
        "kind": "base",
        "model": TINY_MODEL,
        "dataset": "glide.train.data:SolidColourSet",
        "dataset_kwargs": {"size": 8},
        "batch_size": 4,
        "max_steps": 6,
        "log_every": 1,
        "checkpoint_every_minutes": 0,
        "warmup_steps": 2,
        "lr": 1e-3,
    }
    return Recipe.from_dict(base | changes)


def tiny_clip_recipe(**changes) -> Recipe:
    model = {
        "logit_scale": 10.0,
        "n_timesteps": 50,
        "image_size": 8,
        "patch_size": 4,
        "n_vocab": 49408,
        "max_text_len": 8,
        "n_embd": 16,
        "n_head_state_text": 16,
        "n_head_text": 1,
        "n_xf_blocks_text": 1,
        "n_head_state_image": 16,
        "n_head_image": 1,
        "n_xf_blocks_image": 1,
    }
    base = {
        "kind": "clip",
        "model": model,
        "dataset": "glide.train.data:SolidColourSet",
        "dataset_kwargs": {"size": 8},
        "batch_size": 12,
        "lr": 3e-3,
        "max_steps": 30,
        "checkpoint_every_minutes": 0,
        "ema_rate": 0.9,
    }
    return Recipe.from_dict(base | changes)


# -- loss pieces against closed forms ------------------------------------------------------------------------


def test_normal_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = (
        torch.randn(50, generator=g, dtype=torch.float64),
        torch.randn(50, generator=g, dtype=torch.float64),
    )
    lv1, lv2 = (
        torch.randn(50, generator=g, dtype=torch.float64),
        torch.randn(50, generator=g, dtype=torch.float64),
    )
    got = normal_kl(m1, lv1, m2, lv2).numpy()
    s1, s2 = np.exp(0.5 * lv1.numpy()), np.exp(0.5 * lv2.numpy())
    closed = np.log(s2 / s1) + (s1**2 + (m1.numpy() - m2.numpy()) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(got, closed, rtol=1e-10, atol=1e-12)
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(
        normal(m1, torch.from_numpy(s1)), normal(m2, torch.from_numpy(s2))
    )
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-10, atol=1e-12)
    assert normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-15


@pytest.mark.parametrize(("mean", "log_scale"), [(0.0, math.log(0.1)), (0.7, math.log(0.02)), (-0.95, 0.0)])
def test_discretized_log_likelihood_sums_to_one_over_256_bins(mean, log_scale):
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # the 256 8-bit levels in [-1, 1]
    ll = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    # an interior bin equals the Gaussian mass on [x - 1/255, x + 1/255] (tanh CDF approximation: ~1e-3)
    k = 128
    sd = math.exp(log_scale)
    from scipy.stats import norm

    exact = norm.cdf((x[k] + 1 / 255 - mean) / sd) - norm.cdf((x[k] - 1 / 255 - mean) / sd)
    assert ll[k].exp().item() == pytest.approx(exact, rel=2e-2, abs=1e-4)


def test_vb_term_is_kl_for_t_positive_and_nll_at_t_zero_and_trains_only_variance():
    diffusion = create_gaussian_diffusion(50, "squaredcos_cap_v2")
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 10, 49])
    x_t = diffusion.q_sample(x0, t, noise)
    # with the true noise and v chosen so that the model's variance is the posterior's, KL is 0 for t > 0
    var_min = torch.from_numpy(diffusion.posterior_log_variance_clipped)[t].float().view(-1, 1, 1, 1)
    model_out = torch.cat([noise, -torch.ones_like(noise)], 1)  # v = -1 -> log var = min_log
    vb = vb_terms_bpd(diffusion, model_out, x0, x_t, t)
    assert torch.allclose(vb[1:], torch.zeros(3), atol=1e-4), vb
    assert vb[0] > 0  # the decoder NLL in bits/dim
    assert var_min.shape[0] == 4
    # stop-gradient: the VLB term's gradient reaches v but not eps
    out = torch.cat([noise + 0.1, torch.zeros_like(noise)], 1).requires_grad_(True)
    terms = hybrid_loss(diffusion, out, x0, x_t, t, noise)
    (grad,) = torch.autograd.grad(terms["vb"].sum(), out)
    assert grad[:, :3].abs().max() == 0 and grad[:, 3:].abs().max() > 0
    (grad,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert grad[:, 3:].abs().max() == 0 and grad[:, :3].abs().max() > 0
    # lambda * T scaling: with T = 50 and lambda = 0.001 the added term is 0.05 * L_t
    base = vb_terms_bpd(diffusion, torch.cat([(noise + 0.1), torch.zeros_like(noise)], 1), x0, x_t, t)
    assert torch.allclose(terms["vb"].detach(), base * 0.05, rtol=1e-5)
    assert torch.allclose(terms["loss"], terms["mse"] + terms["vb"])


def test_contrastive_loss_closed_forms():
    n = 5
    z = torch.eye(n)
    # identical embeddings for all images and captions: uniform softmax, loss = log n
    same = torch.ones(n, n) / math.sqrt(n)
    assert contrastive_loss(same, same, 1.0).item() == pytest.approx(math.log(n), rel=1e-6)
    # perfectly aligned one-hot embeddings at scale s: loss = log(1 + (n-1) e^{-s})
    s = 3.0
    assert contrastive_loss(z, z, s).item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-s)), rel=1e-6)
    # duplicate captions are mutual positives: soft targets spread over both columns (direct numpy form)
    g = torch.Generator().manual_seed(0)
    zi = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    zt = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=1)
    logits = (zi @ zt.t()).double().numpy() * s

    def log_softmax(a):
        return a - np.log(np.exp(a).sum(1, keepdims=True))

    target = np.array([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]])
    want = 0.5 * (
        -(target * log_softmax(logits)).sum(1).mean() - (target * log_softmax(logits.T)).sum(1).mean()
    )
    assert contrastive_loss(zi, zt, s, ["a", "a", "b"]).item() == pytest.approx(want, rel=1e-5)
    assert contrastive_loss(zi, zt, s, ["a", "c", "b"]).item() == pytest.approx(
        contrastive_loss(zi, zt, s).item()
    )


# -- data helpers --------------------------------------------------------------------------------------------


def test_cfg_dropout_rate_and_empty_caption_is_all_padding():
    g = torch.Generator().manual_seed(0)
    n = 20000
    out = D.drop_captions(["a red image"] * n, 0.2, g)
    rate = sum(c == "" for c in out) / n
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)  # 4 standard errors
    assert D.drop_captions(["x"] * 100, 0.0, g) == ["x"] * 100
    model = create_model(Trainer(tiny_recipe(), None, progress=False).config)
    tokens, mask = model.tokenizer.batch(["", "a red image"], 6)
    end = model.tokenizer.n_vocab - 1
    assert tokens[0].tolist() == [end] * 6 and not mask[0].any()
    assert mask[1].tolist() == [True] * 3 + [False] * 3


def test_erase_masks_and_low_res_input():
    g = torch.Generator().manual_seed(0)
    m = D.erase_masks(64, 16, g, 0.25, 0.5, 2)
    assert m.shape == (64, 1, 16, 16) and set(m.unique().tolist()) == {0.0, 1.0}
    erased = 1 - m.mean(dim=(1, 2, 3))
    # one rectangle erases at least 4x4 of 16x16; two erase at most 2 * 8x8
    assert (erased >= 16 / 256 - 1e-6).all() and (erased <= 128 / 256 + 1e-6).all()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    low = D.low_res_input(x, 8, g)
    assert low.shape == (2, 3, 8, 8)
    levels = (low + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the 8-bit grid
    ref = x.reshape(2, 3, 8, 2, 8, 2).mean(dim=(3, 5))
    assert (low - ref).abs().max() <= 1 / 127.5 + 1e-6
    blurred = D.low_res_input(x, 8, torch.Generator().manual_seed(0), blur_prob=1.0)
    assert blurred.std() < low.std()


def test_step_generators_depend_only_on_seed_and_step():
    a = torch.randn(5, generator=D.step_generator(3, 17))
    b = torch.randn(5, generator=D.step_generator(3, 17))
    c = torch.randn(5, generator=D.step_generator(3, 18))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- recipes -------------------------------------------------------------------------------------------------


def test_recipe_validation_and_factory_resolution(tmp_path):
    data = "glide.train.data:SolidColourSet"
    with pytest.raises(ValueError, match="unknown recipe key"):
        Recipe.from_dict({"kind": "base", "model": {}, "dataset": data, "learning_rate": 1})
    with pytest.raises(ValueError, match="kind"):
        Recipe.from_dict({"kind": "decoder", "model": {}, "dataset": data})
    with pytest.raises(ValueError, match="base_checkpoint"):
        Recipe.from_dict({"kind": "inpaint", "model": {}, "dataset": data})
    with pytest.raises(ValueError, match="package.module:callable"):
        resolve_factory("glide.train.data.SolidColourSet")
    with pytest.raises(ValueError, match="no attribute"):
        resolve_factory("glide.train.data:Nope")
    assert resolve_factory("glide.train.data:SolidColourSet") is D.SolidColourSet
    path = tmp_path / "r.json"
    path.write_text(json.dumps(tiny_recipe().to_dict()))
    assert Recipe.load(path) == tiny_recipe()


def test_a_recipe_must_name_its_dataset(tmp_path):
    """glide has no default dataset (a default would name a benchmark package above glide)."""
    recipe = tiny_recipe().to_dict()
    del recipe["dataset"]
    with pytest.raises(ValueError, match=r"recipe lacks the required key\(s\) \['dataset'\]"):
        Recipe.from_dict(recipe)
    path = tmp_path / "no-dataset.json"
    path.write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"no-dataset\.json: recipe lacks .*'dataset'"):
        Recipe.load(path)
    with pytest.raises(TypeError, match="dataset"):
        Recipe(kind="base", model={})  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="'package.module:callable'"):
        Recipe.from_dict(recipe | {"dataset": "glide.train.data.SolidColourSet"})


def test_shipped_recipes_parse_and_name_their_dataset():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "recipes"
    files = sorted(root.glob("*.json"))
    assert files, "no recipes/*.json"
    for f in files:
        data = json.loads(f.read_text())
        assert "dataset" in data, f"{f.name} must give 'dataset' explicitly"
        assert Recipe.load(f).dataset == data["dataset"]


def test_recorded_recipes_read_back_unchanged():
    """The recipes recorded in the shipped model cards (and so in their fingerprints) read back to the same
    values: making ``dataset`` required changed no recorded recipe."""
    from pathlib import Path

    cards = sorted((Path(__file__).resolve().parents[2] / "glidebench" / "assets" / "models").glob("*.json"))
    recorded = [json.loads(c.read_text()).get("recipe") for c in cards]
    assert any(recorded), "no model card with a recipe"
    for card, stored in zip(cards, recorded):
        if stored is None:
            continue
        again = Recipe.from_dict(stored).to_dict()
        assert {k: again[k] for k in stored} == stored, card.name


# -- model surgery -------------------------------------------------------------------------------------------


def test_inpaint_surgery_reproduces_the_base_model():
    torch.manual_seed(0)
    cfg = Trainer(tiny_recipe(), None, progress=False).config.replace(dropout=0.0)
    base = create_model(cfg)
    with torch.no_grad():  # make every weight (also the zero-initialised ones) non-trivial
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = inpaint_from_base(base)
    assert model.config.inpaint and model.input_blocks[0][0].weight.shape[1] == 7
    assert model.input_blocks[0][0].weight[:, 3:].abs().max() == 0
    base.eval()
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 49])
    tokens, mask = base.tokenizer.batch(["a red image", "", "a blue image"], 6)
    image = torch.randn(3, 3, 8, 8, generator=g)
    m = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    with torch.no_grad():
        ref = base(x, t, tokens=tokens, mask=mask)
        got = model(x, t, tokens=tokens, mask=mask, inpaint_image=image * m, inpaint_mask=m)
    assert ref.abs().max() > 0.1  # the comparison is not between two zero outputs
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


# -- training loop: resume, checkpoints, exports -------------------------------------------------------------


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_exact(tmp_path):
    torch.set_num_threads(1)
    full = Trainer(tiny_recipe(), tmp_path / "full", progress=False)
    full.run(max_steps=6)
    half = Trainer(tiny_recipe(), tmp_path / "half", progress=False)
    half.run(max_steps=3)
    resumed = Trainer(
        tiny_recipe(), tmp_path / "resumed", resume=tmp_path / "half" / "checkpoint.pt", progress=False
    )
    assert resumed.step == 3
    resumed.run(max_steps=6)
    assert resumed.step == 6
    _states_equal(full.model.state_dict(), resumed.model.state_dict())
    _states_equal(full.ema.shadow, resumed.ema.shadow)
    # the uninterrupted run did learn something (weights moved), so equality is not vacuous
    fresh = Trainer(tiny_recipe(), None, progress=False)
    assert not torch.equal(fresh.model.out[2].weight, full.model.out[2].weight)
    assert [h["loss"] for h in full.history[3:]] == [h["loss"] for h in resumed.history[3:]]


def test_channels_last_training_matches_nchw_and_resumes_exactly(tmp_path):
    """channels_last is a memory layout only: the same losses as NCHW up to summation order, and exact resume."""
    torch.set_num_threads(1)
    nchw = Trainer(tiny_recipe(), None, progress=False)
    nchw.run(max_steps=4)
    full = Trainer(tiny_recipe(channels_last=True), tmp_path / "full", progress=False)
    assert full.model.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    full.run(max_steps=4)
    for a, b in zip(nchw.history, full.history):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * max(1.0, abs(a["loss"]))
    half = Trainer(tiny_recipe(channels_last=True), tmp_path / "half", progress=False)
    half.run(max_steps=2)
    resumed = Trainer(tiny_recipe(channels_last=True), None, resume=tmp_path / "half" / "checkpoint.pt",
                      progress=False)  # fmt: skip
    resumed.run(max_steps=4)
    _states_equal(full.model.state_dict(), resumed.model.state_dict())


def test_one_channel_per_group_output_norm_is_flagged():
    """GroupNorm32 over 32 channels is an instance norm: the output block then drops every feature map's
    spatial mean, so the eps mean hardly depends on the input (why the embedded base has 64 channels)."""
    with pytest.warns(UserWarning, match="normalises each channel on its own"):
        Trainer(tiny_recipe(), None, progress=False)
    wide = dict(TINY_MODEL, num_channels=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(tiny_recipe(model=wide), None, progress=False)
    # the property itself: after GroupNorm(32, 32) every channel has zero spatial mean for any input
    norm = torch.nn.GroupNorm(32, 32, affine=False)
    h = torch.randn(3, 32, 8, 8) * 5 + torch.randn(3, 32, 1, 1) * 3
    assert norm(h).mean(dim=(2, 3)).abs().max() < 1e-5
    norm64 = torch.nn.GroupNorm(32, 64, affine=False)
    assert norm64(torch.cat([h, -h], 1)).mean(dim=(2, 3)).abs().max() > 0.5


def test_checkpoint_round_trip_and_export(tmp_path):
    tr = Trainer(tiny_recipe(), tmp_path, progress=False)
    tr.run(max_steps=2)
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert {"model", "ema", "optimizer", "step", "rng", "config", "recipe"} <= set(ckpt)
    assert ckpt["step"] == 2 and Recipe.from_dict(ckpt["recipe"]) == tr.recipe
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file
    tr.export(tmp_path / "ema32.safetensors", fp16=False)
    tr.export(tmp_path / "ema16.safetensors", fp16=True)
    ref = tr.ema_model()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 40])
    tokens, mask = ref.tokenizer.batch(["a red image", "a green image"], 6)
    with torch.no_grad():
        want = ref(x, t, tokens=tokens, mask=mask)
        m32 = load_model(tmp_path / "ema32.safetensors")
        m16 = load_model(tmp_path / "ema16.safetensors")
        assert next(m16.parameters()).dtype == torch.float32  # loading casts fp16 storage back
        torch.testing.assert_close(m32(x, t, tokens=tokens, mask=mask), want, rtol=0, atol=0)
        torch.testing.assert_close(m16(x, t, tokens=tokens, mask=mask), want, rtol=1e-2, atol=1e-2)
        # the .pt checkpoint itself loads as a model too (raw weights)
        assert load_model(tmp_path / "checkpoint.pt").config == tr.config


def test_inpaint_and_upsample_recipes_train(tmp_path):
    base = Trainer(tiny_recipe(), tmp_path / "base", progress=False)
    base.run(max_steps=1)
    base.export(tmp_path / "base.safetensors", fp16=False)
    ip = Trainer(
        tiny_recipe(kind="inpaint", model={}, base_checkpoint=str(tmp_path / "base.safetensors")),
        tmp_path / "ip",
        progress=False,
    )
    assert ip.config.inpaint
    logs = ip.run(max_steps=2)
    assert math.isfinite(logs["loss"])
    up_model = {k: v for k, v in TINY_MODEL.items()} | {"noise_schedule": "linear"}
    up = Trainer(
        tiny_recipe(kind="upsample", model=up_model, low_res_size=4, blur_prob=0.5),
        tmp_path / "up",
        progress=False,
    )
    assert up.config.super_res
    logs = up.run(max_steps=2)
    assert math.isfinite(logs["loss"])


def test_cli_trains_and_exports(tmp_path):
    from glide.train.__main__ import main

    cfg = tmp_path / "r.json"
    cfg.write_text(json.dumps(tiny_recipe(max_steps=2).to_dict()))
    assert main(["base", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "ema.safetensors").exists()
    assert main(["export", str(tmp_path / "run" / "checkpoint.pt"), str(tmp_path / "e.safetensors")]) == 0
    assert load_model(tmp_path / "e.safetensors").config.image_size == 8


# -- CLIP ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_contrastive_training_decreases_loss_and_exports(tmp_path):
    torch.set_num_threads(1)
    tr = Trainer(tiny_clip_recipe(clip_mode="clean"), tmp_path, progress=False)
    first = tr.compute_loss(0)[1]["loss"]
    tr.run(max_steps=30)
    last = float(np.mean([h["loss"] for h in tr.history[-5:]]))
    # 3 captions in a batch of 12: the best loss spreads mass over ~4 positives, log 4 ~ 1.39
    floor = math.log(4)
    assert last - floor < 0.5 * (first - floor), (first, last)
    tr.export(tmp_path / "clip.safetensors", fp16=False)
    model = load_trained_clip(tmp_path / "clip.safetensors")
    ref = tr.ema_model()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    t = torch.tensor([0, 10])
    with torch.no_grad():
        torch.testing.assert_close(model.image_embeddings(x, t), ref.image_embeddings(x, t))
        torch.testing.assert_close(
            model.text_embeddings(["a red image"]), ref.text_embeddings(["a red image"])
        )


@pytest.mark.parametrize("mode", ["clean", "noised"])
def test_clip_modes_draw_timesteps(mode):
    tr = Trainer(tiny_clip_recipe(clip_mode=mode), None, progress=False)
    seen = []
    orig = tr.model.image_embeddings

    def spy(x, t):
        seen.append((x.clone(), t.clone()))
        return orig(x, t)

    tr.model.image_embeddings = spy
    loss, logs = tr.compute_loss(0)
    assert math.isfinite(logs["loss"]) and 0 <= logs["acc"] <= 1
    x, t = seen[0]
    images = D.resize(tr.dataset.train_batch(tr.recipe.seed, 0, 12)[0], 8)
    if mode == "clean":
        assert (t == 0).all() and torch.equal(x, images)
    else:
        assert len(set(t.tolist())) > 1 and not torch.equal(x, images)


def test_sparse_token_table_keeps_vocabulary_outputs_and_shrinks_the_file(tmp_path):
    from glide.train.data import solid_vocabulary
    from glide.train.export import TOKEN_TABLE

    torch.set_num_threads(1)
    tr = Trainer(tiny_clip_recipe(max_steps=2), None, progress=False)
    tr.run(max_steps=2)
    dense, sparse = tmp_path / "dense.safetensors", tmp_path / "sparse.safetensors"
    tr.export(dense, fp16=False)
    tr.export(sparse, fp16=False, token_vocab=solid_vocabulary())
    assert sparse.stat().st_size < dense.stat().st_size / 10
    a, b = load_trained_clip(dense), load_trained_clip(sparse)
    captions = ["", *solid_vocabulary(), "a red image", " ".join(solid_vocabulary()[:4])]
    with torch.no_grad():
        torch.testing.assert_close(a.text_embeddings(captions), b.text_embeddings(captions), rtol=0, atol=0)
    table = b.state_dict()[TOKEN_TABLE]
    used = (table != 0).any(dim=1)
    assert 2 < int(used.sum()) < 100  # start/end/padding and the vocabulary's BPE pieces, nothing else
    assert torch.equal(table[used], a.state_dict()[TOKEN_TABLE][used])


def test_package_writes_weights_and_card(tmp_path):
    from glide.train.export import package

    tr = Trainer(tiny_recipe(), tmp_path / "run", progress=False)
    tr.run(max_steps=3)
    card = package(
        tmp_path / "run" / "checkpoint.pt", tmp_path / "m.safetensors", extra={"trained_on": "test"}
    )
    on_disk = json.loads((tmp_path / "m.json").read_text())
    assert on_disk == card
    assert card["steps"] == 3 and card["seed"] == 0 and card["trained_on"] == "test"
    # the card rounds to 0.1 s: three tiny steps can take less than 0.05 s on a fast machine
    assert card["examples_seen"] == 12 and tr.wall_seconds > 0
    assert card["train_wall_seconds"] == round(tr.wall_seconds, 1)
    assert math.isfinite(card["final_loss"]["loss_avg"])
    assert load_model(tmp_path / "m.safetensors").config == tr.config


def _captured_loss_inputs(monkeypatch, recipe: Recipe, tmp_path, step: int = 3) -> dict[str, torch.Tensor]:
    """The noise and timesteps that batch ``step`` of ``recipe`` hands to the hybrid loss."""
    import glide.train.loop as L

    seen = {}
    real = L.hybrid_loss

    def spy(diffusion, out, x0, x_t, t, noise, lambda_vlb):
        seen["noise"], seen["t"] = noise.detach().clone(), t.detach().clone()
        return real(diffusion, out, x0, x_t, t, noise, lambda_vlb)

    monkeypatch.setattr(L, "hybrid_loss", spy)
    Trainer(recipe, tmp_path, progress=False).compute_loss(step)
    return seen


def _captured_noise(monkeypatch, recipe: Recipe, tmp_path) -> torch.Tensor:
    return _captured_loss_inputs(monkeypatch, recipe, tmp_path)["noise"]


def _captured_timesteps(monkeypatch, recipe: Recipe, tmp_path) -> torch.Tensor:
    return _captured_loss_inputs(monkeypatch, recipe, tmp_path, step=5)["t"]


def test_offset_noise_adds_one_constant_per_image_and_channel(monkeypatch, tmp_path):
    plain = _captured_noise(monkeypatch, tiny_recipe(batch_size=64), tmp_path / "a")
    offset = _captured_noise(monkeypatch, tiny_recipe(batch_size=64, offset_noise=0.5), tmp_path / "b")
    diff = offset - plain  # same (seed, step): the iid part is the same draw
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff), atol=1e-6), (
        "offset must be constant in H, W"
    )
    per_channel = diff[:, :, 0, 0]
    assert per_channel.abs().min() > 0
    assert 0.4 < per_channel.std().item() < 0.6  # N(0, 0.5^2) over 64 x 3 draws
    with pytest.raises(ValueError, match="offset_noise"):
        tiny_recipe(offset_noise=-0.1)


def test_emphasise_timesteps_redraws_the_stated_shares_from_the_stated_ranges():
    from glide.train.loop import emphasise_timesteps

    t = torch.full((20000,), 500, dtype=torch.long)  # all 500, so every redrawn entry is visible
    g = torch.Generator().manual_seed(0)
    out = emphasise_timesteps(t, 1000, g, high_fraction=0.3, high_start=0.8, low_fraction=0.2, low_end=0.1)
    high, low, kept = out[out >= 800], out[out < 100], out[out == 500]
    assert high.max() <= 999 and low.min() >= 0
    assert high.numel() + low.numel() + kept.numel() == t.numel()
    # binomial sd of a share over 20,000 draws is at most 0.0035
    assert abs(high.numel() / t.numel() - 0.3) < 0.015 and abs(low.numel() / t.numel() - 0.2) < 0.015
    assert abs(high.float().mean().item() - 899.5) < 2.0  # uniform on [800, 999]: sd of the mean 0.7
    assert abs(low.float().mean().item() - 49.5) < 1.5  # uniform on [0, 99]: sd of the mean 0.45
    assert torch.equal(emphasise_timesteps(t, 1000, g), t)
    assert (emphasise_timesteps(t, 1000, g, high_fraction=1.0, high_start=0.5) >= 500).all()
    assert (emphasise_timesteps(t, 1000, g, low_fraction=1.0, low_end=0.05) < 50).all()


def test_high_t_fraction_in_a_recipe_shifts_the_training_timesteps(monkeypatch, tmp_path):
    plain = _captured_timesteps(monkeypatch, tiny_recipe(batch_size=400), tmp_path / "a")
    high = _captured_timesteps(
        monkeypatch, tiny_recipe(batch_size=400, high_t_fraction=0.5, high_t_start=0.8), tmp_path / "b"
    )
    assert plain.max() < TINY_MODEL["diffusion_steps"] == 50
    share = lambda t: (t >= 40).float().mean().item()  # noqa: E731  (high_t_start 0.8 of T = 50)
    assert abs(share(plain) - 0.2) < 0.07  # uniform: 20% of 400 draws, sd 0.02
    assert abs(share(high) - 0.6) < 0.08  # 0.5 redrawn + 0.5 * 0.2 uniform, sd 0.025
    low = _captured_timesteps(
        monkeypatch, tiny_recipe(batch_size=400, low_t_fraction=0.5, low_t_end=0.2), tmp_path / "c"
    )
    assert abs((low < 10).float().mean().item() - 0.6) < 0.08  # 0.5 redrawn + 0.5 * 0.2 uniform
    bad_recipes = (
        {"high_t_fraction": 1.5},
        {"high_t_fraction": -0.1},
        {"high_t_start": 1.0},
        {"low_t_fraction": 2.0},
        {"low_t_end": 0.0},
        {"high_t_fraction": 0.6, "low_t_fraction": 0.6},
    )
    for bad in bad_recipes:
        with pytest.raises(ValueError, match="_t_"):
            tiny_recipe(**bad)


def test_base_checkpoint_warm_starts_a_base_run_and_rejects_another_architecture(tmp_path):
    first = Trainer(tiny_recipe(), tmp_path / "a", progress=False)
    first.run(max_steps=2)
    first.export(tmp_path / "a.safetensors", fp16=False)
    start = load_model(tmp_path / "a.safetensors").state_dict()
    warm = Trainer(
        tiny_recipe(base_checkpoint=str(tmp_path / "a.safetensors")), tmp_path / "b", progress=False
    )
    _states_equal(warm.model.state_dict(), start)
    cold = Trainer(tiny_recipe(), tmp_path / "c", progress=False)
    assert any(not torch.equal(v, cold.model.state_dict()[k]) for k, v in start.items())
    wider = tiny_recipe(
        model=TINY_MODEL | {"num_channels": 64}, base_checkpoint=str(tmp_path / "a.safetensors")
    )
    with pytest.raises(ValueError, match="different model"):
        Trainer(wider, tmp_path / "d", progress=False)


def test_base_checkpoint_warm_starts_a_clip_run_and_rejects_another_clip(tmp_path):
    first = Trainer(tiny_clip_recipe(), tmp_path / "a", progress=False)
    first.run(max_steps=3)
    first.export(tmp_path / "a.safetensors", fp16=False)
    start = load_trained_clip(tmp_path / "a.safetensors").state_dict()
    warm = Trainer(tiny_clip_recipe(base_checkpoint=str(tmp_path / "a.safetensors"), seed=5), tmp_path / "b",
                   progress=False)  # fmt: skip
    _states_equal(warm.model.state_dict(), start)
    _states_equal(warm.ema_model().state_dict(), start)  # the EMA starts from the same weights
    cold = Trainer(tiny_clip_recipe(seed=5), tmp_path / "c", progress=False)
    assert any(not torch.equal(v, cold.model.state_dict()[k]) for k, v in start.items())
    # a warm-started run resumes from its own checkpoint exactly, not from the start file again
    warm.run(max_steps=4)
    half = Trainer(tiny_clip_recipe(base_checkpoint=str(tmp_path / "a.safetensors"), seed=5), tmp_path / "h",
                   progress=False)  # fmt: skip
    half.run(max_steps=2)
    resumed = Trainer(half.recipe, tmp_path / "r", resume=tmp_path / "h" / "checkpoint.pt", progress=False)
    resumed.run(max_steps=4)
    _states_equal(resumed.model.state_dict(), warm.model.state_dict())
    assert any(not torch.equal(v, warm.model.state_dict()[k]) for k, v in start.items())  # it trained
    wider = tiny_clip_recipe(
        model=tiny_clip_recipe().model | {"n_embd": 32}, base_checkpoint=str(tmp_path / "a.safetensors")
    )
    with pytest.raises(ValueError, match="different CLIP"):
        Trainer(wider, tmp_path / "d", progress=False)
