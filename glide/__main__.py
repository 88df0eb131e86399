"""``python -m glide``: sample, inpaint and download with the official checkpoints (or local files).

python -m glide sample "an oil painting of a corgi" --out corgi.png
python -m glide sample "a corgi" --guidance clip --scale 3 --out corgi.png
python -m glide inpaint "a corgi in a field" --image grass.png --mask-rows 20 --out x.png
python -m glide download base upsample
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoints import OFFICIAL, CheckpointError, download, how_to_get, is_cached
from .diffusion.samplers import SAMPLERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m glide", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("prompt")
        sp.add_argument("--out", required=True, type=Path, help="output PNG (a grid when --batch-size > 1)")
        sp.add_argument("--batch-size", type=int, default=1)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--steps", default="100", help="base respacing: N, a,b,c, ddimN, quadN or fast27")
        sp.add_argument("--sampler", default="ancestral", choices=sorted(SAMPLERS))
        sp.add_argument("--base", default=None, help="base checkpoint: official name or file")
        sp.add_argument("--upsampler", default=None, help="upsampler checkpoint: official name or file")
        sp.add_argument("--no-upsample", action="store_true", help="stop at 64 px")
        sp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        sp.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])

    s = sub.add_parser("sample", help="text -> image")
    common(s)
    s.add_argument("--guidance", default="cfg", choices=["cfg", "clip", "none"])
    s.add_argument("--scale", type=float, default=3.0)
    s.add_argument(
        "--clip", default=None, help="noised-CLIP file for --guidance clip (default: the official one)"
    )
    i = sub.add_parser("inpaint", help="image + mask + text -> image")
    common(i)
    i.add_argument("--image", required=True, type=Path)
    i.add_argument("--mask", type=Path, help="mask image: white = keep, black = fill in")
    i.add_argument("--mask-rows", type=int, help="keep the top N of 64 rows (the notebook's example)")
    i.add_argument("--scale", type=float, default=5.0)
    d = sub.add_parser("download", help="download official checkpoints into the cache")
    d.add_argument("names", nargs="+", choices=sorted(OFFICIAL))
    return p


def _need(names: list[str]) -> None:
    missing = [n for n in names if n in OFFICIAL and not is_cached(n)]
    if missing:
        raise CheckpointError("; ".join(how_to_get(n) for n in missing))


def _read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path).convert("RGB").resize((size, size), resample=Image.BICUBIC)
    except (OSError, UnidentifiedImageError) as e:
        raise SystemExit(f"error: cannot read image {path}: {e}") from e
    return torch.from_numpy(np.array(img)).float().permute(2, 0, 1)[None] / 127.5 - 1


def _save_grid(images: torch.Tensor, out: Path) -> None:
    from PIL import Image

    grid = images.permute(2, 0, 3, 1).reshape(images.shape[2], -1, 3).cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    Image.fromarray(grid).save(tmp)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "download":
            for name in args.names:
                print(f"{name}: {download(name)}")
            return 0
        from .pipeline import GlidePipeline

        inpaint = args.cmd == "inpaint"
        base = args.base or ("base-inpaint" if inpaint else "base")
        up = None if args.no_upsample else (args.upsampler or ("upsample-inpaint" if inpaint else "upsample"))
        clip = None
        if getattr(args, "guidance", None) == "clip":
            clip = args.clip or "official"
        _need(
            [base]
            + ([up] if up else [])
            + (["clip/image-enc", "clip/text-enc"] if clip == "official" else [])
        )
        dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
        pipe = GlidePipeline.from_pretrained(base, up, clip, device=args.device, dtype=dtype)
        prompts = [args.prompt] * args.batch_size
        seeds = [args.seed + i for i in range(args.batch_size)]
        if inpaint:
            size = pipe.base.config.image_size
            image = _read_image(args.image, size).repeat(args.batch_size, 1, 1, 1)
            if args.mask is not None:
                mask = (_read_image(args.mask, size)[:, :1] > 0).float()
            elif args.mask_rows is not None:
                mask = torch.ones(1, 1, size, size)
                mask[:, :, args.mask_rows :] = 0
            else:
                raise SystemExit("error: inpaint needs --mask FILE or --mask-rows N")
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
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
