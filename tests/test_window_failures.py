"""A window is never lost without a word: model checks, per-window isolation in a batch, the failed
event, request timeouts and the stuck-replica health check (no Ray here; see test_replica_faults)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest

from xclip_stream.actors.scoring import APP_ERROR_RETRIES, ScoringLoop
from xclip_stream.pipeline.events import EventBuilder, encode_event, labelset_id
from xclip_stream.pipeline.model_check import LabelChecker, ModelMismatch
from xclip_stream.pipeline.scoring import BatchScorer, WindowRefused
from xclip_stream.pipeline.stall import StallWatch
from xclip_stream.pipeline.stream import PendingWindows
from xclip_stream.schemas import export
from xclip_stream.schemas.config import ConfigError, LabelSet, parse_config
from xclip_stream.schemas.events import ScoreEvent, WindowFailed
from xclip_stream.schemas.windows import FrameWindow

GOOD = ("a person walking", "a car")
OTHER = ("a person running", "an empty scene")


def window(i: int, camera: str = "cam-a", size: int = 32) -> FrameWindow:
    t0 = 1_700_000_000.0 + i
    frames = np.random.default_rng(i).integers(0, 255, (4, 3, size, size), dtype=np.uint8)
    return FrameWindow(camera, i, frames, tuple(t0 + k * 0.25 for k in range(4)), tuple(range(4 * i, 4 * i + 4)))


@pytest.fixture(scope="module")
def scorer(tiny_checkpoint):
    return BatchScorer.load(str(tiny_checkpoint), device="cpu", precision="float32", max_labels=5)


def test_failed_event_is_bounded_one_line_deterministic_and_matches_its_schema():
    builder = EventBuilder("cam-a", "tiny", LabelSet(labels=list(GOOD)))
    reason = "RuntimeError: boom\n  Traceback line\n" + "x" * 2000
    event = builder.window_failed(window(3), GOOD, reason, attempts=4, first_seq=120, last_seq=123)
    assert isinstance(event, WindowFailed) and "\n" not in event.reason and len(event.reason) == 500
    assert event.reason.startswith("RuntimeError: boom Traceback line")
    assert (event.window_index, event.first_seq, event.last_seq, event.attempts) == (3, 120, 123, 4)
    assert event.labelset_id == labelset_id(GOOD) and event.model == "tiny"
    assert event.event_id == builder.window_failed(window(3), GOOD, "other", 1).event_id  # replay: same id
    assert event.event_id != builder.window_failed(window(4), GOOD, "other", 1).event_id
    key, value, headers = encode_event(event)
    data = json.loads(value)
    schema = json.loads((export.SCHEMA_DIR / "window_failed_event.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(data)
    assert data["event_type"] == dict(headers)["ce_type"].decode() == "xclip.window.failed" and key == "cam-a"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**data, "attempts": "many"})


def test_label_checker_refuses_what_the_text_tower_cannot_encode(tiny_checkpoint):
    checker = LabelChecker.load(tiny_checkpoint, max_labels=3)
    assert checker.max_tokens == 77 and checker.problems(list(GOOD)) == []
    assert checker.problems(["a", "b", "c", "d"]) == ["4 labels, more than serve.max_labels (3)"]
    [long] = checker.problems(["walk " * 80, "a car"])
    assert long.startswith("label 'walk walk") and "tokens, over the model's 75" in long
    small_vocab = LabelChecker(checker.tokenizer, 77, vocab_size=300)  # a tokenizer bigger than the model
    [mismatch] = small_vocab.problems(["zebra crossing quickly"])
    assert "text model has only 300" in mismatch and "do not match" in mismatch
    config = parse_config({"model": {"path": "m"}, "labels": {"labels": list(GOOD)},
                           "label_sets": {"big": {"labels": ["a", "b", "c", "d"]}},
                           "cameras": [{"id": "c1", "url": "x", "labels": ["ok", "walk " * 80]}]})
    with pytest.raises(ConfigError) as e:
        checker.check_config(config)
    assert "label_sets.big: 4 labels" in str(e.value) and "camera 'c1': label 'walk" in str(e.value)


def test_a_bad_window_or_label_set_fails_alone_in_a_mixed_batch(scorer):
    good = [window(i).frames for i in range(3)]
    frames = [good[0], window(9, size=48).frames, good[1], good[2], good[0]]
    labels = [GOOD, GOOD, OTHER, ("a", "b", "c", "d", "e", "f"), GOOD]
    out = scorer.score_each(frames, labels)
    assert isinstance(out[1], WindowRefused) and "got uint8 (4, 3, 48, 48)" in out[1].reason
    assert isinstance(out[3], WindowRefused) and "6 labels, more than serve.max_labels (5)" in out[3].reason
    want = scorer.score([good[0], good[1], good[0]], [GOOD, OTHER, GOOD])
    np.testing.assert_allclose([out[0], out[2], out[4]], want, atol=1e-5)


def test_a_batch_that_fails_in_the_model_is_narrowed_down_to_its_culprit(scorer, monkeypatch):
    """An error the checks did not foresee: the batch is scored again per label set, then per
    window, so the other cameras' windows still score."""
    real = scorer.text_features

    def text_features(labels):
        if "a car" in labels:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(labels)

    monkeypatch.setattr(scorer, "text_features", text_features)
    frames = [window(i).frames for i in range(4)]
    out = scorer.score_each(frames, [OTHER, GOOD, OTHER, OTHER])
    assert isinstance(out[1], WindowRefused) and "illegal memory access" in out[1].reason
    monkeypatch.undo()
    want = scorer.score([frames[0], frames[2], frames[3]], [OTHER] * 3)
    np.testing.assert_allclose([out[0], out[2], out[3]], want, atol=1e-5)


def test_stall_watch_fails_only_a_replica_that_holds_work_and_completes_nothing():
    now = [0.0]
    watch = StallWatch(10.0, clock=lambda: now[0])
    now[0] = 100.0
    assert watch.problem() is None  # idle for long: not stuck
    watch.request_started()
    now[0] = 109.0
    assert watch.problem() is None
    watch.batch_done()
    now[0] = 118.0
    assert watch.problem() is None  # a batch 9 s ago
    now[0] = 120.0
    assert "1 request(s) waiting and no batch completed for 11 s" in watch.problem()
    watch.request_finished()
    assert watch.problem() is None


# -- the scoring loop, against a stand-in for the Serve handle (the boundary under test is the loop) --

class Replica:
    """Answers ``score.remote`` from a script: each entry is logits, an exception, or "hang"."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0
        self.score = SimpleNamespace(remote=self._remote)

    def _remote(self, frames, labels):
        self.calls += 1
        step = self.script.pop(0) if self.script else [0.0] * len(labels)
        future = asyncio.get_running_loop().create_future()
        if isinstance(step, BaseException):
            future.set_exception(step)
        elif step != "hang":
            future.set_result(step)
        return future


def run_loop(replica: Replica, windows: list[FrameWindow], **kw) -> tuple[ScoringLoop, list]:
    pending = PendingWindows(8, drop_oldest=False)
    for w in windows:
        pending.put(w)
    pending.close()
    published = []
    builder = EventBuilder("cam-a", "tiny", LabelSet(labels=list(GOOD)))
    loop = ScoringLoop(replica, pending, lambda _: builder, lambda w, events: published.append((w.index, events)),
                       max_in_flight=1, **kw)
    asyncio.run(asyncio.wait_for(loop.run(), 60))
    return loop, published


def test_a_refused_window_is_published_as_failed_and_counted_and_the_next_one_scores():
    replica = Replica([ModelMismatch("6 labels, more than serve.max_labels (5)"), [1.0, 2.0]])
    loop, published = run_loop(replica, [window(0), window(1)], redact=lambda t: t.replace("5", "*"))
    [(first, [failed]), (second, [score, *_])] = published
    assert (first, second) == (0, 1) and isinstance(score, ScoreEvent)
    assert isinstance(failed, WindowFailed) and failed.attempts == 1 and replica.calls == 2  # no retry
    assert failed.reason == "ModelMismatch: 6 labels, more than serve.max_labels (*)"  # redacted
    assert (loop.stats.failed, loop.stats.scored) == (1, 1)


def test_other_model_errors_are_retried_then_published_as_failed():
    replica = Replica([ValueError("nan in the logits")] * 10)
    loop, published = run_loop(replica, [window(0)])
    [(_, [failed])] = published
    assert failed.attempts == APP_ERROR_RETRIES + 1 == replica.calls and "nan in the logits" in failed.reason
    assert (loop.stats.failed, loop.stats.retries) == (1, APP_ERROR_RETRIES)


def test_a_call_without_an_answer_times_out_and_is_retried_not_failed():
    replica = Replica(["hang", "hang", [3.0, 1.0]])
    loop, published = run_loop(replica, [window(0)], request_timeout_s=0.2)
    [(_, [score, *_])] = published
    assert isinstance(score, ScoreEvent) and score.top_label == GOOD[0]
    assert (loop.stats.timeouts, loop.stats.failed, replica.calls) == (2, 0, 3)
