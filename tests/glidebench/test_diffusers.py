"""The diffusers adapter (``--generator diffusers:PATH_OR_ID``), offline, on a tiny random Stable Diffusion
pipeline saved with save_pretrained (tiny_diffusers.py): a run to results and a report, GLIDE's guidance
formula checked inside the pipeline, per-index seeds (batch independence, resume, shards), the identity, and a
clear error for every bad input."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glidebench.cli import main
from glidebench.generators import GeneratorError, SamplingOptions, as_uint8_images, load_generator
from glidebench.generators.diffusers import DiffusersGenerator, steps_count
from glidebench.spec import Setting

from .harness import image_bytes, only_run_dir
from .tiny_diffusers import NATIVE, build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_pipeline(tmp_path_factory.mktemp("diffusers") / "tiny-sd")


@pytest.fixture
def env(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
    monkeypatch.setenv("HF_HOME", str(env / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(env / "hf" / "hub"))
    return env


def dargs(out: Path, pipe: Path, *extra: str) -> list[str]:
    return [
        "run", "coco-fid", "--generator", f"diffusers:{pipe}", "--cfg", "1,3", "--clip", "", "--limit", "6",
        "--batch-size", "3", "--resolution", "8", "--reference-size", "12", "--steps", "ddim3",
        "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def options(steps: str = "2", resolution: int = NATIVE) -> SamplingOptions:
    return SamplingOptions(sampler="ddim", steps=steps, resolution=resolution)


def direct_images(
    pipe_dir: Path, captions: list[str], seeds: list[int], scale: float, steps: int
) -> np.ndarray:
    """The pipeline called directly (not through the adapter), one CPU generator per row."""
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(pipe_dir))
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return pipe(
        captions, num_inference_steps=steps, guidance_scale=scale, generator=gens, output_type="np"
    ).images


def test_steps_count_matches_glides_respacings() -> None:
    from glide.diffusion.schedules import space_timesteps

    for spec in ("250", "25", "ddim25", "quad20", "fast27", "10,10,3", "10,10,3,2,2"):
        assert steps_count(spec) == len(space_timesteps(1000, spec)), spec
    for bad in ("abc", "ddim", "0", "ddim0", "10,,3"):
        with pytest.raises(GeneratorError, match="--steps"):
            steps_count(bad)


def test_run_to_results_and_report(env: Path, tiny_pipe: Path, capsys) -> None:
    import diffusers

    out = env / "runs"
    assert main(dargs(out, tiny_pipe)) == 0
    captured = capsys.readouterr()
    assert "could not be rendered" not in captured.out + captured.err
    run = only_run_dir(out)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"] == "plugin" and spec["model_label"] == "tiny-sd" and spec["resolution"] == 8
    w = spec["weights"]
    assert w["generator"] == f"diffusers:{tiny_pipe}" and w["diffusers-pipeline"] == "StableDiffusionPipeline"
    assert w["diffusers-version"] == diffusers.__version__ and w["diffusers-scheduler"] == "DDIMScheduler"
    assert re.fullmatch(r"[0-9a-f]{64}", w["diffusers-weights-sha256"]) and w["native-resolution"] == str(
        NATIVE
    )
    rows = json.loads((run / "results.json").read_text())
    assert [r["model"] for r in rows] == ["tiny-sd", "tiny-sd"]
    assert all(np.isfinite(r["kid_mean"]) for r in rows)
    # evaluations per image, counted on the UNet: 3 steps; both halves of the classifier-free batch at s = 3
    assert {r["setting_id"]: r["evals_per_image"] for r in rows} == {"cfg-1": 3.0, "cfg-3": 6.0}
    assert (run / "report" / "index.html").is_file()
    # the images are the pipeline's own for (caption, seed, s), brought to 8 px by the protocol's rule
    from PIL import Image

    prompts = json.loads((run / "prompts.json").read_text())[:3]  # chunk 0, sampled whole
    want = direct_images(tiny_pipe, [p["caption"] for p in prompts], [p["seed"] for p in prompts], 3.0, 3)
    want8, resized = as_uint8_images(want, 3, 8, "direct")
    assert resized
    for p, img in zip(prompts, want8):
        got = np.asarray(Image.open(run / "images" / "cfg-3" / f"{p['index']:06d}.png"))
        assert np.array_equal(got, img)


class Recorder:
    """Wraps the UNet's forward and the scheduler's step to record what goes in and out."""

    def __init__(self, pipe) -> None:
        self.unet_calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.step_inputs: list[torch.Tensor] = []
        unet_forward, step = pipe.unet.forward, pipe.scheduler.step

        def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
            out = unet_forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
            eps = out[0] if isinstance(out, tuple) else out.sample
            t = torch.as_tensor(timestep).expand(sample.shape[0])
            self.unet_calls.append((sample.clone(), t.clone(), encoder_hidden_states.clone(), eps.clone()))
            return out

        def scheduler_step(model_output, *args, **kwargs):
            self.step_inputs.append(model_output.clone())
            return step(model_output, *args, **kwargs)

        pipe.unet.forward = forward
        pipe.scheduler.step = scheduler_step


def _text_embedding(pipe, captions: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(
        captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def test_guidance_scale_is_glides_s(tiny_pipe: Path) -> None:
    """The noise prediction handed to the scheduler is GLIDE's eps_uncond + s (eps_cond - eps_uncond) over the
    UNet's two halves (glide.diffusion.guidance computes the expected value), with the empty prompt as the
    unconditional input; s = 1 runs the conditional model alone."""
    from glide.diffusion.guidance import classifier_free_guidance

    g = DiffusersGenerator(str(tiny_pipe), steps=2)
    rec = Recorder(g.pipe)
    captions, b = ["a red ball on the grass", "the blue cube"], 2
    g.generate(captions, [11, 12], Setting("cfg", 3.0), options())
    assert len(rec.unet_calls) == 2 and len(rec.step_inputs) == 2
    assert g.evals_per_image == {"unet": 4.0}
    empty, cond = _text_embedding(g.pipe, [""] * b), _text_embedding(g.pipe, captions)
    for (x, t, emb, eps), handed in zip(rec.unet_calls, rec.step_inputs):
        assert x.shape[0] == 2 * b and torch.equal(x[:b], x[b:])  # one x_t, twice
        torch.testing.assert_close(emb[:b], empty)  # diffusers' order: [uncond | cond]
        torch.testing.assert_close(emb[b:], cond)
        eps_u, eps_c = eps[:b], eps[b:]

        def model(x_t, t_, which, eps_c=eps_c, eps_u=eps_u):  # GLIDE's order [cond | uncond], by `which`
            return torch.stack([(eps_c if w == 0 else eps_u)[i % b] for i, w in enumerate(which.tolist())])

        guided = classifier_free_guidance(model, 3.0, {"which": torch.ones(b)})(
            x[:b], t[:b], which=torch.zeros(b)
        )
        torch.testing.assert_close(handed, guided)
        assert not torch.allclose(handed, eps_c) and not torch.allclose(handed, eps_u)
    rec.unet_calls.clear(), rec.step_inputs.clear()
    g.generate(captions, [11, 12], Setting("cfg", 1.0), options())
    assert [c[0].shape[0] for c in rec.unet_calls] == [b, b] and g.evals_per_image == {"unet": 2.0}
    for (_, _, emb, eps), handed in zip(rec.unet_calls, rec.step_inputs):
        torch.testing.assert_close(emb, cond)
        assert torch.equal(handed, eps)
    rec.unet_calls.clear()
    g.generate(captions, [11, 12], Setting("none", 1.0), options())
    assert [c[0].shape[0] for c in rec.unet_calls] == [b, b]


def test_an_image_depends_only_on_its_own_seed(tiny_pipe: Path) -> None:
    g = DiffusersGenerator(str(tiny_pipe), steps=2)
    cap = ["a green cone", "the yellow ring on sand"]
    pair = g.generate(cap, [4, 9], Setting("cfg", 3.0), options())
    alone = g.generate(cap[1:], [9], Setting("cfg", 3.0), options())
    other = g.generate(cap[1:], [10], Setting("cfg", 3.0), options())
    assert pair.shape == (2, NATIVE, NATIVE, 3) and pair.dtype == np.float32
    np.testing.assert_allclose(pair[1], alone[0], atol=1e-5)  # kernels may round ~1e-7 apart by batch shape
    assert np.abs(other[0] - alone[0]).max() > 1e-2  # and the seed does matter


def test_the_runs_dtype_loads_the_pipeline_in_it(tiny_pipe: Path) -> None:
    g = DiffusersGenerator(str(tiny_pipe), steps=2)
    assert g.pipe.dtype == torch.float32
    fp32 = g.generate(["a red ball"], [3], Setting("cfg", 3.0), options())
    bf16 = g.generate(
        ["a red ball"], [3], Setting("cfg", 3.0), SamplingOptions("ddim", "2", NATIVE, dtype="bf16")
    )
    assert g.pipe.dtype == torch.bfloat16 and g.pipe.unet.dtype == torch.bfloat16  # reloaded in bf16
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert 0 < np.abs(bf16 - fp32).max() < 0.05  # the same image, at bf16's precision
    forced = DiffusersGenerator(str(tiny_pipe), steps=2, dtype="bf16")  # --generator-args dtype=bf16 wins
    forced.generate(["a red ball"], [3], Setting("cfg", 3.0), options())
    assert forced.pipe.dtype == torch.bfloat16


def test_resume_and_shards_are_byte_identical(env: Path, tiny_pipe: Path) -> None:
    full, resumed, sharded = env / "full", env / "resumed", env / "sharded"
    assert main(dargs(full, tiny_pipe, "--no-report")) == 0
    assert main(dargs(resumed, tiny_pipe, "--no-report")) == 0
    run = only_run_dir(resumed)
    for victim in sorted((run / "images" / "cfg-3").glob("*.png"))[1:5]:
        victim.unlink()
    (run / "results.csv").unlink()
    assert main(dargs(resumed, tiny_pipe, "--no-report")) == 0
    assert main(dargs(sharded, tiny_pipe, "--no-report", "--shard", "0/2")) == 0
    assert main(dargs(sharded, tiny_pipe, "--no-report", "--shard", "1/2")) == 0
    want = image_bytes(only_run_dir(full))
    assert len(want) >= 2 * json.loads((only_run_dir(full) / "spec.json").read_text())["num_samples"]
    assert image_bytes(run) == want and image_bytes(only_run_dir(sharded)) == want
    kids = [
        [r["kid_mean"] for r in json.loads((only_run_dir(d) / "results.json").read_text())]
        for d in (full, resumed, sharded)
    ]
    assert kids[1] == kids[0] and kids[2] == kids[0]


def test_identity_follows_the_files_and_the_scheduler(tmp_path: Path, tiny_pipe: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pipe, copy)
    base = DiffusersGenerator(str(copy)).identity()
    assert (
        base["diffusers-model"] == "copy"
        and base["diffusers-weights-sha256"]
        == (DiffusersGenerator(str(tiny_pipe)).identity()["diffusers-weights-sha256"])
    )  # the content, not the place
    (copy / "README.md").write_text("notes")  # not part of the pipeline
    assert DiffusersGenerator(str(copy)).identity() == base
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert (
        DiffusersGenerator(str(copy)).identity()["diffusers-weights-sha256"]
        != base["diffusers-weights-sha256"]
    )
    euler = DiffusersGenerator(str(tiny_pipe), scheduler="EulerDiscreteScheduler").identity()
    assert euler["diffusers-scheduler"] == "EulerDiscreteScheduler"
    assert euler["diffusers-scheduler-config-sha256"] != base["diffusers-scheduler-config-sha256"]


def test_bad_inputs_fail_cleanly_with_nothing_written(env: Path, tiny_pipe: Path, capsys) -> None:
    not_a_pipeline = env / "just-images"
    not_a_pipeline.mkdir()
    cases = [
        ([f"diffusers:{env / 'nowhere'}"], r"no such folder .*save_pretrained"),
        ([f"diffusers:{not_a_pipeline}"], r"is not a diffusers pipeline \(no model_index\.json\)"),
        (
            ["diffusers:someorg/no-such-model"],
            r"'someorg/no-such-model' could not be loaded.*HF_HUB_OFFLINE is set",
        ),
        (["--generator-args", "steps=abc"], r"--steps 'abc': a diffusers pipeline takes a number of steps"),
        (["--cfg", "0.5"], r"classifier-free scale 0\.5 < 1"),
        (["--generator-args", "dtype=fp8"], r"dtype='fp8'; use one of fp32, fp16, bf16"),
        (["--generator-args", "scheduler=Nope"], r"scheduler='Nope' is not a diffusers scheduler class"),
        (["--generator-args", "device=gpu0"], r"device='gpu0'; use cpu, cuda, cuda:N or mps"),
    ]
    for extra, message in cases:
        out = env / "runs"
        args = dargs(out, tiny_pipe, "--no-report")
        if extra[0].startswith("diffusers:"):
            args[args.index(f"diffusers:{tiny_pipe}")] = extra[0]
        else:
            args += extra
        assert main(args) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith("glidebench: error: ") and re.search(message, err), err
        assert not list(out.rglob("*.png")) and not list(out.rglob("results.*")), extra


def test_without_diffusers_the_message_names_the_extra(monkeypatch, tiny_pipe: Path) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "glidebench.generators.diffusers", raising=False)
    with pytest.raises(
        GeneratorError, match=r'needs diffusers and transformers .*pip install -e "\.\[diffusers\]"'
    ):
        load_generator(f"diffusers:{tiny_pipe}")
