"""Where a stream actor's events go: a Kafka topic, or (no Kafka configured) back to the driver,
which prints them as JSON lines. Both sinks share one interface (send / flush / close), and either
is used through a ``Delivery`` that retries each record until it is acknowledged."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..schemas.config import KafkaSecurity


@dataclass(frozen=True)
class SinkSpec:
    bootstrap: str | None  # None: collect in the actor for the driver to print
    events_topic: str = "xclip.events"
    dead_letter_topic: str = "xclip.deadletter"
    security: KafkaSecurity | None = None  # file and variable names only: secrets are read by the client


class LineBuffer:
    """A text stream that keeps whole lines until the driver takes them (stdout mode)."""

    def __init__(self):
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._lines.extend(line for line in text.splitlines() if line)
        return len(text)

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines


# A producer gives up on a record after DELIVERY_TIMEOUT_MS; Delivery then resends it (and recreates
# a producer that keeps failing), so these bound how long one attempt may hang, not how long we try.
PRODUCER_TIMEOUTS = {"request_timeout_ms": 10_000, "delivery_timeout_ms": 20_000, "max_block_ms": 10_000,
                     "bootstrap_timeout_ms": 10_000}


def make_sink(spec: SinkSpec, client_id: str):
    """(sink, line buffer or None)."""
    from ..pipeline.kafka_io import JsonLinesSink, KafkaSink

    if spec.bootstrap:
        return KafkaSink(spec.bootstrap, client_id=client_id, security=spec.security, **PRODUCER_TIMEOUTS), None
    buffer = LineBuffer()
    return JsonLinesSink(buffer), buffer


def make_delivery(spec: SinkSpec, client_id: str):
    """(started Delivery, line buffer or None): the producer is made on the delivery thread, and
    made again while the broker is unreachable, so an actor starts even with the broker down."""
    from ..pipeline.delivery import Delivery

    if spec.bootstrap:
        return Delivery(lambda: make_sink(spec, client_id)[0], client_id).start(), None
    sink, buffer = make_sink(spec, client_id)
    return Delivery(lambda: sink, client_id).start(), buffer
