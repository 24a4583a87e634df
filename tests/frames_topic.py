"""A Kafka topic of frames for pipeline tests: cameras spread over its partitions, frames
published at the sampling rate, and the group's committed offsets read back."""

from __future__ import annotations

import numpy as np
from kafka.admin import KafkaAdminClient
from kafka.partitioner.default import murmur2

from tests.pipeline_harness import by_camera
from xclip_stream.pipeline.kafka_io import encode_frame_message
from xclip_stream.pipeline.sinks import KafkaSink

FPS = 8  # frames are produced at the sampling rate: every frame is kept, windows are frames 4k..4k+3


def cameras_on_distinct_partitions(n: int, partitions: int = 4) -> list[str]:
    """Camera ids whose keys the default partitioner puts on ``n`` different partitions."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        name = f"cam-{i}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        i += 1
    return sorted(found.values())


def produce(bootstrap: str, topic: str, cameras: list[str], seqs: range, flush_each: bool = False) -> None:
    """Frames ``seqs`` of each camera. ``flush_each``: one record per batch (Tansu reports a
    partition's end as the start of its last batch + 1; one record per batch keeps a measured lag
    exact, which a real Kafka broker needs no care for)."""
    sink = KafkaSink(bootstrap, client_id="test-cameras")
    for i in seqs:
        for camera in cameras:
            image = np.full((24, 32, 3), (i * 8) % 256, np.uint8)
            key, value, headers = encode_frame_message(camera, 1_700_000_000_000 + i * 1000 // FPS, i, image)
            sink.send(topic, key, value, headers)
            if flush_each:
                sink.flush()
    sink.flush()
    sink.close()


def windows_up_to(last_first_seq: int, cameras: list[str]):
    def done(events):
        scores = by_camera(events)
        return all({w["first_seq"] for w in scores.get(c, [])} >= set(range(0, last_first_seq + 1, 4))
                   for c in cameras)
    return done


def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {tp.partition: meta.offset for tp, meta in offsets.items()}
    finally:
        admin.close()
