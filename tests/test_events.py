"""Event building, JSON Schema files, configuration validation and control messages."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from xclip_stream.pipeline.control import Refused, apply_control, parse_control
from xclip_stream.pipeline.events import EventBuilder, Scored, encode_event, event_json, labelset_id
from xclip_stream.schemas import export
from xclip_stream.schemas.config import ConfigError, LabelSet, Thresholds, load_config, parse_config
from xclip_stream.schemas.windows import FrameWindow

LABELS = ("walking", "running", "falling")


def scored(i: int, logits=(0.0, 0.0, 5.0)) -> Scored:
    t0 = 1_700_000_000.0 + i
    w = FrameWindow("cam-1", i, np.zeros((4, 3, 8, 8), np.uint8), tuple(t0 + k * 0.25 for k in range(4)),
                    tuple(range(4 * i, 4 * i + 4)), tuple(i + k * 0.25 for k in range(4)))
    return Scored(w, LABELS, tuple(logits))


def builder(**kw) -> EventBuilder:
    labels = LabelSet(labels=list(LABELS), default_thresholds=Thresholds(on=0.8, off=0.5, min_on_windows=1,
                                                                                 min_off_windows=1))
    return EventBuilder("cam-1", "tiny", labels, clock=lambda: 1_700_000_100.0, **kw)


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((export.SCHEMA_DIR / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def test_score_event_fields_and_deterministic_id():
    score, start = builder().window_events(scored(0))
    assert score.top_label == "falling" and score.top_score == pytest.approx(0.98670, abs=1e-4)
    assert sum(score.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert (score.start_time, score.end_time) == (1_700_000_000.0, 1_700_000_000.75)
    assert (score.media_start, score.media_end, score.frame_count) == (0.0, 0.75, 4)
    assert (score.first_seq, score.last_seq) == (0, 3) and score.labelset_id == labelset_id(LABELS)
    assert score.latency_ms == pytest.approx((100 - 0.75) * 1000)
    assert score.event_id == builder().window_events(scored(0))[0].event_id  # replay: same id
    assert score.event_id != builder().window_events(scored(1))[0].event_id
    assert start.type == "start" and start.label == "falling"


def test_a_score_event_names_the_checkpoint_of_the_replica_that_scored_it():
    """Across a model roll the pipeline's model stays, the replica's changes: the event says which."""
    plain = builder().window_events(scored(0))[0]
    assert (plain.model, plain.checkpoint) == ("tiny", "")  # a replica that did not say
    s = scored(0)
    rolled = builder().window_events(Scored(s.window, s.labels, s.logits, "tiny-v2", "0123456789ab"))[0]
    assert (rolled.model, rolled.checkpoint) == ("tiny-v2", "0123456789ab")
    assert rolled.event_id == plain.event_id  # the same window: a consumer sees the duplicate and who scored it
    validator("score_event").validate(json.loads(encode_event(rolled)[1]))


def test_activity_events_debounce_to_one_incident():
    b = builder()
    events = [e for i in range(5) for e in b.window_events(scored(i))[1:]]
    events += b.window_events(scored(5, logits=(5.0, 0.0, 0.0)))[1:]  # walking now
    types = [(e.type, e.label) for e in events]
    assert types == [("start", "falling"), ("end", "falling"), ("start", "walking")]
    assert events[1].windows == 5 and events[0].incident_id == events[1].incident_id


def test_published_json_matches_the_committed_schemas_and_cloudevents_headers():
    b = builder()
    events = b.window_events(scored(0)) + b.flush()
    events.append(b.stream_event("gap", "rtsp://***@cam/x", "no frames", gap=(1.0, 5.0)))
    for event in events:
        key, value, headers = encode_event(event)
        data = json.loads(value)
        name = {"ScoreEvent": "score_event", "ActivityEvent": "activity_event", "StreamEvent": "stream_event"}[
            type(event).__name__]
        validator(name).validate(data)
        h = {k: v.decode() for k, v in headers}
        assert key == "cam-1" and h["ce_specversion"] == "1.0" and h["ce_id"] == event.event_id
        assert h["ce_type"] == data["event_type"] and h["ce_subject"] == "cam-1"
        assert h["content-type"] == "application/json" and h["ce_time"].endswith("Z")
    with pytest.raises(jsonschema.ValidationError):
        validator("score_event").validate({**event_json(events[0]), "scores": "high"})


def test_schema_files_are_up_to_date():
    for name, schema in export.schemas().items():
        path = export.SCHEMA_DIR / f"{name}.json"
        assert path.read_text() == export.render(schema), (
            f"{path} is stale: run python -m xclip_stream.schemas.export")


def test_config_errors_name_every_problem(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("model: {path: m}\nlabels: {labels: [a, a]}\ncameras:\n  - {id: 'bad id', url: x}\n"
                    "  - {id: c, url: y, options: {sample_fps: 0}, colour: red}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert str(path) in text and "duplicate labels: a" in text and "cameras.0.id" in text
    assert "cameras.1.options.sample_fps" in text and "cameras.1.colour" in text
    path.write_text("model: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="names label set 'night', which is not defined"):
        parse_config({"model": {"path": "m"}, "cameras": [{"id": "c", "url": "x", "labels": "night"}]})
    with pytest.raises(ConfigError, match="no sources"):
        parse_config({"model": {"path": "m"}, "labels": {"labels": ["a"]}})
    camera = {"labels": {"labels": ["a"]}, "cameras": [{"id": "c", "url": "x"}]}
    assert parse_config({"model": {"path": "m", "precision": "int8"}, **camera}).model.precision == "int8"
    with pytest.raises(ConfigError, match=r"model.precision.*'int8'"):  # the choices named
        parse_config({"model": {"path": "m", "precision": "int4"}, **camera})
    with pytest.raises(ConfigError, match=r"off \(0.9\) must not exceed on"):
        parse_config({"model": {"path": "m"}, "labels": {"labels": ["a"],
                      "default_thresholds": {"on": 0.5, "off": 0.9}}, "cameras": [{"id": "c", "url": "x"}]})


def test_camera_options_override_defaults():
    config = parse_config({"model": {"path": "m"}, "labels": {"labels": ["a"]}, "defaults": {"sample_fps": 2},
                           "cameras": [{"id": "c", "url": "x", "options": {"hop": 3}}]})
    options = config.stream_options(config.cameras[0].options)
    assert (options.sample_fps, options.hop) == (2.0, 3)


def test_control_messages_add_relabel_remove_and_refuse_bad_ones():
    config = parse_config({"model": {"path": "m"}, "labels": {"labels": ["a", "b"]},
                           "label_sets": {"night": {"labels": ["c"]}},
                           "cameras": [{"id": "c1", "url": "x.mp4"}]})
    config = apply_control(config, parse_control({"op": "add_camera", "camera": {"id": "c2", "url": "rtsp://h/s"}}))
    assert [c.id for c in config.cameras] == ["c1", "c2"]
    config = apply_control(config, {"op": "set_labels", "id": "c2", "labels": "night"})
    assert config.label_set(config.cameras[1].labels).labels == ["c"]
    config = apply_control(config, {"op": "remove_camera", "id": "c1"})
    assert [c.id for c in config.cameras] == ["c2"]
    with pytest.raises(ConfigError, match="no camera with id 'zz'"):
        apply_control(config, {"op": "remove_camera", "id": "zz"})
    with pytest.raises(ConfigError, match="names label set 'day'"):
        apply_control(config, {"op": "set_labels", "id": "c2", "labels": "day"})
    with pytest.raises(Refused, match="unknown op 'reboot'"):
        parse_control({"op": "reboot"})


def test_example_configuration_is_valid_including_yaml_on_off_keys():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "pipeline.yaml")
    assert [c.id for c in config.cameras] == ["lobby", "parking", "replay"]
    assert config.labels.thresholds["a person falling"].on == 0.5  # `on:` is not read as `true:`
    assert config.stream_options(config.cameras[2].options).sample_fps == 8


def test_a_clock_stepped_back_ends_open_incidents_instead_of_refusing_later_windows():
    """Frames whose producer's clock went back an hour: later windows start before earlier ones."""
    b = builder()
    first = [e for i in range(3) for e in b.window_events(scored(i))]
    assert [(e.type, e.label) for e in first[1:2]] == [("start", "falling")]
    back = scored(-3600)
    events = b.window_events(back)
    assert [getattr(e, "type", "score") for e in events[1:]] == ["end", "start"]
    ended, started = events[1], events[2]
    assert ended.end_time == 1_700_000_002.75 and started.start_time == back.window.start_time
    assert ended.incident_id != started.incident_id
    assert b.window_events(scored(-3599))[1:] == []  # in order again from there on
