"""Reading a checkpoint file safely into a state dict, and the error every checkpoint problem raises.

The bottom of glide's checkpoint code: :mod:`glide.clip.io` (trained CLIP files) and :mod:`glide.checkpoints`
(the official registry, the download cache, UNets) both build on it. ``.pt`` files are read with
``torch.load(weights_only=True)``, which refuses pickled Python objects (they can run code when loaded);
``.safetensors`` files hold tensors only.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason and the fix in the message."""


def refused_pickle_message(path: str | os.PathLike, error: BaseException) -> str | None:
    """The message for a file that ``torch.load(weights_only=True)`` refused for holding pickled Python
    objects (``None`` if ``error`` is another failure)."""
    text = str(error)
    if not isinstance(error, pickle.UnpicklingError) or "weights only load failed" not in text.lower():
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = (
        f"non-tensor (pickled Python) objects (it names {found.group(1)})"
        if found
        else "pickled Python data that the safe loader cannot read as tensors"
    )
    return (
        f"{path} is refused for safety: it holds {what}, and unpickling Python objects can run arbitrary code. "
        "It must not be loaded unless its source is trusted. If you trust it, load it yourself and save only "
        "its tensors (a state dict of tensors with torch.save, or a .safetensors file), then use that file."
    )


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint file safely: (state_dict, metadata). Errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist; check the path (or download it)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty; delete it and download or copy it again")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:  # safetensors raises several error types for bad headers/truncation
            raise CheckpointError(
                f"{path} is not a readable safetensors checkpoint ({type(e).__name__}: {e}); it may be truncated "
                "or corrupt: copy or download it again"
            ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        refused = refused_pickle_message(path, e)
        if refused:
            raise CheckpointError(refused) from None  # torch's own hint suggests weights_only=False
        raise CheckpointError(
            f"{path} could not be loaded as a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}); it may be "
            "truncated, corrupt or not a checkpoint at all: download or copy it again"
        ) from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        meta = {"glide_config": json.dumps(obj["config"])} if "config" in obj else {}
        obj = obj["model"]
    else:
        meta = {}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    return obj, meta
