"""``python -m glide``: sample, inpaint and download with the official checkpoints (or local files).

python -m glide sample "an oil painting of a corgi" --out corgi.png
python -m glide sample "a corgi" --guidance clip --scale 3 --out corgi.png
python -m glide inpaint "a corgi in a field" --image grass.png --mask-rows 20 --out x.png
python -m glide download base upsample

Offline, the small embedded models shipped in glidebench/assets/models/ work as --base/--upsampler FILEs.
The first line printed says what runs (model files, guidance, scale, sampler, steps, seed); a base and
upsampler that cannot work together (an inpainting base with a plain upsampler, a text-to-image base under
`inpaint`, an upsampler no larger than the base) are refused before any weights are loaded.
Expected failures (a missing or corrupt checkpoint, a failed download, bad options) print one paragraph that
says what went wrong and how to fix it, and exit with status 2; GLIDE_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoints import OFFICIAL, CheckpointError, cached_path, download, how_to_get, is_cached
from .diffusion.samplers import SAMPLERS

# The embedded models (trained by this project on its toy caption set of coloured shapes, shipped with the
# benchmark) are named by path only: glide never imports glidebench.
EMBEDDED_DIR = "glidebench/assets/models"
EMBEDDED_PROMPT = "a small red square on a black background"
EMBEDDED_INPAINT_NOTE = (
    "note: the embedded inpainting model knows only the embedded set's scenes (flat coloured shapes on a black, "
    "grey or white background); around other images it fills the hole with noise (docs/glide.md)"
)


class CliError(Exception):
    """A usage problem found by the command line itself (the message says what to do)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glide", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter

    def common(sp: argparse.ArgumentParser, base: str, up: str) -> None:
        sp.add_argument("prompt", help="the caption")
        sp.add_argument("--out", required=True, type=Path, help="output PNG (a grid when --batch-size > 1)")
        sp.add_argument("--batch-size", type=int, default=1, help="images, with seeds seed, seed + 1, ...")
        sp.add_argument("--seed", type=int, default=0, help="seed of the first image")
        sp.add_argument("--steps", default="100", help="base respacing: N, a,b,c, ddimN, quadN or fast27")
        sp.add_argument("--sampler", default="ancestral", choices=sorted(SAMPLERS), help="base sampler")
        sp.add_argument(
            "--base", default=base, help="base checkpoint: official name (downloaded) or file (offline: "
            f"{EMBEDDED_DIR}/embedded-*.safetensors)",
        )  # fmt: skip
        sp.add_argument("--upsampler", default=up, help="upsampler checkpoint: official name or file")
        sp.add_argument("--no-upsample", action="store_true", help="stop at the base model's size")
        sp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda")
        sp.add_argument(
            "--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="None: fp16 on CUDA, else fp32"
        )

    s = sub.add_parser("sample", help="text -> image", formatter_class=defaults)
    common(s, "base", "upsample")
    s.add_argument("--guidance", default="cfg", choices=["cfg", "clip", "none"], help="guidance kind")
    s.add_argument("--scale", type=float, default=3.0, help="guidance scale (cfg: 1 = the conditional model)")
    s.add_argument(
        "--clip", default=None, help="noised-CLIP file for --guidance clip (None: the official one)"
    )
    i = sub.add_parser("inpaint", help="image + mask + text -> image", formatter_class=defaults)
    common(i, "base-inpaint", "upsample-inpaint")
    i.add_argument("--image", required=True, type=Path)
    i.add_argument("--mask", type=Path, help="mask image: white = keep, black = fill in")
    i.add_argument(
        "--mask-rows",
        type=int,
        help="keep the top N rows of the base model's image (of 64 officially; the notebook's example)",
    )
    i.add_argument("--scale", type=float, default=5.0, help="classifier-free guidance scale")
    d = sub.add_parser("download", help="download official checkpoints into the cache")
    d.add_argument("names", nargs="+", choices=sorted(OFFICIAL))
    return p


def embedded_hint(cmd: str, clip: bool = False) -> str:
    """How to run ``cmd`` offline with the embedded models (text only)."""
    d = EMBEDDED_DIR
    if cmd == "inpaint":
        example = (
            f'python -m glide inpaint "{EMBEDDED_PROMPT}" --image IMAGE.png --mask-rows 16 '
            f"--base {d}/embedded-inpaint.safetensors --no-upsample --out x.png (IMAGE.png: a scene of the "
            "embedded set's kind, flat shapes on a black, grey or white background; around other images this "
            "model fills the hole with noise)"
        )
    else:
        guide = f" --guidance clip --clip {d}/embedded-clip-noised.safetensors" if clip else ""
        example = (
            f'python -m glide sample "{EMBEDDED_PROMPT}" --base {d}/embedded-base.safetensors '
            f"--upsampler {d}/embedded-upsample.safetensors{guide} --out x.png"
        )
    return (
        f"Without internet, the small embedded models shipped with this project in {d}/ (32 px base, 32->64 px "
        "upsampler, inpainting model and noised CLIP, trained on its captions of coloured shapes) work offline "
        f"as checkpoint files; from the repository root, for example: {example}"
    )


def _config_of(spec: str):
    """The model config of a checkpoint (an official name's preset, a safetensors file's metadata) without
    loading its weights; None when only loading can tell (a .pt file, a missing file: loading says why)."""
    from .checkpoints import config_from_metadata
    from .config import preset

    if spec in OFFICIAL:
        return preset(OFFICIAL[spec].options["preset"]) if OFFICIAL[spec].kind == "unet" else None
    path = Path(spec)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - a corrupt header: loading reports it properly
        return None
    return config_from_metadata(meta, str(path)) if "glide_config" in meta else None


def check_pair(cmd: str, base: str, up: str | None) -> tuple:
    """Refuse (before loading) a base and upsampler that cannot work together under ``cmd``; returns their
    configs (None where only loading can tell)."""
    want_base, want_up = ("base-inpaint", "upsample-inpaint") if cmd == "inpaint" else ("base", "upsample")
    b, u = _config_of(base), (_config_of(up) if up else None)
    if b is not None and b.variant != want_base:
        other = "inpaint" if b.variant == "base-inpaint" else "sample"
        raise CliError(
            f"--base {base} is {_a(b.variant)} model ({b.image_size} px); `{cmd}` needs {_a(want_base)} model"
            + (f": use `python -m glide {other}` with it" if b.variant.startswith("base") else "")
        )
    if u is not None and u.variant != want_up:
        raise CliError(
            f"--upsampler {up} is {_a(u.variant)} model; `{cmd}` with base {base} needs {_a(want_up)} upsampler "
            f"(the official {want_up!r}), or --no-upsample to stop at the base model's size"
        )
    if b is not None and u is not None and u.image_size <= b.image_size:
        raise CliError(
            f"--upsampler {up} makes {u.image_size} px images from the base's {b.image_size} px: it does not "
            "upsample this base; pick the upsampler trained for it, or --no-upsample"
        )
    return b, u


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def first_line(args: argparse.Namespace, base: str, up: str | None, configs: tuple, dtype: str) -> str:
    """What runs: model files, guidance, scale, sampler, steps, seed, device."""
    b, u = configs
    size = f", {b.image_size} px" if b is not None else ""
    upsampler = (
        f"upsampler {up}" + (f" ({u.image_size} px)" if u is not None else "")
        + (" ancestral" if args.cmd == "inpaint" else " ddim") + " fast27"
        if up else "no upsampler"
    )  # fmt: skip
    guidance = "cfg" if args.cmd == "inpaint" else args.guidance
    scale = "" if guidance == "none" else f" scale {args.scale:g}"
    seeds = f"seed {args.seed}" + (f"..{args.seed + args.batch_size - 1}" if args.batch_size > 1 else "")
    return (
        f"glide {args.cmd}: base {base}{size}, {upsampler}; guidance {guidance}{scale}; {args.sampler} "
        f"{args.steps}; {seeds}; {args.device} {dtype}"
    )


def _note_resize(path: Path, size: int) -> None:
    """Say so when the input image is not the base model's size (it is resized to it)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError:
        return  # _read_image reports an unreadable file
    if (w, h) != (size, size):
        print(f"note: {path} ({w}x{h}) is resized to the base model's {size} px; the output is that size "
              "(or the upsampler's)", flush=True)  # fmt: skip


def _need(names: list[str], cmd: str, clip: bool) -> None:
    missing = [n for n in names if n in OFFICIAL and not is_cached(n)]
    if missing:
        raise CheckpointError("; ".join(how_to_get(n) for n in missing) + ". " + embedded_hint(cmd, clip))


def _read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("RGB").resize((size, size), resample=Image.BICUBIC)
    except (OSError, UnidentifiedImageError) as e:
        raise CliError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(np.array(img)).float().permute(2, 0, 1)[None] / 127.5 - 1


def _save_grid(images: torch.Tensor, out: Path) -> None:
    from PIL import Image

    from .fileio import atomic_path

    grid = images.permute(2, 0, 3, 1).reshape(images.shape[2], -1, 3).cpu().numpy()
    fmt = Image.registered_extensions().get(out.suffix.lower(), "PNG")
    try:
        with atomic_path(out) as tmp:
            Image.fromarray(grid).save(tmp, format=fmt)
    except OSError as e:
        raise CliError(f"cannot write the image {out} ({type(e).__name__}: {e}); choose another --out") from e


def _checkpoint_fix(spec: str) -> tuple[str, str]:
    """(how to name the checkpoint ``spec``, how to replace it) for error messages."""
    if spec in OFFICIAL:
        path = cached_path(spec)
        return (
            f"the official {spec!r} checkpoint {path}",
            f"delete {path} and {path.with_suffix('.sha256')} and download it again "
            f"(`python -m glide download {spec}`)",
        )
    return f"the checkpoint file {spec}", f"copy, download or export {spec} again from its source"


def _sampling_error_message(e: Exception, spec: str, dtype: str) -> str:
    what, fix = _checkpoint_fix(spec)
    message = (
        f"sampling with {what} produced NaN/inf values ({e}). Weights that make the model's output overflow "
        f"like this usually mean the file is corrupt (changed bytes); the fix: {fix}."
    )
    if dtype == "fp16":
        message += " It ran in fp16: if the file is intact, run with --dtype bf16 or --dtype fp32 instead."
    return message


def _download(names: list[str]) -> None:
    for name in names:
        try:
            path = download(name)
        except OSError as e:  # no network, DNS, timeouts, HTTP errors (urllib's errors are OSErrors)
            raise CliError(
                f"could not download {name} from {OFFICIAL[name].url} ({type(e).__name__}: {e}); check the "
                "internet connection and run the command again (a partial download resumes). "
                + embedded_hint("sample")
            ) from e
        print(f"{name}: {path}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    used: dict[str, str | None] = {}  # what _run chose: base / up checkpoint, dtype (for error messages)
    if os.environ.get("GLIDE_DEBUG") == "1":
        return _run(args, used)
    from .pipeline import SamplingError

    try:
        return _run(args, used)
    except SamplingError as e:
        spec = used.get("up") if getattr(e, "stage", None) == "upsample" else used.get("base")
        message = _sampling_error_message(e, spec or "", used.get("dtype") or "")
    except torch.cuda.OutOfMemoryError as e:
        message = f"out of GPU memory ({str(e).splitlines()[0]}); use a smaller --batch-size or --dtype fp16"
    except (CheckpointError, CliError, ValueError) as e:
        message = str(e)
    except OSError as e:  # e.g. the --out folder cannot be written
        message = f"{type(e).__name__}: {e}"
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("error: " + " ".join(message.split()), file=sys.stderr)  # one paragraph
    return 2


def _run(args: argparse.Namespace, used: dict[str, str | None]) -> int:
    if args.cmd == "download":
        _download(args.names)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    inpaint = args.cmd == "inpaint"
    if inpaint and args.mask is None and args.mask_rows is None:
        raise CliError("inpaint needs --mask FILE or --mask-rows N")
    from .pipeline import GlidePipeline

    base = args.base
    up = None if args.no_upsample else args.upsampler
    configs = check_pair(args.cmd, base, up)
    clip = None
    if getattr(args, "guidance", None) == "clip":
        clip = args.clip or "official"
    _need(
        [base] + ([up] if up else []) + (["clip/image-enc", "clip/text-enc"] if clip == "official" else []),
        args.cmd,
        clip is not None,
    )
    dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    used.update(base=base, up=up, dtype=dtype)
    print(first_line(args, base, up, configs, dtype), flush=True)
    pipe = GlidePipeline.from_pretrained(base, up, clip, device=args.device, dtype=dtype)
    prompts = [args.prompt] * args.batch_size
    seeds = [args.seed + i for i in range(args.batch_size)]
    if inpaint:
        size = pipe.base.config.image_size
        _note_resize(args.image, size)
        if Path(base).name.startswith("embedded-inpaint"):
            print(EMBEDDED_INPAINT_NOTE, flush=True)
        image = _read_image(args.image, size).repeat(args.batch_size, 1, 1, 1)
        if args.mask is not None:
            mask = (_read_image(args.mask, size)[:, :1] > 0).float()
        else:
            mask = torch.ones(1, 1, size, size)
            mask[:, :, args.mask_rows :] = 0
        images = pipe.inpaint(
            image,
            mask.repeat(args.batch_size, 1, 1, 1),
            prompts,
            seeds,
            args.scale,
            args.sampler,
            args.steps,
            upsample=up is not None,
            progress=True,
        )
    else:
        images = pipe.generate(
            prompts,
            seeds,
            args.guidance,
            args.scale,
            args.sampler,
            args.steps,
            upsample=up is not None,
            progress=True,
        )
    _save_grid(images, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
