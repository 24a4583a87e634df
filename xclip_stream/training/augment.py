"""What a real camera does to a scene, applied to training clips (issue 19).

The demo model first learnt that the object is the bright thing on a dim backdrop. Real cameras
see scenes from dark to bright through an exposure, a white balance, a lens and a codec; a
``CameraLook`` draws one such chain per clip and applies it to every frame alike (flicker and
sensor noise change per frame), so the caption stays true and only the look varies:

- exposure gain and gamma (the whole scene, objects included, gets darker or brighter);
- a white-balance cast and a contrast squeeze around mid-grey (low-contrast scenes);
- per-frame flicker of the exposure;
- lens blur (a separable Gaussian) and sensor noise;
- H.264 compression at a low quality, as a camera stream is (blocking, smeared chroma).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class CameraLook:
    gain: float = 1.0  # exposure: 0.5 (under) to 1.4 (over, clipping)
    gamma: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # white balance: a gain per channel
    contrast: float = 1.0  # 1: as drawn; 0.5: halfway to mid-grey
    flicker: float = 0.0  # per-frame exposure wobble, relative
    blur_sigma: float = 0.0  # pixels at the clip's size; 0: sharp
    noise_sigma: float = 0.0  # grey levels
    crf: int | None = None  # H.264 constant rate factor; None: uncompressed

    @classmethod
    def draw(cls, rng: random.Random) -> CameraLook:
        """A random look; about one clip in four gets each of blur, low contrast and compression."""
        return cls(
            gain=rng.uniform(0.5, 1.4),
            gamma=rng.uniform(0.7, 1.4),
            cast=tuple(rng.uniform(0.88, 1.12) for _ in range(3)),
            contrast=rng.uniform(0.45, 0.8) if rng.random() < 0.25 else 1.0,
            flicker=rng.uniform(0.0, 0.05),
            blur_sigma=rng.uniform(0.5, 1.6) if rng.random() < 0.3 else 0.0,
            noise_sigma=rng.uniform(0.0, 9.0),
            crf=rng.randint(30, 42) if rng.random() < 0.25 else None,
        )

    def apply(self, frames: np.ndarray, rng: random.Random) -> np.ndarray:
        """(T, H, W, 3) uint8 -> the same shape as this camera would deliver it."""
        levels = np.arange(256, dtype=np.float32)[:, None] / 255.0  # (256, 1): a lookup table per channel
        lut = 0.5 + (levels ** self.gamma * np.asarray(self.cast, np.float32) - 0.5) * self.contrast
        x = lut[frames, np.arange(3)]  # (T, H, W, 3) float32
        flicker = np.array([1 + rng.uniform(-self.flicker, self.flicker) for _ in frames], np.float32)
        x *= (255.0 * self.gain * flicker)[:, None, None, None]
        if self.blur_sigma > 0:
            x = gaussian_blur(x, self.blur_sigma)
        if self.noise_sigma > 0:
            noise = np.random.default_rng(rng.getrandbits(63)).standard_normal(x.shape, dtype=np.float32)
            x = x + self.noise_sigma * noise
        out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return h264_round_trip(out, self.crf) if self.crf is not None else out


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the H and W axes of (T, H, W, C), edges clamped."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    x = np.pad(x, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="edge")
    x = sum(w * x[:, i:i + x.shape[1] - 2 * radius] for i, w in enumerate(taps))
    x = np.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="edge")
    x = sum(w * x[:, :, i:i + x.shape[2] - 2 * radius] for i, w in enumerate(taps))
    return x


def h264_round_trip(frames: np.ndarray, crf: int) -> np.ndarray:
    """Encode (T, H, W, 3) uint8 frames as H.264 (yuv420p) at ``crf`` and decode them again."""
    t, h, w, _ = frames.shape
    even = frames[:, : h - h % 2, : w - w % 2]
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = even.shape[2], even.shape[1], "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(crf), "preset": "ultrafast", "tune": "zerolatency"}
    packets = []
    for i, image in enumerate(even):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = i
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f.to_ndarray(format="rgb24") for p in packets for f in decoder.decode(p)]
    decoded += [f.to_ndarray(format="rgb24") for f in decoder.decode(None)]
    if len(decoded) != t:
        raise RuntimeError(f"H.264 round trip gave {len(decoded)} frames for {t}")
    out = frames.copy()
    out[:, : even.shape[1], : even.shape[2]] = np.stack(decoded)
    return out
