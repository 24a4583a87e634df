"""How many frames members a Kafka topic gets: its ``members``, or, with ``scale``, a count that
follows the consumer group's lag up to the partition count (more members than partitions would
sit idle). On Kubernetes the pipeline runs in a RayService, which KEDA cannot scale, so the
pipeline scales its own group; Ray's autoscaler then adds nodes for members that find no room.

``MemberPolicy`` is the decision alone (pure: samples in, a count out). ``LagFollower`` keeps one
policy per scaled topic, measures each when due through a ``measure(topic, group_id)`` callable
(``consumer_lag.LagProbe.measure`` in the driver) and backs off while measuring fails. Neither
knows about Ray: the supervisor starts and stops the members the counts ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..schemas.config import KafkaFrames, MemberScaling
from .consumer_lag import GroupLag

log = logging.getLogger(__name__)

MAX_RETRY_S = 60.0  # longest wait between measurements while the broker cannot be reached


@dataclass(frozen=True)
class LagSample:
    time: float  # monotonic seconds
    lag: int  # records the group has not committed yet
    partitions: int
    members: int  # the count running now


@dataclass(frozen=True)
class Change:
    topic: str
    before: int
    after: int
    lag: int
    partitions: int


class MemberPolicy:
    """One step at a time, with hysteresis: up when the lag stays above ``lag_per_member`` x members
    for ``up_after_s``, down when it stays below ``lag_per_member`` for ``down_after_s``. Between the
    two nothing changes, and a member taken away leaves the others under their own up-threshold, so
    the count does not flap. After a change both waits start again (the new member's join and the
    rebalance that follows move the lag for a while)."""

    def __init__(self, scale: MemberScaling, least: int):
        self.scale = scale
        self.least = least
        self.high_since: float | None = None
        self.low_since: float | None = None

    def ceiling(self, partitions: int) -> int:
        return max(self.least, min(self.scale.max_members, partitions))

    def decide(self, s: LagSample) -> int:
        """The member count to run from now on."""
        ceiling = self.ceiling(s.partitions)
        if not self.least <= s.members <= ceiling:  # the bounds moved (reconfigured, fewer partitions)
            self._restart()
            return min(max(s.members, self.least), ceiling)
        per = self.scale.lag_per_member
        if s.lag > per * s.members and s.members < ceiling:
            self.low_since = None
            self.high_since = s.time if self.high_since is None else self.high_since
            if s.time - self.high_since >= self.scale.up_after_s:
                self._restart()
                return s.members + 1
        elif s.lag < per and s.members > self.least:
            self.high_since = None
            self.low_since = s.time if self.low_since is None else self.low_since
            if s.time - self.low_since >= self.scale.down_after_s:
                self._restart()
                return s.members - 1
        else:
            self._restart()
        return s.members

    def _restart(self) -> None:
        self.high_since = self.low_since = None


class _Topic:
    """A scaled topic's state in the follower."""

    def __init__(self, frames: KafkaFrames):
        assert frames.scale is not None
        self.frames = frames
        self.policy = MemberPolicy(frames.scale, frames.members)
        self.members = frames.members
        self.next_at = 0.0
        self.failures = 0  # in a row; the wait grows with them
        self.errors = 0  # in all
        self.last: LagSample | None = None
        self.last_error = ""
        self.changes = 0

    def settings(self) -> tuple:
        return self.frames.group_id, self.frames.members, self.frames.scale


class LagFollower:
    """The member count of every frames topic; those with ``scale`` follow their group's lag."""

    def __init__(self, frames: list[KafkaFrames], measure: Callable[[str, str], GroupLag]):
        self.measure = measure
        self.fixed: dict[str, int] = {}
        self.scaled: dict[str, _Topic] = {}
        self.configure(frames)

    def configure(self, frames: list[KafkaFrames]) -> None:
        """A new configuration: a topic whose group and scaling settings are unchanged keeps its count
        and its waits; any other starts again from its ``members``."""
        self.fixed = {f.topic: f.members for f in frames if f.scale is None}
        scaled = {}
        for f in frames:
            if f.scale is None:
                continue
            old = self.scaled.get(f.topic)
            if old is not None and old.settings() == (f.group_id, f.members, f.scale):
                old.frames = f
                scaled[f.topic] = old
            else:
                scaled[f.topic] = _Topic(f)
        self.scaled = scaled

    def members(self, topic: str) -> int:
        return self.scaled[topic].members if topic in self.scaled else self.fixed[topic]

    def poll(self, now: float) -> list[Change]:
        """Measure the topics that are due; the counts that changed."""
        changes = []
        for topic, t in self.scaled.items():
            if now < t.next_at:
                continue
            try:
                lag = self.measure(topic, t.frames.group_id)
            except Exception as e:  # noqa: BLE001 - the broker is down or slow: no decision this time
                t.failures += 1
                t.errors += 1
                t.last_error = f"{type(e).__name__}: {e}"
                wait = min(MAX_RETRY_S, t.frames.scale.interval_s * 2 ** t.failures)
                t.next_at = now + wait
                log.warning("frames topic %s: cannot measure the lag of group %s (%s); members stay %d, "
                            "next try in %.0f s", topic, t.frames.group_id, t.last_error, t.members, wait)
                continue
            t.failures = 0
            t.next_at = now + t.frames.scale.interval_s
            t.last = LagSample(now, lag.lag, lag.partitions, t.members)
            target = t.policy.decide(t.last)
            if target != t.members:
                changes.append(Change(topic, t.members, target, lag.lag, lag.partitions))
                t.members = target
                t.changes += 1
        return changes

    def health(self, now: float) -> dict[str, dict]:
        """Per scaled topic: the target count, its bounds and the last measurement."""
        out = {}
        for topic, t in self.scaled.items():
            last = t.last
            out[topic] = {"target": t.members, "least": t.frames.members,
                          "most": t.policy.ceiling(last.partitions) if last else t.frames.scale.max_members,
                          "lag": last.lag if last else None, "partitions": last.partitions if last else None,
                          "measured_s_ago": round(now - last.time, 1) if last else None,
                          "changes": t.changes, "lag_errors": t.errors, "last_lag_error": t.last_error}
        return out
