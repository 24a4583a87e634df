"""Synthetic action videos: one coloured shape doing one captioned motion over a textured background.

The demo model is trained on these, so every clip must make its caption true (the distractor never
moves clearly, backgrounds keep contrast with the objects) while everything the caption does not name
(size, speed, position, background, noise, distractor) varies with the seed, so the model cannot
shortcut on it. Left/right, up/down and growing/shrinking of one seed are exact time reversals of
each other: only the order of frames tells them apart.

Two styles: dim scenes with lit objects (the default, the demo's cameras), and ``varied`` ones lit
from dark to bright, where an object may be darker than its backdrop and its edges blend into it as
a camera's pixels do (issue 19: a model trained on dim scenes only learnt that the object is the
bright thing). Backdrops come from ``backdrop.py``: textures, and in varied scenes uneven light,
clutter and surface edges.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xclip_stream.pipeline.clips import write_video

from .backdrop import TEXTURES, texture_weights, uneven

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = (
    "moving left", "moving right", "moving up", "moving down",
    "growing", "shrinking", "blinking", "standing still",
)

_MIN_BG_DISTANCE = 110.0  # RGB distance every background colour keeps from the main object's colour
_MIN_BG_DISTANCE_DISTRACTOR = 80.0
# Backgrounds are dim (every channel <= 110): the objects are the lit things in the scene. With a
# fixed contrast polarity a shape's outline reaches a ViT's linear patch embedding with a fixed
# sign whatever the backdrop; with backgrounds of any colour a small ViT learnt shapes far slower.
_BACKGROUND_MAX = 110.0
# Varied scenes (issue 19) keep at least this share of the distances above: low contrast, never none.
_MIN_CONTRAST_VARIED = 0.4


def _check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class Action:
    """What a clip shows; its caption is the text the model learns to match."""

    color: str
    shape: str
    motion: str

    def __post_init__(self) -> None:
        _check_choice("color", self.color, tuple(COLORS))
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("motion", self.motion, MOTIONS)

    @property
    def caption(self) -> str:
        return f"a {self.color} {self.shape} {self.motion}"

    @classmethod
    def parse(cls, caption: str) -> Action:
        """Inverse of ``caption``: ``"a red circle moving left"`` -> ``Action("red", "circle", "moving left")``."""
        parts = caption.strip().split(" ", 3)
        if len(parts) != 4 or parts[0] != "a":
            raise ValueError(f"caption {caption!r} is not of the form 'a <color> <shape> <motion>'")
        return cls(parts[1], parts[2], parts[3])


def all_actions() -> list[Action]:
    """All colour x shape x motion combinations (120), in a fixed order (colours, then shapes, then motions)."""
    return [Action(c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]


# --- scene planning ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Path:
    """The main object's centre and half-size from progress 0 to 1 (half-size interpolated geometrically)."""

    start: tuple[float, float, float]  # (cx, cy, r)
    end: tuple[float, float, float]
    blink_states: float | None = None  # on/off states over the clip; None: always visible
    blink_phase: float = 0.0
    jitter: float = 0.0

    def at(self, p: float) -> tuple[float, float, float]:
        (x0, y0, r0), (x1, y1, r1) = self.start, self.end
        return x0 + (x1 - x0) * p, y0 + (y1 - y0) * p, r0 * (r1 / r0) ** p

    def visible(self, t: float) -> bool:
        if self.blink_states is None:
            return True
        return int(np.floor(t * self.blink_states + self.blink_phase)) % 2 == 0

    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) swept by the object over the whole path."""
        r = max(self.start[2], self.end[2]) + self.jitter
        xs, ys = (self.start[0], self.end[0]), (self.start[1], self.end[1])
        return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r


@dataclass(frozen=True)
class _Sprite:
    """A still (optionally jittering) shape: the distractor."""

    color: tuple[int, int, int]
    shape: str
    center: tuple[float, float]
    r: float
    jitter: float


@dataclass(frozen=True, eq=False)
class _Scene:
    color: tuple[int, int, int]
    shape: str
    path: _Path
    background: np.ndarray  # (size, size, 3) float32
    distractor: _Sprite | None
    noise_sigma: float
    progress: tuple[float, float]  # (offset, span): clip time t maps to progress offset + span * t
    shading: tuple[float, float] = (0.0, 0.0)  # (angle, strength): the main object lit from one side
    soft: bool = False  # edges drawn by the share of each pixel a shape covers, as a camera's sensor sees them


def _main_path(motion: str, size: int, num_frames: int, rng: np.random.Generator, varied: bool = False) -> _Path:
    """Draw every variation in a fixed order, whatever the motion, so paired motions share one seed's draws.
    ``varied``: wider ranges of sizes, distances travelled (speeds) and growth."""
    u_r, u_travel, along, across, u_small, u_ratio = rng.uniform(0, 1, size=6)
    if varied:
        r, travel = size * (0.05 + 0.14 * u_r), size * (0.25 + 0.45 * u_travel)
        r_small, ratio = size * (0.045 + 0.055 * u_small), 1.7 + u_ratio
        travel = min(travel, size - 3 - 2 * r)
        ratio = min(ratio, 0.3 * size / r_small)
    else:
        r, travel = size * (0.075 + 0.075 * u_r), size * (0.35 + 0.25 * u_travel)
        r_small, ratio = size * (0.06 + 0.025 * u_small), 2.0 + 0.5 * u_ratio
    blink_states = rng.uniform(3.0, 4.5) * max(num_frames - 1, 1) / 7
    blink_phase = rng.uniform(0.0, 2.0)
    jitter = 0.5 if rng.random() < 0.5 else 0.0
    hi = size - 1
    if motion in ("growing", "shrinking"):
        r_large = r_small * ratio
        cx, cy = r_large + along * (hi - 2 * r_large), r_large + across * (hi - 2 * r_large)
        small, large = (cx, cy, r_small), (cx, cy, r_large)
        return _Path(small, large) if motion == "growing" else _Path(large, small)
    if motion.startswith("moving"):
        a = r + along * (hi - 2 * r - travel)
        b = r + across * (hi - 2 * r)
        lo_end, hi_end = a, a + travel
        first, last = (hi_end, lo_end) if motion in ("moving left", "moving up") else (lo_end, hi_end)
        if motion in ("moving left", "moving right"):
            return _Path((first, b, r), (last, b, r))
        return _Path((b, first, r), (b, last, r))
    cx, cy = r + along * (hi - 2 * r), r + across * (hi - 2 * r)
    if motion == "blinking":
        return _Path((cx, cy, r), (cx, cy, r), blink_states=blink_states, blink_phase=blink_phase)
    return _Path((cx, cy, r), (cx, cy, r), jitter=jitter)


def _distractor(action: Action, path: _Path, size: int, rng: np.random.Generator) -> _Sprite | None:
    """With probability 1/2, a smaller still shape of another colour and shape, clear of the main object's sweep."""
    if rng.random() < 0.5:
        return None
    color = rng.choice([c for c in COLORS if c != action.color])
    shape = rng.choice([s for s in SHAPES if s != action.shape])
    r = min(path.start[2], path.end[2]) * rng.uniform(0.5, 0.75)
    jitter = float(rng.choice([0.0, 1.0]))
    x0, y0, x1, y1 = path.bbox()
    margin = r + jitter + 2
    for cx, cy in rng.uniform(r + 1, size - 2 - r, size=(30, 2)):
        if cx + margin < x0 or cx - margin > x1 or cy + margin < y0 or cy - margin > y1:
            return _Sprite(COLORS[str(color)], str(shape), (float(cx), float(cy)), float(r), jitter)
    return None


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance from ``point`` to the colours between ``a`` and ``b`` (a texture blends along it)."""
    ab = b - a
    denom = float(ab @ ab)
    u = 0.0 if denom == 0 else float(np.clip((point - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(point - (a + u * ab)))


def _background_colors(avoid: list[tuple[tuple[float, ...], float]],
                       rng: np.random.Generator, varied: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two colours whose every blend keeps at least the given distance from each object colour.
    ``varied``: around a light level from dark to bright, with a lower contrast floor (drawn per scene)."""
    if varied:
        level, spread, floor = rng.uniform(10, 245), rng.uniform(15, 70), rng.uniform(_MIN_CONTRAST_VARIED, 1.0)
    for _ in range(200):
        if varied:
            a, b = np.clip(level + rng.uniform(-spread, spread, size=(2, 3)), 0, 255)
        else:
            a, b = rng.uniform(0, _BACKGROUND_MAX, size=(2, 3))
        if all(_segment_distance(np.array(c, float), a, b) >= d * (floor if varied else 1.0) for c, d in avoid):
            return a, b
    return np.zeros(3), np.full(3, 30.0)  # near-black is far from every colour in COLORS


def _background(color: tuple[int, int, int], distractor: _Sprite | None, size: int,
                rng: np.random.Generator, plain: bool = False, varied: bool = False,
                shading: float = 0.0) -> np.ndarray:
    """``shading``: the main object's colour ranges over (1 -/+ shading) times itself; all of it is avoided."""
    avoid = [(tuple(np.clip(np.array(color) * f, 0, 255)), _MIN_BG_DISTANCE)
             for f in sorted({1.0 - shading, 1.0, 1.0 + shading})]
    if distractor is not None:
        avoid.append((distractor.color, _MIN_BG_DISTANCE_DISTRACTOR))
    a, b = _background_colors(avoid, rng, varied)
    texture = str(rng.choice(TEXTURES))
    w = texture_weights("flat" if plain else texture, size, rng)[..., None]
    background = (a * (1 - w) + b * w).astype(np.float32)
    return uneven(background, rng) if varied and not plain else background


def _plan_scene(action: Action, size: int, num_frames: int, span: float, seed: int | list[int],
                plain: bool = False, varied: bool = False) -> tuple[_Scene, np.random.Generator]:
    """The scene and the per-frame generator (jitter, noise); each concern has its own seeded stream.
    ``plain``: a flat background and no distractor (a training curriculum's easy start).
    ``varied``: backgrounds from dark to bright (objects darker than them too), lower contrast,
    objects shaded from one side with soft edges, wider sizes and speeds (issue 19)."""
    geometry, extras, backdrop, frames = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    path = _main_path(action.motion, size, num_frames, geometry, varied)
    offset = geometry.uniform(0, 1) * (1 - span)
    distractor = _distractor(action, path, size, extras)
    distractor = None if plain else distractor
    noise_sigma = float(extras.uniform(1.0, 4.0))
    shading = (float(extras.uniform(0, 2 * np.pi)), float(extras.uniform(0.0, 0.3)) if varied else 0.0)
    background = _background(COLORS[action.color], distractor, size, backdrop, plain, varied, shading[1])
    scene = _Scene(COLORS[action.color], action.shape, path, background, distractor, noise_sigma, (offset, span),
                   shading, soft=varied)
    return scene, frames


# --- rasterising ------------------------------------------------------------------------------------

def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """(size, size) bool mask of a shape with centre (cx, cy) and half-size r (triangle points up)."""
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        # apex (cx, cy - r), base corners (cx -/+ r, cy + r): below the apex-to-corner edges, above the base
        return (dy <= r) & (2 * dx <= dy + r) & (-2 * dx <= dy + r)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(map(repr, SHAPES))}")


def _signed_distance(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """(size, size) distance in pixels from each pixel centre to the edge of ``shape_mask``'s shape,
    negative inside (square and triangle: the largest distance to an edge's line, exact along edges)."""
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - r
    if shape == "triangle":
        return np.maximum(dy - r, (np.abs(2 * dx) - dy - r) / np.sqrt(5.0))  # the base, the slanted edges
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(map(repr, SHAPES))}")


def shape_coverage(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """(size, size) float32 share in [0, 1] of each pixel the shape covers, approximated from the
    distance to its edge: 1/2 on the edge, as ``shape_mask``'s boundary (varied scenes, issue 19)."""
    return np.clip(0.5 - _signed_distance(shape, cx, cy, r, size), 0.0, 1.0).astype(np.float32)


def _paint(frame: np.ndarray, shape: str, cx: float, cy: float, r: float, color: tuple[int, int, int],
           soft: bool, shading: tuple[float, float] = (0.0, 0.0)) -> None:
    """Draw one shape into ``frame`` in place, hard-edged or ``soft``; ``shading`` (angle, strength)
    makes it brighter on one side and darker on the other."""
    size = frame.shape[0]
    cover = shape_coverage(shape, cx, cy, r, size) if soft else shape_mask(shape, cx, cy, r, size)
    yy, xx = np.nonzero(cover)
    fill = np.broadcast_to(np.asarray(color, np.float32), (len(yy), 3))
    angle, strength = shading
    if strength:
        side = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / max(r, 1.0)  # about [-1, 1]
        fill = fill * (1 + strength * side)[:, None]
    if not soft:
        frame[yy, xx] = fill
        return
    w = cover[yy, xx][:, None]
    frame[yy, xx] = frame[yy, xx] * (1 - w) + fill * w


def _render_frame(scene: _Scene, t: float, rng: np.random.Generator) -> np.ndarray:
    frame = scene.background.copy()
    main_jitter = rng.uniform(-1, 1, size=2) * scene.path.jitter
    d = scene.distractor
    d_jitter = rng.uniform(-1, 1, size=2) * (d.jitter if d is not None else 0.0)
    if d is not None:
        _paint(frame, d.shape, d.center[0] + d_jitter[0], d.center[1] + d_jitter[1], d.r, d.color, scene.soft)
    if scene.path.visible(t):
        offset, span = scene.progress
        cx, cy, r = scene.path.at(offset + span * t)
        _paint(frame, scene.shape, cx + main_jitter[0], cy + main_jitter[1], r, scene.color, scene.soft,
               scene.shading)
    frame += rng.normal(0.0, scene.noise_sigma, size=frame.shape).astype(np.float32)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def _times(num_frames: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def _check_size(num_frames: int, size: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")


# --- public API -------------------------------------------------------------------------------------

def render_clip(action: Action, num_frames: int = 8, size: int = 64, seed: int = 0,
                span: float | None = None, plain: bool = False, varied: bool = False) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 RGB clip of ``action``, the same for the same seed.

    ``span`` in (0, 1] is the fraction of a longer motion the clip covers (default 1: all of it), so a
    model also sees partial motions, as a sliding window over a live camera does.
    """
    _check_size(num_frames, size)
    span = 1.0 if span is None else float(span)
    if not 0.0 < span <= 1.0:
        raise ValueError(f"span must be in (0, 1], got {span}")
    scene, rng = _plan_scene(action, size, num_frames, span, seed, plain, varied)
    return np.stack([_render_frame(scene, float(t), rng) for t in _times(num_frames)])


def render_stream(actions: list[Action], seconds_per_action: float, fps: int, size: int,
                  seed: int) -> Iterator[tuple[Action, np.ndarray]]:
    """Endless live synthetic camera: cycles through ``actions``, each lasting ``seconds_per_action``.

    Each action gets a fresh scene (seeded from ``seed`` and its position in the stream) and its
    motion spans the whole action, so it progresses smoothly from frame to frame.
    """
    if not actions:
        raise ValueError("render_stream needs at least one action")
    frames_per_action = round(seconds_per_action * fps)
    _check_size(frames_per_action, size)
    for index, action in enumerate(itertools.cycle(actions)):
        scene, rng = _plan_scene(action, size, frames_per_action, 1.0, [seed, index])
        for t in _times(frames_per_action):
            yield action, _render_frame(scene, float(t), rng)


def render_window(action: Action, num_frames: int, size: int, seed: int, frames_per_scene: int,
                  stride: int, start: int, plain: bool = False, varied: bool = False) -> np.ndarray:
    """(num_frames, size, size, 3) frames ``start, start + stride, ...`` of a live synthetic camera
    showing only ``action`` (a fresh scene every ``frames_per_scene`` frames, as ``render_stream``).

    This is what the pipeline's sampler cuts from such a camera, scene changes included, so the
    demo model trains on the windows it will see live. Only the frames asked for are drawn.
    """
    _check_size(num_frames, size)
    if frames_per_scene < 2 or stride < 1 or start < 0:
        raise ValueError("render_window needs frames_per_scene >= 2, stride >= 1 and start >= 0")
    times = _times(frames_per_scene)
    scenes: dict[int, tuple[_Scene, np.random.Generator]] = {}
    frames = []
    for index in range(start, start + num_frames * stride, stride):
        scene_index, frame_index = divmod(index, frames_per_scene)
        if scene_index not in scenes:
            scenes[scene_index] = _plan_scene(action, size, frames_per_scene, 1.0, [seed, scene_index], plain,
                                              varied)
        scene, rng = scenes[scene_index]
        frames.append(_render_frame(scene, float(times[frame_index]), rng))
    return np.stack(frames)


def write_clip(path: str | Path, action: Action, num_frames: int, size: int, fps: int = 8,
               seed: int = 0) -> Path:
    """Render ``action`` and encode it as H.264 mp4 (yuv420p, so ``size`` must be even)."""
    if size % 2:
        raise ValueError(f"size must be even for H.264 yuv420p, got {size}")
    return write_video(path, render_clip(action, num_frames, size, seed), fps=fps, crf=18)
