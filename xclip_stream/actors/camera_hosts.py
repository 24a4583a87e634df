"""Which camera actor (process) each camera runs in: the supervisor's bookkeeping of shared actors.

A camera goes to a live actor of its placement that has room, else to a new one; an actor whose
last camera is released is ended. An actor found dead takes no more cameras: each of its cameras
is restarted by the supervisor and placed again. With room for one camera, an actor is named after
its camera and restart (``xclip:camera:{id}:{n}``, as operators find it); a shared one is
``xclip:cameras:{n}``, and every camera's health names its actor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import ray

from ..pipeline.scoring import ModelInfo
from ..schemas.config import PlacementConfig
from .camera import CameraActor
from .output import SinkSpec


@dataclass
class Host:
    name: str
    actor: object
    ready: object  # its __ray_ready__ ref: resolved once placed and constructed
    capacity: int
    placement: dict
    cameras: set[str] = field(default_factory=set)
    dead: bool = False


def actor_options(placement: PlacementConfig, name: str, slots: int = 1) -> dict:
    """``.options()`` of a camera or Kafka-member actor: its name and ``placement`` (resources it asks
    for on top of the class's 0.1 CPU, ``slots`` times: one per camera it can hold, and the SPREAD
    strategy)."""
    options: dict = {"name": name}
    if placement.resources:
        options["resources"] = {k: v * slots for k, v in placement.resources.items()}
    if placement.spread:
        options["scheduling_strategy"] = "SPREAD"
    return options


class CameraHosts:
    def __init__(self, model: ModelInfo, sink: SinkSpec, max_windows: int | None, request_timeout_s: float):
        self.model, self.sink = model, sink
        self.max_windows, self.request_timeout_s = max_windows, request_timeout_s
        self.hosts: list[Host] = []
        self._seq = itertools.count(1)

    def place(self, camera_id: str, restarts: int, placement: dict) -> Host:
        """The actor ``camera_id`` is to run in (made here when none of its placement has room)."""
        config = PlacementConfig.model_validate(placement)
        capacity = config.camera_capacity()
        host = next((h for h in self.hosts if not h.dead and h.placement == placement and h.capacity == capacity
                     and len(h.cameras) < h.capacity), None)
        if host is None:
            name = f"xclip:camera:{camera_id}:{restarts}" if capacity == 1 else f"xclip:cameras:{next(self._seq)}"
            actor = CameraActor.options(**actor_options(config, name, capacity)).remote(
                self.model, self.sink, self.max_windows, self.request_timeout_s)
            host = Host(name, actor, actor.__ray_ready__.remote(), capacity, placement)
            self.hosts.append(host)
        host.cameras.add(camera_id)
        return host

    def release(self, host: Host, camera_id: str, dead: bool = False) -> None:
        """``camera_id`` no longer runs in ``host`` (``dead``: the actor was found dead); an actor
        left with no camera, or dead, is ended."""
        host.cameras.discard(camera_id)
        host.dead = host.dead or dead
        if host.dead or not host.cameras:
            ray.kill(host.actor)
        if not host.cameras and host in self.hosts:
            self.hosts.remove(host)
