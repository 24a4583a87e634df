"""Kafka I/O in one import: frame messages in, events and dead letters out, offsets committed.

The code lives in four modules; this one only gathers their public names:
``frame_messages`` (frame record format, decoding, dead-letter headers), ``sinks`` (Kafka and JSON
lines sinks, CloudEvents headers), ``offsets`` (at-least-once commit tracking, group consumer) and
``kafka_clients`` (TLS/SASL settings of every client, the startup access check, topic creation).
"""

from xclip_stream.pipeline.frame_messages import (
    FRAME_HEADERS,
    BadMessage,
    dead_letter_headers,
    dead_letter_record,
    decode_frame_message,
    encode_frame_message,
    fetch_sizes,
)
from xclip_stream.pipeline.kafka_clients import KafkaAccessError, check_access, client_config, create_topics
from xclip_stream.pipeline.offsets import OffsetTracker, make_consumer
from xclip_stream.pipeline.sinks import CompletedFuture, JsonLinesSink, KafkaSink, cloudevent_headers

__all__ = [
    "FRAME_HEADERS",
    "BadMessage",
    "CompletedFuture",
    "JsonLinesSink",
    "KafkaAccessError",
    "KafkaSink",
    "OffsetTracker",
    "check_access",
    "client_config",
    "cloudevent_headers",
    "create_topics",
    "dead_letter_headers",
    "dead_letter_record",
    "decode_frame_message",
    "encode_frame_message",
    "fetch_sizes",
    "make_consumer",
]
