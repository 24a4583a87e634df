"""The control topic's Kafka side: read records from where this pipeline left off, hand each to the
``ControlPlane``, publish its outcome as an event, and keep the state that survives a restart.

State across restarts lives in a state topic (one partition; key = the pipeline's ``instance``):
after each batch of control records the pipeline writes one signed snapshot ``{offsets, overlay,
replay}``: the next control offset to read, the overlay of accepted changes, and the replay memory
(recent nonces). At start it takes the valid snapshot of its instance with the highest offsets, so
changes made before a restart are re-applied over the configuration file, and records produced
while it was down are read and applied then (if still within ``max_age_s``). Snapshots are signed
with the control secret, so whoever can write the state topic cannot forge one, and an old copy
written back loses to the newer offsets. One record per snapshot makes "offset + state" atomic;
a crash between an applied change and its snapshot re-applies that change, which is idempotent.
No consumer group: a group's committed offsets would keep the position but not the overlay, and
Tansu does not compact, so the newest snapshot is found by reading the (small) state topic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from ..schemas.control import ControlEvent
from ..schemas.events import make_event_id
from .control import ControlPlane, Outcome, Overlay, Refused, decode_json, parse_control
from .control_auth import Authenticator
from .sinks import cloudevent_headers

log = logging.getLogger(__name__)

STATE_DOMAIN = b"xclip-control-state-v1\n"
CE_SOURCE = "/xclip-stream/control"
MAX_STATE_READ_S = 30.0


def make_control_consumer(bootstrap: str, **client_kwargs) -> KafkaConsumer:
    """A group-less consumer of raw bytes (never deserialised). ``client_kwargs``: security and other
    settings shared by every Kafka client."""
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         client_id="xclip-stream-control", **client_kwargs)


def sign_state(state: dict, secret: bytes) -> bytes:
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    sig = hmac.new(secret, STATE_DOMAIN + body.encode("utf-8"), hashlib.sha256).hexdigest()
    return json.dumps({"state": state, "sig": sig}, separators=(",", ":")).encode("utf-8")


def open_state(value: bytes | None, secret: bytes) -> dict | None:
    """The state in a snapshot record if it is authentic, else None."""
    try:
        record = json.loads(value)
        body = json.dumps(record["state"], sort_keys=True, separators=(",", ":"))
        expected = hmac.new(secret, STATE_DOMAIN + body.encode("utf-8"), hashlib.sha256).hexdigest()
        if isinstance(record["sig"], str) and hmac.compare_digest(expected, record["sig"]):
            return record["state"]
    except (TypeError, ValueError, KeyError, RecursionError):
        pass
    return None


def control_event(outcome: Outcome, topic: str, partition: int, offset: int, now: float
                  ) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of an outcome's event on the events topic."""
    kind = "applied" if outcome.applied else "refused"
    event = ControlEvent(make_event_id("control", topic, partition, offset, kind), kind, outcome.op,
                         outcome.camera_id, outcome.reason, topic, partition, offset, now)
    event_type = f"xclip.control.{kind}"
    value = json.dumps({"event_type": event_type, **event.to_json_dict()}, separators=(",", ":")).encode("utf-8")
    key = outcome.camera_id or "control"
    headers = cloudevent_headers(event_type=event_type, event_id=event.event_id, source=CE_SOURCE, subject=key,
                                 time=now)
    return key, value, headers


class ControlTopic:
    """Reads the control topic for one pipeline instance; the owner calls ``start`` once, then
    ``poll`` in its loop, and ``close``. ``sink`` publishes events and snapshots (KafkaSink-like)."""

    def __init__(self, consumer: KafkaConsumer, sink, plane: ControlPlane, secret: bytes, topic: str,
                 state_topic: str, instance: str, events_topic: str, clock: Callable[[], float] = time.time):
        self.consumer, self.sink, self.plane = consumer, sink, plane
        self._secret = secret
        self.topic, self.state_topic, self.instance, self.events_topic = topic, state_topic, instance, events_topic
        self._clock = clock
        self.positions: dict[int, int] = {}
        self.counts = {"applied": 0, "refused": 0, "events_failed": 0}
        self._page_auth = Authenticator(secret, plane.settings.max_age_s, clock)  # forward()'s own replay memory
        self._page_lock = threading.Lock()

    def start(self):
        """Restore the saved state and position; returns the configuration to start with."""
        state = self._read_state()
        if state is not None:
            self.plane.auth.restore(state.get("replay", {}))
            config = self.plane.restore(Overlay.from_json(state.get("overlay")))
            self.positions = {int(p): int(o) for p, o in state.get("offsets", {}).items()}
            log.info("control state restored: %d camera change(s), %d relabel(s), reading %s from %s",
                     len(self.plane.overlay.cameras), len(self.plane.overlay.labels), self.topic, self.positions)
        else:
            config = self.plane.config
            log.info("no saved control state for %r: reading %s from its beginning", self.instance, self.topic)
        partitions = sorted(self.consumer.partitions_for_topic(self.topic) or {0})
        assigned = [TopicPartition(self.topic, p) for p in partitions]
        self.consumer.assign(assigned)
        for tp in assigned:
            if tp.partition in self.positions:
                self.consumer.seek(tp, self.positions[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)
                self.positions[tp.partition] = self.consumer.position(tp)
        return config

    def poll(self, timeout_ms: int = 50):
        """Handle the records that arrived; the new configuration if any change was applied, else None."""
        changed = None
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        for tp, records in batches.items():
            for record in records:
                outcome = self.plane.handle(record.value)
                self._report(outcome, tp.partition, record.offset)
                if outcome.applied:
                    changed = outcome.config
                self.positions[tp.partition] = record.offset + 1
        if batches:
            self._save_state()
        return changed

    def forward(self, value: bytes) -> str:
        """A signed ``set_labels`` message from the live page (an HTTP thread): checked as a record
        would be (size, signature, freshness, replay), then written to the control topic, where it
        is applied, kept and reported like any other. Returns the camera's id; raises AuthError or
        Refused saying why (nothing is written then)."""
        limit = self.plane.settings.max_message_bytes
        envelope = decode_json(value, "the request", limit)
        with self._page_lock:
            payload = self._page_auth.open(envelope)
        message = parse_control(decode_json(payload.encode("utf-8"), "the payload", limit))
        if message["op"] != "set_labels":
            raise Refused(f"the page changes labels only, not {message['op']}")
        self.sink.send(self.topic, "page", value, []).get(timeout=10)
        return str(message["id"])

    def _report(self, outcome: Outcome, partition: int, offset: int) -> None:
        kind = "applied" if outcome.applied else "refused"
        self.counts[kind] += 1
        if outcome.applied:
            log.info("control record %s[%d]@%d applied: %s %s", self.topic, partition, offset, outcome.op,
                     outcome.camera_id)
        else:
            log.warning("control record %s[%d]@%d refused: %s", self.topic, partition, offset, outcome.reason)
        key, value, headers = control_event(outcome, self.topic, partition, offset, self._clock())

        def undelivered(error: Exception) -> None:  # the outcome is logged above; its event is not out
            self.counts["events_failed"] += 1
            log.error("control record %s[%d]@%d: its %s event was not delivered: %s", self.topic, partition,
                      offset, kind, error)

        self.sink.send(self.events_topic, key, value, headers).add_errback(undelivered)

    def _save_state(self) -> None:
        state = {"instance": self.instance, "offsets": {str(p): o for p, o in self.positions.items()},
                 "overlay": self.plane.overlay.to_json(), "replay": self.plane.auth.export(),
                 "saved_at": self._clock()}
        self.sink.send(self.state_topic, self.instance, sign_state(state, self._secret), []).get(timeout=30)

    def close(self) -> None:
        self.consumer.close()
        self.sink.close()

    def _read_state(self) -> dict | None:
        """The newest authentic snapshot of this instance (highest offsets), or None."""
        reader = self.consumer  # borrowed before the control partitions are assigned
        tp = TopicPartition(self.state_topic, 0)
        reader.assign([tp])
        reader.seek_to_beginning(tp)
        end = reader.end_offsets([tp])[tp]
        best, deadline = None, time.monotonic() + MAX_STATE_READ_S
        while reader.position(tp) < end and time.monotonic() < deadline:
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    if record.key != self.instance.encode("utf-8"):
                        continue
                    state = open_state(record.value, self._secret)
                    if state is None:
                        log.warning("state record %s@%d is not authentic: ignored", self.state_topic, record.offset)
                        continue
                    if best is None or _total(state) >= _total(best):
                        best = state
        if reader.position(tp) < end:
            log.error("reading the control state timed out at %s@%d of %d", self.state_topic,
                      reader.position(tp), end)
        return best


def _total(state: dict) -> int:
    """How far a snapshot had read (the sum of its next offsets): a newer snapshot never reads less."""
    offsets = state.get("offsets")
    return sum(int(o) for o in offsets.values()) if isinstance(offsets, dict) else -1
