"""The driver's own metrics, in Prometheus' text exposition format (version 0.0.4) on ``/metrics``.

Everything that runs in a Ray actor records through Ray's metrics API (actors/metrics.py). The
driver is not always a Ray node: on Kubernetes it joins over Ray Client, where Ray exports nothing
of its own, so what only the driver knows (the control plane, readiness, the sources it supervises)
is served by its HTTP server instead, under the same ``xclip_`` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable

# name as scraped -> (kind, help)
DRIVER_CATALOGUE: dict[str, tuple[str, str]] = {
    "xclip_control_messages_total": ("counter", "Control-topic records, by outcome (applied, refused)"),
    "xclip_control_events_failed_total": ("counter", "Control outcome events that could not be published"),
    "xclip_pipeline_ready": ("gauge", "1 when /readyz answers ready: model running, sources started, sinks connected"),
    "xclip_sources": ("gauge", "Sources (cameras, Kafka frames members) by kind and state"),
    "xclip_source_restarts_total": ("counter", "Restarts of a source's actor after it failed or was lost"),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(samples: Iterable[tuple[str, dict[str, str], float]]) -> str:
    """``(name, labels, value)`` samples of catalogued metrics as exposition text, grouped by name."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        if name not in DRIVER_CATALOGUE:
            raise KeyError(f"metric {name!r} is not in DRIVER_CATALOGUE")
        by_name.setdefault(name, []).append((labels, value))
    lines = []
    for name, (kind, text) in DRIVER_CATALOGUE.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in by_name.get(name, []):
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")
    return "\n".join(lines) + "\n"
