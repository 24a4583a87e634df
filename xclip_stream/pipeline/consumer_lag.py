"""How far a consumer group is behind on a topic, measured from outside the group (and each
member's own share, for the metrics: ``partition_lags``).

The driver asks this to decide how many frames members a topic needs (``member_scaling``). It
must never join the group (that would take partitions from the members and trigger rebalances),
so it reads the group's committed offsets through the admin API (OffsetFetch) and the partitions'
ends through a consumer that has no group (ListOffsets). Every client comes from ``client_config``,
so the topic's TLS and SASL settings apply.

Lag counts records not yet committed: records in hand (in a member's window ring, being scored)
count too, as they would be read again after a crash. A partition the group never committed starts
at its earliest offset (the members read from ``earliest``). Tansu reports a partition's end as the
start of its last batch + 1, so against it the lag is low by up to one producer batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..schemas.config import KafkaSecurity
from .kafka_clients import client_config

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0  # each request (and the first connection): a broker that is down costs this much


@dataclass(frozen=True)
class GroupLag:
    partitions: int  # of the topic
    lag: int  # records: sum over partitions of end - committed (or - earliest, when never committed)


class LagProbe:
    """Measures ``GroupLag`` of groups on topics; owns one admin client and one group-less consumer,
    made on first use and made again after a failure. Raises what kafka-python raises (the caller
    logs it and skips its decision)."""

    def __init__(self, bootstrap: str, security: KafkaSecurity | None = None, timeout_s: float = PROBE_TIMEOUT_S):
        self.bootstrap = bootstrap
        self.security = security
        self.timeout_ms = int(timeout_s * 1000)
        self._admin = None
        self._consumer = None

    def measure(self, topic: str, group_id: str) -> GroupLag:
        try:
            return self._measure(topic, group_id)
        except Exception:
            self.close()  # a half-broken client is not trusted with the next measurement
            raise

    def _measure(self, topic: str, group_id: str) -> GroupLag:
        from kafka.structs import TopicPartition

        admin, consumer = self._clients()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise LookupError(f"topic {topic!r} has no partitions (does it exist?)")
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps, timeout_ms=self.timeout_ms)
        starts = consumer.beginning_offsets(tps, timeout_ms=self.timeout_ms)
        committed = admin.list_group_offsets({group_id: tps}).get(group_id, {})
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            lag += max(0, ends[tp] - done)  # Tansu's low end can fall below a committed offset
        return GroupLag(len(partitions), lag)

    def _clients(self):
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        config = {"bootstrap_servers": self.bootstrap, "request_timeout_ms": self.timeout_ms,
                  "bootstrap_timeout_ms": self.timeout_ms, **client_config(self.security)}
        if self._admin is None:
            self._admin = KafkaAdminClient(client_id="xclip-stream-lag", **config)
        if self._consumer is None:
            # group_id None: no coordinator, no join, no commits; it only asks for metadata and offsets
            self._consumer = KafkaConsumer(client_id="xclip-stream-lag", group_id=None, enable_auto_commit=False,
                                           **config)
        return self._admin, self._consumer

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                try:
                    client.close()
                except Exception as e:  # noqa: BLE001 - closing a broken client: nothing left to save
                    log.debug("closing a lag client: %s", e)
        self._admin = self._consumer = None


def partition_lags(consumer, committed: dict) -> dict[int, int]:
    """A member's own lag, per partition it holds: records past its committed offset (or its
    position, before its first commit there), against the end its last fetch reported; it makes no
    request. For the metrics: LagProbe measures a whole group's for scaling."""
    lags = {}
    for tp in consumer.assignment():
        high, done = consumer.highwater(tp), committed.get(tp)
        if done is None:
            try:
                done = consumer.position(tp, timeout_ms=0)
            except Exception:  # noqa: BLE001 - no position yet: no figure for this partition
                continue
        if high is not None and done is not None:
            lags[tp.partition] = max(0, high - done)
    return lags
