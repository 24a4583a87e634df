"""Synthetic action clips: the caption must be true of every clip, whatever the seed varies."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from xclip_stream.training.backdrop import uneven
from xclip_stream.training.synthetic import (
    COLORS,
    MOTIONS,
    SHAPES,
    Action,
    _plan_scene,
    all_actions,
    render_clip,
    render_stream,
    render_window,
    shape_coverage,
    shape_mask,
    write_clip,
)

SIZE = 64
SEEDS = range(6)


def object_masks(clip: np.ndarray, color: str) -> np.ndarray:
    """(T, H, W) pixels close to ``color``: the main object (the distractor's colour always differs)."""
    distance = np.linalg.norm(clip.astype(np.float32) - np.array(COLORS[color], np.float32), axis=-1)
    return distance < 60


def centroids(masks: np.ndarray) -> np.ndarray:
    """(T, 2) mask centroid (x, y) per frame."""
    yy, xx = np.mgrid[0:masks.shape[1], 0:masks.shape[2]]
    area = masks.sum(axis=(1, 2))
    assert area.min() > 0, "object missing from a frame"
    return np.stack([(masks * xx).sum(axis=(1, 2)) / area, (masks * yy).sum(axis=(1, 2)) / area], axis=1)


def test_clip_shape_dtype_and_determinism():
    action = Action("red", "circle", "moving left")
    clip = render_clip(action, num_frames=8, size=SIZE, seed=3)
    assert clip.shape == (8, SIZE, SIZE, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, render_clip(action, num_frames=8, size=SIZE, seed=3))
    assert not np.array_equal(clip, render_clip(action, num_frames=8, size=SIZE, seed=4))


def test_captions_round_trip_and_cover_all_combinations():
    actions = all_actions()
    assert len(actions) == 120 == len(COLORS) * len(SHAPES) * len(MOTIONS)
    assert len({a.caption for a in actions}) == 120
    assert all(Action.parse(a.caption) == a for a in actions)
    assert Action("blue", "triangle", "standing still").caption == "a blue triangle standing still"


def test_invalid_values_are_named():
    with pytest.raises(ValueError, match="'purple'.*'red'"):
        Action("purple", "circle", "growing")
    with pytest.raises(ValueError, match="'hexagon'"):
        Action("red", "hexagon", "growing")
    with pytest.raises(ValueError, match="not of the form"):
        Action.parse("red circle")


DIRECTIONS = {"moving left": (0, -1), "moving right": (0, 1), "moving up": (1, -1), "moving down": (1, 1)}


@pytest.mark.parametrize("motion", list(DIRECTIONS))
def test_directional_motion_moves_the_object_across_the_frame(motion):
    axis, sign = DIRECTIONS[motion]
    for seed, color, shape in zip(SEEDS, itertools.cycle(COLORS), itertools.cycle(SHAPES)):
        clip = render_clip(Action(color, shape, motion), size=SIZE, seed=seed)
        c = centroids(object_masks(clip, color))
        steps = np.diff(c[:, axis]) * sign
        assert (steps > 0).all(), (seed, c)  # monotonic
        assert steps.sum() > 0.3 * SIZE, (seed, c)
        assert np.ptp(c[:, 1 - axis]) < 1.0, (seed, c)  # no drift on the other axis


@pytest.mark.parametrize(("forward", "backward"), [("moving left", "moving right"), ("moving up", "moving down"),
                                                    ("growing", "shrinking")])
def test_paired_motions_are_time_reversals(forward, backward):
    for seed in SEEDS:
        a = object_masks(render_clip(Action("green", "triangle", forward), seed=seed), "green")
        b = object_masks(render_clip(Action("green", "triangle", backward), seed=seed), "green")
        np.testing.assert_allclose(centroids(a), centroids(b)[::-1], atol=0.5)
        np.testing.assert_allclose(a.sum(axis=(1, 2)), b.sum(axis=(1, 2))[::-1], rtol=0.05)


@pytest.mark.parametrize("motion", ["growing", "shrinking"])
def test_scale_motion_changes_area_monotonically(motion):
    for seed, shape in zip(SEEDS, itertools.cycle(SHAPES)):
        area = object_masks(render_clip(Action("white", shape, motion), seed=seed), "white").sum(axis=(1, 2))
        ratio = area[-1] / area[0]
        steps = np.diff(area.astype(float))
        if motion == "growing":
            assert ratio > 1.8 and (steps >= 0).all(), (seed, area)
        else:
            assert ratio < 1 / 1.8 and (steps <= 0).all(), (seed, area)


def test_blinking_switches_the_object_on_and_off():
    for seed, shape in zip(SEEDS, itertools.cycle(SHAPES)):
        area = object_masks(render_clip(Action("yellow", shape, "blinking"), seed=seed), "yellow").sum(axis=(1, 2))
        on = area > 20
        assert (area[~on] <= 2).all(), (seed, area)
        assert np.count_nonzero(on[1:] != on[:-1]) >= 2, (seed, area)


def test_standing_still_stays_put():
    for seed, shape in zip(SEEDS, itertools.cycle(SHAPES)):
        c = centroids(object_masks(render_clip(Action("blue", shape, "standing still"), seed=seed), "blue"))
        assert np.linalg.norm(c - c[0], axis=1).max() < 2.0, (seed, c)


def test_span_covers_part_of_the_motion():
    action = Action("red", "square", "moving right")
    full = centroids(object_masks(render_clip(action, seed=1), "red"))
    part = centroids(object_masks(render_clip(action, seed=1, span=0.5), "red"))
    travel_full, travel_part = np.ptp(full[:, 0]), np.ptp(part[:, 0])
    assert travel_part == pytest.approx(travel_full / 2, abs=1.5)
    assert full[0, 0] - 1 <= part[0, 0] and part[-1, 0] <= full[-1, 0] + 1
    with pytest.raises(ValueError, match="span"):
        render_clip(action, span=1.5)


def test_distractor_appears_for_some_seeds_and_never_moves_clearly():
    action = Action("red", "circle", "moving right")
    others = [c for c in COLORS if c != "red"]
    seen = 0
    for seed in range(12):
        clip = render_clip(action, size=SIZE, seed=seed)
        present = [c for c in others if object_masks(clip, c).sum(axis=(1, 2)).min() > 3]
        for color in present:
            c = centroids(object_masks(clip, color))
            assert np.linalg.norm(c - c[0], axis=1).max() < 2.5, (seed, color, c)
        seen += bool(present)
    assert 2 <= seen <= 10


def test_render_stream_switches_action_after_its_duration():
    actions = [Action("red", "circle", "moving left"), Action("blue", "square", "growing")]
    fps, seconds = 8, 1.5
    per_action = int(seconds * fps)
    items = list(itertools.islice(render_stream(actions, seconds, fps, SIZE, seed=0), 3 * per_action))
    assert all(frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8 for _, frame in items)
    labels = [a for a, _ in items]
    assert labels == [actions[0]] * per_action + [actions[1]] * per_action + [actions[0]] * per_action
    first = centroids(object_masks(np.stack([f for _, f in items[:per_action]]), "red"))
    assert (np.diff(first[:, 0]) < 0).all()  # smooth, monotonic over the action's whole duration


def test_render_window_cuts_a_live_camera_across_scene_changes():
    action = Action("yellow", "square", "moving right")
    per_scene, stride = 9, 2
    window = render_window(action, num_frames=8, size=SIZE, seed=4, frames_per_scene=per_scene, stride=stride, start=3)
    assert window.shape == (8, SIZE, SIZE, 3)
    np.testing.assert_array_equal(window, render_window(action, 8, SIZE, 4, per_scene, stride, 3))
    x = centroids(object_masks(window, "yellow"))[:, 0]
    # frames 3,5,7 | 9,11,13,15,17: rightwards within each scene, a jump back where a new scene starts
    scene = [(3 + stride * i) // per_scene for i in range(8)]
    steps = np.diff(x)
    same = np.diff(scene) == 0
    assert (steps[same] > 0).all() and (steps[~same] < 0).all(), (x, scene)
    # The scenes are render_stream's: the same geometry, so the same object position at a frame.
    stream = [f for _, f in itertools.islice(render_stream([action], per_scene / 8, 8, SIZE, seed=4), 18)]
    x_stream = centroids(object_masks(np.stack(stream[3:18:2]), "yellow"))[:, 0]
    assert np.abs(x - x_stream).max() < 1.5


def test_plain_scenes_have_a_flat_background_and_no_distractor():
    action = Action("green", "triangle", "standing still")
    for seed in range(8):
        clip = render_clip(action, size=SIZE, seed=seed, plain=True).astype(np.float32)
        objects = object_masks(clip, "green")
        background = clip[~objects]
        assert background.std(axis=0).max() < 6.0, seed  # the noise only (sigma <= 4): flat, no distractor
        assert objects.sum(axis=(1, 2)).min() > 10, seed


def test_write_clip_is_readable(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", Action("white", "triangle", "moving up"), num_frames=8, size=SIZE)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (SIZE, SIZE, 3)


def varied_object_masks(action: Action, seed: int) -> np.ndarray | None:
    """(T, H, W) pixels of the main object in a varied scene (found against the scene's own
    background), or None when the scene has a distractor."""
    scene, _ = _plan_scene(action, SIZE, 8, 1.0, seed, varied=True)
    if scene.distractor is not None:
        return None
    clip = render_clip(action, size=SIZE, seed=seed, varied=True).astype(np.float32)
    return np.linalg.norm(clip - scene.background, axis=-1) > 25  # contrast floor 44, noise sigma <= 4


@pytest.mark.parametrize("motion", list(DIRECTIONS) + ["growing", "shrinking"])
def test_varied_scenes_keep_the_caption_true(motion):
    axis, sign = DIRECTIONS.get(motion, (0, 0))
    checked = 0
    for seed, color, shape in zip(range(16), itertools.cycle(COLORS), itertools.cycle(SHAPES)):
        masks = varied_object_masks(Action(color, shape, motion), seed)
        if masks is None:
            continue
        checked += 1
        if sign:
            c = centroids(masks)
            assert (np.diff(c[:, axis]) * sign > 0).all() and np.ptp(c[:, axis]) > 0.2 * SIZE, (seed, c)
        else:
            area = masks.sum(axis=(1, 2))
            assert (area[-1] / area[0]) ** (1 if motion == "growing" else -1) > 2.0, (seed, area)
    assert checked >= 4


def test_varied_scenes_range_from_dark_to_bright_with_objects_darker_than_them_too():
    means, darker, everywhere = [], 0, 0
    for seed, action in enumerate(all_actions()[::2]):
        scene, _ = _plan_scene(action, SIZE, 8, 1.0, seed, varied=True)
        means.append(scene.background.mean())
        darker += float(np.mean(scene.color)) < means[-1]
        # contrast: lower than the dim style's, over the object's whole shading range; uneven light
        # and clutter may bring the backdrop near the object in places, never over most of it
        lo, hi = 1 - scene.shading[1], 1 + scene.shading[1]
        kept = min(np.mean(np.linalg.norm(scene.background - np.clip(np.array(scene.color, np.float32) * f, 0, 255),
                                          axis=-1) > 0.2 * 110) for f in (lo, 1.0, hi))
        assert kept > 2 / 3, (seed, kept)
        everywhere += kept == 1.0
    assert everywhere > 0.8 * len(means)
    assert min(means) < 40 and max(means) > 200, means
    assert 0.2 < darker / len(means) < 0.7
    dim, _ = _plan_scene(all_actions()[0], SIZE, 8, 1.0, 0)
    assert dim.background.max() <= 110 and dim.shading[1] == 0.0  # the dim style stays as it was


@pytest.mark.parametrize("shape, area", [("circle", np.pi), ("square", 4.0), ("triangle", 2.0)])
def test_soft_edges_cover_the_shapes_area_and_agree_with_the_hard_mask(shape, area):
    cx, cy, r = 30.3, 33.6, 11.2
    cover, mask = shape_coverage(shape, cx, cy, r, SIZE), shape_mask(shape, cx, cy, r, SIZE)
    assert abs(cover.sum() - area * r * r) < 0.03 * area * r * r  # the share of each pixel, summed
    differ = (cover >= 0.5) != mask  # the same boundary, but for pixel centres on it (rounding either way)
    assert np.allclose(cover[differ], 0.5, atol=1e-6) and differ.sum() < 2 * r
    edge = (cover > 0.05) & (cover < 0.95)
    assert edge.sum() > 2 * r  # partial pixels all round, not a hard step


def test_varied_scenes_draw_soft_edges_and_the_dim_style_hard_ones():
    action = Action("white", "circle", "standing still")
    for varied in (False, True):
        scene, _ = _plan_scene(action, SIZE, 8, 1.0, 3, varied=varied)
        assert scene.soft is varied


def test_varied_backdrops_are_lit_unevenly_and_cluttered():
    flat = np.full((SIZE, SIZE, 3), 120.0, np.float32)
    spreads = []
    for seed in range(40):
        out = uneven(flat, np.random.default_rng(seed))
        assert out.shape == flat.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255
        luma = out.mean(axis=-1)
        spreads.append(np.percentile(luma, 95) - np.percentile(luma, 5))
        steps = np.abs(np.diff(luma, axis=0)).max(), np.abs(np.diff(luma, axis=1)).max()
        assert max(steps) < 80, (seed, steps)  # soft: light and clutter change slowly, no hard edges
    assert np.median(spreads) > 30 and min(spreads) > 5, spreads
