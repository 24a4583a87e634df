"""Decode limits of frame messages: every header checked, pixel count and aspect ratio bounded before
any allocation, the decoder itself capped, and refused records dead-lettered within a producer's size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.frame_bombs import ihdr, jpeg, jpeg_with_second_sof, jpeg_with_size, png, png_chunk
from xclip_stream.pipeline.frame_messages import _decode_image
from xclip_stream.pipeline.image_headers import ImageHeader, ImageHeaderError, read_image_header
from xclip_stream.pipeline.kafka_io import BadMessage, dead_letter_record, decode_frame_message
from xclip_stream.pipeline.scoring import ModelInfo, frame_preprocessor
from xclip_stream.schemas.config import FrameLimits, KafkaFrames

HEADERS = [("camera_id", b"cam"), ("capture_time_ms", b"1000"), ("seq", b"1")]


DEFAULT_LIMITS = FrameLimits()


def refusal(value: bytes, limits: FrameLimits = DEFAULT_LIMITS) -> BadMessage:
    with pytest.raises(BadMessage) as info:
        decode_frame_message(b"cam", value, HEADERS, limits)
    return info.value


def test_valid_images_still_decode():
    assert decode_frame_message(b"cam", jpeg(48, 64), HEADERS).image.shape == (48, 64, 3)
    assert decode_frame_message(b"cam", png(64, 8), HEADERS).image.shape == (8, 64, 3)


@pytest.mark.parametrize("after_scan", [False, True])
def test_a_second_jpeg_frame_header_is_refused(after_scan: bool):
    """The first SOF says 64x48 (passes); a later one declares 30000x30000."""
    error = refusal(jpeg_with_second_sof(jpeg(), 30000, 30000, after_scan))
    assert error.reason == "corrupt_image" and "2 frame headers" in str(error) and "30000x30000" in str(error)


def test_a_jpeg_whose_only_header_lies_is_refused_by_size_or_decode():
    """SOF claims 64x4096 while the scan holds 64x48: either decoding fails or the sizes differ."""
    error = refusal(jpeg_with_size(jpeg(), 64, 1024))
    assert error.reason in ("corrupt_image", "size_mismatch"), str(error)
    assert refusal(jpeg_with_size(jpeg(), 40000, 40000)).reason == "image_too_large"


def test_decoder_max_pixels_holds_even_if_the_header_check_were_fooled():
    """FFmpeg's max_pixels, passed through PyAV: a 64x48 JPEG believed to be 8x8 does not decode."""
    with pytest.raises(BadMessage) as info:
        _decode_image(jpeg(48, 64), ImageHeader("jpeg", 8, 8), max_pixels=64, where="test")
    assert info.value.reason == "corrupt_image"
    assert _decode_image(jpeg(48, 64), ImageHeader("jpeg", 64, 48), 64 * 48, "test").shape == (48, 64, 3)


def test_decoded_size_must_match_the_declared_one():
    with pytest.raises(BadMessage) as info:
        _decode_image(jpeg(48, 64), ImageHeader("jpeg", 64, 40), max_pixels=10**6, where="test")
    assert info.value.reason == "size_mismatch" and "64x40" in str(info.value)


@pytest.mark.parametrize("width, height", [(1, 65535), (65535, 1), (17, 1), (4096, 255)])
def test_elongated_pngs_are_refused_by_aspect(width: int, height: int):
    error = refusal(png(width, height))
    assert error.reason == "bad_aspect" and f"{width}x{height}" in str(error)


def test_png_bomb_is_refused_by_pixel_count_before_decoding():
    """50000x50000 of black compresses to a few hundred KiB of IDAT; decoded it would be 7.5 GB."""
    bomb = png(50000, 50000, rows=8)  # only 8 rows of data: a decode would fail late, after allocating
    assert len(bomb) < 100_000
    error = refusal(bomb)
    assert error.reason == "image_too_large" and "50000x50000" in str(error)


@pytest.mark.parametrize(
    "value, words",
    [
        (png(8, 8, before=png_chunk(b"tEXt", b"a\x00b")), "not IHDR"),
        (png(8, 8, after_ihdr=ihdr(9000, 9000)), "more than one IHDR"),
        (png(8, 8, after_ihdr=png_chunk(b"acTL", bytes(8))), "APNG"),
        (png(8, 8) + b"\x00" * 4, "after its IEND"),
        (png(8, 8)[:-1], "truncated"),
        (jpeg() + b"\x00", "after its EOI"),
        (jpeg()[:-2], "truncated"),
    ],
)
def test_structural_lies_are_refused_with_a_reason(value: bytes, words: str):
    error = refusal(value)
    assert error.reason == "corrupt_image" and words in str(error)


def test_a_lying_png_height_is_refused():
    error = refusal(png(64, 64, rows=8))  # IHDR says 64 rows, the data holds 8
    assert error.reason == "corrupt_image"


def test_oversized_record_is_refused_unread():
    limits = FrameLimits(max_message_bytes=4096)
    assert refusal(b"\xff\xd8" + bytes(5000), limits).reason == "message_too_large"


def test_read_image_header_agrees_with_the_encoder():
    assert read_image_header(jpeg(48, 64)) == ImageHeader("jpeg", 64, 48)
    assert read_image_header(png(10, 3)) == ImageHeader("png", 10, 3, raw_bytes=3 * (1 + 30))
    with pytest.raises(ImageHeaderError, match="neither JPEG nor PNG"):
        read_image_header(b"GIF89a")


@pytest.mark.parametrize("width, height", [(1024, 64), (16, 256)])
def test_the_widest_accepted_aspect_resizes_to_a_bounded_frame(width: int, height: int):
    """16:1 passes; the model's resize (short side to S, then a centre crop) stays S x 16S at most."""
    image = decode_frame_message(b"cam", png(width, height), HEADERS).image
    info = ModelInfo.read("demo")
    processor = dict(info.video_processor, size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    out = frame_preprocessor(replace(info, video_processor=processor))(image)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8


def test_dead_letter_of_an_oversized_record_is_a_marked_truncated_copy():
    value = bytes(3 * 2**20)
    headers = [*HEADERS, ("big", b"x" * 40_000), ("after", b"y")]
    key, cut, letter = dead_letter_record(
        b"k" * 5000, value, headers, BadMessage("message_too_large", "too big"), "frames", 2, 77,
        max_value_bytes=64 * 1024,
    )
    fields = dict(letter)
    assert cut == value[: 64 * 1024] and key == b"k" * 1024
    assert fields["dlq_truncated"] == b"value,key,headers" and fields["dlq_original_bytes"] == str(len(value)).encode()
    assert fields["dlq_reason"] == b"message_too_large" and fields["dlq_offset"] == b"77"
    assert letter[:3] == HEADERS and "after" not in fields
    assert sum(len(n) + len(v) for n, v in letter) < 20_000


def test_dead_letter_of_a_small_record_is_whole_and_unmarked():
    key, value, letter = dead_letter_record(b"cam", b"abc", HEADERS, BadMessage("corrupt_image", "x"), "t", 0, 1)
    assert (key, value) == (b"cam", b"abc") and letter[:3] == HEADERS
    assert "dlq_truncated" not in dict(letter)


def test_frame_limits_config_is_validated():
    assert KafkaFrames(topic="t").limits.max_aspect == 16
    with pytest.raises(ValueError, match="max_aspect"):
        KafkaFrames(topic="t", limits={"max_aspect": 0.5})
    with pytest.raises(ValueError, match="max_pixel"):
        KafkaFrames(topic="t", limits={"max_pixel": 5})


def test_interlaced_png_from_ffmpeg_decodes():
    """The Adam7 raw size is computed per pass; a real interlaced encoder's output must pass."""
    import av
    from av.codec.context import CodecContext

    ctx = CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 13, 7, "rgb24"
    ctx.flags |= av.codec.context.Flags.interlaced_dct  # FFmpeg's switch for Adam7
    image = np.random.default_rng(5).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    value = b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))
    assert value[28] == 1  # IHDR's interlace method
    assert np.array_equal(decode_frame_message(b"cam", value, HEADERS).image, image)


@pytest.mark.parametrize(
    "options", [{"progressive": True}, {"restart_marker_blocks": 1}, {"exif": b"Exif\x00\x00" + bytes(600)}]
)
def test_progressive_restart_interval_and_exif_jpegs_from_another_encoder_decode(options: dict):
    """libjpeg (through Pillow, a test dependency): several scans, RSTn markers in the entropy data,
    an APP1 segment; one frame header in each, so all are accepted."""
    import io

    from PIL import Image

    image = np.random.default_rng(9).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=90, **options)
    value = out.getvalue()
    if options.get("progressive"):
        assert value.count(b"\xff\xda") > 1  # several scans
    if "restart_marker_blocks" in options:
        assert value.count(b"\xff\xdd") == 1 and value.count(b"\xff\xd0") > 0  # DRI, then RST0..7
    assert decode_frame_message(b"cam", value, HEADERS).image.shape == (40, 56, 3)


def test_a_png_of_countless_tiny_chunks_is_refused_quickly():
    value = png(8, 8)
    many = value[:33] + png_chunk(b"tEXt", b"") * 100_000 + value[33:]
    error = refusal(many)
    assert error.reason == "corrupt_image" and "more than 4096 chunks" in str(error)


@pytest.mark.parametrize("filler", [b"\xff\xfe\x00\x02", b"\xff"])  # empty COM segments, fill bytes
def test_a_jpeg_of_countless_markers_is_refused_quickly(filler: bytes):
    value = jpeg()
    error = refusal(value[:2] + filler * 500_000 + value[2:])
    assert error.reason == "corrupt_image" and "more than 4096 markers" in str(error)
