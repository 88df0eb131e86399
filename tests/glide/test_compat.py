"""The glide-text2im compatibility names behave like the official ones."""

from __future__ import annotations

import pytest
import torch

from glide.compat import create_model_and_diffusion, model_and_diffusion_defaults
from glide.diffusion import samplers

from .helpers import WORDS


def test_create_model_and_diffusion_and_loops():
    options = model_and_diffusion_defaults() | dict(
        image_size=32,
        num_channels=32,
        num_res_blocks=1,
        channel_mult="1,2,2",
        num_head_channels=16,
        attention_resolutions="8",
        xf_width=32,
        xf_layers=1,
        xf_heads=2,
        text_ctx=12,
        timestep_respacing="5",
        use_fp16=False,
        tokenizer={"kind": "words", "vocab": WORDS},
    )
    model, diffusion = create_model_and_diffusion(**options)
    assert diffusion.num_timesteps == 5 and diffusion.timestep_map.tolist() == [0, 250, 500, 749, 999]
    tokens, mask = model.tokenizer.batch(["a red circle"], 12)
    kwargs = {"tokens": tokens, "mask": mask}
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = diffusion.p_sample_loop(model, (1, 3, 32, 32), noise=noise, model_kwargs=kwargs)
    torch.manual_seed(1)
    b = samplers.sample_loop("ancestral", diffusion, model, noise, model_kwargs=kwargs)
    assert torch.equal(a, b)
    c = diffusion.ddim_sample_loop(model, (1, 3, 32, 32), noise=noise, model_kwargs=kwargs, eta=0.0)
    assert c.shape == (1, 3, 32, 32)


def test_unknown_official_option_is_an_error():
    with pytest.raises(ValueError, match="unknown model option"):
        create_model_and_diffusion(**(model_and_diffusion_defaults() | {"learn_sigma": True}))


def test_load_checkpoint_records_the_hash_only_of_the_right_kind_of_file(tmp_path, monkeypatch):
    from glide import checkpoints
    from glide.checkpoints import CheckpointError
    from glide.compat import load_checkpoint

    from .helpers import tiny_model

    monkeypatch.setenv("GLIDE_CACHE", str(tmp_path))
    path, record = checkpoints.cached_path("base"), tmp_path / "base.sha256"
    torch.save(tiny_model(inpaint=True).state_dict(), path)  # another variant in base's place
    with pytest.raises(CheckpointError, match="holds a GLIDE base-inpaint UNet, but the official 'base'"):
        load_checkpoint("base")
    assert not record.exists()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_checkpoint("base")
    assert not record.exists()
    model = tiny_model()
    torch.save(model.state_dict(), path)  # the right kind: loads and is recorded
    sd = load_checkpoint("base")
    assert torch.equal(sd["out.2.weight"], model.out[2].weight)
    assert record.read_text().split()[0] == checkpoints.sha256_file(path)
