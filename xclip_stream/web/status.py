"""What the driver's HTTP server says about the pipeline: one immutable ``Status`` per turn of the
driver's loop, built from the supervisor's health of every source and the model application's
state. The server thread only reads the latest one, so an HTTP request never calls into Ray.

Alive (``/healthz``): the driver's loop turns (a stalled loop is a driver to restart); during the
start, while it waits for the broker or the model application, it is alive and not ready.
Ready (``/readyz``): the model application runs, every source's actor is placed and running, and no
stream's sink is failing. A camera that cannot be reached does not make the pipeline unready: its
actor keeps trying, and a restarted driver would not reach it either; it is listed as degraded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .prometheus import exposition

NOT_STARTED = ("pending", "unreachable")  # a source's actor not placed yet, or not answering
DEGRADED = ("connecting", "disconnected")  # a camera its actor cannot read at the moment


@dataclass(frozen=True)
class Status:
    phase: str  # "starting: <what it waits for>", "running" or "stopping"
    updated: float  # time.monotonic() of the driver loop's turn that made it
    ready: bool = False
    problems: tuple[str, ...] = ()  # why not ready
    degraded: tuple[str, ...] = ()  # sources that run but cannot read their camera now
    sources: dict[str, dict] = field(default_factory=dict)  # key -> {kind, state, restarts}
    control: dict[str, int] = field(default_factory=dict)  # ControlTopic.counts, when there is one

    @classmethod
    def starting(cls, waiting_for: str) -> Status:
        return cls(phase=f"starting: {waiting_for}", updated=time.monotonic(), problems=(f"starting: {waiting_for}",))

    def alive(self, now: float, stale_after_s: float) -> tuple[bool, str]:
        """The loop turned within ``stale_after_s`` (only once running: the start waits in retries)."""
        if self.phase != "running":
            return True, self.phase
        age = now - self.updated
        if age > stale_after_s:
            return False, f"the driver's loop has not turned for {age:.0f} s (limit {stale_after_s:g} s)"
        return True, "running"

    def readiness(self) -> dict:
        return {"ready": self.ready, "phase": self.phase, "problems": list(self.problems),
                "degraded": list(self.degraded),
                "sources": {key: source["state"] for key, source in self.sources.items()}}

    def metrics_text(self) -> str:
        """The driver's metrics (web/prometheus.py) for ``/metrics``."""
        samples = [("xclip_pipeline_ready", {}, 1.0 if self.ready else 0.0)]
        by_state: dict[tuple[str, str], int] = {}
        for key, source in self.sources.items():
            by_state[(source["kind"], source["state"])] = by_state.get((source["kind"], source["state"]), 0) + 1
            samples.append(("xclip_source_restarts_total", {"source": key}, float(source["restarts"])))
        samples += [("xclip_sources", {"kind": kind, "state": state}, float(n)) for (kind, state), n in by_state.items()]
        if self.control:
            samples += [("xclip_control_messages_total", {"outcome": outcome}, float(self.control.get(outcome, 0)))
                        for outcome in ("applied", "refused")]
            samples.append(("xclip_control_events_failed_total", {}, float(self.control.get("events_failed", 0))))
        return exposition(samples)


def running_status(health: dict[str, dict], model_problem: str | None, control: dict[str, int] | None = None,
                   now: float | None = None) -> Status:
    """From ``Supervisor.health()`` and the model application's problem (None: it runs)."""
    problems = [f"model: {model_problem}"] if model_problem else []
    degraded, sources = [], {}
    for key, h in sorted(health.items()):
        kind = key.partition(":")[0]
        if kind not in ("camera", "frames"):
            continue  # "scaling:<topic>": the member count, not a source
        state = str(h.get("state") or "running")  # Kafka members have no connection state of their own
        sources[key] = {"kind": kind, "state": state, "restarts": int(h.get("restarts") or 0)}
        if state in NOT_STARTED:
            problems.append(f"{key}: {state}" + (f" for {h['pending_s']:g} s" if "pending_s" in h else ""))
        elif state in DEGRADED:
            degraded.append(f"{key}: {state}" + (f" ({h['last_error']})" if h.get("last_error") else ""))
        if h.get("sink_failing"):
            problems.append(f"{key}: its events cannot be delivered ({h.get('sink_error') or 'sends failing'})")
    return Status(phase="running", updated=time.monotonic() if now is None else now, ready=not problems,
                  problems=tuple(problems), degraded=tuple(degraded), sources=sources, control=dict(control or {}))
