"""Diffusers pipelines as generators: ``--generator diffusers:PATH_OR_ID`` runs any text-to-image pipeline that
``diffusers.AutoPipelineForText2Image`` loads (a folder written by ``pipeline.save_pretrained`` or a Hugging
Face Hub id) under the GLIDE protocol: the protocol's captions, per-index seeds and guidance settings, the
suite's number of steps, and the runner's output check and resize.

What this module owns:

- loading (a local folder, else a Hub id through the local cache or the network; ``HF_HUB_OFFLINE`` is read
  when the generator is built, and then only the cache is used); every failure is a :class:`GeneratorError`
  that names the folder or id and the fix;
- the mapping of a run onto a pipeline call: ``guidance_scale`` = GLIDE's ``s`` (diffusers guides as
  ``eps_uncond + s (eps_cond - eps_uncond)``, GLIDE eq. 4, with the empty prompt as the unconditional input);
  ``s = 1`` and the unguided setting run the conditional model alone; ``num_inference_steps`` from ``--steps``
  (:func:`steps_count`); ``output_type="np"``;
- randomness: image ``i`` uses its own ``torch.Generator("cpu").manual_seed(seeds[i])`` (a list of generators,
  one per row; CPU generators give the same noise on every device, as GLIDE's own sampler does), so an image
  does not depend on its batch mates;
- the identity recorded in the run's spec (:meth:`DiffusersGenerator.identity`) and the model evaluations per
  image (counted on the denoiser's forward calls).

The pipeline's own scheduler samples (``--sampler`` is GLIDE's and does not apply; ``--generator-args
scheduler=DDIMScheduler`` swaps in another diffusers scheduler built from the pipeline's scheduler config).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diffusers  # an ImportError here is turned into the message naming the extra (plugins.load_generator)
import torch
import transformers

from glide.fileio import sha256_file

from .base import Capabilities, Generator, GeneratorError, SamplingDescription, SamplingOptions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# from_pretrained / download arguments that choose which files of a Hub repository are fetched.
_DOWNLOAD_KEYS = ("revision", "variant", "token", "cache_dir", "use_safetensors", "force_download")
_STEPS = re.compile(r"(ddim|quad|fast)?(\d+)")
_SECTIONS = re.compile(r"\d+(,\d+)+")
_DENOISERS = ("unet", "transformer", "prior", "decoder")


def steps_count(steps: str) -> int:
    """The ``num_inference_steps`` a pipeline is asked for, read from the run's ``--steps``.

    ``'250'`` -> 250; GLIDE's respacings give their number of steps: ``'ddim25'`` -> 25, ``'quad20'`` -> 20,
    ``'fast27'`` -> 27, and a section list ``'10,10,3'`` -> 23 (the sum). Only the count carries over: the
    pipeline's scheduler places its timesteps by its own ``timestep_spacing``, not by GLIDE's rule.
    """
    text = str(steps).strip().replace(" ", "")
    m = _STEPS.fullmatch(text)
    if m:
        n = int(m.group(2))
    elif _SECTIONS.fullmatch(text):
        n = sum(int(x) for x in text.split(","))
    else:
        raise GeneratorError(
            f"--steps {steps!r}: a diffusers pipeline takes a number of steps (e.g. --steps 50; GLIDE's ddimN, "
            "quadN, fast27 and a,b,c are read as their step counts), or give --generator-args steps=N"
        )
    if n < 1:
        raise GeneratorError(f"--steps {steps!r} keeps no step; give at least 1 (e.g. --steps 50)")
    return n


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for the local cache only (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(text: str) -> bool:
    """A filesystem path rather than a Hub id (``name`` or ``org/name``)."""
    return text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def pipeline_files(folder: Path) -> list[Path]:
    """The files that make a saved pipeline: ``model_index.json`` and every file in its components' folders
    (weights, configs, tokenizer files), sorted by relative path; hidden folders are left out."""
    index = json.loads((folder / "model_index.json").read_text())
    components = sorted(
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None
    )
    files = [folder / "model_index.json"]
    for name in components:
        sub = folder / name
        if sub.is_dir():
            files += [
                p
                for p in sub.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def folder_sha256(folder: Path) -> str:
    """SHA-256 over :func:`pipeline_files` (each relative path and its bytes' SHA-256, in order; files are
    read in chunks, never whole)."""
    h = hashlib.sha256()
    for p in pipeline_files(folder):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def config_sha256(config: Any) -> str:
    """SHA-256 of a diffusers config as canonical JSON (private ``_`` keys such as the save path left out)."""
    d = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def native_resolution(pipe: Any) -> int | None:
    """The pipeline's default output height: its default sample size (or the denoiser's ``sample_size``)
    times the VAE scale factor; None when the pipeline does not say."""
    scale = getattr(pipe, "vae_scale_factor", None)
    size = getattr(pipe, "default_sample_size", None)
    if size is None:
        for name in _DENOISERS:
            model = getattr(pipe, name, None)
            size = getattr(getattr(model, "config", None), "sample_size", None)
            if size is not None:
                break
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not size or not scale:
        return None
    return int(size) * int(scale)


def _dtype_keyword() -> str:
    """``dtype`` where diffusers reads it (recent releases, which deprecate ``torch_dtype``), else
    ``torch_dtype`` (older releases know only that)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No loading progress bars from diffusers and transformers (restored afterwards)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = [(m, m.is_progress_bar_enabled()) for m in (dlog, tlog) if hasattr(m, "is_progress_bar_enabled")]
    for m, _ in was:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, enabled in was:
            if enabled:
                m.enable_progress_bar()


class _EvalCounter:
    """Counts the rows the denoiser is run on (a classifier-free batch counts both halves)."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                self.rows += int(value.shape[0])
                return


class DiffusersGenerator(Generator):
    """A diffusers text-to-image pipeline as a :class:`~glidebench.generators.base.Generator`.

    ``path``: a folder saved with ``save_pretrained`` or a Hub id. ``dtype`` (fp32/fp16/bf16) and ``device``
    override the run's ``--dtype``/``--device``; ``steps`` overrides the count read from ``--steps``;
    ``scheduler`` names a diffusers scheduler class to use instead of the pipeline's; ``size`` sets the
    generation height and width (for pipelines without a default size). Other keyword arguments go to
    ``AutoPipelineForText2Image.from_pretrained`` (e.g. ``variant=fp16``, ``revision=...``).
    """

    def __init__(
        self,
        path: str,
        dtype: str | None = None,
        device: str | None = None,
        steps: int | str | None = None,
        scheduler: str | None = None,
        size: int | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        self.path = str(path)
        self.spec = f"diffusers:{self.path}"
        if dtype is not None and dtype not in DTYPES:
            raise GeneratorError(f"{self.spec}: dtype={dtype!r}; use one of {', '.join(DTYPES)}")
        self.dtype_override = dtype
        if device is not None:
            try:
                torch.device(device)
            except RuntimeError:
                raise GeneratorError(
                    f"{self.spec}: device={device!r}; use cpu, cuda, cuda:N or mps"
                ) from None
        self.device_override = device
        self.steps_override = steps_count(str(steps)) if steps is not None else None
        if size is not None and (not isinstance(size, int) or size < 8):
            raise GeneratorError(
                f"{self.spec}: size={size!r}; give the generation size in pixels (e.g. size=512)"
            )
        self.size = size
        self.folder, self.revision = self._locate(pipeline_kwargs)
        self.scheduler_name = None if scheduler is None else str(scheduler)
        self.pipeline_kwargs = dict(pipeline_kwargs)
        self.pipe = self._load(self.dtype_override)
        self.name = self.path if self.revision is not None else self.folder.name
        resolution = size or native_resolution(self.pipe)
        if resolution is None:
            raise GeneratorError(
                f"{self.spec}: {type(self.pipe).__name__} has no default image size; give one with "
                "--generator-args size=N"
            )
        self.capabilities = Capabilities(
            guidance=("cfg", "none"),
            resolution=int(resolution),
            dtypes=tuple(DTYPES),
            devices=("cpu", "cuda", "mps"),
            min_cfg_scale=1.0,  # diffusers guides only above 1; 1 runs the conditional model alone
            cfg_interval=False,  # a pipeline guides every step
        )
        self.denoiser_name = next(
            (n for n in _DENOISERS if isinstance(getattr(self.pipe, n, None), torch.nn.Module)), None
        )
        self._placed: tuple[torch.device, torch.dtype] | None = None
        self.evals_per_image: dict[str, float] | None = None

    # -- loading ---------------------------------------------------------------------------------------
    def _locate(self, kwargs: dict[str, Any]) -> tuple[Path, str | None]:
        """(the pipeline's folder, the Hub commit or None for a local folder)."""
        if not self.path.strip():
            raise GeneratorError(
                "--generator diffusers: give a folder or a Hub id after the colon (diffusers:PATH_OR_ID)"
            )
        local = Path(self.path).expanduser()
        if local.is_dir():
            folder, revision = local.resolve(), None
        elif looks_like_path(self.path):
            raise GeneratorError(
                f"{self.spec}: no such folder ({local.absolute()}); give a folder written by "
                "pipeline.save_pretrained(DIR) (it holds model_index.json) or a Hugging Face Hub id (org/name)"
            )
        else:
            folder = self._download({k: kwargs[k] for k in _DOWNLOAD_KEYS if k in kwargs})
            revision = folder.name if folder.parent.name == "snapshots" else ""
        if not (folder / "model_index.json").is_file():
            raise GeneratorError(
                f"{self.spec}: {folder} is not a diffusers pipeline (no model_index.json); save one with "
                "pipeline.save_pretrained(DIR); a folder of images is scored with run coco-fid --images DIR"
            )
        return folder, revision

    def _download(self, kwargs: dict[str, Any]) -> Path:
        offline = hf_offline()
        try:
            where = diffusers.DiffusionPipeline.download(
                self.path, local_files_only=offline or None, **kwargs
            )
        except Exception as e:  # noqa: BLE001 - hub, network and cache errors alike
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            fix = (
                "HF_HUB_OFFLINE is set, so only the local Hugging Face cache is used: download it once where the "
                f"Hub is reachable (hf download {self.path}), or unset HF_HUB_OFFLINE"
                if offline
                else "check the id (and run `hf auth login` for a gated model), or download it and give its folder"
            )
            raise GeneratorError(
                f"{self.spec}: not a folder here, and the Hugging Face Hub id {self.path!r} could not be loaded "
                f"({type(e).__name__}: {detail}); {fix}"
            ) from e
        return Path(where)

    def _load(self, dtype: str | None) -> Any:
        """The pipeline, loaded on the CPU in ``dtype`` (None: as saved), with the chosen scheduler."""
        kwargs = dict(self.pipeline_kwargs)
        if dtype is not None:
            kwargs.setdefault(_dtype_keyword(), DTYPES[dtype])
        if hf_offline():
            kwargs.setdefault("local_files_only", True)
        # without accelerate diffusers falls back to ordinary loading anyway, with a warning on every load
        kwargs.setdefault("low_cpu_mem_usage", importlib.util.find_spec("accelerate") is not None)
        for key in ("revision", "force_download", "cache_dir", "token"):  # used by the download
            kwargs.pop(key, None)
        try:
            with _quiet_loading():
                pipe = diffusers.AutoPipelineForText2Image.from_pretrained(str(self.folder), **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the pipeline's loaders raise
            raise GeneratorError(
                f"{self.spec}: AutoPipelineForText2Image could not load {self.folder} ({type(e).__name__}: "
                f"{e}); it must be a text-to-image pipeline saved with save_pretrained (arguments {kwargs})"
            ) from e
        if self.scheduler_name is not None:
            name = self.scheduler_name
            cls = getattr(diffusers, name, None)
            if cls is None or not hasattr(cls, "from_config") or not name.endswith("Scheduler"):
                raise GeneratorError(
                    f"{self.spec}: scheduler={name!r} is not a diffusers scheduler class (e.g. DDIMScheduler, "
                    "EulerDiscreteScheduler, DPMSolverMultistepScheduler)"
                )
            pipe.scheduler = cls.from_config(pipe.scheduler.config)
        return pipe

    # -- the Generator interface -----------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        ident = {
            "diffusers-pipeline": type(self.pipe).__name__,
            "diffusers-model": self.name,
            "diffusers-scheduler": type(self.pipe.scheduler).__name__,
            "diffusers-scheduler-config-sha256": config_sha256(self.pipe.scheduler.config),
            "diffusers-version": diffusers.__version__,
            "transformers-version": transformers.__version__,
        }
        if self.revision is None:
            ident["diffusers-weights-sha256"] = folder_sha256(self.folder)
        else:
            ident["diffusers-revision"] = self.revision or "unknown"
        return ident

    def describe(self, options: SamplingOptions) -> SamplingDescription:
        steps = self.steps_override or steps_count(options.steps)
        return SamplingDescription(
            self.name, type(self.pipe.scheduler).__name__, str(steps),
            f"{steps} x 2 at guidance_scale > 1, else {steps} ({self.denoiser_name or 'denoiser'})",
            "diffusers' guidance_scale: classifier-free above 1, the conditional model alone at 1",
            reads=() if self.steps_override else ("steps",),
        )  # fmt: skip

    def _place(self, options: SamplingOptions) -> torch.device:
        device = torch.device(self.device_override or options.device)
        name = self.dtype_override or options.dtype
        dtype = DTYPES[name]
        if self.pipe.dtype != dtype:  # loaded in the dtype, as diffusers advises (some modules stay fp32)
            self.pipe, self._placed = self._load(name), None
        if self._placed != (device, dtype):
            self.pipe.to(device)
            self._placed = (device, dtype)
        return device

    def generate(
        self, captions: Sequence[str], seeds: Sequence[int], setting: Any, options: SamplingOptions
    ) -> Any:
        """Images for ``captions`` as float [N, H, W, 3] in [0, 1] (the pipeline's ``output_type="np"``)."""
        if setting.guidance not in self.capabilities.guidance:
            raise GeneratorError(f"{self.spec}: guidance {setting.guidance!r} is not supported (cfg or none)")
        scale = float(setting.scale) if setting.guidance == "cfg" else 1.0
        if scale < 1.0:
            raise GeneratorError(
                f"{self.spec}: classifier-free scale {scale:g} < 1: diffusers pipelines guide only for scales "
                "above 1 (1 runs the conditional model alone); use --cfg scales >= 1"
            )
        if options.cfg_interval is not None and scale > 1.0:
            raise GeneratorError(
                f"{self.spec}: --cfg-interval is applied by GLIDE's samplers only; a diffusers pipeline guides "
                "every step: drop --cfg-interval"
            )
        steps = self.steps_override or steps_count(options.steps)
        self._place(options)
        self.pipe.set_progress_bar_config(disable=not options.progress)
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs: dict[str, Any] = {}
        if self.size is not None:
            kwargs = {"height": self.size, "width": self.size}
        counter = _EvalCounter()
        denoiser = getattr(self.pipe, self.denoiser_name) if self.denoiser_name else None
        hook = denoiser.register_forward_pre_hook(counter, with_kwargs=True) if denoiser is not None else None
        try:
            out = self.pipe(
                prompt=list(captions),
                num_inference_steps=steps,
                guidance_scale=scale,
                generator=generators,
                output_type="np",
                **kwargs,
            )
        finally:
            if hook is not None:
                hook.remove()
        n = max(len(captions), 1)
        if denoiser is not None and counter.rows:
            self.evals_per_image = {self.denoiser_name: counter.rows / n}
        else:
            self.evals_per_image = {"denoiser": float(steps * (2 if scale > 1.0 else 1))}
        return out.images

    def close(self) -> None:
        """Move the weights off the accelerator (the pipeline stays loaded on the CPU)."""
        if self._placed is not None and self._placed[0].type != "cpu":
            self.pipe.to("cpu")
        self._placed = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
