"""At-least-once publishing: every record is kept until its sink acknowledges it.

A sink retries on its own only until its delivery timeout; after that the record would be gone,
and whoever waited for it (a camera finishing, a Kafka source releasing offsets) would never know.
``Delivery`` keeps each record until it is acknowledged. A failed send is sent again after a
jittered backoff, together with every record queued after it, so the last copy of each record on
the topic is in submit order (readers drop repeats by event id). A producer that fails
``recreate_after`` times in a row is closed and a new one made: after a Tansu memory broker
restarts, an idempotent producer fails every send until it is replaced. Creating the producer is
retried the same way, so a broker that is down at start only delays the first send.

One thread, owned by the ``Delivery``, sends and waits; callers queue records, read counters, and
hold back new work while the backlog is over its high-water mark (``congested``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backoff import Backoff

log = logging.getLogger(__name__)

ACK_POLL_S = 0.2  # how often the sending thread looks up from a pending ack (close, abort)


@dataclass
class DeliveryStats:
    submitted: int = 0
    acked: int = 0
    acked_by_topic: dict[str, int] = field(default_factory=dict)
    retries: int = 0  # failed sends that were sent again
    recreated: int = 0  # producers closed and made anew
    last_error: str = ""


@dataclass
class _Record:
    topic: str
    key: str | bytes | None
    value: bytes
    headers: list
    on_ack: Callable[[Any], None] | None
    future: Any = None  # the sink's future of the latest send; None: not sent (again) yet


class Delivery:
    """Ordered, acknowledged sends through a sink made by ``make_sink`` (KafkaSink or JsonLinesSink).

    ``on_ack(metadata)`` callbacks run on the delivery thread, once per record, in submit order."""

    def __init__(
        self,
        make_sink: Callable[[], Any],
        name: str,
        *,
        max_in_flight: int = 256,
        high_water: int = 512,
        recreate_after: int = 3,
        backoff: Backoff | None = None,
    ):
        if max_in_flight < 1 or high_water < 1 or recreate_after < 1:
            raise ValueError("max_in_flight, high_water and recreate_after must be >= 1")
        self.make_sink = make_sink
        self.name = name
        self.max_in_flight = max_in_flight
        self.high_water = high_water
        self.recreate_after = recreate_after
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.stats = DeliveryStats()
        self._consecutive = 0  # failed sends since the last acknowledgement (or producer replacement)
        self._failing = False  # from a failed send or connection until the next acknowledgement
        self._queue: deque[_Record] = deque()  # every unacknowledged record, oldest first
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._sink = None
        self._thread = threading.Thread(target=self._run, name=f"delivery-{name}", daemon=True)

    # -- callers --------------------------------------------------------------------------------
    def start(self) -> Delivery:
        self._thread.start()
        return self

    def submit(self, topic: str, key: str | bytes | None, value: bytes, headers: list,
               on_ack: Callable[[Any], None] | None = None) -> None:
        """Queue one record (never blocks; see ``congested``). Raises once closed."""
        with self._cond:
            if self._closing:
                raise RuntimeError(f"delivery {self.name} is closed; record for {topic} refused")
            self._queue.append(_Record(topic, key, value, list(headers), on_ack))
            self.stats.submitted += 1
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        """Records submitted and not yet acknowledged."""
        with self._cond:
            return len(self._queue)

    @property
    def congested(self) -> bool:
        """True while the backlog is at its high-water mark: producers of records should wait."""
        return self.backlog >= self.high_water

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted record is acknowledged; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue, timeout)

    def close(self, timeout: float = 10.0) -> int:
        """Stop taking records, keep delivering for up to ``timeout`` seconds, then stop the thread
        and the sink. Returns how many records were never acknowledged (logged when any)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.drain(timeout)
        self._abort.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 + ACK_POLL_S)
        lost = self.backlog
        if lost:
            log.error("delivery %s: closed with %d records never acknowledged (last error: %s)",
                      self.name, lost, self.stats.last_error or "none")
        return lost

    def health(self, events_topic: str | None = None) -> dict:
        """Counts for a stream's health; ``events_published``: acknowledged on ``events_topic``."""
        published = self.stats.acked_by_topic.get(events_topic, 0) if events_topic else self.stats.acked
        return {"events_undelivered": self.backlog, "events_published": published,
                "event_send_failures": self.stats.retries, "producers_recreated": self.stats.recreated,
                "sink_failing": self._failing, "sink_error": self.stats.last_error if self._failing else ""}

    # -- delivery thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._next_round():
                pass
        finally:
            self._close_sink(timeout=1.0)

    def _next_round(self) -> bool:
        """Send what is unsent, then settle the oldest record. False when the thread should end."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closing or self._abort.is_set(), ACK_POLL_S)
            if self._abort.is_set() or (self._closing and not self._queue):
                return False
            if not self._queue:
                return True
            window = [self._queue[i] for i in range(min(self.max_in_flight, len(self._queue)))]
        if self._sink is None and not self._connect():
            return False
        try:
            for record in window:
                if record.future is None:
                    record.future = self._sink.send(record.topic, record.key, record.value, record.headers)
        except Exception as e:  # noqa: BLE001 - e.g. no metadata within max_block_ms: a failed send
            self._failed(e)
            return True
        return self._settle(window[0])

    def _settle(self, head: _Record) -> bool:
        while not self._abort.is_set():
            future = head.future
            try:
                future.get(timeout=ACK_POLL_S)
            except Exception:  # noqa: BLE001 - a timeout of this wait, or the send's error (below)
                pass
            if not future.is_done:
                continue
            if future.failed():
                self._failed(future.exception)
                return True
            with self._cond:
                self._queue.popleft()
                self.stats.acked += 1
                self.stats.acked_by_topic[head.topic] = self.stats.acked_by_topic.get(head.topic, 0) + 1
                self._cond.notify_all()
            self.backoff.reset()
            self._consecutive = 0
            self._failing = False
            if head.on_ack is not None:
                try:
                    head.on_ack(future.value)
                except Exception:  # noqa: BLE001 - a caller's bug must not stop delivery
                    log.exception("delivery %s: acknowledgement callback failed", self.name)
            return True
        return False

    def _failed(self, error: BaseException) -> None:
        """A send failed: back off, replace the producer if it keeps failing, resend from the oldest."""
        self._consecutive += 1
        self._failing = True
        self.stats.retries += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"
        recreate = self._consecutive >= self.recreate_after
        delay = self.backoff.next_delay()
        log.warning("delivery %s: send failed (%s); %s, retry %d in %.1f s", self.name, self.stats.last_error,
                    "recreating the producer" if recreate else "keeping the producer", self._consecutive, delay)
        if recreate:
            self._close_sink(timeout=0.0)
            self._consecutive = 0
            self.stats.recreated += 1
        with self._cond:
            for record in self._queue:
                record.future = None
        self._abort.wait(delay)

    def _connect(self) -> bool:
        while not self._abort.is_set():
            try:
                self._sink = self.make_sink()
                return True
            except Exception as e:  # noqa: BLE001 - broker down: logged, retried until close
                delay = self.backoff.next_delay()
                self._failing = True
                self.stats.last_error = f"{type(e).__name__}: {e}"
                log.warning("delivery %s: cannot create the producer (%s); retrying in %.1f s",
                            self.name, self.stats.last_error, delay)
                self._abort.wait(delay)
        return False

    def _close_sink(self, timeout: float) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            sink.close(timeout=timeout)
        except Exception as e:  # noqa: BLE001 - a broken producer may fail to close; it is dropped anyway
            log.info("delivery %s: closing the old producer: %s", self.name, e)
