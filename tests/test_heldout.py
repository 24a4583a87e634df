"""The held-out renderer (issue 19): the captions stay true in its own style, which is not the
training generator's (rooms from dark to bright, objects darker than walls, soft edges)."""

from __future__ import annotations

import numpy as np
import pytest

from xclip_stream.training.heldout import HeldOutClip, coverage, render_heldout, room
from xclip_stream.training.synthetic import SHAPES, Action, shape_mask

SIZE = 96


def object_track(action: Action, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2) centroids and (T,) areas of the main object, from the plan drawn without the camera."""
    clip = HeldOutClip(action, SIZE, seed)
    times = np.linspace(0, 1, 8)
    (x0, y0, r0), (x1, y1, r1) = clip.start, clip.end
    masks = np.stack([coverage(action.shape, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, r0 * (r1 / r0) ** t, SIZE)
                      for t in times])
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    area = masks.sum(axis=(1, 2))
    return np.stack([(masks * xx).sum(axis=(1, 2)) / area, (masks * yy).sum(axis=(1, 2)) / area], 1), area


def test_clips_are_uint8_and_reproducible():
    action = Action("blue", "triangle", "blinking")
    clip = render_heldout(action, num_frames=8, size=SIZE, seed=4)
    assert clip.shape == (8, SIZE, SIZE, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, render_heldout(action, 8, SIZE, seed=4))
    assert not np.array_equal(clip, render_heldout(action, 8, SIZE, seed=5))


@pytest.mark.parametrize(("motion", "axis", "sign"), [("moving left", 0, -1), ("moving right", 0, 1),
                                                      ("moving up", 1, -1), ("moving down", 1, 1)])
def test_directions_cross_a_third_of_the_frame_or_more(motion, axis, sign):
    for seed in range(5):
        track, _ = object_track(Action("red", "circle", motion), seed)
        steps = np.diff(track[:, axis]) * sign
        assert (steps > 0).all() and steps.sum() > 0.3 * SIZE, track


@pytest.mark.parametrize("motion", ["growing", "shrinking"])
def test_scale_motions_change_the_area_by_3x_or_more(motion):
    for seed in range(5):
        _, area = object_track(Action("green", "square", motion), seed)
        ratio = area[-1] / area[0] if motion == "growing" else area[0] / area[-1]
        assert ratio > 3.0, area


def test_blinking_hides_the_object_between_frames():
    action = Action("white", "circle", "blinking")
    for seed in range(5):
        clip = HeldOutClip(action, SIZE, seed)
        shown = [not clip.blinks or int(np.floor(t * (2 * clip.blinks - 1e-9))) % 2 == 0
                 for t in np.linspace(0, 1, 8)]
        assert 2 <= clip.blinks and np.count_nonzero(np.diff(shown)) >= 2, shown
        frames = render_heldout(action, 8, SIZE, seed).astype(np.float32)
        x, y, r = clip.start
        inside = coverage("circle", x, y, r, SIZE) > 0.99
        diffs = np.abs(np.diff(frames, axis=0))[:, inside].mean(axis=(1, 2))
        changed = np.diff(shown)
        assert diffs[changed].min() > 2 * diffs[~changed].max(), (diffs, shown)


def test_anti_aliased_coverage_matches_the_hard_mask_inside_and_blends_at_edges():
    for shape in SHAPES:
        soft = coverage(shape, 40.3, 50.6, 17.2, SIZE)
        hard = shape_mask(shape, 40.3, 50.6, 17.2, SIZE)
        assert abs(soft.sum() - hard.sum()) < 0.05 * hard.sum()
        assert ((soft > 0) & (soft < 1)).sum() > 20  # partial pixels on the edges


def test_rooms_range_from_dark_to_bright_and_objects_can_be_darker_than_walls():
    means = [room(SIZE, np.random.default_rng(seed)).mean() for seed in range(40)]
    assert min(means) < 70 and max(means) > 170, means
    darker = 0
    for seed in range(40):
        clip = HeldOutClip(Action("red", "square", "standing still"), SIZE, seed)
        darker += float(np.mean(clip.color)) < float(clip.background.mean())
    assert 5 <= darker <= 35
