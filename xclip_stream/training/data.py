"""Labelled clips to train on: the synthetic generator, or a folder with one sub-folder per label.

Both give a fixed label list, an endless training draw and a fixed held-out set, as (label index,
(T, H, W, 3) uint8 clip) pairs; the model's processor does the resizing and normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..pipeline.clips import open_video
from .augment import CameraLook
from .synthetic import COLORS, MOTIONS, SHAPES, Action, all_actions, render_clip, render_window

MOTION_GROUPS = (("moving left", "moving right", "moving up", "moving down"), ("growing", "shrinking"))
GROUP_KINDS = ("motion", "shape")  # what the members of a batch group differ in
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class Clip:
    label: int  # index into the dataset's labels
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB


class ClipData:
    """What the trainer needs of a dataset."""

    labels: list[str]
    num_frames: int

    def draw(self, rng: random.Random, progress: float = 1.0) -> Clip:  # pragma: no cover - interface
        """A training clip; ``progress`` in [0, 1] is how far training is (for a curriculum)."""
        raise NotImplementedError

    def held_out(self) -> list[Clip]:  # pragma: no cover - interface
        raise NotImplementedError

    def batch(self, rng: random.Random, size: int, progress: float = 1.0) -> list[Clip]:
        return [self.draw(rng, progress) for _ in range(size)]


def unseen_combinations(actions: Sequence[Action] | None = None) -> list[Action]:
    """The 13 colour/shape/motion combinations the demo model never trains on (its zero-shot test).

    One in ten, spread so each colour, shape and motion still appears in training in other
    combinations: the model has seen every word, never these sentences.
    """
    colors, shapes = list(COLORS), list(SHAPES)
    actions = list(actions or all_actions())
    return [a for a in actions
            if (colors.index(a.color) + 3 * shapes.index(a.shape) + MOTIONS.index(a.motion)) % 10 == 0]


def trained_combinations() -> list[Action]:
    """All combinations but ``unseen_combinations()``: what the demo model trains on (107)."""
    unseen = set(unseen_combinations())
    return [a for a in all_actions() if a not in unseen]


class SyntheticData(ClipData):
    """Synthetic clips of ``actions``. Half of the draws are whole clips covering 40-100% of one
    motion; half are windows cut from a live synthetic camera at a random frame stride, scene
    changes included, as the pipeline cuts them from the demo's cameras. Frames are drawn at one
    of ``sizes`` pixels, so the model also learns the processor's downscaling.

    Curriculum: during the first ``easy_until`` of training, a share of the clips (all at first,
    none at the end of it) have flat backgrounds and no distractor; objects and motions are found
    there first, and the full scenes then teach what to ignore.

    ``varied``: the share of clips drawn as real cameras see scenes (issue 19): varied scenes
    (light from dark to bright, low contrast, shaded objects, wider sizes and speeds), slower and
    faster frame rates (spans and strides), and a ``CameraLook`` (exposure, white balance, blur,
    noise, H.264 compression).
    """

    def __init__(self, actions: Sequence[Action] | None = None, num_frames: int = 8,
                 sizes: Sequence[int] = (64, 96, 128), held_out_per_label: int = 2, seed: int = 0,
                 easy_until: float = 0.3, groups: Sequence[str] = GROUP_KINDS, varied: float = 0.0):
        if not 0.0 <= varied <= 1.0:
            raise ValueError(f"varied is a share of clips in [0, 1], got {varied}")
        self.varied = varied
        self.actions = list(actions or all_actions())
        if not self.actions:
            raise ValueError("SyntheticData needs at least one action")
        self.labels = [a.caption for a in self.actions]
        self.num_frames, self.sizes = num_frames, tuple(sizes)
        self.held_out_per_label, self.seed, self.easy_until = held_out_per_label, seed, easy_until
        unknown = set(groups) - set(GROUP_KINDS)
        if unknown:
            raise ValueError(f"unknown group kinds {sorted(unknown)}; expected some of {list(GROUP_KINDS)}")
        self.groups = tuple(groups)

    def render(self, label: int, rng: random.Random, seed: int, plain: bool = False) -> Clip:
        action, size = self.actions[label], rng.choice(self.sizes)
        varied = self.varied > 0 and rng.random() < self.varied
        if rng.random() < 0.5:
            span = rng.uniform(0.3 if varied else 0.4, 1.0)
            frames = render_clip(action, self.num_frames, size, seed, span=span, plain=plain, varied=varied)
        else:
            stride = rng.randint(1, 4 if varied else 3)
            frames_per_scene = rng.randint(2, 4) * self.num_frames * stride // 2 + 1
            start = rng.randrange(0, 2 * frames_per_scene - self.num_frames * stride)
            frames = render_window(action, self.num_frames, size, seed, frames_per_scene, stride, start, plain,
                                   varied)
        if varied:
            frames = CameraLook.draw(rng).apply(frames, rng)
        return Clip(label, frames)

    def _plain(self, rng: random.Random, progress: float) -> bool:
        easy_share = max(0.0, 1.0 - progress / self.easy_until) if self.easy_until > 0 else 0.0
        return rng.random() < easy_share

    def draw(self, rng: random.Random, progress: float = 1.0) -> Clip:
        plain = self._plain(rng, progress)
        return self.render(rng.randrange(len(self.labels)), rng, rng.getrandbits(31), plain)

    def _group(self, action: Action, rng: random.Random) -> list[Action]:
        """The actions of one group around ``action``, of a kind drawn from ``groups``: "motion"
        (its motion's group of ``MOTION_GROUPS``), or "shape" (its colour and motion in every shape)."""
        if rng.choice(self.groups) == "shape":
            return [Action(action.color, shape, action.motion) for shape in SHAPES]
        group = next((g for g in MOTION_GROUPS if action.motion in g), ())
        return [Action(action.color, action.shape, motion) for motion in group]

    def batch(self, rng: random.Random, size: int, progress: float = 1.0) -> list[Clip]:
        """Half the batch in groups, the rest drawn one by one.

        A group is one scene (seed, size, framing) done by actions that differ in one word only:
        each motion of one of ``MOTION_GROUPS``, or each shape. The loss cannot fall on a group
        without the direction of motion, or the shape. Motion groups from the first step, with
        sine-cosine patch positions (``train._init_positions``), took the demo model's directions
        from 0.32-0.45 to 0.84-0.89.
        """
        if not self.groups:
            return super().batch(rng, size, progress)
        index = {a: i for i, a in enumerate(self.actions)}
        clips: list[Clip] = []
        for _ in range(4 * size):  # bounded: blinking and still have no motion group, some actions are unseen
            if len(clips) >= size // 2:
                break
            members = [index[a] for a in self._group(self.actions[rng.randrange(len(self.actions))], rng)
                       if a in index]
            if len(members) < 2:
                continue
            seed, framing, plain = rng.getrandbits(31), rng.getrandbits(31), self._plain(rng, progress)
            clips += [self.render(label, random.Random(framing), seed, plain) for label in members]
        clips = clips[:size]
        return clips + [self.draw(rng, progress) for _ in range(size - len(clips))]

    def held_out(self) -> list[Clip]:
        """Clips with seeds at or above 2**31, which ``draw`` never uses."""
        rng = random.Random(f"held-out:{self.seed}")
        return [self.render(label, rng, (1 << 31) + rng.getrandbits(31))
                for label in range(len(self.labels)) for _ in range(self.held_out_per_label)]


def label_from_folder(name: str) -> str:
    """Folder ``person_falling`` -> label ``person falling``."""
    return " ".join(name.replace("_", " ").split())


class FolderData(ClipData):
    """``root/<label>/<clip>``: every video in a label's folder is one example of it.

    Clips are decoded once, kept at ``max_side`` pixels (the processor crops and scales further),
    and each draw takes ``num_frames`` segment centres of a random stretch covering at least 60%
    of the clip. ``held_out_fraction`` of each label's clips (at least one, when it has two or
    more) are kept aside for evaluation.
    """

    def __init__(self, root: str | Path, num_frames: int, max_side: int = 128,
                 held_out_fraction: float = 0.2, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"training data folder {str(root)!r} does not exist")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.labels = [label_from_folder(p.name) for p in folders]
        if len(self.labels) < 2:
            raise ValueError(f"{str(root)!r} needs at least two label sub-folders, found {len(self.labels)}")
        self.num_frames, self.max_side = num_frames, max_side
        self.train: list[tuple[int, np.ndarray]] = []
        self.eval: list[tuple[int, np.ndarray]] = []
        rng = random.Random(seed)
        for label, folder in enumerate(folders):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise ValueError(f"label folder {str(folder)!r} has no video files ({', '.join(VIDEO_SUFFIXES)})")
            rng.shuffle(files)
            n_eval = max(1, round(held_out_fraction * len(files))) if len(files) > 1 and held_out_fraction > 0 else 0
            for i, path in enumerate(files):
                (self.eval if i < n_eval else self.train).append((label, self.decode(path)))

    def decode(self, path: Path) -> np.ndarray:
        """All frames of ``path``, (N, H, W, 3) uint8, the longer side at most ``max_side``."""
        frames = []
        with open_video(path) as container:
            try:
                for frame in container.decode(container.streams.video[0]):
                    scale = min(1.0, self.max_side / max(frame.width, frame.height))
                    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
                    frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
            except av.error.FFmpegError as e:
                raise ValueError(f"decoding training clip {str(path)!r} failed: {e}") from None
        if len(frames) < self.num_frames:
            raise ValueError(f"training clip {str(path)!r} has {len(frames)} frames, fewer than the model's "
                             f"{self.num_frames}")
        return np.stack(frames)

    def sample(self, frames: np.ndarray, rng: random.Random | None) -> np.ndarray:
        n = len(frames)
        length = n if rng is None else rng.randint(max(self.num_frames, round(0.6 * n)), n)
        start = 0 if rng is None else rng.randint(0, n - length)
        return frames[[start + int((i + 0.5) * length / self.num_frames) for i in range(self.num_frames)]]

    def draw(self, rng: random.Random, progress: float = 1.0) -> Clip:
        label, frames = rng.choice(self.train)
        return Clip(label, self.sample(frames, rng))

    def held_out(self) -> list[Clip]:
        return [Clip(label, self.sample(frames, None)) for label, frames in self.eval]
