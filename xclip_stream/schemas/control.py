"""Events of the control plane: each control-topic record is either applied or refused, and says so.

Published on the events topic (key = the camera the message is about, or "control"), so a refused
change is as visible to operators as a camera going down; ``reason`` never carries credentials.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CONTROL_OUTCOMES = ("applied", "refused")


@dataclass(frozen=True)
class ControlEvent:
    """One control-topic record's outcome. ``op`` and ``camera_id`` are empty when the record was
    refused before they could be read; ``partition``/``offset`` locate the record in ``topic``."""

    event_id: str
    outcome: str
    op: str
    camera_id: str
    reason: str
    topic: str
    partition: int
    offset: int
    time: float

    def __post_init__(self):
        if self.outcome not in CONTROL_OUTCOMES:
            raise ValueError(f"control outcome must be one of {CONTROL_OUTCOMES}, got {self.outcome!r}")

    def to_json_dict(self) -> dict:
        return asdict(self)
