"""Frame messages on Kafka: one encoded still image (JPEG or PNG) per record, plus dead letters.

A record's key is the camera id (UTF-8) so that one camera's frames stay in one partition, in
order. Headers carry what a decoder must not guess: ``camera_id`` (UTF-8), ``capture_time_ms``
(ASCII integer, UNIX milliseconds) and ``seq`` (ASCII integer, per-camera sequence number).

Decoding uses PyAV's codec contexts (Pillow is not a runtime dependency) and treats every flaw as a
:class:`BadMessage`, because a half-decoded frame (ffmpeg pads a truncated JPEG with grey) would be
scored as if the camera had seen it. Limits (``FrameLimits``) hold before any allocation: the record
size first, then the pixel count and aspect ratio of the one frame header the image may declare
(``image_headers`` walks all of them), then FFmpeg's own ``max_pixels`` inside the decoder, and the
decoded frame must have the declared size. A refused record is dead-lettered (``dead_letter_record``):
original key, value and headers, cut to size so the dead-letter producer cannot fail on them.
"""

from __future__ import annotations

import re
import time
from fractions import Fraction

import av
import numpy as np
from av.codec.context import CodecContext

from xclip_stream.schemas.config import FrameLimits
from xclip_stream.schemas.frames import SourceFrame

from .image_headers import (
    JPEG_SOI,
    PNG_SIGNATURE,
    ImageHeader,
    ImageHeaderError,
    read_image_header,
    verify_png_data,
)
from .rgb import to_rgb

FRAME_HEADERS = ("camera_id", "capture_time_ms", "seq")
IMAGE_FORMATS = ("jpeg", "png")
DEFAULT_LIMITS = FrameLimits()
MAX_CAMERA_ID_CHARS = 200  # as a configured camera's id

_DECODERS = {"jpeg": "mjpeg", "png": "png"}
_INTEGER = re.compile(rb"[0-9]{1,18}")  # plain ASCII digits: no sign, spaces or underscores


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
    limits: FrameLimits = DEFAULT_LIMITS,
) -> SourceFrame:
    """The frame a record carries; any flaw raises :class:`BadMessage`."""
    if value is not None and len(value) > limits.max_message_bytes:
        # Refused before anything else is read: the headers may be as hostile as the value.
        raise BadMessage(
            "message_too_large",
            f"record value is {len(value)} bytes, over the limit of {limits.max_message_bytes}",
        )
    fields = _header_fields(headers)
    camera_id = _camera_id(fields["camera_id"])
    capture_time_ms = _integer(fields, "capture_time_ms")
    seq = _integer(fields, "seq")
    where = f"camera {camera_id!r} seq {seq}"
    if key is None:
        raise BadMessage("key_mismatch", f"{where}: the record has no key (expected the camera id)")
    if key != fields["camera_id"]:
        shown = key[:64].decode("utf-8", "replace")
        raise BadMessage("key_mismatch", f"{where}: record key {shown!r} differs from the camera_id header")
    if not value:
        raise BadMessage("empty_payload", f"{where}: the record has no image bytes")
    try:
        declared = read_image_header(value)
    except ImageHeaderError as e:
        reason = "unsupported_format" if not value.startswith((JPEG_SOI, PNG_SIGNATURE)) else "corrupt_image"
        raise BadMessage(reason, f"{where}: {e}") from None
    _check_size(declared, limits, where)
    if declared.fmt == "png":
        try:
            verify_png_data(value, declared)
        except ImageHeaderError as e:
            raise BadMessage("corrupt_image", f"{where}: {e}") from None
    image = _decode_image(value, declared, limits.max_pixels, where)
    seconds = capture_time_ms / 1000.0
    return SourceFrame(camera_id=camera_id, seq=seq, time=seconds, pts=seconds, image=image)


def _check_size(declared: ImageHeader, limits: FrameLimits, where: str) -> None:
    """Pixel count and aspect ratio, so neither the decoder nor the resize to the model's square
    input (the short side scaled up to S) can allocate far more than an ordinary frame."""
    width, height, name = declared.width, declared.height, declared.fmt.upper()
    if width * height > limits.max_pixels:
        raise BadMessage(
            "image_too_large", f"{where}: {width}x{height} {name} exceeds the limit of {limits.max_pixels} pixels"
        )
    if max(width, height) > limits.max_aspect * min(width, height):
        raise BadMessage(
            "bad_aspect",
            f"{where}: {width}x{height} {name} is more elongated than the limit of {limits.max_aspect:g}:1",
        )


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
    if not camera_id or not camera_id.isprintable() or len(camera_id) > MAX_CAMERA_ID_CHARS:
        raise BadMessage(
            "bad_header",
            f"header 'camera_id' must be printable text of 1 to {MAX_CAMERA_ID_CHARS} characters, "
            f"got {camera_id[:64]!r} ({len(camera_id)} characters)",
        )
    return camera_id


def _integer(fields: dict[str, bytes], name: str) -> int:
    raw = fields[name]
    if not _INTEGER.fullmatch(raw):
        raise BadMessage(
            "bad_header", f"header {name!r} must be a non-negative ASCII integer, got {raw[:32]!r}"
        )
    return int(raw)


def _decode_image(value: bytes, declared: ImageHeader, max_pixels: int, where: str) -> np.ndarray:
    """RGB (H, W, 3) uint8 of exactly the declared size. Decoder errors are strict ("explode") so
    damaged data is refused, and FFmpeg's own ``max_pixels`` bounds what the decoder may allocate
    whatever header it ends up acting on."""
    name = declared.fmt.upper()
    ctx = CodecContext.create(_DECODERS[declared.fmt], "r")
    ctx.thread_count = 1  # one still image: decoder threads cost more than they give
    ctx.options = {"err_detect": "crccheck+explode", "max_pixels": str(max_pixels)}
    try:
        frames = list(ctx.decode(av.Packet(value))) + list(ctx.decode(None))
    except (av.FFmpegError, ValueError) as e:
        raise BadMessage("corrupt_image", f"{where}: {name} does not decode: {e}") from e
    if len(frames) != 1:
        raise BadMessage("corrupt_image", f"{where}: {name} decoded to {len(frames)} frames, expected 1")
    frame = frames[0]
    if (frame.width, frame.height) != (declared.width, declared.height):
        raise BadMessage(
            "size_mismatch",
            f"{where}: {name} declares {declared.width}x{declared.height} but decoded to "
            f"{frame.width}x{frame.height}",
        )
    return to_rgb(frame)


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


# What a frames consumer may fetch, from the limits a record must meet anyway. kafka-python's own
# defaults (1 MiB a partition, 50 MB a fetch) know nothing of them: valid frames over 1 MiB came at
# most one a fetch, and a fetch could bring 50 MB of records a 64 KiB limit refuses. (Tansu fills a
# fetch up to fetch_max_bytes, or its own ~5 MiB, whatever the per-partition cap.)
RECORD_OVERHEAD_BYTES = 64 * 1024  # key, headers and batch framing of one record beyond its value
PARTITION_FETCH_RECORDS = 2  # largest records a fetch may bring per partition ...
FETCH_RECORDS = 4  # ... and in all
MIN_PARTITION_FETCH_BYTES = 1 << 20  # kafka-python's default: small limits do not mean tiny fetches
MIN_FETCH_BYTES = 4 << 20
_INT32_MAX = 2**31 - 1  # the Fetch request's size fields


def fetch_sizes(limits: FrameLimits = DEFAULT_LIMITS) -> dict[str, int]:
    """kafka-python consumer settings bounding a fetch (per broker) to a few records of the largest
    size ``limits`` accept. A larger record still arrives whole as the first batch of a fetch
    (KIP-74; kafka-python 3 fetches with v3+), so it is dead-lettered, never stuck. kafka-python's
    response guard (receive_message_max_bytes, 100 MB) stays: one below such a record's response
    fails the fetch, and the partition then stalls on it forever (seen against Tansu)."""
    record = limits.max_message_bytes + RECORD_OVERHEAD_BYTES
    partition = min(max(PARTITION_FETCH_RECORDS * record, MIN_PARTITION_FETCH_BYTES), _INT32_MAX)
    total = min(max(FETCH_RECORDS * record, MIN_FETCH_BYTES, partition), _INT32_MAX)
    return {"max_partition_fetch_bytes": partition, "fetch_max_bytes": total}


_DLQ_KEY_BYTES = 1024  # a camera id is short; a longer key is cut
_DLQ_HEADER_BYTES = 16 * 1024  # all original headers (names and values) together


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None,
    error: BadMessage,
    topic: str,
    partition: int,
    offset: int,
    max_value_bytes: int = DEFAULT_LIMITS.dead_letter_max_bytes,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the dead letter for a refused record.

    The copy is whole where it fits, so a fixed consumer can replay it. What does not fit a producer's
    request (kafka-python's default is 1 MiB) is cut: the value to its first ``max_value_bytes``, the key
    to 1 KiB, the original headers to 16 KiB in all (later ones dropped, a long value cut). Then
    ``dlq_truncated`` names what was cut (``value,key,headers``) and ``dlq_original_bytes`` gives the
    value's full size, so a cut copy is never mistaken for the record."""
    value = value or b""
    cut = []
    if len(value) > max_value_bytes:
        cut.append("value")
    if key is not None and len(key) > _DLQ_KEY_BYTES:
        cut.append("key")
    kept_headers: list[tuple[str, bytes]] = []
    budget = _DLQ_HEADER_BYTES
    for name, raw in headers or ():
        raw = raw or b""
        room = budget - len(name)
        if room < len(raw):
            cut.append("headers")
            if room > 0:
                kept_headers.append((name, raw[:room]))
            break
        kept_headers.append((name, raw))
        budget = room - len(raw)
    letter_headers = dead_letter_headers(kept_headers, error.reason, str(error), topic, partition, offset)
    if cut:
        letter_headers += [
            ("dlq_truncated", ",".join(cut).encode("ascii")),
            ("dlq_original_bytes", str(len(value)).encode("ascii")),
        ]
    return (None if key is None else key[:_DLQ_KEY_BYTES]), value[:max_value_bytes], letter_headers
