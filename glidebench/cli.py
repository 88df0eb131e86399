"""The command line: ``glidebench run coco-fid``, ``glidebench ls``, ``glidebench prepare coco``, ``glidebench report``.

Also reachable as ``python -m glidebench`` and under torchrun
(``torchrun --nproc-per-node N -m glidebench run coco-fid ...``). Unknown options are argparse errors (exit 2).
Every anticipated failure (missing or corrupt data, corrupt or missing checkpoint, NaN samples, too few
samples, a run directory of another run) ends with ``glidebench: error: <what and how to fix it>`` and exit
code 1, before any result file is written; ``--debug`` (or ``GLIDEBENCH_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .spec import SAMPLERS
from .suites import SuiteDef, list_suites

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
THROUGHPUT = "throughput"  # the speed-and-memory suite: its own runner and options, no suite file


THROUGHPUT_DESCRIPTION = (
    "Speed and memory of GLIDE's models: milliseconds per model evaluation, images/s, FLOPs, utilisation and "
    "peak memory of the base model, the upsampler and the CLIP-guidance step, over batch sizes, dtypes, "
    "attention kernels, torch.compile, channels-last and CUDA-graph replay (docs/performance.md). It has no "
    "suite file: its options are its own."
)


def _first_sentence(text: str) -> str:
    """A description's first sentence, whole (a one-line summary for lists)."""
    head = text.split(". ")[0].rstrip()
    return head if head.endswith(".") else head + "."


def _add_run(sub: argparse._SubParsersAction, suites: Sequence[SuiteDef]) -> None:
    p = sub.add_parser(
        "run",
        help="run a suite (coco-fid, attributes, nfe, throughput)",
        description="Run a suite; `glidebench run SUITE --help` lists that suite's options. Re-running the same "
        "command resumes.",
    )
    runs = p.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for s in suites:
        sp = runs.add_parser(
            s.name,
            help=_first_sentence(s.description).replace("%", "%%"),
            description=f"{s.description} Options left out come from the suite's profile "
            f"(glidebench/suites/{s.name}.json). Re-running the same command resumes.",
        )
        _add_run_options(sp, [s])
        sp.set_defaults(func=_cmd_run)
    tp = runs.add_parser(
        THROUGHPUT, help=_first_sentence(THROUGHPUT_DESCRIPTION), description=THROUGHPUT_DESCRIPTION
    )
    _add_throughput_options(tp)
    tp.set_defaults(func=_cmd_run)


def _add_throughput_options(tp: argparse.ArgumentParser) -> None:
    """The options of ``glidebench run throughput`` (its own runner, no suite file)."""
    tp.add_argument("--models", default="base,upsample,clip-step", help="base, upsample, clip-step")
    tp.add_argument("--batch-sizes", default="1,2,4", help="images per step")
    tp.add_argument("--dtypes", default=None, help="fp32,fp16,bf16 (default: fp32 on CPU, all three on GPU)")
    tp.add_argument(
        "--attention",
        help="attention kernels to time, a list of einsum (the official numerics) and sdpa (PyTorch's fused "
        "kernel); default einsum,sdpa",
    )
    tp.add_argument("--compile", default="off", help="off, on or off,on")
    tp.add_argument("--channels-last", default="off", help="off, on or off,on")
    tp.add_argument(
        "--cuda-graph", default="off", help="off, on or off,on: time CUDA-graph replays (CUDA only)"
    )
    tp.add_argument(
        "--size", default="full", choices=["full", "tiny"], help="official sizes or tiny test models"
    )
    tp.add_argument("--repeats", type=int, default=5)
    tp.add_argument("--trace", action="store_true", help="also export a torch.profiler trace per case")
    tp.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    tp.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    tp.add_argument("--out", default="runs", help="output root: OUT/throughput/<device>-<size>/")
    tp.add_argument("--features-only", action="store_true", help=argparse.SUPPRESS)  # refused with a message


def _add_run_options(p: argparse.ArgumentParser, suites: Sequence[SuiteDef], prompts: bool = False) -> None:
    """The options of a generate-and-measure run (``run`` and, for the protocol of a run, ``prompts``)."""
    g = p.add_argument_group("model and data")
    g.add_argument("--model", choices=["embedded", "official"], help="model family (default: official when the "
                   "data is MS-COCO and the weights are cached, else embedded)")  # fmt: skip
    g.add_argument(
        "--generator",
        help="evaluate another model: module.path:factory (your code), an installed glidebench.generators entry "
        "point (see `glidebench ls generators`), or diffusers:PATH_OR_ID (needs the diffusers extra)",
    )
    g.add_argument("--generator-args", help="keyword arguments of the generator's factory: key=value,...")
    g.add_argument(
        "--images",
        help="score images made elsewhere: DIR of <index>.png|jpg|webp (one setting: name it with --cfg S or "
        "--clip S), or DIR with one sub-folder per setting id (cfg-3/, clip-2/, none/)",
    )
    g.add_argument(
        "--images-setting", action="append", metavar="NAME=DIR", help="the images of one setting (repeatable)"
    )
    if not prompts and all(s.runner.endswith(".coco_fid") for s in suites):
        g.add_argument(
            "--prompts", metavar="FILE.jsonl",
            help="score exactly the protocol of a file written by `glidebench prompts` (its resolution, settings, "
            "seeds and size; a flag that says otherwise, or a run whose captions or protocol differ, is refused)",
        )  # fmt: skip
    g.add_argument("--data", choices=["embedded", "coco"], help="default: coco when a COCO root is given")
    g.add_argument(
        "--coco-root", help="MS-COCO directory with annotations/ and val2014/ (or $GLIDEBENCH_COCO)"
    )
    g.add_argument("--coco-split", choices=["val2014", "val2017"])
    g.add_argument(
        "--embedded-split",
        choices=["test", "val"],
        help="the embedded set's fixed split for captions and references (default test; val gives an "
        "independent set, e.g. to confirm a choice made on test)",
    )
    g.add_argument("--captions", choices=["one-per-image", "random", "single-object"], help="caption selection "
                   "(recorded); single-object: the embedded set's one-object scenes (the attributes suite)")  # fmt: skip
    g.add_argument(
        "--caption-style",
        choices=["exact", "short"],
        help="the embedded set's captions: exact (every attribute stated) or short (parts of each scene left "
        "unsaid, as people's captions do; the same scenes and references)",
    )
    g.add_argument("--num-samples", type=int, help="samples per setting")
    g.add_argument(
        "--samples-per-prompt", type=int, metavar="K",
        help="K images for each of the first --diversity-prompts captions (intra-caption diversity; the extra "
        "draws are indices after num-samples with their own seeds; FID/KID/P-R use the first image per caption)",
    )  # fmt: skip
    g.add_argument(
        "--diversity-prompts",
        type=int,
        metavar="M",
        help="how many of the first captions get K images (0 = all)",
    )
    g.add_argument(
        "--intervals", choices=("jackknife", "bootstrap"),
        help="how the 95%% intervals and paired differences are computed: jackknife (default: delete-one-block "
        "jackknife, split samples for precision/recall; widths match the sampling spread) or bootstrap (the "
        "percentile bootstrap of coco-fid version 5; too wide for FID, docs/uncertainty.md)",
    )  # fmt: skip
    g.add_argument(
        "--bootstrap-resamples", type=int, metavar="R",
        help="resamples of --intervals bootstrap (default 1000); 0 turns intervals off with either method",
    )  # fmt: skip
    g.add_argument("--reference-size", type=int, help="reference images (0 = the whole split)")
    g.add_argument("--limit", type=int, help="cap the number of samples (quick runs)")
    g.add_argument("--seed", type=int, help="base seed: sample i uses seed + i; also the caption choice")
    g = p.add_argument_group("sampling")
    g.add_argument("--cfg", help="classifier-free guidance scales, e.g. 1,1.5,2,3,4 ('' for none)")
    g.add_argument("--clip", help="CLIP-guidance scales, e.g. 1,2,3 ('' for none)")
    g.add_argument("--unguided", action="store_true", default=None, help="add an unguided setting")
    g.add_argument(
        "--cfg-interval",
        help="classifier-free guidance only at timesteps LO,HI of 0..T-1 (Kynkaanniemi et al. 2024; one model "
        "evaluation instead of two at the other steps); default: every step, as GLIDE",
    )
    g.add_argument(
        "--sampler", choices=list(SAMPLERS), help="base sampler (plms, dpm++2m and dpm++2m-sde use eps only)"
    )
    g.add_argument("--steps", help="base respacing: 250, 100, ddim25, quad12, 10,10,3,2,2, fast27")
    g.add_argument("--resolution", help="64 (base only) | 256 (with the upsampler) | base | up")
    g.add_argument("--up-sampler", choices=list(SAMPLERS))
    g.add_argument("--up-steps", help="upsampler respacing (default fast27)")
    g.add_argument("--upsample-temp", type=float, help="upsampler noise temperature (default 0.997)")
    presets = {name: preset for s in suites for name, preset in sorted(s.presets.items())}
    if presets:  # only the suites that have presets take --preset
        g.add_argument(
            "--preset",
            choices=sorted(presets),
            help="; ".join(
                f"{name}: {p.get('description', '')}".replace("%", "%%") for name, p in presets.items()
            ),
        )
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=int, help="generation chunk size (part of the run's identity)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"])
    if not prompts:
        g.add_argument(
            "--attention",
            help="GLIDE's attention kernel: einsum (the official numerics, the default) or sdpa (PyTorch's fused "
            "kernel, faster; images differ in the last bits, so it is part of the run's identity)",
        )  # fmt: skip
    g.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help="sample GLIDE on the fast inference path (SDPA; channels-last with an exact GroupNorm on CPU; "
        "torch.compile + CUDA graphs on CUDA): equal to the official numerics within "
        "float rounding, recorded in the spec (its own run dir); see docs/performance.md",
    )
    g.add_argument(
        "--threads", type=int, help="CPU threads of every stage (default: sampling and features on the CPUs the "
        "load average leaves free, at most one per physical core; the metric stage on one; under torchrun "
        "OMP_NUM_THREADS; docs/performance.md 'Threads'); images and numbers do not depend on it"
    )  # fmt: skip
    if prompts:
        g.add_argument("--out", required=True, help="the prompts file to write (JSONL, one line per image)")
    else:
        g.add_argument(
            "--out", default="runs", help="output root; the run dir is OUT/coco-fid/<name>-<fingerprint>"
        )
    g.add_argument("--shard", help="i/n: generate only chunks k with k %% n == i (job arrays); the last shard "
                   "to finish computes the metrics")  # fmt: skip
    g.add_argument(
        "--merge", action="store_true", help="compute metrics from the images present; no generation"
    )
    if not prompts:
        g.add_argument(
            "--features-only", action="store_true", default=None,
            help="generate (resuming as usual), then compute and cache every feature file the metrics read "
            "(Inception and evaluator CLIP of each setting, the reference set's) on --device, and stop: no "
            "metrics, no report. The same command without it (e.g. on a CPU node sharing the run directory and "
            "$GLIDEBENCH_CACHE) then computes the metrics and extracts nothing again",
        )  # fmt: skip
    g.add_argument(
        "--inception", choices=["auto", "torch-fidelity", "fid-helper"], help="Inception weights source"
    )
    g.add_argument("--feature-batch-size", type=int, help="Inception batch (default 8 on CPU, 64 on GPU)")
    _add_protocol_options(p)
    g.add_argument(
        "--profile",
        action="store_true",
        help="also time one evaluation of each generator of the run (its weights, chunk size, dtype, attention, "
        "device) into RUN_DIR/throughput.json; the report shows it. Does not change the run's identity",
    )
    g.add_argument(
        "--progress", action="store_true",
        help="progress is shown by default (one bar with an ETA on a terminal, else a line every 30 s on "
        "standard error); --progress draws the bar even off a terminal, plus per-stage bars (features, sampler steps)",
    )  # fmt: skip
    g.add_argument(
        "--quiet",
        action="store_true",
        help="only the first line, notes and the results: no log lines, no progress",
    )
    g.add_argument("--no-report", action="store_true", help="skip the HTML/Markdown report")
    g.add_argument(
        "--dry-run", action="store_true", help="print the resolved spec and run dir; write nothing"
    )


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
    """The options that reproduce a published protocol (docs/reproducing.md; glidebench.comparable)."""
    g = p.add_argument_group("published protocols (docs/reproducing.md)")
    g.add_argument("--captions-file", help="a fixed caption list: .csv (caption column, optional image_id), "
                   ".jsonl (caption, optional image_id) or .txt (one per line); its first N rows in order")  # fmt: skip
    g.add_argument("--reference-stats", help="FID reference statistics FILE.npz (mu, sigma; from `prepare coco "
                   "--export-stats`) instead of reference images; KID and precision/recall are then not measured")  # fmt: skip
    g.add_argument("--fid-resize", choices=["tf-bilinear", "clean"], help="resize to Inception's 299 px: "
                   "tf-bilinear (torch-fidelity's TF1 bilinear, the default, the paper's era) or clean (clean-fid's "
                   "PIL bicubic with antialiasing)")  # fmt: skip
    g.add_argument("--reference-protocol", metavar="RESIZE:PX", help="what made a --reference-stats file that has "
                   "no sidecar (pytorch-fid's, clean-fid's, an ADM batch): its resize to 299 px and resolution, e.g. "
                   "tf-bilinear:256; recorded in the spec (docs/reproducing.md)")  # fmt: skip
    g.add_argument("--kid-seed", type=int, help="seed of KID's random subsets (default: the run's --seed; 2020 "
                   "reproduces torch-fidelity's KID)")  # fmt: skip
    g.add_argument("--sfid", action="store_true", default=None, help="also measure sFID (the ADM evaluator's "
                   "spatial FID on Inception's mixed_6/conv features; results get sfid, sfid_lo, sfid_hi); on by "
                   "itself when --reference-stats is an ADM batch with mu_s / sigma_s; part of the run's identity")  # fmt: skip
    g.add_argument("--clip-score-model", metavar="ARCH:PRETRAINED", help="open_clip backbone of the CLIP score "
                   "(default ViT-B-16:openai on MS-COCO, as GLIDE; e.g. ViT-L-14:openai, ViT-g-14:laion2b_s34b_b88k)")  # fmt: skip
    g.add_argument("--log-to", choices=["tensorboard", "wandb"], help="also log the flat metrics and the config "
                   "block (RUN_DIR/results_config.json) to TensorBoard (RUN_DIR/tensorboard) or W&B")  # fmt: skip


def _add_prompts(sub: argparse._SubParsersAction, suites: Sequence[SuiteDef]) -> None:
    p = sub.add_parser(
        "prompts",
        help="write a run's protocol (index, caption, seed, setting, resolution) to generate elsewhere",
        description="Resolve the run these options describe (as `run` would, without generating) and write one "
        "JSON line per image: index, caption, seed, setting, guidance, scale, resolution, the protocol fingerprint "
        "(equal for every model under the same protocol) and the run fingerprint. Generate the images elsewhere "
        "as <index>.png, then score them with `glidebench run SUITE --images DIR` and the same options.",
    )
    p.add_argument("suite", choices=[s.name for s in suites])
    _add_run_options(p, suites, prompts=True)
    p.set_defaults(func=_cmd_prompts)


def _cmd_prompts(args: argparse.Namespace) -> int:
    from .runner.options import RunOptions
    from .runner.prompts import write_prompts

    path = write_prompts(RunOptions.from_args(args), Path(args.out))
    print(f"prompts: {path}")
    return 0


def _add_ls(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list suites, models and finished runs")
    p.add_argument(
        "what", nargs="?", choices=["suites", "models", "generators", "runs", "all"], default="all"
    )
    p.add_argument("--out", default="runs", help="where runs are (default runs/)")
    p.set_defaults(func=_cmd_ls)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="validate a local MS-COCO copy and cache its reference features")
    p.add_argument("dataset", choices=["coco"])
    p.add_argument("--coco-root", help="MS-COCO directory (or $GLIDEBENCH_COCO)")
    p.add_argument("--coco-split", choices=["val2014", "val2017"], default="val2014")
    p.add_argument("--resolution", default="64,256", help="comma-separated evaluation resolutions")
    p.add_argument("--reference-size", type=int, default=0, help="0 = the whole split")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference subset (when --reference-size)")
    p.add_argument("--device", help="default: cuda when available")
    p.add_argument("--inception", choices=["auto", "torch-fidelity", "fid-helper"], default="auto")
    p.add_argument("--feature-batch-size", type=int, help="Inception batch (default 8 on CPU, 64 on GPU)")
    p.add_argument(
        "--check-only",
        action="store_true",
        help="check that every reference image exists and decodes; no features",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    p.add_argument("--fid-resize", choices=["tf-bilinear", "clean"], default="tf-bilinear",
                   help="resize to Inception's 299 px (as `run --fid-resize`)")  # fmt: skip
    p.add_argument("--export-stats", metavar="FILE.npz", help="also write the reference set's FID statistics (mu, "
                   "sigma, float64) and FILE.json naming the protocol; several resolutions: FILE-<res>px.npz each")  # fmt: skip
    p.add_argument("--export-adm", metavar="FILE.npz", help="also write an ADM evaluator reference batch (arr_0: "
                   "the images, uint8 NHWC; mu, sigma; sFID's mu_s, sigma_s) and FILE.json")  # fmt: skip
    p.add_argument("--export-features", metavar="FILE.npz", help="also write the reference set's Inception "
                   "features (pool3 [N, 2048], ...) and FILE.json, for KID and precision/recall from files")  # fmt: skip
    p.set_defaults(func=_cmd_prepare)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a generated setting as an ADM evaluator sample batch or features"
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--setting", required=True, help="the setting id (e.g. cfg-3)")
    p.add_argument("--adm", metavar="FILE.npz", help="the protocol's images as arr_0 (uint8 NHWC)")
    p.add_argument("--features", metavar="FILE.npz", help="the setting's Inception features (pool3, ...)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .statfiles import export_setting

    for line in export_setting(args.run_dir, args.setting, args.adm, args.features):
        print(line)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render the HTML/Markdown report of finished run directories")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report for one run, reports/latest for several")
    p.add_argument("--title")
    p.add_argument(
        "--force", action="store_true",
        help="write into a folder holding files the report did not write (they are kept, never deleted)",
    )  # fmt: skip
    p.add_argument(
        "--single-file", action="store_true",
        help="write one self-contained index.html (figures embedded) and results.csv, no PNGs or report.md; "
        "default: index.html and report.md linking the PNGs beside them",
    )  # fmt: skip
    p.set_defaults(func=_cmd_report)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="checks of the embedded family: evaluator retrieval among 10, inpainting (kept region, edits), "
        "upsampler (error against the true render and against bilinear)",
        description="Evaluator CLIP: top-1 retrieval of each held-out test image's caption among 10. Inpainting: "
        "erase the object of one-object test scenes, fill it under an edited caption (new colour and shape), "
        "check the kept pixels are unchanged and the fill shows the requested attributes. Upsampler: upsample "
        "test scenes' low-resolution renders and compare with the true renders and with bilinear upsampling.",
    )
    p.add_argument("--num-retrieval", type=int, default=1000, help="held-out test images for retrieval")
    p.add_argument("--num-inpaint", type=int, default=200, help="one-object test scenes for inpainting")
    p.add_argument("--num-upsample", type=int, default=100, help="test scenes for the upsampler")
    p.add_argument("--scale", type=float, default=3.0, help="classifier-free scale of the inpainting model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--out", default="runs", help="output root: OUT/checks/<models hash>/")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from .suites.checks import run_checks

    configure_threads(args.threads)
    return run_checks(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glidebench",
        description="GLIDE benchmark harness: zero-shot MS-COCO (or embedded-set) FID, CLIP score and friends.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    suites = list_suites()  # the registry, read once per command line
    _add_run(sub, suites)
    _add_prompts(sub, suites)
    _add_ls(sub)
    _add_prepare(sub)
    _add_export(sub)
    _add_report(sub)
    _add_check(sub)
    return parser


# ----------------------------------------------------------------------------------------------------------
# Commands


def _cmd_throughput(args: argparse.Namespace) -> int:
    import torch

    from .suites.throughput import cases, run_throughput

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = (args.dtypes or ("fp32,fp16,bf16" if device.startswith("cuda") else "fp32")).split(",")
    onoff = {"off": [False], "on": [True], "off,on": [False, True], "on,off": [True, False]}
    for name in ("compile", "channels_last", "cuda_graph"):
        if getattr(args, name) not in onoff:
            raise ValueError(f"--{name.replace('_', '-')} must be off, on or off,on")
    case_list = cases(
        args.models.split(","),
        [int(b) for b in args.batch_sizes.split(",")],
        dtypes,
        (args.attention or "einsum,sdpa").split(","),
        onoff[args.compile],
        onoff[args.channels_last],
        onoff[args.cuda_graph],
    )
    out = Path(args.out) / "throughput" / f"{device.replace(':', '')}-{args.size}"
    table = run_throughput(case_list, out, device, args.size, repeats=args.repeats, trace=args.trace)
    cols = [
        "model",
        "batch_size",
        "dtype",
        "attention",
        "compile",
        "channels_last",
        "cuda_graph",
        "ms_per_eval",
        "images_per_s",
        "gflop_per_eval",
        "achieved_tflops",
        "utilisation",
        "peak_memory_mib",
        "error",
    ]
    print(table[[c for c in cols if c in table]].to_string(index=False))
    print(f"wrote {out}/throughput.json and throughput.csv")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .suites import load_suite

    env_threads = _env_threads()  # before configure_threads writes the variables
    default = configure_threads(args.threads)
    if args.suite == THROUGHPUT:
        if getattr(args, "features_only", False):
            raise ValueError("--features-only applies to the generate-and-measure suites, not throughput")
        return _cmd_throughput(args)
    from .runner import threads as T

    # per stage: sampling on the CPUs the load leaves free, the metric stage on one (docs/performance.md)
    args.stage_threads = T.stage_threads(args.threads, env_threads, default, T.cpus(), T.load1())
    suite = load_suite(args.suite)
    import importlib

    return int(importlib.import_module(suite.runner).run(args))


def configure_threads(threads: int | None) -> int:
    """CPU threads for torch and (when numpy is not imported yet) BLAS: ``threads``, else ``OMP_NUM_THREADS``
    when set (torchrun sets 1 per rank), else torch's own default (one per physical core); returns the count.
    ``run`` then sets each stage's count (:mod:`glidebench.runner.threads`); the other commands keep this one."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        if threads is not None:  # before torch (and numpy) load, so that BLAS reads it
            _set_thread_env(threads)
            n = threads
        else:
            import torch

            n = max(1, torch.get_num_threads())
            _set_thread_env(n)
    import torch

    torch.set_num_threads(n)
    return n


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as the user (or torchrun) set it; not the value configure_threads wrote itself."""
    value = os.environ.get("OMP_NUM_THREADS")
    return int(value) if value and value != _ENV_WRITTEN.get("OMP_NUM_THREADS") else None


_ENV_WRITTEN: dict[str, str] = {}  # the thread variables configure_threads set in this process


def _set_thread_env(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        # read by BLAS when numpy loads (if it has not loaded yet)
        os.environ[var] = _ENV_WRITTEN[var] = str(n)


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def list_runs(out: Path) -> list[dict]:
    from .store import read_json

    rows = []
    for spec_path in sorted(Path(out).glob("*/*/spec.json")):
        run_dir = spec_path.parent
        try:
            spec = read_json(spec_path)
        except ValueError:
            continue
        settings = [
            "none" if s.get("guidance") == "none" else f"{s.get('guidance', '?')}-{s.get('scale', 0):g}"
            for s in spec.get("settings", [])
        ]
        rows.append(
            {
                "run": str(run_dir),
                "suite": spec.get("suite", "?"),
                "model": spec.get("model_label", spec.get("model", "?")),
                "data": f"{spec.get('data', '?')}:{spec.get('split', '?')}",
                "samples": spec.get("num_samples", "?"),
                "settings": ",".join(settings),
                "status": "finished"
                if (run_dir / "results.csv").exists()
                else "incomplete (rerun to resume)",
            }
        )
    return rows


def _cmd_ls(args: argparse.Namespace) -> int:
    """Lists; imports only what the asked-for list needs (``ls suites``, ``generators`` and ``runs`` load no
    torch)."""
    if args.what in ("suites", "all"):
        print("suites:")
        for s in list_suites():
            presets = ", ".join(sorted(s.presets)) or "-"
            print(
                f"  {s.name} (version {s.version}; profiles {', '.join(sorted(s.profiles))}; presets {presets})"
            )
            print(f"    {_first_sentence(s.description)}")
        print(f"  {THROUGHPUT} (no suite file; options: glidebench run {THROUGHPUT} --help)")
        print(f"    {_first_sentence(THROUGHPUT_DESCRIPTION)}")
    if args.what in ("models", "all"):
        from .models import describe_models, models_dir

        print(f"models (embedded files in {models_dir()}):")
        print("  " + _table(describe_models(), ["family", "role", "status", "where"]).replace("\n", "\n  "))
    if args.what in ("generators", "all"):
        from .generators import describe_generators

        print("generators (--model, or --generator for any other model):")
        print("  " + _table(describe_generators(), ["name", "kind", "how"]).replace("\n", "\n  "))
    if args.what in ("runs", "all"):
        rows = list_runs(Path(args.out))
        print(f"runs in {args.out}:" + ("" if rows else " none"))
        if rows:
            print(
                "  "
                + _table(rows, ["run", "model", "data", "samples", "settings", "status"]).replace(
                    "\n", "\n  "
                )
            )
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    import time

    configure_threads(args.threads)
    import torch

    from .data.coco import CocoCaptions, CocoError, reference_batches, resolve_root, validate_images
    from .features import cache_root, features_for

    root = resolve_root(args.coco_root)
    if root is None:
        raise CocoError("prepare coco needs --coco-root DIR (or GLIDEBENCH_COCO)")
    coco = CocoCaptions(root, args.coco_split)
    files = coco.reference_files(args.reference_size, args.seed)
    coco.check_files(files)
    digests = validate_images(files, cache_root() / "validated-images.txt", progress=True)
    n_caps = sum(len(c) for c in coco.captions.values())
    print(f"MS-COCO {args.coco_split} at {root}: {len(coco.images)} images, {n_caps} captions, annotations sha256 "
          f"{coco.annotations_sha256[:16]}; all {len(files)} reference images present and readable")  # fmt: skip
    if args.check_only:
        return 0
    from .features import InceptionExtractor

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    from .statfiles import check_export_adm, export_coco_files

    check_export_adm(args.export_adm, args.fid_resize)
    spatial = {"spatial": True} if args.export_adm else {}  # sFID's features: the ADM batch's mu_s, sigma_s
    extractor = InceptionExtractor(args.inception, device=device, resize=args.fid_resize, **spatial)
    resolutions = [int(r) for r in str(args.resolution).split(",") if r.strip()]
    args.feature_batch_size = args.feature_batch_size or (64 if device.type == "cuda" else 8)
    for res in resolutions:
        t0 = time.monotonic()
        fp = coco.reference_fingerprint(files, res, digests)
        feats = features_for(
            extractor, fp, lambda res=res: reference_batches(files, res, args.feature_batch_size), len(files),
            cache_root() / "features", args.feature_batch_size, True,
        )  # fmt: skip
        print(f"  {res} px: reference features {feats['pool3'].shape} ({extractor.name}) cached under "
              f"{cache_root() / 'features'} in {time.monotonic() - t0:.0f} s")  # fmt: skip
        if args.export_stats:
            from .refstats import export_coco_stats

            npz = export_coco_stats(
                args.export_stats, feats["pool3"], coco, res, extractor, fp, len(resolutions) > 1
            )
            print(f"  {res} px: reference statistics {npz} (+ {npz.with_suffix('.json').name})")
        for line in export_coco_files(args, feats, coco, files, res, extractor, fp, len(resolutions) > 1):
            print(line)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import render_report

    out = args.out or (args.run_dirs[0] / "report" if len(args.run_dirs) == 1 else Path("reports") / "latest")
    index = render_report(
        list(args.run_dirs), out, title=args.title, force=args.force, single_file=args.single_file
    )
    print(f"report: {index}")
    return 0


def _known_errors() -> tuple[type[BaseException], ...]:
    from glide.checkpoints import CheckpointError
    from glide.pipeline import SamplingError

    from .data.coco import CocoError
    from .generators import GeneratorError
    from .models import ModelUnavailable
    from .runner.results import MetricsError
    from .runner.stages import IncompleteRun, RunDirError
    from .suites import SuiteError

    return (
        CheckpointError, SamplingError, CocoError, GeneratorError, ModelUnavailable, MetricsError, SuiteError, IncompleteRun,
        RunDirError, ValueError, FileNotFoundError, OSError,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    debug = args.debug or os.environ.get("GLIDEBENCH_DEBUG") == "1"
    if args.command != "ls" and os.environ.get("GLIDEBENCH_TUNE_MALLOC", "1") != "0":  # ls: no torch
        from glide.fast import tune_cpu_allocator

        tune_cpu_allocator()  # the same numbers, less time on CPU (glide.fast; recorded in provenance)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            "glidebench: interrupted; run the same command again to resume (finished images are kept)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except _known_errors() as e:
        if debug:
            raise
        print(f"glidebench: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", EXIT_ERROR))  # 2 for a usage error (a plug-in not found)


if __name__ == "__main__":
    sys.exit(main())
