"""The 10-step CLIP-guided trajectory against the official code (golden_small.npz, clipguided/*)."""

from __future__ import annotations

import pytest
import torch

from glide.clip.config import ClipConfig
from glide.clip.model import create_clip_model, load_clip_state_dicts
from glide.diffusion import samplers
from glide.diffusion.gaussian import create_gaussian_diffusion

from .helpers import T, maxdiff


@pytest.fixture(scope="module")
def clip_model(golden, golden_meta):
    config = ClipConfig.from_dict(golden_meta["configs"]["clip (sd_clip_text/, sd_clip_image/)"])
    model = create_clip_model(config=config, device="cpu")

    def sub(prefix):
        return {k[len(prefix) :]: T(golden, k) for k in golden.files if k.startswith(prefix)}

    return load_clip_state_dicts(model, sub("sd_clip_image/"), sub("sd_clip_text/")).eval()


def test_clip_guided_trajectory(base, clip_model, golden):
    d = create_gaussian_diffusion(1000, "squaredcos_cap_v2", "10")
    tokens, mask = base.tokenizer.batch(["an oil painting of a corgi"], base.config.text_ctx)
    kwargs = {"tokens": tokens, "mask": mask}
    cond_fn = clip_model.cond_fn(["an oil painting of a corgi"], 3.0)
    x_T = T(golden, "clipguided/init_noise")

    # The first step's p_mean_variance and its CLIP-conditioned mean (cond_fn sees timestep_map[9] = 999).
    t9 = torch.tensor([9])
    with torch.no_grad():
        out = d.p_mean_variance(base, x_T, t9, model_kwargs=kwargs)
    cond_mean = d.condition_mean(cond_fn, out, x_T, t9, kwargs)
    amp = float(d.sqrt_recipm1_alphas_cumprod[-1] * d.posterior_mean_coef1[-1])
    assert maxdiff(out["variance"], T(golden, "clipguided/step0_variance")) < 1e-5
    assert maxdiff(out["mean"], T(golden, "clipguided/step0_mean")) < 1e-5 * max(1.0, amp)
    assert (
        maxdiff(
            cond_mean - out["mean"],
            T(golden, "clipguided/step0_cond_mean") - T(golden, "clipguided/step0_mean"),
        )
        < 1e-5
    )

    noises = iter(T(golden, "clipguided/step_noise"))
    steps = list(
        samplers.ancestral(
            d, base, x_T, model_kwargs=kwargs, cond_fn=cond_fn, noise_fn=lambda x: next(noises)
        )
    )
    expected = T(golden, "clipguided/samples")
    index = golden["clipguided/step_index"].tolist()  # [0, 1, 2, 5, 9]
    errs = {k: maxdiff(steps[k]["sample"], expected[j]) for j, k in enumerate(index)}
    # Step 0 (model t = 999) inherits the eps-rounding amplification checked on the mean above; later steps
    # contract it. The size depends on the CPU's float32 kernels: on one AVX2 machine 5.0e-4 at step 0, then
    # 2.3e-4, 1.3e-4, 7.8e-5, 8.9e-5; on another Xeon 3.0e-3, then 1.4e-3, 7.8e-4, 4.5e-4, 5.2e-4. So the
    # free-running check is that the error stays within the amplified bound and, where step 0 did amplify it,
    # contracts after step 0. On a third CPU step 0 rounds almost exactly (9.5e-7) and the later steps carry
    # plain float32 accumulation (1.1e-5), still far inside the bound. The teacher-forced check below holds every
    # step to 1e-4.
    assert errs[0] < 1e-5 * max(1.0, amp)
    assert all(errs[k] < 1e-5 * max(1.0, amp) for k in index)
    if errs[0] > 1e-4:
        assert errs[5] < errs[0] / 2 and errs[9] < errs[0] / 2
    assert max(errs[5], errs[9]) < 2e-3
    # Teacher-forced: each stored step from the official previous state must agree within 1e-4.
    noise = T(golden, "clipguided/step_noise")
    for j in (1, 2):
        k, t = index[j], torch.tensor([9 - index[j]])
        out = samplers.p_sample(
            d, base, expected[j - 1], t, True, None, cond_fn, kwargs, lambda x, k=k: noise[k]
        )
        assert maxdiff(out["sample"], expected[j]) < 1e-4, f"teacher-forced step {k}"
