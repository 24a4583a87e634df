"""Fuzzing the frame decoder: seeded malformed records of every kind. None may crash it (only
BadMessage), every one that must be refused is refused with a reason code, a corrupted image that
still decodes has exactly its declared size, every refusal makes a dead letter a producer accepts,
and decompression bombs do not grow the process."""

from __future__ import annotations

import random
import resource
import struct
from collections import Counter
from collections.abc import Iterator

import numpy as np

from tests.frame_bombs import ihdr, jpeg, jpeg_with_second_sof, jpeg_with_size, png, png_chunk
from xclip_stream.pipeline.image_headers import read_image_header
from xclip_stream.pipeline.kafka_io import BadMessage, dead_letter_record, decode_frame_message
from xclip_stream.schemas.config import FrameLimits

REASONS = {"missing_header", "bad_header", "key_mismatch", "empty_payload", "unsupported_format",
           "corrupt_image", "image_too_large", "bad_aspect", "size_mismatch", "message_too_large"}
LIMITS = FrameLimits(max_pixels=2048 * 2048, max_message_bytes=2 * 2**20)
PRODUCER_MAX_BYTES = 2**20  # kafka-python's default max_request_size


def headers(camera=b"cam", t=b"1000", seq=b"1"):
    return [("camera_id", camera), ("capture_time_ms", t), ("seq", seq)]


def images(rng: random.Random) -> Iterator[bytes]:
    while True:
        h, w = rng.randint(8, 96), rng.randint(8, 96)
        yield jpeg(h, w, seed=rng.randrange(1000)) if rng.random() < 0.6 else png(w, h)


def must_refuse(rng: random.Random) -> Iterator[tuple[str, bytes | None, bytes | None, list | None]]:
    """(kind, key, value, headers) of records no decoder may accept."""
    good = images(rng)
    for _ in range(150):  # random bytes, some behind a real signature
        prefix = rng.choice([b"", b"\xff\xd8", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xd9"])
        yield "random", b"cam", prefix + rng.randbytes(rng.randint(0, 4000)), headers()
    for _ in range(150):  # truncated anywhere (the last marker/chunk always goes)
        value = next(good)
        yield "truncated", b"cam", value[: rng.randint(0, len(value) - 2)], headers()
    for _ in range(100):  # a JPEG frame header that lies, or a second one that declares a bomb
        value, w, h = jpeg(48, 64, seed=rng.randrange(100)), rng.randint(1, 65535), rng.randint(1, 65535)
        if rng.random() < 0.5:
            yield "second_sof", b"cam", jpeg_with_second_sof(value, w, h, after_scan=rng.random() < 0.5), headers()
        elif (w, h) != (64, 48):
            yield "lying_sof", b"cam", jpeg_with_size(value, w, h), headers()
    for _ in range(100):  # decompression bombs, elongated and huge
        w, h = rng.choice([(1, rng.randint(17, 65535)), (rng.randint(17, 65535), 1),
                           (rng.randint(2049, 40000), rng.randint(2049, 40000))])
        yield "bomb", b"cam", png(w, h, rows=min(h, 4)), headers()
    for _ in range(100):  # PNG chunk tricks
        w, h = rng.randint(1, 64), rng.randint(1, 64)
        trick = rng.choice(["ihdr_late", "ihdr_twice", "apng", "short_data", "trailing", "bad_crc"])
        if trick == "ihdr_late":
            value = png(w, h, before=png_chunk(b"tEXt", b"k\x00v"))
        elif trick == "ihdr_twice":
            value = png(w, h, after_ihdr=ihdr(rng.randint(1, 99999), rng.randint(1, 99999)))
        elif trick == "apng":
            value = png(w, h, after_ihdr=png_chunk(b"acTL", struct.pack(">II", 2, 0)))
        elif trick == "short_data":
            value = png(w, h + rng.randint(1, 64), rows=h)
        elif trick == "trailing":
            value = png(w, h) + rng.randbytes(rng.randint(1, 64))
        else:
            value = bytearray(png(w, h))
            value[rng.randint(16, 28)] ^= 1 << rng.randrange(8)
            value = bytes(value)
        yield f"png_{trick}", b"cam", value, headers()
    for _ in range(250):  # headers and keys
        value = next(good)
        case = rng.choice(["missing", "none", "duplicate", "not_int", "huge_int", "huge_value", "non_utf8",
                           "non_utf8_key", "no_key", "key_mismatch", "empty_value", "null_value", "long_camera"])
        key, hs = b"cam", headers()
        if case == "missing":
            dropped = rng.choice(["camera_id", "capture_time_ms", "seq"])
            hs = [h for h in hs if h[0] != dropped]
        elif case == "none":
            hs = None
        elif case == "duplicate":
            hs = hs + [("seq", b"2")]
        elif case == "not_int":
            hs = headers(seq=rng.choice([b"-1", b"1.5", b" 1", b"", b"0x10", b"\xff"]))
        elif case == "huge_int":
            hs = headers(t=b"9" * rng.randint(19, 5000))
        elif case == "huge_value":
            hs = headers(seq=b"1" * 2**20)
        elif case == "non_utf8":
            hs, key = headers(camera=b"\xff\xfe" + rng.randbytes(8)), b"\xff\xfe"
        elif case == "non_utf8_key":
            key = b"\xc3\x28" + rng.randbytes(rng.randint(0, 2**16))
        elif case == "no_key":
            key = None
        elif case == "key_mismatch":
            key = b"other"
        elif case == "empty_value":
            value = b""
        elif case == "null_value":
            value = None
        else:
            key = b"c" * 100_000
            hs = headers(camera=key)
        yield f"header_{case}", key, value, hs
    for _ in range(20):  # values over max_message_bytes, valid image start or not
        size = LIMITS.max_message_bytes + rng.randint(1, 2**20)
        yield "huge_value", b"cam", b"\xff\xd8" + bytes(size), headers()
    for _ in range(150):  # random header lists
        hs = [(rng.choice(["camera_id", "seq", "capture_time_ms", "x", ""]), rng.randbytes(rng.randint(0, 30)))
              for _ in range(rng.randint(0, 6))]
        yield "random_headers", rng.choice([b"cam", None, rng.randbytes(4)]), next(good), hs


def test_a_thousand_malformed_records_are_refused_with_a_reason_and_nothing_crashes():
    rng = random.Random(20261129)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    reasons: Counter[str] = Counter()
    count = 0
    for kind, key, value, hs in must_refuse(rng):
        count += 1
        try:
            frame = decode_frame_message(key, value, hs, LIMITS)
        except BadMessage as e:
            assert e.reason in REASONS and str(e), (kind, e.reason, str(e))
            reasons[e.reason] += 1
            k, v, letter = dead_letter_record(key, value, hs, e, "frames", 0, count, LIMITS.dead_letter_max_bytes)
            size = len(k or b"") + len(v) + sum(len(n) + len(x) for n, x in letter)
            assert size < PRODUCER_MAX_BYTES - 4096, (kind, size)
            assert dict(letter)["dlq_reason"] == e.reason.encode()
            continue
        # Only a random header list can be valid by chance; it must then be the image it declares.
        assert kind == "random_headers", f"{kind} record accepted"
        assert frame.image.shape[:2][::-1] == (read_image_header(value).width, read_image_header(value).height)
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert count >= 1000
    assert growth_mb < 200, f"peak RSS grew by {growth_mb:.0f} MB"
    # every family of flaw was met, so the generator did what it says
    assert {"corrupt_image", "image_too_large", "bad_aspect", "bad_header", "message_too_large",
            "unsupported_format", "missing_header", "key_mismatch", "empty_payload"} <= set(reasons)


def test_corrupted_images_are_refused_or_decode_to_their_declared_size():
    """Flipped bytes inside a valid image: an entropy-coded flip may still decode; it must never
    crash, and whatever decodes has the size its header declares."""
    rng = random.Random(7)
    good = images(rng)
    outcomes: Counter[str] = Counter()
    for _ in range(300):
        value = bytearray(next(good))
        for _ in range(rng.randint(1, 4)):
            value[rng.randrange(2, len(value) - 2)] = rng.randrange(256)
        value = bytes(value)
        try:
            frame = decode_frame_message(b"cam", value, headers(), LIMITS)
        except BadMessage as e:
            assert e.reason in REASONS
            outcomes[e.reason] += 1
            continue
        declared = read_image_header(value)
        assert frame.image.shape == (declared.height, declared.width, 3) and frame.image.dtype == np.uint8
        outcomes["decoded"] += 1
    assert outcomes["corrupt_image"] > 50
