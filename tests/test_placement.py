"""Where the camera actors and Kafka frames members go: ``placement`` validated, handed to Ray's
``.options()`` by the supervisor, and an actor no node has room for reported as pending (not a
silent hang) and stopped without waiting for a run that never began."""

from __future__ import annotations

import logging
import time

import pytest

from xclip_stream.actors import camera_hosts as hosts_module
from xclip_stream.actors import supervisor as supervisor_module
from xclip_stream.actors.camera_hosts import CameraHosts, actor_options
from xclip_stream.actors.output import SinkSpec
from xclip_stream.actors.supervisor import Supervisor
from xclip_stream.pipeline.scoring import ModelInfo
from xclip_stream.schemas.config import AUTO_CAMERAS_PER_PROCESS, ConfigError, PlacementConfig, parse_config

MODEL = ModelInfo(name="m", num_frames=4, video_processor={})


def config(placement: dict | None = None, **extra) -> dict:
    data = {"model": {"path": "m"}, "labels": {"labels": ["a"]},
            "cameras": [{"id": "c1", "url": "rtsp://cam.example/a"}],
            "kafka": {"bootstrap": "127.0.0.1:9092", "frames": [{"topic": "f", "members": 2}]}, **extra}
    if placement is not None:
        data["placement"] = placement
    return data


def test_placement_validated():
    assert parse_config(config()).placement == PlacementConfig()  # default: Ray decides, as before
    good = parse_config(config({"resources": {"xclip_stream": 1}, "spread": True})).placement
    assert good.resources == {"xclip_stream": 1.0} and good.spread
    for placement, expected in (
        ({"resources": {"CPU": 1}}, "placement.resources: Value error, 'CPU' is not a custom resource"),
        ({"resources": {"GPU": 1}}, "'GPU' is not a custom resource"),
        ({"resources": {"node:10.0.0.1": 1}}, "is not a custom resource"),
        ({"resources": {"xclip_stream": 0}}, "not an amount"),
        ({"resources": {"xclip_stream": "one"}}, "placement.resources.xclip_stream"),
        ({"spreads": True}, "placement.spreads"),
        ({"cameras_per_process": 0}, "not a count in \\[1, 64\\]"),
        ({"cameras_per_process": "many"}, "placement.cameras_per_process"),
    ):
        with pytest.raises(ConfigError, match=expected):
            parse_config(config(placement))


def test_actor_options():
    assert actor_options(PlacementConfig(), "n") == {"name": "n"}
    assert actor_options(PlacementConfig(resources={"xclip_stream": 1}, spread=True), "n") == {
        "name": "n", "resources": {"xclip_stream": 1.0}, "scheduling_strategy": "SPREAD"}
    # an actor that can hold three cameras takes three slots
    assert actor_options(PlacementConfig(resources={"xclip_stream": 1}), "n", 3)["resources"] == {"xclip_stream": 3.0}


def test_cameras_per_process_auto_is_one_and_a_count_is_kept():
    assert PlacementConfig().camera_capacity() == AUTO_CAMERAS_PER_PROCESS == 1
    assert PlacementConfig(resources={"xclip_stream": 1}).camera_capacity() == 1
    assert PlacementConfig(resources={"xclip_stream": 1}, cameras_per_process=4).camera_capacity() == 4
    assert PlacementConfig(cameras_per_process=1).camera_capacity() == 1


class _Method:
    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def remote(self, *args, **kwargs):
        self.calls.append(self.name)
        return f"ref:{self.name}:{len(self.calls)}"


class _FakeActorClass:
    """Stands in for the Ray actor classes at the boundary under test: what ``.options()`` gets."""

    def __init__(self):
        self.options_seen: list[dict] = []
        self.calls: list[str] = []

    def options(self, **options):
        self.options_seen.append(options)
        return self

    def remote(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return _Method(self.calls, name)


def test_supervisor_hands_placement_to_every_actor(monkeypatch):
    cameras, members = _FakeActorClass(), _FakeActorClass()
    monkeypatch.setattr(hosts_module, "CameraActor", cameras)
    monkeypatch.setattr(supervisor_module, "KafkaFramesActor", members)
    placed = parse_config(config({"resources": {"xclip_stream": 1}, "spread": True}))
    Supervisor(placed, MODEL, SinkSpec(None)).start()
    assert cameras.options_seen == [{"name": "xclip:camera:c1:0", "resources": {"xclip_stream": 1.0},
                                     "scheduling_strategy": "SPREAD"}]
    assert [o["resources"] for o in members.options_seen] == [{"xclip_stream": 1.0}] * 2
    assert {o["scheduling_strategy"] for o in members.options_seen} == {"SPREAD"}
    assert "__ray_ready__" in cameras.calls and "run" in cameras.calls

    plain = _FakeActorClass()
    monkeypatch.setattr(hosts_module, "CameraActor", plain)
    monkeypatch.setattr(supervisor_module, "KafkaFramesActor", _FakeActorClass())
    Supervisor(parse_config(config()), MODEL, SinkSpec(None)).start()
    assert plain.options_seen == [{"name": "xclip:camera:c1:0"}]  # local runs: one actor per camera by default


def test_cameras_fill_shared_actors_and_an_actor_goes_with_its_last_camera(monkeypatch):
    """Five cameras, two per actor: three actors; a camera let go frees its place for the next one;
    an actor found dead takes no new camera and is ended; an emptied one is ended."""
    killed = []
    monkeypatch.setattr(hosts_module, "CameraActor", _FakeActorClass())
    monkeypatch.setattr(hosts_module.ray, "kill", lambda actor: killed.append(actor))
    pool = CameraHosts(MODEL, SinkSpec(None), None, 60.0)
    two = {"resources": {}, "spread": False, "cameras_per_process": 2}
    hosts = {c: pool.place(c, 0, two) for c in "abcde"}
    made = [h.name for h in pool.hosts]
    assert made == ["xclip:cameras:1", "xclip:cameras:2", "xclip:cameras:3"]
    assert hosts["a"] is hosts["b"] and hosts["c"] is hosts["d"] and hosts["e"] is not hosts["d"]
    pool.release(hosts["a"], "a")
    assert killed == [] and pool.place("f", 0, two) is hosts["a"]  # the room "a" left
    pool.release(hosts["c"], "c", dead=True)  # its actor died: "d" goes too, and nothing new goes there
    assert len(killed) == 1 and pool.place("g", 0, two) is hosts["e"]
    pool.release(hosts["d"], "d", dead=True)
    assert hosts["c"] not in pool.hosts
    pool.release(hosts["e"], "e")
    pool.release(hosts["e"], "g")
    assert hosts["e"] not in pool.hosts and len(killed) == 3
    # another placement never shares an actor: one per camera, named after it
    one = pool.place("h", 2, {"resources": {"xclip_stream": 1.0}, "spread": False, "cameras_per_process": "auto"})
    assert one.name == "xclip:camera:h:2" and one.capacity == 1 and one is not hosts["b"]


def test_changed_placement_restarts_the_actors():
    """A placement change is a change of every actor's spec, so ``apply`` restarts them (relabel-only
    changes stay in place)."""
    sup = Supervisor(parse_config(config()), MODEL, SinkSpec(None))
    before = sup._desired(sup.config)
    after = sup._desired(parse_config(config({"resources": {"xclip_stream": 1}})))
    assert before.keys() == after.keys() and all(before[k] != after[k] for k in before)


def test_actor_without_a_node_stays_pending_and_is_reported(ray_session, caplog):
    """Real Ray with no node offering the resource: the actor (two cameras share it) is never placed;
    health says so at once for both (no 10 s wait on the actor), a warning names what it asks for,
    and stop() is prompt."""
    import ray

    caplog.set_level(logging.INFO, logger="xclip_stream.actors.supervisor")
    data = config({"resources": {"xclip_test_absent": 1}, "cameras_per_process": 2})
    data["cameras"].append({"id": "c2", "url": "rtsp://cam.example/b"})
    del data["kafka"]
    sup = Supervisor(parse_config(data), MODEL, SinkSpec(None))
    sup.pending_report_s = 1.0
    sup.start()
    deadline = time.monotonic() + 10
    while "not started after" not in caplog.text:
        assert time.monotonic() < deadline, "no warning about the pending actor"
        sup.poll(0.2)
    assert "camera:c1 not started after" in caplog.text and "xclip_test_absent 2" in caplog.text  # a slot a camera
    began = time.monotonic()
    health = sup.health()
    assert [health[f"camera:{c}"]["state"] for c in ("c1", "c2")] == ["pending"] * 2
    assert health["camera:c1"]["pending_s"] >= 1.0
    assert sup.take_output() == []
    assert time.monotonic() - began < 2.0
    began = time.monotonic()
    sup.stop(timeout=8)
    assert time.monotonic() - began < 4.0 and sup.done
    assert "stopped camera:c1 before it started" in caplog.text and "stopped camera:c2 before it started" in caplog.text
    deadline = time.monotonic() + 10
    while True:  # killed, not left pending (the kill is asynchronous)
        try:
            ray.get_actor("xclip:cameras:1")
        except ValueError:
            break
        assert time.monotonic() < deadline, "the pending actor was left behind"
        time.sleep(0.2)
