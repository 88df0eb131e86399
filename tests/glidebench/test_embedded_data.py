"""Tests for the embedded caption-image set: determinism, resumability, exact captions, geometry, splits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from glidebench.data import embedded as E
from glidebench.data.embedded import (
    BACKGROUNDS,
    COLOURS,
    EmbeddedCaptionSet,
    EmbeddedConfig,
    EvalRecord,
    Scene,
    SceneObject,
    example_rng,
    parse_caption,
    parse_stated,
    render,
    sample_scene,
    short_caption,
    single_object,
    vocabulary,
)


def scenes_for(seed: int, n: int, **kw) -> list[Scene]:
    return [sample_scene(example_rng(seed, 0, i), **kw) for i in range(n)]


# ---------------------------------------------------------------- determinism and resumability


def test_same_seed_same_pixels_and_captions_different_seed_differs() -> None:
    ds = EmbeddedCaptionSet()
    x1, c1, s1 = ds.train_batch(seed=3, step=2, batch_size=6)
    x2, c2, s2 = EmbeddedCaptionSet().train_batch(seed=3, step=2, batch_size=6)
    assert torch.equal(x1, x2)
    assert c1 == c2 and s1 == s2
    x3, c3, _ = ds.train_batch(seed=4, step=2, batch_size=6)
    assert c3 != c1
    assert not torch.equal(x3, x1)


def test_train_batch_is_float_nchw_in_range_and_matches_render() -> None:
    ds = EmbeddedCaptionSet(size=32)
    x, captions, scenes = ds.train_batch(seed=0, step=0, batch_size=5)
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert captions == [s.caption for s in scenes]
    direct = render(scenes[2], 32).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(x[2].permute(1, 2, 0).numpy(), direct, atol=1e-6)


def test_stream_resumes_at_step_k_without_replay_and_is_batch_size_free() -> None:
    ds = EmbeddedCaptionSet(size=16)
    it = ds.train_iter(seed=11, batch_size=4)
    batches = [next(it) for _ in range(4)]
    resumed = next(ds.train_iter(seed=11, batch_size=4, start_step=3))
    assert torch.equal(resumed[0], batches[3][0])
    assert resumed[1] == batches[3][1]
    # global example index 13 = step 3, slot 1 at batch size 4 = step 1, slot 5 at batch size 8
    big = ds.train_batch(seed=11, step=1, batch_size=8)
    assert big[1][5] == batches[3][1][1]
    assert torch.equal(big[0][5], batches[3][0][1])
    assert ds.train_scene(11, 13) == batches[3][2][1]


# ---------------------------------------------------------------- captions are exact


def test_caption_parses_back_to_the_attributes() -> None:
    for scene in scenes_for(5, 300):
        parsed = parse_caption(scene.caption)
        assert parsed["background"] == scene.background
        assert parsed["relations"] == list(scene.relations)
        assert parsed["objects"] == [(o.size, o.colour, o.shape) for o in scene.objects]


def test_caption_example_and_grammar_errors() -> None:
    a = SceneObject("red", "circle", "small", 0.5, 0.2, 0.18)
    b = SceneObject("blue", "square", "large", 0.5, 0.6, 0.28)
    scene = Scene(
        (a, b), "grey", ("above",), "a small red circle above a large blue square on a grey background"
    )
    assert scene.relation == "above"
    with pytest.raises(ValueError, match="does not match"):
        Scene((a, b), "grey", ("below",), scene.caption)
    for bad in [
        "a red circle on a grey background",
        "a small red circle near a small blue square on a grey background",
    ]:
        with pytest.raises(ValueError):
            parse_caption(bad)


def test_scene_validation_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="unknown colour"):
        SceneObject("pink", "circle", "small", 0.5, 0.5, 0.18)
    with pytest.raises(ValueError, match="outside"):
        SceneObject("red", "circle", "small", 0.5, 0.5, 0.28)
    with pytest.raises(ValueError, match="off the image"):
        SceneObject("red", "circle", "large", 0.05, 0.5, 0.28)
    w = SceneObject("white", "circle", "small", 0.5, 0.5, 0.18)
    with pytest.raises(ValueError, match="background's colour"):
        Scene((w,), "white", (), "a small white circle on a white background")


def test_vocabulary_covers_every_caption_word_and_nothing_more() -> None:
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    seen: set[str] = set()
    for scene in scenes_for(9, 800):
        seen.update(scene.caption.split())
    assert seen <= set(vocab)
    assert seen == set(vocab)  # every word actually occurs (no dead tokens)


def test_object_count_mix_follows_probs() -> None:
    probs = (0.7, 0.2, 0.1)
    n = 2000
    counts = np.bincount([s.n_objects for s in scenes_for(2, n, object_probs=probs)], minlength=4)[1:]
    for k, p in enumerate(probs):
        assert abs(counts[k] / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    only_single = scenes_for(2, 50, max_objects=1, object_probs=[1.0])
    assert all(s.n_objects == 1 for s in only_single)
    with pytest.raises(ValueError, match="sum to 1"):
        EmbeddedConfig(object_probs=(0.5, 0.2, 0.1))
    with pytest.raises(ValueError, match="more than 1"):
        sample_scene(np.random.default_rng(0), max_objects=1, object_probs=[0.5, 0.5])


def test_scene_dict_roundtrip_through_json_and_unknown_keys_fail() -> None:
    for scene in scenes_for(1, 40):
        d = json.loads(json.dumps(scene.to_dict()))
        assert Scene.from_dict(d) == scene
    d = scenes_for(1, 1)[0].to_dict()
    with pytest.raises(ValueError, match="unknown keys"):
        Scene.from_dict({**d, "colour": "red"})
    rec = EmbeddedCaptionSet().eval_split("val", n=3)[2]
    assert EvalRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    with pytest.raises(ValueError, match="unknown keys"):
        EmbeddedConfig.from_dict({"size": 64, "sizee": 3})


# ---------------------------------------------------------------- rendered geometry


def unmix_alpha(img: np.ndarray, obj_rgb, bg_rgb) -> np.ndarray:
    """Coverage of a flat colour over a flat background per pixel: img = a * obj + (1 - a) * bg."""
    o, b, p = np.asarray(obj_rgb, float), np.asarray(bg_rgb, float), img.astype(float)
    alpha = np.clip(((p - b) @ (o - b)) / ((o - b) @ (o - b)), 0, 1)
    residual = np.linalg.norm(p - (alpha[..., None] * o + (1 - alpha[..., None]) * b), axis=-1)
    return np.where(residual < 12, alpha, 0.0)  # pixels off the obj-bg line belong to another object


def expected_area(shape: str, ext: float) -> float:
    return {
        "circle": math.pi * ext**2 / 4,
        "square": ext**2,
        "triangle": ext**2 / 2,
        "cross": 5 * ext**2 / 9,
    }[shape]


def perimeter(shape: str, ext: float) -> float:
    return {"circle": math.pi, "square": 4.0, "triangle": 1 + math.sqrt(5), "cross": 4.0}[shape] * ext


@pytest.mark.parametrize("size", [32, 64])
def test_rendered_objects_have_their_colour_shape_area_and_background(size: int) -> None:
    for scene in scenes_for(21, 60):
        img = render(scene, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert tuple(np.median(border, axis=0)) == BACKGROUNDS[scene.background]
        if scene.n_objects == 1 and E.MARGIN * size >= 1:  # a single object keeps its margin off the edges
            assert (border == BACKGROUNDS[scene.background]).all()
        for obj in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in np.array(obj.box()) * size + np.array([-1, -1, 2, 2]))
            win = img[max(y0, 0) : y1, max(x0, 0) : x1]
            alpha = unmix_alpha(win, COLOURS[obj.colour], BACKGROUNDS[scene.background])
            area = expected_area(obj.shape, obj.extent * size)
            # PIL fills the outline's pixels on the 4x grid: up to one supersample pixel along the perimeter
            excess = alpha.sum() - area
            assert 0 <= excess <= perimeter(obj.shape, obj.extent * size) / E.SUPERSAMPLE, (
                scene.caption,
                obj,
            )
            assert (win.reshape(-1, 3) == COLOURS[obj.colour]).all(axis=1).any() or obj.extent * size < 8


def test_relations_hold_in_pixel_geometry() -> None:
    scenes = [s for s in scenes_for(33, 400) if s.n_objects > 1]
    assert len(scenes) > 150
    three = 0
    for scene in scenes:
        img = render(scene, 64)
        masks = []
        for obj in scene.objects:
            alpha = unmix_alpha(img, COLOURS[obj.colour], BACKGROUNDS[scene.background])
            # only pixels that are (mostly) this object's colour: distinct colours per scene make this unique
            dist = np.linalg.norm(img.astype(float) - np.asarray(COLOURS[obj.colour], float), axis=2)
            masks.append((alpha > 0.5) & (dist < 60))
        for k, rel in enumerate(scene.relations):
            a, b = masks[k], masks[k + 1]
            assert a.any() and b.any(), scene.caption
            ya, xa = np.nonzero(a)
            yb, xb = np.nonzero(b)
            # boxes strictly separated along the relation axis, and centroids ordered
            if rel == "above":
                assert ya.max() < yb.min() and ya.mean() < yb.mean()
            elif rel == "below":
                assert ya.min() > yb.max() and ya.mean() > yb.mean()
            elif rel == "left of":
                assert xa.max() < xb.min() and xa.mean() < xb.mean()
            else:
                assert xa.min() > xb.max() and xa.mean() > xb.mean()
            # the stated relation dominates the other axis
            d_rel = abs(ya.mean() - yb.mean()) if rel in ("above", "below") else abs(xa.mean() - xb.mean())
            d_off = abs(xa.mean() - xb.mean()) if rel in ("above", "below") else abs(ya.mean() - yb.mean())
            assert d_rel > 2 * d_off
        three += scene.n_objects == 3
        assert len({o.colour for o in scene.objects}) == scene.n_objects
    assert three > 50


def test_render_is_deterministic_and_sizes_are_configurable() -> None:
    scene = scenes_for(4, 1)[0]
    assert np.array_equal(render(scene, 48), render(scene, 48))
    assert render(scene, 128).shape == (128, 128, 3)
    with pytest.raises(ValueError, match="at least 8"):
        render(scene, 4)


# ---------------------------------------------------------------- evaluation splits


def test_eval_splits_are_fixed_prefix_stable_and_disjoint_from_training() -> None:
    ds = EmbeddedCaptionSet()
    val = ds.eval_split("val", n=60)
    assert ds.eval_split("val", n=20) == val[:20]
    assert [r.index for r in val] == list(range(60))
    test = ds.eval_split("test", n=60)

    # seed spaces: the first draws of every generator differ between val, test and training
    def first_draws(entropy: int, key: int, n: int) -> set[tuple[int, ...]]:
        return {tuple(example_rng(entropy, key, i).integers(0, 2**62, size=4).tolist()) for i in range(n)}

    ev = first_draws(E.EVAL_ENTROPY, E.SPLIT_KEYS["val"], 200) | first_draws(
        E.EVAL_ENTROPY, E.SPLIT_KEYS["test"], 200
    )
    assert len(ev) == 400
    for seed in (0, 1, E.EVAL_ENTROPY):
        assert not ev & first_draws(seed, E.TRAIN_KEY, 200)
    # scenes (continuous positions) never coincide
    train = {json.dumps(s.to_dict(), sort_keys=True) for s in ds.train_batch(0, 0, 200)[2]}
    for r in val + test:
        assert json.dumps(r.scene.to_dict(), sort_keys=True) not in train
    assert {r.caption for r in val} != {r.caption for r in test}
    with pytest.raises(ValueError, match="unknown split"):
        ds.eval_split("train")


def test_single_object_subset_and_reference_images() -> None:
    ds = EmbeddedCaptionSet(size=32)
    recs = ds.eval_split("test", n=40)
    single = single_object(recs)
    assert 0 < len(single) < len(recs)
    assert all(r.scene.n_objects == 1 for r in single)
    assert [r.index for r in single] == [
        r.index for r in recs if len(parse_caption(r.caption)["objects"]) == 1
    ]
    imgs = ds.render_records(single)
    assert imgs.shape == (len(single), 32, 32, 3)
    assert np.array_equal(imgs[0], render(single[0].scene, 32))


def test_fingerprint_tracks_version_size_and_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    base = EmbeddedCaptionSet().fingerprint()
    assert base == E.fingerprint(EmbeddedConfig(), {"val": 1000, "test": 1000})
    assert len(base) == 16
    assert EmbeddedCaptionSet(size=32).fingerprint() != base
    assert EmbeddedCaptionSet().fingerprint({"val": 10}) != base
    assert EmbeddedCaptionSet(object_probs=(1.0,), eval_object_probs=(1.0,)).fingerprint() != base
    monkeypatch.setattr(E, "DATASET_VERSION", "embedded-vX")
    assert EmbeddedCaptionSet().fingerprint() != base


# ---------------------------------------------------------------- short captions


def test_short_captions_state_only_true_things_as_a_prefix_of_the_chain() -> None:
    seen = set()
    for i, scene in enumerate(scenes_for(5, 1500)):
        caption = short_caption(scene, example_rng(6, 0, i))
        seen.add(caption == scene.caption)
        stated = parse_stated(caption)
        assert 1 <= len(stated["objects"]) <= scene.n_objects
        for (size, colour, shape), obj in zip(stated["objects"], scene.objects):
            assert shape == obj.shape and size in (None, obj.size) and colour in (None, obj.colour)
        assert stated["relations"] == list(scene.relations[: len(stated["objects"]) - 1])
        assert stated["background"] in (None, scene.background)
        assert set(caption.split()) <= set(vocabulary())
    assert seen == {True, False}  # some short captions happen to say everything


def test_short_caption_keep_rates_follow_short_keep() -> None:
    counts = {"size": [], "colour": [], "background": [], "next_object": []}
    for i, scene in enumerate(scenes_for(8, 3000)):
        stated = parse_stated(short_caption(scene, example_rng(9, 0, i)))
        counts["size"] += [z is not None for z, _, _ in stated["objects"]]
        counts["colour"] += [c is not None for _, c, _ in stated["objects"]]
        counts["background"].append(stated["background"] is not None)
        if scene.n_objects > 1:  # was the second object named?
            counts["next_object"].append(len(stated["objects"]) > 1)
    for key, hits in counts.items():
        p, n = E.SHORT_KEEP[key], len(hits)
        assert abs(np.mean(hits) - p) < 4 * math.sqrt(p * (1 - p) / n), (key, np.mean(hits), n)


def test_short_caption_draws_a_fixed_number_of_uniforms() -> None:
    for i, scene in enumerate(scenes_for(2, 30)):
        a, b = example_rng(1, 0, i), example_rng(1, 0, i)
        short_caption(scene, a)
        b.random(3 * scene.n_objects)
        assert a.random() == b.random()


def test_parse_stated_reads_exact_captions_and_rejects_others() -> None:
    for scene in scenes_for(4, 200):
        exact = parse_caption(scene.caption)
        stated = parse_stated(scene.caption)
        assert stated["objects"] == [tuple(o) for o in exact["objects"]]
        assert stated["relations"] == exact["relations"] and stated["background"] == exact["background"]
    assert parse_stated("a circle") == {
        "objects": [(None, None, "circle")],
        "relations": [],
        "background": None,
    }
    for bad in ("", "a", "a red", "red circle", "a circle near a square", "a circle on a pink background",
                "a red large circle", "a circle above"):  # fmt: skip
        with pytest.raises(ValueError, match="caption"):
            parse_stated(bad)


def test_eval_split_short_keeps_the_scenes_and_is_fixed() -> None:
    ds = EmbeddedCaptionSet()
    exact, short = ds.eval_split("test", 200), ds.eval_split("test", 200, short=True)
    assert [r.scene for r in exact] == [r.scene for r in short]
    assert [r.caption for r in short] == [
        r.caption for r in EmbeddedCaptionSet().eval_split("test", 200, short=True)
    ]
    assert [r.caption for r in short[:50]] == [r.caption for r in ds.eval_split("test", 50, short=True)]
    assert sum(a.caption != b.caption for a, b in zip(exact, short)) > 150
    assert [r.caption for r in short] != [r.caption for r in ds.eval_split("val", 200, short=True)]


def test_training_short_captions_mix_and_leave_fingerprints_alone() -> None:
    plain = EmbeddedCaptionSet()
    # the fingerprint of the default config is the one every run before short captions recorded
    # (reports/example/spec.json's data_id)
    assert plain.fingerprint() == "ba63abc6315677f2"
    assert "short_captions" not in plain.config.to_dict()
    mixed = EmbeddedCaptionSet(short_captions=0.5)
    assert mixed.fingerprint() != plain.fingerprint()
    assert EmbeddedConfig.from_dict(mixed.config.to_dict()) == mixed.config
    x0, c0, s0 = plain.train_batch(3, 4, 400)
    x1, c1, s1 = mixed.train_batch(3, 4, 400)
    assert torch.equal(x0, x1) and s0 == s1 and c0 == [s.caption for s in s0]  # same scenes and pixels
    changed = np.array([a != b for a, b in zip(c0, c1)])
    # P(short) = 0.5, and a short caption equals the exact one with probability ~0.05
    assert 0.35 < changed.mean() < 0.6
    assert mixed.train_batch(3, 8, 200)[1] == c1[:200]  # example 1600 + i whatever the batch size
    assert [mixed.train_caption(3, 4 * 400 + i, s) for i, s in enumerate(s1)] == c1
    with pytest.raises(ValueError, match="short_captions"):
        EmbeddedCaptionSet(short_captions=1.5)
