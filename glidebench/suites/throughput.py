"""The ``throughput`` suite: milliseconds per model evaluation and images/s for GLIDE's models.

Per model (the base UNet at its classifier-free batch 2B, the upsampler, the noised-CLIP guidance step, which is
a forward + backward through the image encoder), over batch sizes x dtypes x attention implementations x
torch.compile x channels_last x CUDA-graph replay. Weights do not change the timing, so the models are built
from their configs with random weights (the official sizes by default; ``size="tiny"`` for tests); a real
run's ``--profile`` times its own loaded models the same way (:func:`profile_run_models`). End-to-end images/s per guidance
kind follow from the per-step costs and the step counts: CFG = one 2B base evaluation per step; CLIP guidance
= one B base evaluation + one CLIP step per step.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from glide.clip.config import ClipConfig
from glide.clip.model import create_clip_model
from glide.config import ModelConfig, preset
from glide.nn import set_attention_impl
from glide.unet import create_model
from glidebench.profile import (
    Case,
    bind_clip_step,
    bind_unet,
    count_flops,
    export_trace,
    prepare_model,
    profile_call,
)
from glidebench.store import atomic_write_text

MODELS = ("base", "upsample", "clip-step")


def _unet_config(name: str, size: str):

    words = {
        "kind": "words",
        "vocab": [str(i) for i in range(50255)],
    }  # 50,257 ids like GPT-2, no files needed
    if size == "full":
        return preset("base" if name == "base" else "upsample", use_fp16=False, tokenizer=words)
    tiny = dict(
        num_channels=32,
        num_res_blocks=1,
        num_head_channels=16,
        xf_width=32,
        xf_layers=1,
        xf_heads=2,
        text_ctx=16,
        tokenizer={"kind": "words", "vocab": ["a"]},
        dropout=0.0,
    )
    if name == "base":
        return ModelConfig.from_dict(
            tiny | {"image_size": 32, "channel_mult": "1,2,2", "attention_resolutions": "8"}
        )
    return ModelConfig.from_dict(
        tiny
        | {
            "image_size": 64,
            "channel_mult": "1,1,2,2",
            "attention_resolutions": "8",
            "super_res": True,
            "noise_schedule": "linear",
        }
    )


def _clip(size: str, device: torch.device):

    if size == "full":
        return create_clip_model(device=device)
    config = ClipConfig.from_dict(
        dict(
            n_embd=32,
            n_head_state_text=32,
            n_head_text=2,
            n_xf_blocks_text=1,
            n_head_state_image=32,
            n_head_image=2,
            n_xf_blocks_image=1,
            image_size=32,
            patch_size=4,
        )
    )
    return create_clip_model(config=config, device=device)


def build_call(case: Case, size: str, device: torch.device, cache: dict | None = None):
    """(call, images per call) for one case: the bound model evaluation to time.

    ``cache`` keeps one freshly initialised fp32 CPU model per (model, size); each case works on a deep copy,
    so a sweep initialises each 400M-parameter UNet once rather than once per case.
    """

    if case.model in ("base", "upsample"):
        cfg = _unet_config(case.model, size)
        if cache is None:
            fresh = create_model(cfg)
        else:
            if (case.model, size) not in cache:
                cache[(case.model, size)] = create_model(cfg)
            fresh = copy.deepcopy(cache[(case.model, size)])
        return bind_unet(prepare_model(fresh, case, device), case, device)
    if case.model == "clip-step":
        if case.dtype == "fp16":
            raise ValueError("the official code runs the noised CLIP in fp32; use fp32 or bf16 for clip-step")

        clip = set_attention_impl(_clip(size, device), case.attention)
        return bind_clip_step(clip, case, device)
    raise ValueError(f"unknown model {case.model!r}; choose from {MODELS}")


def cases(
    models: Iterable[str],
    batch_sizes: Iterable[int],
    dtypes: Iterable[str],
    attentions: Iterable[str],
    compile_modes: Iterable[bool] = (False,),
    channels_last: Iterable[bool] = (False,),
    cuda_graphs: Iterable[bool] = (False,),
) -> list[Case]:
    """The cross product, less the pairs that are one optimisation twice (compile x CUDA graph)."""
    product = itertools.product(
        models, batch_sizes, dtypes, attentions, compile_modes, channels_last, cuda_graphs
    )
    return [Case(*c) for c in product if not (c[4] and c[6])]


def run_throughput(
    case_list: list[Case],
    out_dir: Path,
    device: str = "cpu",
    size: str = "full",
    warmup: int = 2,
    repeats: int = 5,
    trace: bool = False,
    base_steps: int = 100,
    up_steps: int = 27,
) -> pd.DataFrame:
    """Measure every case; write throughput.json/.csv atomically into ``out_dir``; return the table."""
    dev = torch.device(device)
    rows = []
    flop_cache: dict[tuple, int] = {}
    model_cache: dict[tuple, torch.nn.Module] = {}
    for case in tqdm(case_list, desc="throughput"):
        call = ref_call = None
        try:
            key = (case.model, case.batch_size)
            if key not in flop_cache:  # the model's FLOPs, counted on the einsum path in fp32
                ref_call, _ = build_call(Case(case.model, case.batch_size), size, dev, model_cache)
                with torch.no_grad():
                    flop_cache[key] = count_flops(ref_call)
            call, images = build_call(case, size, dev, model_cache)
            row = profile_call(case, call, dev, images, warmup, repeats, flops=flop_cache[key])
            if trace:
                name = f"trace-{case.model}-b{case.batch_size}-{case.dtype}-{case.attention}.json"
                row["trace"] = str(export_trace(call, out_dir / name, dev))
        except (ValueError, RuntimeError) as e:  # an unsupported combination is a row, not a crash
            row = {**case.__dict__, "error": str(e)[:300]}
        row["size"] = size
        rows.append(row)
        call = ref_call = None  # free this case's model before the next one is built
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        _write(rows, out_dir, base_steps, up_steps)  # after every case: a killed sweep keeps its rows
    return _write(rows, out_dir, base_steps, up_steps)


def _write(rows: list[dict], out_dir: Path, base_steps: int, up_steps: int) -> pd.DataFrame:
    table = add_end_to_end(pd.DataFrame(rows), base_steps, up_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "throughput.json", json.dumps(table.to_dict(orient="records"), indent=1, default=str)
    )
    atomic_write_text(out_dir / "throughput.csv", table.to_csv(index=False))
    return table


def add_end_to_end(table: pd.DataFrame, base_steps: int, up_steps: int) -> pd.DataFrame:
    """Images/s of a whole 64-px sample per guidance kind, from the measured per-evaluation times."""
    if "ms_per_eval" not in table:
        return table
    e2e = []
    for _, r in table.iterrows():
        if r.get("model") != "base" or pd.isna(r.get("ms_per_eval")):
            e2e.append(None)
            continue
        e2e.append(r["batch_size"] / (base_steps * r["ms_per_eval"] / 1000))
    table["cfg_images_per_s_64px"] = e2e
    return table
