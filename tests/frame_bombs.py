"""Hostile frame payloads, built byte by byte: lying JPEG frame headers, PNG chunk tricks and
decompression bombs (small records that declare huge or absurdly shaped images)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from xclip_stream.pipeline.kafka_io import encode_frame_message

SOF0 = 0xC0


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def png(width: int, height: int, *, rows: int | None = None, before: bytes = b"", after_ihdr: bytes = b"",
        header: bytes | None = None) -> bytes:
    """An RGB PNG of black pixels; ``rows`` compresses only that many rows (a header that lies about
    its height), ``before``/``after_ihdr`` insert chunks, ``header`` replaces the IHDR chunk."""
    raw_rows = height if rows is None else rows
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter byte + RGB
    data = b"".join(compressor.compress(row) for _ in range(raw_rows)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + before + (ihdr(width, height) if header is None else header) + after_ihdr
            + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b""))


def jpeg(height: int = 48, width: int = 64, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode_frame_message("cam", 1000, 1, image, "jpeg")[1]


def sof_offset(value: bytes) -> int:
    """Byte index of the first SOF0 marker of an encoder-made JPEG (before any entropy data)."""
    i = value.index(b"\xff\xc0")
    return i


def jpeg_with_size(value: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header claiming another size."""
    i = sof_offset(value)
    return value[: i + 5] + struct.pack(">HH", height, width) + value[i + 9 :]


def jpeg_with_second_sof(value: bytes, width: int, height: int, after_scan: bool = False) -> bytes:
    """A copy of the frame header with another size, inserted before the scan or after it (before EOI)."""
    i = sof_offset(value)
    (length,) = struct.unpack_from(">H", value, i + 2)
    segment = value[i : i + 2 + length]
    segment = segment[:5] + struct.pack(">HH", height, width) + segment[9:]
    at = len(value) - 2 if after_scan else value.index(b"\xff\xda")
    return value[:at] + segment + value[at:]
