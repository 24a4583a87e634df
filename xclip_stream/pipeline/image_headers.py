"""What a JPEG or PNG declares about itself, read from its structure before any pixel is decoded.

A decoder allocates the frame its headers declare, so the size limits must hold on every header
the decoder could act on, not only the first one a quick sniff finds. Both walkers read the whole
file's structure (JPEG marker segments and entropy-coded scans; PNG chunks) and refuse anything a
still image has no use for: a second JPEG frame header (multi-frame and hierarchical tricks), a PNG
whose IHDR is not the first chunk or comes twice, animated PNG chunks, segments that overrun the
data, or bytes after the end marker. ``verify_png_data`` then checks that a PNG's image data
inflates to exactly the rows its IHDR declares (FFmpeg pads a short one). Pure byte parsing, no
decoding; cost is linear in the size, with the loops bounded by marker and chunk counts.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_RST = frozenset(range(0xD0, 0xD8))
_JPEG_SOS, _JPEG_EOI, _JPEG_TEM = 0xDA, 0xD9, 0x01
_JPEG_MAX_MARKERS = 4096  # segments and fill bytes outside scans: real files have dozens
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # FF00, RSTn and fill FFs stay in the scan
# Encoders write IDAT chunks of 8 KiB or more: 4096 chunks carry any PNG a frame limit lets through,
# and bound the Python loops that walk them (a message of 12-byte chunks would otherwise cost ~1 s).
_PNG_MAX_CHUNKS = 4096
_PNG_ANIMATION = (b"acTL", b"fcTL", b"fdAT")
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # colour type -> depths


class ImageHeaderError(ValueError):
    """The image's structure is damaged or declares something a single still frame cannot be."""


@dataclass(frozen=True)
class ImageHeader:
    fmt: str  # "jpeg" | "png"
    width: int
    height: int
    raw_bytes: int = 0  # PNG: the exact size of the decompressed image data its IHDR implies


def read_image_header(value: bytes) -> ImageHeader:
    """The format and the one frame size the image declares; raises :class:`ImageHeaderError`."""
    if value.startswith(JPEG_SOI):
        return _jpeg_header(value)
    if value.startswith(PNG_SIGNATURE):
        return _png_header(value)
    raise ImageHeaderError(f"payload is neither JPEG nor PNG (starts with {value[:8].hex(' ')})")


def _jpeg_header(value: bytes) -> ImageHeader:
    """Walks every marker segment and scan up to EOI, collecting the frame headers (SOFn)."""
    n = len(value)
    frames: list[tuple[int, int, int]] = []  # (marker, width, height) of each SOFn
    i = 2
    for _ in range(_JPEG_MAX_MARKERS):
        if i + 2 > n:
            raise ImageHeaderError("JPEG is truncated (it does not end with the EOI marker FFD9)")
        if value[i] != 0xFF:
            raise ImageHeaderError(f"JPEG has no marker at byte {i} (found {value[i]:02x})")
        marker = value[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == _JPEG_EOI:
            if i + 2 != n:
                raise ImageHeaderError(f"JPEG has {n - i - 2} bytes after its EOI marker")
            break
        if marker in _JPEG_RST or marker == _JPEG_TEM:
            i += 2
            continue
        if marker in (0x00, 0xD8):
            raise ImageHeaderError(f"JPEG has a stray marker FF{marker:02X} at byte {i}")
        if i + 4 > n:
            raise ImageHeaderError("JPEG is truncated inside a marker segment")
        (length,) = struct.unpack_from(">H", value, i + 2)
        end = i + 2 + length
        if length < 2 or end > n:
            raise ImageHeaderError(f"JPEG segment FF{marker:02X} at byte {i} overruns the data")
        if marker in _JPEG_SOF:
            frames.append((marker, *_jpeg_frame_size(value, i + 4, length)))
        if marker == _JPEG_SOS:
            if not frames:
                raise ImageHeaderError("JPEG has a scan before its frame header (SOFn)")
            end = _skip_entropy_data(value, end)
        i = end
    else:
        raise ImageHeaderError(f"JPEG has more than {_JPEG_MAX_MARKERS} markers outside its scans")
    if not frames:
        raise ImageHeaderError("JPEG has no frame header (SOFn)")
    if len(frames) > 1:
        shown = ", ".join(f"FF{m:02X} {w}x{h}" for m, w, h in frames[:4])
        raise ImageHeaderError(f"JPEG has {len(frames)} frame headers ({shown}); a frame has one")
    _, width, height = frames[0]
    return ImageHeader("jpeg", width, height)


def _jpeg_frame_size(value: bytes, start: int, length: int) -> tuple[int, int]:
    """(width, height) of a SOFn segment whose body starts at ``start``: P(1) Y(2) X(2) Nf(1), 3*Nf."""
    if length < 8:
        raise ImageHeaderError(f"JPEG frame header is {length} bytes, at least 8 expected")
    _precision, height, width, components = struct.unpack_from(">BHHB", value, start)
    if not 1 <= components <= 4 or length != 8 + 3 * components:
        raise ImageHeaderError(f"JPEG frame header declares {components} components in {length} bytes")
    if width == 0 or height == 0:  # height 0 defers to a DNL marker: a size nobody checked
        raise ImageHeaderError(f"JPEG frame header declares a {width}x{height} image")
    return width, height


def _skip_entropy_data(value: bytes, i: int) -> int:
    """Index of the first marker after a scan's entropy-coded data (FF00 is a stuffed byte, RSTn
    markers and FF fill bytes belong to the scan); a regular expression, so that a scan stuffed with
    FF00 pairs costs no Python loop per pair."""
    found = _JPEG_MARKER_IN_SCAN.search(value, i)
    if found is None:
        raise ImageHeaderError("JPEG is truncated inside a scan")
    return found.start()


def _png_header(value: bytes) -> ImageHeader:
    """Walks every chunk: IHDR first and once, at least one IDAT, IEND last, no animation."""
    n = len(value)
    i = len(PNG_SIGNATURE)
    seen: list[bytes] = []
    header: tuple[int, int, int] | None = None
    while True:
        if i + 12 > n:
            raise ImageHeaderError("PNG is truncated (it does not end with an IEND chunk)")
        length, kind = struct.unpack_from(">I4s", value, i)
        data_end = i + 8 + length
        if length > 0x7FFFFFFF or data_end + 4 > n:
            raise ImageHeaderError(f"PNG chunk {kind!r} at byte {i} overruns the data")
        if not kind.isalpha():
            raise ImageHeaderError(f"PNG chunk at byte {i} has an invalid type {kind!r}")
        if kind == b"IHDR":
            if seen:
                raise ImageHeaderError("PNG has more than one IHDR chunk" if b"IHDR" in seen
                                       else "PNG's IHDR is not its first chunk")
            header = _png_ihdr(value, i, length)
        elif not seen:
            raise ImageHeaderError(f"PNG's first chunk is {kind!r}, not IHDR")
        if kind in _PNG_ANIMATION:
            raise ImageHeaderError("animated PNGs (APNG) are not single frames")
        seen.append(kind)
        if len(seen) > _PNG_MAX_CHUNKS:
            raise ImageHeaderError(f"PNG has more than {_PNG_MAX_CHUNKS} chunks")
        i = data_end + 4
        if kind == b"IEND":
            break
    if i != n:
        raise ImageHeaderError(f"PNG has {n - i} bytes after its IEND chunk")
    if b"IDAT" not in seen:
        raise ImageHeaderError("PNG has no image data (IDAT)")
    assert header is not None  # the first chunk was IHDR
    return ImageHeader("png", *header)


def _png_ihdr(value: bytes, i: int, length: int) -> tuple[int, int, int]:
    """(width, height, raw bytes) of the IHDR chunk at ``i``, after its CRC and fields are checked."""
    if length != 13:
        raise ImageHeaderError(f"PNG IHDR is {length} bytes, 13 expected")
    (crc,) = struct.unpack_from(">I", value, i + 8 + 13)
    if zlib.crc32(value[i + 4 : i + 8 + 13]) != crc:
        raise ImageHeaderError("PNG IHDR fails its CRC")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", value, i + 8)
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ImageHeaderError(f"PNG IHDR declares a {width}x{height} image")
    if depth not in _PNG_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise ImageHeaderError(
            f"PNG IHDR has invalid fields (bit depth {depth}, colour type {colour}, compression "
            f"{compression}, filter {filtering}, interlace {interlace})"
        )
    bits = depth * _PNG_CHANNELS[colour]
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = 0
    for x0, y0, dx, dy in passes:  # each (sub)image: rows of a filter byte + packed pixels
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            raw += pass_height * (1 + -(-pass_width * bits // 8))
    return width, height, raw


def verify_png_data(value: bytes, header: ImageHeader) -> None:
    """The IDAT stream inflates to exactly the rows IHDR declares. FFmpeg's decoder pads missing rows
    instead of failing, so a short PNG would otherwise pass as a whole frame. Call it only after the
    size limits hold: inflating is bounded by ``header.raw_bytes``, read 1 MiB at a time."""
    inflater = zlib.decompressobj()
    total = 0
    i = len(PNG_SIGNATURE)
    try:
        while i + 8 <= len(value):
            length, kind = struct.unpack_from(">I4s", value, i)
            if kind == b"IDAT":
                pending = value[i + 8 : i + 8 + length]
                while pending and not inflater.eof:
                    total += len(inflater.decompress(pending, 2**20))
                    if total > header.raw_bytes:
                        raise ImageHeaderError(f"PNG image data inflates past the {header.raw_bytes} bytes "
                                               "its IHDR declares")
                    pending = inflater.unconsumed_tail
            i += 12 + length
    except zlib.error as e:
        raise ImageHeaderError(f"PNG image data does not inflate: {e}") from None
    if not inflater.eof or total != header.raw_bytes:
        raise ImageHeaderError(f"PNG image data holds {total} bytes where its IHDR declares {header.raw_bytes}")
