"""Copy the part of the official glide-text2im golden outputs that the tests read into tests/data/.

    python tests/data/make_golden_subset.py SOURCE_DIR     (SOURCE_DIR holds golden_small.npz/.json,
                                                             glide_state_dict_spec.json and gpt2-bpe/)

The npz keeps the arrays under NPZ_GROUPS (every array in them is read by a test: the five state dicts are
loaded in full with strict=True, the data arrays by key or by parametrised key), re-saved with
np.savez_compressed and checked array by array (dtype, shape, values). The JSON keeps JSON_FIELDS. The
state-dict spec and the GPT-2 BPE files are used whole and copied byte for byte. The SHA-256 of every
source file is printed for tests/data/README.md.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent

NPZ_GROUPS = (
    # state dicts of the small random models (strict loads)
    "sd/",
    "sd_up/",
    "sd_inpaint/",
    "sd_clip_text/",
    "sd_clip_image/",
    # inputs and outputs: test_parity.py, test_clip.py, test_clip_guided.py, test_cuda.py
    "tok/",
    "betas/",
    "spacing/",
    "diffusion/",
    "fwd/",
    "pmv/",
    "cfg/",
    "clip/",
    "clipguided/",
    "up/",
    "inp/",
)
JSON_FIELDS = ("configs", "prompts", "clip_prompts")
JSON_STATE_DICTS = ("sd_clip_text/", "sd_clip_image/")  # only entries_in_state_dict_order is read
COPIED = ("glide_state_dict_spec.json", "gpt2-bpe/encoder.json.gz", "gpt2-bpe/vocab.bpe.gz")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(src: Path) -> None:
    with np.load(src / "golden_small.npz") as z:
        source = {k: z[k] for k in z.files}
    keep = {k: v for k, v in source.items() if k.startswith(NPZ_GROUPS)}
    dropped = sorted(set(source) - set(keep))
    np.savez_compressed(DATA / "golden_small.npz", **keep)
    with np.load(DATA / "golden_small.npz") as z:
        assert sorted(z.files) == sorted(keep)
        for k, v in keep.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v), k

    meta = json.loads((src / "golden_small.json").read_text())
    trimmed = {k: meta[k] for k in JSON_FIELDS}
    trimmed["state_dicts"] = {
        p: {"entries_in_state_dict_order": meta["state_dicts"][p]["entries_in_state_dict_order"]}
        for p in JSON_STATE_DICTS
    }
    (DATA / "golden_small.json").write_text(json.dumps(trimmed, indent=1) + "\n")

    for name in COPIED:
        (DATA / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, DATA / name)
        assert sha256(DATA / name) == sha256(src / name)

    print(f"npz: kept {len(keep)} of {len(source)} arrays, dropped {dropped or 'none'}")
    for name in ("golden_small.npz", "golden_small.json", *COPIED):
        print(f"{name}: source sha256 {sha256(src / name)}, {(DATA / name).stat().st_size} bytes here")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
