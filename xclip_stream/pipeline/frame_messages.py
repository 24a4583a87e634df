"""Frame messages on Kafka: one encoded still image (JPEG or PNG) per record, plus dead letters.

A record's key is the camera id (UTF-8) so that one camera's frames stay in one partition, in
order. Headers carry what a decoder must not guess: ``camera_id`` (UTF-8), ``capture_time_ms``
(ASCII integer, UNIX milliseconds) and ``seq`` (ASCII integer, per-camera sequence number).

Decoding uses PyAV's codec contexts (Pillow is not a runtime dependency) and treats every flaw as a
:class:`BadMessage`, because a half-decoded frame (ffmpeg pads a truncated JPEG with grey) would be
scored as if the camera had seen it. Image dimensions are read from the header before decoding, so
a small message cannot make the decoder allocate a huge frame.
"""

from __future__ import annotations

import re
import struct
import time
from fractions import Fraction

import av
import numpy as np
from av.codec.context import CodecContext

from xclip_stream.schemas.frames import SourceFrame

from .rgb import to_rgb

FRAME_HEADERS = ("camera_id", "capture_time_ms", "seq")
IMAGE_FORMATS = ("jpeg", "png")
DEFAULT_MAX_PIXELS = 4096 * 4096

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk with its fixed CRC
_DECODERS = {"jpeg": "mjpeg", "png": "png"}
_INTEGER = re.compile(rb"[0-9]{1,18}")  # plain ASCII digits: no sign, spaces or underscores
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI, EOI: no length field


class BadMessage(Exception):
    """A record that cannot become a frame. ``reason`` is a short code for metrics and dead-letter
    headers; the message names the problem for a human."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def encode_frame_message(
    camera_id: str,
    capture_time_ms: int,
    seq: int,
    image: np.ndarray,
    fmt: str = "jpeg",
    *,
    jpeg_qscale: int = 2,
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one frame, as a camera publisher sends it.

    ``jpeg_qscale`` is the JPEG quantiser scale, 2 (best) to 31."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    if not camera_id:
        raise ValueError("camera_id must not be empty")
    if capture_time_ms < 0 or seq < 0:
        raise ValueError(f"capture_time_ms and seq must be >= 0, got {capture_time_ms}, {seq}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    value = _encode_image(np.ascontiguousarray(image), fmt, jpeg_qscale)
    headers = [
        ("camera_id", camera_id.encode("utf-8")),
        ("capture_time_ms", str(int(capture_time_ms)).encode("ascii")),
        ("seq", str(int(seq)).encode("ascii")),
    ]
    return camera_id.encode("utf-8"), value, headers


def _encode_image(image: np.ndarray, fmt: str, jpeg_qscale: int) -> bytes:
    pix_fmt = "yuvj420p" if fmt == "jpeg" else "rgb24"  # 4:2:0 JPEG, as cameras send it
    ctx = CodecContext.create(_DECODERS[fmt], "w")
    ctx.width, ctx.height = image.shape[1], image.shape[0]
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 1)
    if fmt == "jpeg":
        ctx.qmin = ctx.qmax = jpeg_qscale
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    if pix_fmt != "rgb24":
        frame = frame.reformat(format=pix_fmt)
    packets = ctx.encode(frame) + ctx.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def decode_frame_message(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceFrame:
    """The frame a record carries; any flaw raises :class:`BadMessage`."""
    fields = _header_fields(headers)
    camera_id = _camera_id(fields["camera_id"])
    capture_time_ms = _integer(fields, "capture_time_ms")
    seq = _integer(fields, "seq")
    where = f"camera {camera_id!r} seq {seq}"
    if key is None:
        raise BadMessage("key_mismatch", f"{where}: the record has no key (expected the camera id)")
    if key != fields["camera_id"]:
        shown = key.decode("utf-8", "replace")
        raise BadMessage("key_mismatch", f"{where}: record key {shown!r} differs from the camera_id header")
    if not value:
        raise BadMessage("empty_payload", f"{where}: the record has no image bytes")
    fmt = _sniff_format(value, where)
    width, height = _image_size(value, fmt, where)
    if width * height > max_pixels:
        raise BadMessage(
            "image_too_large",
            f"{where}: {width}x{height} {fmt.upper()} exceeds the limit of {max_pixels} pixels",
        )
    image = _decode_image(value, fmt, where)
    seconds = capture_time_ms / 1000.0
    return SourceFrame(camera_id=camera_id, seq=seq, time=seconds, pts=seconds, image=image)


def _header_fields(headers: list[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """The frame headers by name; a missing header, a null value or conflicting duplicates are errors."""
    fields: dict[str, bytes] = {}
    for name, raw in headers or ():
        if name not in FRAME_HEADERS:
            continue
        if raw is None:
            raise BadMessage("bad_header", f"header {name!r} has no value")
        if name in fields and fields[name] != raw:
            raise BadMessage("bad_header", f"header {name!r} appears twice with different values")
        fields[name] = raw
    missing = [name for name in FRAME_HEADERS if name not in fields]
    if missing:
        raise BadMessage("missing_header", f"frame message lacks header(s) {', '.join(missing)}")
    return fields


def _camera_id(raw: bytes) -> str:
    try:
        camera_id = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadMessage("bad_header", f"header 'camera_id' is not UTF-8: {raw[:64]!r}") from e
    if not camera_id or not camera_id.isprintable():
        raise BadMessage(
            "bad_header", f"header 'camera_id' must be non-empty printable text, got {camera_id!r}"
        )
    return camera_id


def _integer(fields: dict[str, bytes], name: str) -> int:
    raw = fields[name]
    if not _INTEGER.fullmatch(raw):
        raise BadMessage(
            "bad_header", f"header {name!r} must be a non-negative ASCII integer, got {raw[:32]!r}"
        )
    return int(raw)


def _sniff_format(value: bytes, where: str) -> str:
    """The image format from its magic bytes, checked for a complete ending (truncation)."""
    if value.startswith(_JPEG_SOI):
        if not value.endswith(_JPEG_EOI):
            raise BadMessage(
                "corrupt_image", f"{where}: JPEG is truncated (it does not end with the EOI marker FFD9)"
            )
        return "jpeg"
    if value.startswith(_PNG_SIGNATURE):
        if not value.endswith(_PNG_IEND):
            raise BadMessage(
                "corrupt_image", f"{where}: PNG is truncated (it does not end with an IEND chunk)"
            )
        return "png"
    raise BadMessage(
        "unsupported_format", f"{where}: payload is neither JPEG nor PNG (starts with {value[:8].hex(' ')})"
    )


def _image_size(value: bytes, fmt: str, where: str) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk or the JPEG SOFn segment, before any decoding."""
    size = _png_size(value) if fmt == "png" else _jpeg_size(value)
    if size is None or min(size) <= 0:
        raise BadMessage("corrupt_image", f"{where}: {fmt.upper()} has no valid image size header")
    return size


def _png_size(value: bytes) -> tuple[int, int] | None:
    if len(value) < 24 or value[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", value[16:24])
    return width, height


def _jpeg_size(value: bytes) -> tuple[int, int] | None:
    """Walk the marker segments up to the first SOFn; entropy-coded data starts only after it."""
    i = 2
    while i + 4 <= len(value):
        if value[i] != 0xFF:
            return None
        marker = value[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", value[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if length < 8 or i + 9 > len(value):
                return None
            height, width = struct.unpack(">HH", value[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _decode_image(value: bytes, fmt: str, where: str) -> np.ndarray:
    """RGB (H, W, 3) uint8; decoder errors are strict ("explode") so damaged data is refused."""
    ctx = CodecContext.create(_DECODERS[fmt], "r")
    ctx.thread_count = 1  # one still image: decoder threads cost more than they give
    ctx.options = {"err_detect": "crccheck+explode"}
    try:
        frames = list(ctx.decode(av.Packet(value))) + list(ctx.decode(None))
    except (av.FFmpegError, ValueError) as e:
        raise BadMessage("corrupt_image", f"{where}: {fmt.upper()} does not decode: {e}") from e
    if len(frames) != 1:
        raise BadMessage(
            "corrupt_image", f"{where}: {fmt.upper()} decoded to {len(frames)} frames, expected 1"
        )
    return to_rgb(frames[0])


def dead_letter_headers(
    headers: list[tuple[str, bytes]] | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    max_detail_chars: int = 1000,
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it was refused.

    The dead-letter record republishes the original key and value unchanged, so a fixed consumer can
    replay it; ``dlq_*`` headers say which record it was and what was wrong."""
    return [
        *(headers or ()),
        ("dlq_reason", reason.encode("utf-8")),
        ("dlq_detail", detail[:max_detail_chars].encode("utf-8", "replace")),
        ("dlq_topic", topic.encode("utf-8")),
        ("dlq_partition", str(int(partition)).encode("ascii")),
        ("dlq_offset", str(int(offset)).encode("ascii")),
        ("dlq_time_ms", str(time.time_ns() // 1_000_000).encode("ascii")),
    ]
