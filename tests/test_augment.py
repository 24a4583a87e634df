"""Camera looks for training clips: each effect does what it says, and none breaks a clip."""

from __future__ import annotations

import random

import numpy as np
import pytest

from xclip_stream.training.augment import CameraLook, gaussian_blur, h264_round_trip
from xclip_stream.training.synthetic import Action, render_clip

CLIP = render_clip(Action("red", "square", "moving right"), num_frames=8, size=64, seed=2)


def test_the_neutral_look_changes_nothing():
    out = CameraLook().apply(CLIP, random.Random(0))
    np.testing.assert_array_equal(out, CLIP)


def test_exposure_gain_and_contrast_move_brightness_and_spread():
    rng = random.Random(0)
    dark, bright = CameraLook(gain=0.5).apply(CLIP, rng), CameraLook(gain=1.4).apply(CLIP, rng)
    assert dark.mean() < 0.6 * CLIP.mean() < bright.mean() * 0.6
    flat = CameraLook(contrast=0.5).apply(CLIP, rng).astype(np.float32)
    assert flat.std() < 0.6 * CLIP.astype(np.float32).std()
    cast = CameraLook(cast=(1.0, 1.0, 0.8)).apply(CLIP, rng).astype(np.float32)
    assert cast[..., 2].mean() < CLIP[..., 2].mean() and cast[..., 0].mean() == pytest.approx(CLIP[..., 0].mean(), 0.01)


def test_flicker_and_noise_change_per_frame_and_follow_the_generator():
    look = CameraLook(flicker=0.05, noise_sigma=5.0)
    a, b = look.apply(CLIP, random.Random(7)), look.apply(CLIP, random.Random(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, look.apply(CLIP, random.Random(8)))
    residual = a.astype(np.float32) - CLIP
    assert 3.0 < residual.std() < 12.0
    assert len({round(float(f.mean()), 1) for f in a}) > 1


def test_blur_keeps_the_mean_and_softens_edges():
    x = CLIP.astype(np.float32)
    blurred = gaussian_blur(x, 1.2)
    assert blurred.shape == x.shape
    assert abs(blurred.mean() - x.mean()) < 0.5
    edge = np.abs(np.diff(x, axis=2)).mean()
    assert np.abs(np.diff(blurred, axis=2)).mean() < 0.7 * edge


def test_h264_round_trip_keeps_every_frame_and_adds_artefacts():
    out = h264_round_trip(CLIP, crf=40)
    assert out.shape == CLIP.shape and out.dtype == np.uint8
    error = np.abs(out.astype(np.float32) - CLIP)
    assert 0.5 < error.mean() < 15.0  # lossy, yet the same picture
    odd = h264_round_trip(np.ascontiguousarray(CLIP[:, :63, :63]), crf=30)  # odd sizes: the edge row stays
    assert odd.shape == (8, 63, 63, 3)


def test_drawn_looks_cover_their_ranges():
    rng = random.Random(3)
    looks = [CameraLook.draw(rng) for _ in range(400)]
    gains = [look.gain for look in looks]
    assert min(gains) < 0.6 and max(gains) > 1.3
    for name in ("blur_sigma", "crf"):
        share = sum(bool(getattr(look, name)) for look in looks) / len(looks)
        assert 0.15 < share < 0.45, (name, share)
    assert 0.15 < sum(look.contrast < 1 for look in looks) / len(looks) < 0.35
