"""Backdrops of the synthetic scenes: textures blending two colours, and (varied scenes only)
uneven light, clutter and surface edges. Kept apart from ``synthetic.py``, which places the objects
and keeps every caption true; nothing here knows of objects or captions."""

from __future__ import annotations

import numpy as np

TEXTURES = ("flat", "gradient", "stripes", "checkerboard", "noise")


def bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Upsample a small (k+1, k+1) grid to (size, size): smooth low-frequency noise without SciPy."""
    k = grid.shape[0] - 1
    u = np.linspace(0, k, size)
    i = np.minimum(np.floor(u).astype(int), k - 1)
    f = u - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def texture_weights(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) blend weights in [0, 1] between the two background colours."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    scale = size / 64
    if texture == "flat":
        return np.zeros((size, size), np.float32)
    if texture == "gradient":
        return (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    if texture == "stripes":
        return (np.floor(proj / (rng.uniform(5, 14) * scale)) % 2).astype(np.float32)
    if texture == "checkerboard":
        cell = rng.uniform(4, 12) * scale
        return ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    return bilinear(rng.uniform(0, 1, size=(int(rng.integers(2, 6)) + 1,) * 2), size).astype(np.float32)


def uneven(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Real rooms are not lit evenly and are not empty: the edge of a large surface, out-of-focus
    clutter (soft grey-toned ellipses and boxes, lighter or darker than the backdrop), then light
    that falls off from a lamp and drifts slowly across the scene. Both may bring the backdrop near
    an object's colour in places (issue 19: the model trained on evenly lit backdrops lost shapes
    on unevenly lit ones)."""
    size = background.shape[0]
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size  # pixel centres in [0, 1]
    out = background.copy()
    if rng.random() < 0.5:  # a large surface's edge (a wall meeting the floor, a table, a doorway)
        angle, at = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8)
        side = (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle) + 0.5 - at
        w = np.clip(0.5 + side * size / rng.uniform(2.0, 5.0), 0, 1)  # 2-5 pixels soft
        out += w[..., None] * (rng.uniform(-90, 90) + rng.uniform(-10, 10, size=3))
    for _ in range(int(rng.integers(0, 5))):  # clutter
        cx, cy = rng.uniform(0, 1, size=2)
        rx, ry = rng.uniform(0.06, 0.3, size=2)
        u, v = np.abs(xx - cx) / rx, np.abs(yy - cy) / ry
        d = np.hypot(u, v) if rng.random() < 0.5 else np.maximum(u, v)  # 1 on the outline
        w = np.clip((1 - d) / rng.uniform(0.3, 1.0), 0, 1)  # a soft ramp inwards, never a sharp edge
        out += (w * w * (3 - 2 * w))[..., None] * (rng.uniform(-80, 80) + rng.uniform(-8, 8, size=3))
    lamp = rng.uniform(-0.3, 1.3, size=2)
    falloff = rng.uniform(0.0, 0.6) * np.hypot(xx - lamp[0], yy - lamp[1])  # 0 to about 0.9
    cells = int(rng.integers(1, 5))
    drift = bilinear(rng.uniform(-1, 1, size=(cells + 1, cells + 1)), size)  # slow, in [-1, 1]
    gain = np.clip(rng.uniform(1.0, 1.3) - falloff + rng.uniform(0.0, 0.35) * drift, 0.25, 2.0)
    offset = rng.uniform(0, 35) * bilinear(rng.uniform(-1, 1, size=(cells + 1, cells + 1)), size)
    return np.clip(out * gain[..., None] + offset[..., None], 0, 255).astype(np.float32)
