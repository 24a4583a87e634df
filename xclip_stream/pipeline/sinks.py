"""Where events and dead letters go: a Kafka topic, or JSON lines on a text stream.

Both sinks share one interface, ``send(topic, key, value, headers) -> future``, ``flush`` and
``close``, so a stage that publishes events need not know which one it has. Values are already
serialised JSON bytes; headers follow the CloudEvents Kafka binding (binary content mode), so a
CloudEvents-aware consumer reads the event type and id without parsing the value.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import datetime, timezone
from typing import TextIO

from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaTimeoutError, UnsupportedVersionError
from kafka.future import Future
from kafka.producer.future import FutureRecordMetadata, RecordMetadata
from kafka.structs import TopicPartition

from ..schemas.config import KafkaSecurity
from .kafka_clients import client_config

log = logging.getLogger(__name__)

CLOUDEVENTS_SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"


def rfc3339_utc(seconds: float) -> str:
    """UNIX seconds as an RFC 3339 UTC timestamp with milliseconds, e.g. 2024-05-01T12:00:00.250Z."""
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def cloudevent_headers(
    *, event_type: str, event_id: str, source: str, subject: str, time: float
) -> list[tuple[str, bytes]]:
    """CloudEvents 1.0 attributes as Kafka headers (binary content mode; the value is the JSON data)."""
    attributes = {
        "ce_specversion": CLOUDEVENTS_SPEC_VERSION,
        "ce_id": event_id,
        "ce_source": source,
        "ce_type": event_type,
        "ce_subject": subject,
        "ce_time": rfc3339_utc(time),
        "content-type": JSON_CONTENT_TYPE,
    }
    return [(name, text.encode("utf-8")) for name, text in attributes.items()]


class KafkaSink:
    """Publishes records with acks=all and an idempotent producer, so a retried send never
    duplicates or reorders a camera's events. The sink owns its producer (and its sender thread)."""

    def __init__(self, bootstrap: str, client_id: str = "xclip-stream", security: KafkaSecurity | None = None,
                 **producer_overrides):
        config = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            **client_config(security),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            # retries: kafka-python retries without limit until delivery_timeout_ms (120 s) expires
            **producer_overrides,
        }
        self.idempotent = bool(config["enable_idempotence"])
        try:
            self._producer = KafkaProducer(**config)
        except (KafkaConfigurationError, UnsupportedVersionError) as e:
            if not self.idempotent or "enable_idempotence" in producer_overrides:
                raise
            # Without idempotence, one request in flight keeps retried batches in order.
            log.warning("idempotent producer refused (%s); falling back to acks=all, max_in_flight=1", e)
            config.update(enable_idempotence=False, max_in_flight_requests_per_connection=1)
            self.idempotent = False
            self._producer = KafkaProducer(**config)

    def send(
        self, topic: str, key: str | bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> FutureRecordMetadata:
        """Queue one record; the future resolves to its RecordMetadata (partition, offset) or an error.

        A ``str`` key is sent as UTF-8; ``bytes`` go unchanged (a dead letter keeps its original key)."""
        raw_key = key.encode("utf-8") if isinstance(key, str) else key
        return self._producer.send(topic, key=raw_key, value=value, headers=list(headers))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged or failed (KafkaTimeoutError after ``timeout``)."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds) and stop the producer's thread; records
        still unacknowledged then fail (their futures say so)."""
        try:
            self._producer.close(timeout=timeout)
        except KafkaTimeoutError:
            # kafka-python's close() raises from its flush before it force-closes the sender; without
            # this step a failing producer being replaced would keep its thread and connections.
            log.warning("producer closed with records unacknowledged after %.1f s; they fail", timeout)
            self._producer._sender.force_close()
            self._producer._sender.join(max(timeout, 1.0))
            self._producer._closed = True

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CompletedFuture(Future):
    """A future that is already resolved, with the ``get`` of kafka-python's record futures."""

    __slots__ = ()

    def get(self, timeout: float | None = None):
        if self.failed():
            raise self.exception
        return self.value


class JsonLinesSink:
    """Writes each record's value as one line to a text stream (stdout by default): for runs
    without Kafka and for piping events into other tools. The stream stays the caller's: ``close``
    flushes it but does not close it."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._lines = 0

    def send(
        self, topic: str, key: str | bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> CompletedFuture:
        """Write ``value`` plus a newline; the returned future holds RecordMetadata (offset = line
        number) or the write error."""
        future = CompletedFuture()
        text = value.decode("utf-8")
        if "\n" in text:
            return future.failure(ValueError("a JSON lines value must not contain a newline"))
        try:
            with self._lock:
                self._stream.write(text + "\n")
                offset = self._lines
                self._lines += 1
        except (OSError, ValueError) as e:  # a closed or broken stream
            return future.failure(e)
        key_size = len(key.encode("utf-8") if isinstance(key, str) else key or b"")
        meta = RecordMetadata(topic, 0, TopicPartition(topic, 0), offset, -1, None, key_size, len(value), -1)
        return future.success(meta)

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            self._stream.flush()

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)

    def __enter__(self) -> JsonLinesSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
