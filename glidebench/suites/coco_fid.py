"""The entry point of the coco-fid suite (and of the suites that share its runner, e.g. attributes): zero-shot
MS-COCO FID / CLIP score of classifier-free vs CLIP guidance (GLIDE, sec. 5). The staged runner itself is
:mod:`glidebench.runner` (options and plan, run directory, generation, features, metrics, outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runner.options import RunOptions
from ..runner.prompts import apply_contract, elsewhere_options, read_prompts_file
from ..runner.stages import execute


def run(args: argparse.Namespace) -> int:
    """`glidebench run coco-fid`: returns the exit code (errors raise; the CLI turns them into messages).
    ``--prompts FILE``: the file's protocol (:mod:`glidebench.runner.prompts`)."""
    options, contract = RunOptions.from_args(args), None
    if getattr(args, "prompts", None):
        contract = read_prompts_file(Path(args.prompts))
        options = apply_contract(options, contract)
    if options.images or options.images_setting:
        options = elsewhere_options(options)  # the settings rule `glidebench prompts` follows
    execute(options, contract)
    return 0
