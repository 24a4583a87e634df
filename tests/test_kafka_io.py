"""Kafka I/O against a real Kafka-protocol broker (Tansu): sinks, frame messages, dead letters,
offset tracking and consumer-group resume."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata, TopicPartition

from xclip_stream.pipeline.kafka_clients import create_topics
from xclip_stream.pipeline.kafka_io import (
    FRAME_HEADERS,
    BadMessage,
    JsonLinesSink,
    KafkaSink,
    OffsetTracker,
    cloudevent_headers,
    dead_letter_headers,
    dead_letter_record,
    decode_frame_message,
    encode_frame_message,
    fetch_sizes,
    make_consumer,
)
from xclip_stream.schemas.config import FrameLimits
from xclip_stream.services.tansu import TansuBroker, tansu_binary

SESSION_MS = 2000  # a group join waits about half the session timeout


def read_records(consumer: KafkaConsumer, count: int, timeout: float = 20.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200, max_records=count - len(records)).values():
            records.extend(batch)
    assert len(records) == count, f"read {len(records)} of {count} records within {timeout} s"
    return records


def grey_blocks(height: int = 48, width: int = 64) -> np.ndarray:
    """Flat blocks of grey: JPEG keeps them within a few levels."""
    image = np.full((height, width, 3), 60, dtype=np.uint8)
    image[:, width // 2 :] = 190
    return image


# --- sinks against the broker ---------------------------------------------------------------


def test_kafka_sink_publishes_cloudevents_in_order(kafka_bootstrap: str, kafka_topic: str):
    create_topics(kafka_bootstrap, {kafka_topic: 1})
    events = [{"event_id": f"e{i}", "camera_id": "cam-a", "n": i} for i in range(20)]
    with KafkaSink(kafka_bootstrap, client_id="test-sink") as sink:
        assert sink.idempotent, "Tansu accepts the idempotent producer (InitProducerId)"
        futures = []
        for i, event in enumerate(events):
            headers = cloudevent_headers(
                event_type="xclip.score",
                event_id=event["event_id"],
                source="xclip-stream/cam-a",
                subject="cam-a",
                time=1700000000.25 + i,
            )
            futures.append(sink.send(kafka_topic, "cam-a", json.dumps(event).encode(), headers))
        sink.flush(timeout=10)
        offsets = [future.get(timeout=5).offset for future in futures]
    assert offsets == list(range(20))

    consumer = make_consumer(kafka_bootstrap, kafka_topic, kafka_topic, session_timeout_ms=SESSION_MS)
    try:
        records = read_records(consumer, 20)
    finally:
        consumer.close()
    assert [json.loads(r.value) for r in records] == events
    assert {r.key for r in records} == {b"cam-a"}
    headers = dict(records[3].headers)
    assert headers == {
        "ce_specversion": b"1.0",
        "ce_id": b"e3",
        "ce_source": b"xclip-stream/cam-a",
        "ce_type": b"xclip.score",
        "ce_subject": b"cam-a",
        "ce_time": b"2023-11-14T22:13:23.250Z",
        "content-type": b"application/json",
    }


def test_json_lines_sink_writes_one_line_per_value():
    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    seen = []
    for i in range(3):
        future = sink.send("events", "cam", json.dumps({"n": i}).encode(), [])
        future.add_callback(seen.append)
        assert future.is_done and future.get(timeout=1).offset == i
    bad = sink.send("events", "cam", b'{"a":\n1}', [])
    assert bad.failed()
    with pytest.raises(ValueError):
        bad.get()
    sink.close()
    assert stream.getvalue() == '{"n": 0}\n{"n": 1}\n{"n": 2}\n'
    assert [meta.offset for meta in seen] == [0, 1, 2]


# --- frame messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, tolerance", [("jpeg", 6), ("png", 0)])
def test_frame_message_round_trip_through_broker(
    kafka_bootstrap: str, kafka_topic: str, fmt: str, tolerance: int
):
    image = grey_blocks(47, 63)  # odd sizes: 4:2:0 chroma must still cover every pixel
    key, value, headers = encode_frame_message("cam-7", 1700000000123, 42, image, fmt)
    assert key == b"cam-7" and [name for name, _ in headers] == list(FRAME_HEADERS)
    create_topics(kafka_bootstrap, {kafka_topic: 1})
    with KafkaSink(kafka_bootstrap) as sink:
        sink.send(kafka_topic, key, value, headers).get(timeout=10)
    consumer = make_consumer(kafka_bootstrap, kafka_topic, kafka_topic, session_timeout_ms=SESSION_MS)
    try:
        (record,) = read_records(consumer, 1)
    finally:
        consumer.close()
    frame = decode_frame_message(record.key, record.value, record.headers)
    assert (frame.camera_id, frame.seq) == ("cam-7", 42)
    assert frame.time == frame.pts == pytest.approx(1700000000.123)
    assert frame.image.shape == image.shape and frame.image.dtype == np.uint8
    assert np.abs(frame.image.astype(int) - image).max() <= tolerance


def _jpeg() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return encode_frame_message("cam", 1000, 1, grey_blocks(), "jpeg")


def _png() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return encode_frame_message("cam", 1000, 1, grey_blocks(), "png")


def _replace_header(headers, name, raw):
    return [(n, raw if n == name else v) for n, v in headers]


MALFORMED = {
    "missing header": (lambda k, v, h: (k, v, [x for x in h if x[0] != "seq"]), "missing_header"),
    "no headers": (lambda k, v, h: (k, v, None), "missing_header"),
    "non-integer seq": (lambda k, v, h: (k, v, _replace_header(h, "seq", b"12a")), "bad_header"),
    "signed capture time": (
        lambda k, v, h: (k, v, _replace_header(h, "capture_time_ms", b"-5")),
        "bad_header",
    ),
    "key differs from camera_id": (lambda k, v, h: (b"other", v, h), "key_mismatch"),
    "no key": (lambda k, v, h: (None, v, h), "key_mismatch"),
    "empty value": (lambda k, v, h: (k, b"", h), "empty_payload"),
    "null value": (lambda k, v, h: (k, None, h), "empty_payload"),
    "truncated jpeg": (lambda k, v, h: (k, v[: len(v) * 2 // 3], h), "corrupt_image"),
    "jpeg missing last byte": (lambda k, v, h: (k, v[:-1], h), "corrupt_image"),
    "garbage after SOI": (
        lambda k, v, h: (k, b"\xff\xd8" + np.random.default_rng(1).bytes(400) + b"\xff\xd9", h),
        "corrupt_image",
    ),
    "random bytes": (
        lambda k, v, h: (k, b"\x00\x01" + np.random.default_rng(2).bytes(300), h),
        "unsupported_format",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_frame_messages_are_refused(case: str):
    mutate, reason = MALFORMED[case]
    with pytest.raises(BadMessage) as info:
        decode_frame_message(*mutate(*_jpeg()))
    assert info.value.reason == reason, str(info.value)
    assert str(info.value)  # a human-readable message


@pytest.mark.parametrize("cut", [0.5, -4, -12])
def test_truncated_png_is_refused(cut: float):
    key, value, headers = _png()
    end = int(len(value) * cut) if isinstance(cut, float) else cut
    with pytest.raises(BadMessage, match="PNG") as info:
        decode_frame_message(key, value[:end], headers)
    assert info.value.reason == "corrupt_image"


def test_corrupt_entropy_data_is_refused():
    """Damage inside the scan that ffmpeg would otherwise conceal (strict error detection)."""
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    key, value, headers = encode_frame_message("cam", 1000, 1, image, "jpeg")
    damaged = value[: len(value) // 2] + bytes(40) + value[len(value) // 2 + 40 :]
    with pytest.raises(BadMessage) as info:
        decode_frame_message(key, damaged, headers)
    assert info.value.reason == "corrupt_image"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_image_size_limit_is_checked_before_decoding(fmt: str):
    key, value, headers = encode_frame_message("cam", 1000, 1, grey_blocks(48, 64), fmt)
    with pytest.raises(BadMessage, match="48") as info:
        decode_frame_message(key, value, headers, FrameLimits(max_pixels=64 * 47))
    assert info.value.reason == "image_too_large"
    assert decode_frame_message(key, value, headers, FrameLimits(max_pixels=64 * 48)).image.shape == (48, 64, 3)


def test_dead_letter_headers_keep_the_originals():
    _, _, original = _jpeg()
    headers = dead_letter_headers(original, "corrupt_image", "JPEG is truncated", "frames", 3, 1234)
    assert headers[: len(original)] == original
    added = dict(headers[len(original) :])
    assert added["dlq_reason"] == b"corrupt_image"
    assert added["dlq_detail"] == b"JPEG is truncated"
    assert (added["dlq_topic"], added["dlq_partition"], added["dlq_offset"]) == (b"frames", b"3", b"1234")
    assert abs(int(added["dlq_time_ms"]) - time.time() * 1000) < 60_000


def test_refused_frame_goes_to_the_dead_letter_topic_unchanged(kafka_bootstrap: str, kafka_topic: str):
    frames, dead = kafka_topic, kafka_topic + "-dlq"
    create_topics(kafka_bootstrap, {frames: 1, dead: 1})
    key, value, headers = _jpeg()
    broken = value[:-10]
    with KafkaSink(kafka_bootstrap) as sink:
        sink.send(frames, key, broken, headers).get(timeout=10)
        consumer = make_consumer(kafka_bootstrap, frames, kafka_topic, session_timeout_ms=SESSION_MS)
        try:
            (record,) = read_records(consumer, 1)
        finally:
            consumer.close()
        with pytest.raises(BadMessage) as info:
            decode_frame_message(record.key, record.value, record.headers)
        letter = dead_letter_headers(
            record.headers, info.value.reason, str(info.value), record.topic, record.partition, record.offset
        )
        sink.send(dead, record.key, record.value, letter).get(timeout=10)
    consumer = make_consumer(
        kafka_bootstrap, dead, kafka_topic + "-dlq-reader", session_timeout_ms=SESSION_MS
    )
    try:
        (republished,) = read_records(consumer, 1)
    finally:
        consumer.close()
    assert (republished.key, republished.value) == (key, broken)
    got = dict(republished.headers)
    assert got["dlq_reason"] == b"corrupt_image" and got["dlq_topic"] == frames.encode()
    assert got["dlq_offset"] == b"0" and got["seq"] == b"1"


def test_fetch_sizes_follow_the_frame_limits():
    mib = 1 << 20
    record = 8 * mib + 64 * 1024  # the default max_message_bytes and a record's key, headers, framing
    assert fetch_sizes() == {"max_partition_fetch_bytes": 2 * record, "fetch_max_bytes": 4 * record}
    small = fetch_sizes(FrameLimits(max_message_bytes=4096))  # floors: small limits, not tiny fetches
    assert small == {"max_partition_fetch_bytes": mib, "fetch_max_bytes": 4 * mib}
    huge = fetch_sizes(FrameLimits(max_message_bytes=2**31))
    assert set(huge.values()) == {2**31 - 1}  # the Fetch request's int32 fields


def test_the_frames_consumer_fetches_a_bounded_amount_and_still_gets_an_oversized_record_whole(
        kafka_bootstrap: str, kafka_topic: str):
    """Tansu fills a fetch up to fetch_max_bytes (plus the batch crossing it), ignoring the
    per-partition cap, up to its own ~5 MiB: with kafka-python's defaults (1 MiB a partition, 50 MB
    a fetch) a fetch here brought 5.4 MB. A record over every fetch size (and the frame limit) still
    arrives whole, is refused, and its dead letter is a marked, truncated copy; the records after it
    are read too."""
    limits = FrameLimits(max_message_bytes=256 * 1024, dead_letter_max_bytes=4096)
    sizes = fetch_sizes(limits)
    assert sizes == {"max_partition_fetch_bytes": 1 << 20, "fetch_max_bytes": 4 << 20}
    frame_bytes, huge = 200_000, 6 << 20
    dead = kafka_topic + "-dlq"
    create_topics(kafka_bootstrap, {kafka_topic: 1, dead: 1})
    consumer = make_consumer(kafka_bootstrap, kafka_topic, kafka_topic, session_timeout_ms=SESSION_MS, **sizes)
    with KafkaSink(kafka_bootstrap, max_request_size=8 << 20) as sink:
        try:
            for i in range(40):  # 8 MB; each record its own batch (the producer's 16 KiB batch_size)
                sink.send(kafka_topic, "cam", bytes([i]) * frame_bytes, [])
            sink.flush(timeout=30)
            records = read_records(consumer, 40)
            fetched = consumer.metrics()["consumer-fetch-manager-metrics"]
            assert [len(r.value) for r in records] == [frame_bytes] * 40
            assert fetched["fetch-size-max"] <= sizes["fetch_max_bytes"] + frame_bytes + 1024
            assert fetched["records-per-request-avg"] < 40  # more than one fetch

            key, value, headers = _jpeg()
            sink.send(kafka_topic, key, b"\xff\xd8" + bytes(huge - 2), headers)
            for _ in range(3):
                sink.send(kafka_topic, key, value, headers)
            sink.flush(timeout=30)
            oversized, *after = read_records(consumer, 4)
        finally:
            consumer.close()
        assert len(oversized.value) == huge and oversized.offset == 40  # whole, not cut, not skipped
        assert [r.offset for r in after] == [41, 42, 43]
        for record in after:
            decode_frame_message(record.key, record.value, record.headers, limits)
        with pytest.raises(BadMessage) as refused:
            decode_frame_message(oversized.key, oversized.value, oversized.headers, limits)
        assert refused.value.reason == "message_too_large"
        letter = dead_letter_record(oversized.key, oversized.value, oversized.headers, refused.value, kafka_topic,
                                    0, oversized.offset, limits.dead_letter_max_bytes)
        sink.send(dead, *letter).get(timeout=10)
    reader = make_consumer(kafka_bootstrap, dead, dead, session_timeout_ms=SESSION_MS)
    try:
        (copy,) = read_records(reader, 1)
    finally:
        reader.close()
    got = dict(copy.headers)
    assert len(copy.value) == 4096 and got["dlq_truncated"] == b"value"
    assert got["dlq_original_bytes"] == str(huge).encode() and got["dlq_reason"] == b"message_too_large"


# --- offsets -----------------------------------------------------------------------------------

TP0, TP1 = TopicPartition("frames", 0), TopicPartition("frames", 1)


def test_offset_tracker_commits_up_to_the_lowest_outstanding():
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.add(TP0, offset)
    assert tracker.committable() == {TP0: 0} and tracker.outstanding() == 5
    for offset in (3, 1, 4):  # out of order
        tracker.release(TP0, offset)
    assert tracker.committable() == {TP0: 0}
    tracker.release(TP0, 0)
    assert tracker.committable() == {TP0: 2}
    tracker.release(TP0, 2)
    assert tracker.committable() == {TP0: 5} and tracker.outstanding() == 0


def test_offset_tracker_holds_keep_a_record_outstanding():
    tracker = OffsetTracker()
    tracker.add(TP0, 10)
    tracker.hold(TP0, 10)  # two windows contain the frame
    tracker.hold(TP0, 10)
    tracker.release(TP0, 10)  # the frame itself is done
    tracker.release(TP0, 10)
    assert tracker.committable() == {TP0: 10}
    tracker.release(TP0, 10)
    assert tracker.committable() == {TP0: 11}
    with pytest.raises(KeyError):
        tracker.hold(TP0, 10)  # a finished record cannot be held again


def test_offset_tracker_reports_only_advanced_partitions():
    tracker = OffsetTracker()
    tracker.add(TP0, 0)
    tracker.add(TP1, 7)
    tracker.release(TP0, 0)
    assert tracker.committable() == {TP0: 1, TP1: 7}
    tracker.mark_committed({TP0: 1, TP1: 7})
    assert tracker.committable() == {}
    tracker.add(TP0, 1)
    assert tracker.committable() == {}  # 1 is outstanding: the commit point did not move
    tracker.release(TP0, 1)
    assert tracker.committable() == {TP0: 2}
    tracker.mark_committed({TP0: 2})
    tracker.mark_committed({TP0: 1})  # a stale, late commit never moves it back
    tracker.add(TP0, 2)
    tracker.release(TP0, 2)
    assert tracker.committable() == {TP0: 3}


def test_offset_tracker_forgets_revoked_partitions():
    tracker = OffsetTracker()
    tracker.add(TP0, 0)
    tracker.add(TP1, 0)
    tracker.hold(TP1, 0)
    tracker.forget([TP1])
    assert tracker.outstanding() == 1 and set(tracker.committable()) == {TP0}
    assert tracker.release(TP1, 0) is False  # a late release after the revoke is ignored
    with pytest.raises(ValueError):
        tracker.add(TP0, 0)


def test_make_consumer_refuses_deserialisers():
    with pytest.raises(ValueError, match="raw bytes"):
        make_consumer("127.0.0.1:1", "t", "g", value_deserializer=json.loads)


def test_group_member_resumes_from_the_committed_offset(kafka_bootstrap: str, kafka_topic: str):
    create_topics(kafka_bootstrap, {kafka_topic: 1})
    with KafkaSink(kafka_bootstrap) as sink:
        for i in range(10):
            sink.send(kafka_topic, "cam", str(i).encode(), [])
        sink.flush(timeout=10)

    tracker = OffsetTracker()
    first = make_consumer(kafka_bootstrap, kafka_topic, kafka_topic, session_timeout_ms=SESSION_MS)
    try:
        records = read_records(first, 6)
        for record in records:
            tracker.add(TopicPartition(record.topic, record.partition), record.offset)
        for record in records[:4]:  # records 4 and 5 were polled but never handled
            tracker.release(TopicPartition(record.topic, record.partition), record.offset)
        offsets = tracker.committable()
        first.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        tracker.mark_committed(offsets)
    finally:
        first.close()
    assert offsets == {TopicPartition(kafka_topic, 0): 4}

    second = make_consumer(kafka_bootstrap, kafka_topic, kafka_topic, session_timeout_ms=SESSION_MS)
    try:
        resumed = read_records(second, 6)
    finally:
        second.close()
    assert [r.offset for r in resumed] == list(range(4, 10))
    assert [r.value for r in resumed] == [str(i).encode() for i in range(4, 10)]


# --- the broker itself ---------------------------------------------------------------------------


def test_create_topics_is_idempotent(kafka_bootstrap: str, kafka_topic: str):
    create_topics(kafka_bootstrap, {kafka_topic: 3})
    create_topics(kafka_bootstrap, {kafka_topic: 3, kafka_topic + "-b": 2})
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {
            t["name"]: len(t["partitions"]) for t in admin.describe_topics([kafka_topic, kafka_topic + "-b"])
        }
    finally:
        admin.close()
    assert described == {kafka_topic: 3, kafka_topic + "-b": 2}


def test_broker_restarts_on_the_same_port_without_its_data(tmp_path):
    with TansuBroker(log_path=tmp_path / "broker.log") as broker:
        bootstrap, pid = broker.bootstrap, broker.pid
        create_topics(bootstrap, {"before-restart": 1})
        broker.restart()
        assert broker.bootstrap == bootstrap and broker.pid != pid and broker.running
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            assert "before-restart" not in admin.list_topics()  # memory storage
        finally:
            admin.close()
        pid = broker.pid
    assert not broker.running and broker.pid is None
    assert not Path(f"/proc/{pid}").exists(), "the broker process was stopped and reaped"


def test_tansu_binary_override_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("XCLIP_TANSU_BIN", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="XCLIP_TANSU_BIN"):
        tansu_binary()
    monkeypatch.delenv("XCLIP_TANSU_BIN")
    assert tansu_binary().name == "tansu"
