"""JPEG encoding with FFmpeg's mjpeg encoder through PyAV: no imaging library at runtime. Used by
the MJPEG test camera and for the live page's thumbnails of each camera's latest sampled frame."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

THUMBNAIL_BIT_RATE = 2_000_000  # the live page's thumbnails: small JPEGs


class JpegEncoder:
    """Encodes RGB frames to JPEG (one reusable codec context per frame size; not thread-safe)."""

    def __init__(self, bit_rate: int = 8_000_000):
        self.bit_rate = bit_rate
        self._context: av.video.codeccontext.VideoCodecContext | None = None

    def encode(self, image: np.ndarray, width: int | None = None) -> bytes:
        """(H, W, 3) uint8 RGB -> JPEG bytes; ``width``: scaled down to it first (aspect kept, even sizes)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        out_w, out_h = image.shape[1], image.shape[0]
        if width is not None and width < out_w:
            out_w, out_h = width, max(2, round(out_h * width / out_w))
        out_w, out_h = out_w - out_w % 2 or 2, out_h - out_h % 2 or 2  # 4:2:0 chroma wants even sizes
        ctx = self._context
        if ctx is None or (ctx.width, ctx.height) != (out_w, out_h):
            ctx = av.CodecContext.create("mjpeg", "w")
            ctx.width, ctx.height = out_w, out_h
            ctx.pix_fmt = "yuvj420p"
            ctx.time_base = Fraction(1, 25)
            ctx.bit_rate = self.bit_rate
            self._context = ctx
        packets = ctx.encode(frame.reformat(width=out_w, height=out_h, format="yuvj420p"))
        return b"".join(bytes(p) for p in packets)
