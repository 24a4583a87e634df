"""The live page's events: read back from the events topic as any downstream consumer reads them
(no group, nothing committed), starting a little before its end so a page opened at start shows
the windows just scored. In stdout mode the driver hands its lines to the ``LiveState`` instead."""

from __future__ import annotations

import logging
import threading

from ..pipeline.backoff import Backoff
from ..pipeline.kafka_clients import client_config
from ..schemas.config import KafkaSecurity
from .live import LiveState

log = logging.getLogger(__name__)

BACKLOG = 50  # records per partition read from before the end at start


class EventFeed:
    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity | None, live: LiveState):
        self.bootstrap, self.topic, self.security, self.live = bootstrap, topic, security, live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-feed", daemon=True)

    def start(self) -> EventFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = Backoff(initial=1.0, maximum=30.0)
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._consumer()
                backoff.reset()
                while not self._stop.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for record in records:
                            self.live.add_json(record.value)
            except Exception as e:  # noqa: BLE001 - the page goes stale, the pipeline is unaffected
                delay = backoff.next_delay()
                log.warning("live page: reading %s failed (%s: %s); again in %.0f s", self.topic,
                            type(e).__name__, e, delay)
                self._stop.wait(delay)
            finally:
                if consumer is not None:
                    consumer.close()

    def _consumer(self):
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 client_id="xclip-stream-page", **client_config(self.security))
        partitions = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
        if not partitions:
            consumer.close()
            raise LookupError(f"topic {self.topic} has no partitions yet")
        consumer.assign(partitions)
        starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - BACKLOG))
        return consumer
