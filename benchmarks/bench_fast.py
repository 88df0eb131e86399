"""Benchmark (run by hand, not a test): the fast inference path against the official forward on CPU, fp32.

    OMP_NUM_THREADS=2 python benchmarks/bench_fast.py [--size full|embedded|tiny] [--threads 2]
        [--batch-sizes 2,8] [--repeats 3] [--out runs/bench-fast]

Times one evaluation of the base model on a classifier-free batch (B images = 2B rows, the text encodings
computed once with ``model.get_text_emb`` outside the timing) for four variants of the same weights:

- ``official``: the model itself (einsum attention, NCHW, eager), the reference numerics;
- ``fast``: ``glide.fast.accelerate(copy, "cpu", FastPath())`` (SDPA, NCHW, at most 32 rows per call);
- ``fast+channels_last``: ``FastPath(channels_last=True)`` (GroupNorm statistics in two passes over the
  channels-last tensor: within tolerance);
- ``fast+channels_last+nchw_gn``: ``FastPath(channels_last=True, groupnorm="nchw")`` (GroupNorm on an NCHW
  copy: within tolerance);
- ``fast+channels_last+native_gn``: ``FastPath(channels_last=True, groupnorm="native")``, outside the fast
  path's 1e-5 per-forward tolerance on the golden base model (1.4e-5).

The variants are timed alternately in one process (one warm-up round, then ``--repeats`` rounds, each timing
every variant once), so a change in the machine's load falls on all of them alike; the table has the median
seconds per evaluation, its ratio to the official median, and the largest absolute difference of the
variant's output from the official output on the same input.

The roofline columns put the ratios against what the machine can do at all: ``gflop`` is one evaluation's
arithmetic (torch's ``FlopCounterMode``: convolutions, matmuls and attention), ``gflop_per_s`` the rate the
variant reached, and ``of_sgemm_peak`` that rate over the machine's measured fp32 peak, the median rate of a
2048 x 2048 matmul timed once in every round (the best-tuned kernel the CPU runs). ``floor_ratio`` in the
footer is the ratio to the official time of a forward that ran all its arithmetic at that peak: no
variant that keeps the arithmetic (fp32, the same FLOPs) can go below it. Sizes: full = the official base architecture
with random weights (timing does not depend on the weights; the zero-initialised layers are given random
values too, so that the differences are not those of a model whose output is 0), embedded = the shipped 32-px base model, tiny =
a small random model (a smoke test). Writes bench_fast.csv and bench_fast.md (atomically) into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glide.fast import FastPath, accelerate  # noqa: E402
from glidebench.profile import count_flops  # noqa: E402
from glidebench.store import atomic_write_text  # noqa: E402

COLUMNS = [
    "size",
    "images",
    "rows",
    "variant",
    "median_s",
    "ratio_to_official",
    "max_abs_diff",
    "gflop",
    "gflop_per_s",
    "of_sgemm_peak",
    "note",
]
VARIANTS = (
    "official",
    "fast",
    "fast+channels_last",
    "fast+channels_last+nchw_gn",
    "fast+channels_last+native_gn",
)
SGEMM_SIZE = 2048
NOTES = {
    "fast+channels_last+native_gn": "outside tolerance (PyTorch's channels-last GroupNorm rounds differently)"
}


def load_base(size: str) -> torch.nn.Module:
    """The base model for ``size`` in fp32 on CPU, in eval mode, with the official (einsum) attention."""
    if size == "embedded":
        from glide.checkpoints import load_model
        from glidebench.models import models_dir

        model = load_model(models_dir() / "embedded-base.safetensors", device="cpu")
    else:
        from glide.unet import create_model
        from glidebench.suites.throughput import _unet_config

        torch.manual_seed(0)
        model = create_model(_unet_config("base", size))
        randomise_zero_layers(model)
    return model.float().eval()


def randomise_zero_layers(model: torch.nn.Module) -> int:
    """Give the zero-initialised layers (every residual branch's last convolution, the attention output
    projections, the output convolution) PyTorch's default initialisation, so that a random model's output
    depends on every layer and the output differences between variants measure something. Returns how many
    layers were changed."""
    changed = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) and not m.weight.any():
                m.reset_parameters()
                changed += 1
    return changed


def variants(model: torch.nn.Module) -> dict[str, Callable[..., torch.Tensor]]:
    """The forwards of VARIANTS, each on its own copy of ``model``'s weights (the model itself is the official
    one)."""
    return {
        "official": model,
        "fast": accelerate(copy.deepcopy(model), "cpu", FastPath()),
        "fast+channels_last": accelerate(copy.deepcopy(model), "cpu", FastPath(channels_last=True)),
        "fast+channels_last+nchw_gn": accelerate(
            copy.deepcopy(model), "cpu", FastPath(channels_last=True, groupnorm="nchw")
        ),
        "fast+channels_last+native_gn": accelerate(
            copy.deepcopy(model), "cpu", FastPath(channels_last=True, groupnorm="native")
        ),
    }


def inputs(
    model: torch.nn.Module, images: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(x_t, t, text_emb) of a classifier-free batch: ``images`` captions then as many empty captions."""
    cfg = model.config
    rows = 2 * images
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 3, cfg.image_size, cfg.image_size, generator=g)
    t = torch.full((rows,), cfg.diffusion_steps // 2, dtype=torch.long)
    prompts = [f"a photo of object number {i}" for i in range(images)] + [""] * images
    tokens, mask = model.tokenizer.batch(prompts, cfg.text_ctx)
    with torch.no_grad():
        text_emb = model.get_text_emb(tokens, mask)
    return x, t, text_emb


def forward_flops(
    model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, text_emb: tuple[torch.Tensor, ...]
) -> int:
    """One evaluation's FLOPs as torch's FlopCounterMode counts them (a multiply-add = 2)."""
    with torch.no_grad():
        return count_flops(lambda: model(x, t, text_emb=text_emb))


def sgemm_seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    """Seconds of one fp32 ``a @ b``."""
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


def floor_ratio(gflop: float, peak_gflop_per_s: float, official_s: float) -> float:
    """The ratio to the official time of a forward that runs its ``gflop`` at the peak rate."""
    return gflop / peak_gflop_per_s / official_s


def measure(
    forwards: dict[str, Callable[..., torch.Tensor]],
    x: torch.Tensor,
    t: torch.Tensor,
    text_emb: tuple[torch.Tensor, ...],
    repeats: int,
    sgemm_size: int = SGEMM_SIZE,
) -> tuple[dict[str, dict[str, float]], float]:
    """Per variant: median seconds over ``repeats`` alternating rounds (after one warm-up round) and the max
    abs difference of its output from the official output; and the median GFLOP/s of a ``sgemm_size``-square
    fp32 matmul timed once in every round (the machine's attainable peak, under the same load)."""
    times: dict[str, list[float]] = {name: [] for name in forwards}
    outputs: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(1)
    a = torch.randn(sgemm_size, sgemm_size, generator=g)
    b = torch.randn(sgemm_size, sgemm_size, generator=g)
    sgemm: list[float] = []
    with torch.no_grad():
        for round_ in range(repeats + 1):
            elapsed = sgemm_seconds(a, b)
            if round_:
                sgemm.append(2 * sgemm_size**3 / elapsed / 1e9)
            for name, fwd in forwards.items():
                t0 = time.perf_counter()
                out = fwd(x, t, text_emb=text_emb)
                elapsed = time.perf_counter() - t0
                if round_ == 0:
                    outputs[name] = out.float().contiguous()  # warm-up: keep the output for the diff
                else:
                    times[name].append(elapsed)
    ref = outputs["official"]
    result = {
        name: {
            "median_s": statistics.median(times[name]),
            "max_abs_diff": float((outputs[name] - ref).abs().max()),
            "max_abs_output": float(outputs[name].abs().max()),
        }
        for name in forwards
    }
    return result, statistics.median(sgemm)


def markdown(table: pd.DataFrame, header: Sequence[str], footer: Sequence[str] = ()) -> str:
    """A GFM table of ``table`` (floats to 4 significant digits) between ``header`` and ``footer`` lines (the
    benchmarks' one table writer: fast_figures.py and bench_allocator.py use it too)."""
    cols = list(table.columns)
    lines = [*header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(cell(r[c]) for c in cols) + " |")
    return "\n".join([*lines, "", *footer] if footer else lines) + "\n"


def cell(v: Any) -> str:
    """One table cell: floats to 4 significant digits, NaN and None empty, pipes escaped."""
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def write(
    rows: list[dict[str, Any]], out: Path, header: Sequence[str], footer: Sequence[str] = ()
) -> pd.DataFrame:
    """bench_fast.csv and bench_fast.md in ``out`` (atomic writes); returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write_text(out / "bench_fast.csv", table.to_csv(index=False))
    atomic_write_text(out / "bench_fast.md", markdown(table, header, footer))
    return table


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="full", choices=["full", "embedded", "tiny"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--batch-sizes", default="2,8", help="images per batch (rows = 2 x images)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    p.add_argument(
        "--sgemm-size", type=int, default=SGEMM_SIZE, help="side of the matmul that measures the fp32 peak"
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-fast"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    model = load_base(args.size)
    forwards = variants(model)
    header = [
        f"# Fast path vs official forward, CPU fp32, base model ({args.size})",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} alternating "
        "rounds after one warm-up; max_abs_diff = max |output - official output| on the same input (fp32).",
    ]
    rows: list[dict[str, Any]] = []
    footer: list[str] = []
    for images in (int(v) for v in args.batch_sizes.split(",")):
        x, t, text_emb = inputs(model, images)
        gflop = forward_flops(model, x, t, text_emb) / 1e9
        result, peak = measure(forwards, x, t, text_emb, args.repeats, args.sgemm_size)
        official = result["official"]["median_s"]
        footer.append(
            f"{images} images: max |official output| {result['official']['max_abs_output']:.4g}; "
            f"sgemm peak {peak:.4g} GFLOP/s ({args.sgemm_size}^2 fp32 matmul, median of the rounds); "
            f"floor_ratio {floor_ratio(gflop, peak, official):.3g} (all {gflop:.4g} GFLOP at that peak)"
        )
        for name in forwards:
            row = {
                "size": args.size,
                "images": images,
                "rows": 2 * images,
                "variant": name,
                "median_s": result[name]["median_s"],
                "ratio_to_official": result[name]["median_s"] / official,
                "max_abs_diff": result[name]["max_abs_diff"],
                "gflop": gflop,
                "gflop_per_s": gflop / result[name]["median_s"],
                "of_sgemm_peak": gflop / result[name]["median_s"] / peak,
                "note": NOTES.get(name, ""),
            }
            rows.append(row)
            print(", ".join(f"{k}={cell(v)}" for k, v in row.items()), flush=True)
        write(rows, args.out, header, footer)  # after every batch size: a run cut short keeps its rows
    table = write(rows, args.out, header, footer)
    print(markdown(table, header, footer))
    print(f"wrote {args.out}/bench_fast.csv and bench_fast.md")
    return table


if __name__ == "__main__":
    main()
