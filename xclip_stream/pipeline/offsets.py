"""At-least-once consumption: commit a partition only up to the first record not yet fully handled.

One frame record can feed several windows that finish out of order (and on other threads), so the
consumer cannot commit what it has polled. It counts references instead: ``add`` when polled,
``hold`` for each window that uses the frame, ``release`` when that window's event is published and
once more when the frame itself is done. The commit point of a partition is its lowest offset still
referenced; after a crash, everything from there on is read again (events have deterministic ids,
so a consumer drops the duplicates).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from kafka import ConsumerRebalanceListener, KafkaConsumer

from ..schemas.config import KafkaSecurity
from .kafka_clients import client_config

log = logging.getLogger(__name__)

_RAW_BYTES_ONLY = ("key_deserializer", "value_deserializer")


@dataclass
class _PartitionState:
    refs: dict[int, int] = field(default_factory=dict)  # offset -> references still held
    last_added: int = -1
    committed: int | None = None


class FrameRef(NamedTuple):
    """Where a frame held by a member came from: its record (``tp`` and ``offset`` None once the
    record is done with, the frame kept), its sequence number at the source, and its partition's
    epoch in the tracker when read (a release from before a hand-over must not touch the same
    offset read again after it)."""

    tp: Hashable | None
    offset: int | None
    seq: int
    epoch: int


class OffsetTracker:
    """Reference counts of consumed records per partition, and the offsets safe to commit.

    Thread-safe: the consumer thread adds and commits while sinks release from their callbacks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._partitions: dict[Hashable, _PartitionState] = {}
        self._epochs: dict[Hashable, int] = {}  # per partition: how many times it was forgotten

    def add(self, tp: Hashable, offset: int) -> int:
        """A record was consumed: it is outstanding with one reference (released when it is handled).
        Returns the partition's epoch, for :meth:`release`."""
        with self._lock:
            state = self._partitions.setdefault(tp, _PartitionState())
            if offset in state.refs:
                raise ValueError(f"offset {offset} of {tp} is already outstanding")
            state.refs[offset] = 1
            state.last_added = max(state.last_added, offset)
            return self._epochs.get(tp, 0)

    def hold(self, tp: Hashable, offset: int) -> None:
        """One more user of an outstanding record (a window that contains the frame)."""
        with self._lock:
            state = self._partitions.get(tp)
            if state is None or offset not in state.refs:
                raise KeyError(f"offset {offset} of {tp} is not outstanding: hold it before releasing it")
            state.refs[offset] += 1

    def release(self, tp: Hashable, offset: int, epoch: int | None = None) -> bool:
        """Drop one reference; at zero the record is done. Returns False, and changes nothing, for a
        record that is not tracked, e.g. a late release after its partition was revoked, or, given
        the ``epoch`` that :meth:`add` returned, one from before the partition was forgotten: the
        same offset read again after a hand-over is another record's reference."""
        with self._lock:
            state = self._partitions.get(tp)
            if state is None or offset not in state.refs or epoch not in (None, self._epochs.get(tp, 0)):
                return False
            state.refs[offset] -= 1
            if state.refs[offset] == 0:
                del state.refs[offset]
            return True

    def committable(self, only: Iterable[Hashable] | None = None) -> dict[Hashable, int]:
        """Per partition that advanced since it was last committed, the offset to commit: the lowest
        outstanding offset, or the last added + 1 when none is outstanding (Kafka's commit means
        "the next record to read"). ``only``: just these partitions."""
        wanted = None if only is None else set(only)
        with self._lock:
            result = {}
            for tp, state in self._partitions.items():
                if state.last_added < 0 or (wanted is not None and tp not in wanted):
                    continue
                position = min(state.refs) if state.refs else state.last_added + 1
                if state.committed is None or position > state.committed:
                    result[tp] = position
            return result

    def resume_points(self, tps: Iterable[Hashable]) -> dict[Hashable, int]:
        """Where reading these partitions again would lose nothing this tracker knows of: the lowest
        outstanding offset, or the last added + 1 (partitions it never saw a record of: absent)."""
        with self._lock:
            result = {}
            for tp in tps:
                state = self._partitions.get(tp)
                if state is not None and state.last_added >= 0:
                    result[tp] = min(state.refs) if state.refs else state.last_added + 1
            return result

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        """Record a successful commit (offsets as returned by :meth:`committable`)."""
        with self._lock:
            for tp, offset in offsets.items():
                state = self._partitions.get(tp)
                if state is not None and (state.committed is None or offset > state.committed):
                    state.committed = offset

    def committed(self) -> dict[Hashable, int]:
        """The offset last committed per partition held (revoked ones are forgotten)."""
        with self._lock:
            return {tp: state.committed for tp, state in self._partitions.items() if state.committed is not None}

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop partitions revoked in a rebalance: their new owner re-reads what was not committed."""
        with self._lock:
            for tp in tps:
                if self._partitions.pop(tp, None) is not None:
                    self._epochs[tp] = self._epochs.get(tp, 0) + 1

    def begin(self, tp: Hashable, offset: int) -> None:
        """A partition this member reads again from ``offset``, everything before it handled: that
        is its commit point until records come (the commit on revocation may have failed)."""
        with self._lock:
            state = self._partitions.setdefault(tp, _PartitionState())
            state.last_added = max(state.last_added, offset - 1)

    def outstanding(self) -> int:
        """Records consumed but not yet fully handled, over all partitions."""
        with self._lock:
            return sum(len(state.refs) for state in self._partitions.values())


class HandOver(ConsumerRebalanceListener):
    """What a member does when a rebalance takes partitions away and gives partitions back.

    kafka-python 3 calls the listener on its IO thread, where a blocking commit is refused and the
    member's own state (rings, queued windows) belongs to the poll thread; so the listener only
    notes what happened, and the poll thread calls :meth:`settle` after each ``poll()``, before it
    handles the records that poll returned.

    Revoked: commit what is done of the partitions, forget them (late acknowledgements of their
    windows then change nothing) and have ``drop`` discard the frames and windows still held from
    them: their next owner re-reads from the commit point. Under the eager protocol the member is
    already rebalancing then, so the commit is usually refused (logged, never raised): at worst
    the next owner re-reads a little more.

    Assigned (the rebalance's outcome): an eager rebalance revokes every partition and gives some
    straight back, and kafka-python 3 keeps its read position on those, past the frames just
    dropped, which nobody would read again. ``rewind`` ({tp: offset} -> None) seeks them to where
    this member's work stopped, the tracker takes that as their commit point (``begin``: with the
    revocation's commit refused and nothing left to read, it would otherwise stay behind for good,
    seen as lag that never falls), and ``rewound`` names them until the next settle, so the caller
    skips what that poll returned for them (read again after the seek). Only the assignment that
    follows a revocation is known to be the next owner's: ``consumer.assignment()`` still lists
    the revoked partitions until it arrives."""

    def __init__(self, tracker: OffsetTracker, commit: Callable[[dict], None],
                 drop: Callable[[set], None], name: str = "consumer",
                 rewind: Callable[[dict], None] | None = None):
        self.tracker = tracker
        self.commit = commit  # {tp: offset} -> None; raises when the commit failed
        self.drop = drop
        self.rewind = rewind
        self.rewound: set = set()
        self._resume: dict = {}  # the last revocation's resume points, until the assignment after it
        self.name = name
        self.revocations = 0
        self._lock = threading.Lock()
        self._noted: list[tuple[str, set]] = []  # ("revoked" | "lost" | "assigned", partitions), in order

    def on_partitions_revoked(self, revoked) -> None:
        """(Consumer IO thread.)"""
        with self._lock:
            self._noted.append(("revoked", set(revoked)))
        log.info("%s: partitions revoked: %s", self.name, sorted(str(tp) for tp in revoked))

    def on_partitions_lost(self, lost) -> None:
        """(Consumer IO thread.) The group went on without this member (its session expired):
        another may have read and committed these partitions since, so they are dropped without a
        commit and, if they come back, read from the group's commit point, not rewound."""
        with self._lock:
            self._noted.append(("lost", set(lost)))
        log.warning("%s: partitions lost (this member left the group): %s", self.name,
                    sorted(str(tp) for tp in lost))

    def on_partitions_assigned(self, assigned) -> None:
        """(Consumer IO thread.)"""
        with self._lock:
            self._noted.append(("assigned", set(assigned)))
        log.info("%s: partitions assigned: %s", self.name, sorted(str(tp) for tp in assigned))

    def settle(self) -> set:
        """(Poll thread.) Act on what the rebalances did since the last call; returns the partitions
        revoked."""
        with self._lock:
            noted, self._noted = self._noted, []
        self.rewound = set()
        revoked = set()
        for kind, tps in noted:
            if kind == "assigned":
                self._take_back(tps)
            elif tps:
                self._hand_over(tps, lost=kind == "lost")
                revoked |= tps
        return revoked

    def _hand_over(self, revoked: set, lost: bool = False) -> None:
        self.revocations += 1
        self._resume = {} if lost else self.tracker.resume_points(revoked)
        offsets = {} if lost else self.tracker.committable(revoked)
        if offsets:
            try:
                self.commit(offsets)
                self.tracker.mark_committed(offsets)
            except Exception as e:  # noqa: BLE001 - the group moved on; the next owner re-reads
                log.warning("%s: commit of revoked partitions failed (%s: %s); they are re-read from the "
                            "last commit", self.name, type(e).__name__, e)
        self.tracker.forget(revoked)
        self.drop(revoked)

    def _take_back(self, assigned: set) -> None:
        back = {tp: offset for tp, offset in self._resume.items() if tp in assigned}
        self._resume = {}  # the others went to other members
        if not back:
            return
        if self.rewind is not None:
            self.rewind(back)
        for tp, offset in back.items():
            self.tracker.begin(tp, offset)
        self.rewound |= set(back)
        log.info("%s: partitions given straight back, read again from where this member stopped: %s",
                 self.name, sorted(f"{tp}@{offset}" for tp, offset in back.items()))


def make_consumer(
    bootstrap: str, topic: str, group_id: str, session_timeout_ms: int = 10000,
    security: KafkaSecurity | None = None, listener: ConsumerRebalanceListener | None = None, **overrides
) -> KafkaConsumer:
    """A group consumer of raw bytes that commits only when told (see :class:`OffsetTracker`).

    Keys and values stay ``bytes``: network data is never handed to a deserialiser (and never
    unpickled). Heartbeats go every third of the session timeout, the usual ratio."""
    refused = [name for name in _RAW_BYTES_ONLY if overrides.get(name) is not None]
    if refused:
        raise ValueError(f"make_consumer hands out raw bytes only; remove {', '.join(refused)}")
    config = {
        "bootstrap_servers": bootstrap,
        **client_config(security),
        "group_id": group_id,
        "client_id": f"{group_id}-consumer",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(session_timeout_ms // 3, 100),
        **overrides,
        "key_deserializer": None,
        "value_deserializer": None,
    }
    if listener is None:
        return KafkaConsumer(topic, **config)
    consumer = KafkaConsumer(**config)
    consumer.subscribe(topics=[topic], listener=listener)
    return consumer
