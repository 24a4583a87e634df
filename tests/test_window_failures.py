"""A window is never lost without a word: model checks, per-window isolation in a batch, the failed
event, request timeouts and the stuck-replica health check (no Ray here; see test_replica_faults)."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
import torch

from xclip_stream.actors.scoring import APP_ERROR_RETRIES, NON_FINITE_RETRIES, ScoringLoop, send_events
from xclip_stream.pipeline.events import EventBuilder, encode_event, labelset_id
from xclip_stream.pipeline.model_check import LabelChecker, ModelMismatch
from xclip_stream.pipeline.scoring import BatchScorer, NonFiniteScores, ReplicaScores, WindowRefused
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


def test_events_name_the_checkpoint_each_replica_reports_and_a_rolled_one_is_logged_once(caplog):
    """Mid-roll, old and new replicas answer side by side: each event names the checkpoint that
    scored its window; one that differs from the pipeline's model is said once, not per window."""
    old, new = ReplicaScores([1.0, 2.0], "tiny", "aaaaaaaaaaaa"), ReplicaScores([2.0, 1.0], "tiny-v2", "bbbbbbbbbbbb")
    with caplog.at_level(logging.WARNING, logger="xclip_stream.actors.scoring"):
        _, published = run_loop(Replica([old, new, new, [0.0, 0.0]]), [window(i) for i in range(4)])
    scores = [events[0] for _, events in published]
    assert [(e.model, e.checkpoint) for e in scores] == [
        ("tiny", "aaaaaaaaaaaa"), ("tiny-v2", "bbbbbbbbbbbb"), ("tiny-v2", "bbbbbbbbbbbb"), ("tiny", "")]
    assert [r.getMessage().count("'tiny-v2'") for r in caplog.records] == [1]


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


# -- NaN/inf logits: the window fails like any other the model fails on; no event carries them --

def poisoned_window(i: int) -> FrameWindow:
    """A window with one flat grey frame, the input the poisoned patch embedding (below) overflows on."""
    w = window(i)
    w.frames[2] = 128
    return w


@pytest.fixture
def nan_on_flat_frames(scorer):
    """The real model, made to overflow on some input only (as a bf16 overflow or a bad weight would):
    its patch embedding writes NaN for frames of one colour. The NaN then goes through the
    vision tower, the MIT and the prompt generator like any value; ``calls`` counts forward passes."""
    calls = []

    def hook(module, inputs, output):
        calls.append(len(inputs[0]))
        flat = inputs[0].flatten(2).std(dim=2).amax(dim=1) == 0  # (B*T,) frames of one colour
        return output.masked_fill(flat[:, None, None, None], float("nan")) if flat.any() else output

    assert scorer.encoder.model is scorer.model  # float32 on a CPU: no cast copy to hook instead
    handle = scorer.model.vision_model.embeddings.patch_embedding.register_forward_hook(hook)
    yield calls
    handle.remove()


class ScorerReplica(Replica):
    """The Serve handle as the replica answers it (``XCLIPReplica.score``), over a real ``BatchScorer``."""

    def __init__(self, scorer: BatchScorer):
        super().__init__([])
        self.scorer = scorer

    def _remote(self, frames, labels):
        self.calls += 1
        future = asyncio.get_running_loop().create_future()
        [result] = self.scorer.score_each([frames], [labels])
        if isinstance(result, WindowRefused):
            future.set_exception(result.error(result.reason))
        else:
            future.set_result(result)
        return future


def strict_json(value: bytes) -> dict:
    """JSON as a strict consumer reads it: NaN, Infinity and -Infinity are errors."""
    def refuse(constant):
        raise ValueError(f"{constant} in an event")
    return json.loads(value, parse_constant=refuse)


def test_a_window_with_nan_logits_fails_alone_and_its_batch_neighbours_score(scorer, nan_on_flat_frames):
    frames = [window(0).frames, poisoned_window(1).frames, window(2).frames, window(3).frames]
    labels = [GOOD, GOOD, OTHER, GOOD]
    out = scorer.score_each(frames, labels)
    assert nan_on_flat_frames == [4 * 4]  # one forward pass of the 4 windows: no re-scoring in parts
    refused = out[1]
    assert isinstance(refused, WindowRefused) and refused.error is NonFiniteScores
    assert refused.reason == ("non-finite scores from the model: 2 of 2 labels NaN/inf (a broken checkpoint, "
                              "an overflow at this precision or a faulty device)")
    with pytest.raises(NonFiniteScores, match=r"^window 1 of 4: non-finite scores from the model: 2 of 2"):
        scorer.score(frames, labels)  # offline callers (classify) get the error, not NaN scores
    alone = [scorer.score([frames[i]], [labels[i]])[0] for i in (0, 2, 3)]  # nothing spread across the batch
    assert np.isfinite(alone).all()
    np.testing.assert_allclose([out[0], out[2], out[3]], alone, atol=1e-5)


def test_a_label_set_with_nan_text_features_fails_its_windows_and_is_not_cached(scorer):
    """Text features are cached per label set: NaN ones (a transient fault) must not stay."""
    bad_set = ("a person falling", "a car", "an empty scene")

    def hook(module, inputs, output):  # label 1 of the three-label set overflows
        return output.index_fill(0, torch.tensor([1]), float("nan")) if len(output) == 3 else output

    handle = scorer.model.text_projection.register_forward_hook(hook)
    try:
        out = scorer.score_each([window(0).frames, window(1).frames], [bad_set, GOOD])
    finally:
        handle.remove()
    assert isinstance(out[0], WindowRefused) and out[0].error is NonFiniteScores
    assert out[0].reason == ("non-finite scores from the model: 1 of 3 labels NaN/inf "
                             "(the label set's text features are NaN/inf)")
    assert np.isfinite(out[1]).all() and bad_set not in scorer._text
    [again] = scorer.score_each([window(0).frames], [bad_set])  # the fault is gone: the set scores
    assert np.isfinite(again).all() and bad_set in scorer._text


def test_nan_logits_are_retried_once_then_published_as_failed_and_no_event_carries_nan(
        scorer, nan_on_flat_frames):
    replica = ScorerReplica(scorer)
    loop, published = run_loop(replica, [window(0), poisoned_window(1), window(2)])
    assert [index for index, _ in published] == [0, 1, 2]
    [failed] = published[1][1]
    assert isinstance(failed, WindowFailed) and failed.attempts == NON_FINITE_RETRIES + 1
    assert failed.reason.startswith("NonFiniteScores: non-finite scores from the model: 2 of 2 labels NaN/inf")
    assert (loop.stats.scored, loop.stats.failed, loop.stats.retries) == (2, 1, NON_FINITE_RETRIES)
    assert replica.calls == 3 + NON_FINITE_RETRIES
    schema = json.loads((export.SCHEMA_DIR / "window_failed_event.json").read_text())
    for _, events in published:
        for event in events:
            data = strict_json(encode_event(event)[1])
            if isinstance(event, WindowFailed):
                jsonschema.Draft202012Validator(schema).validate(data)
            else:
                assert all(np.isfinite(list(data.get("scores", {}).values())))


def test_scores_no_event_can_carry_fail_the_window_instead_of_the_loop():
    """A replica that does not check its logits: the score event refuses NaN/inf, the loop goes on."""
    replica = Replica([[float("nan"), 1.0], [float("inf"), 0.0], [1.0, 2.0]])
    loop, published = run_loop(replica, [window(0), window(1), window(2)])
    [(_, [nan]), (_, [inf]), (_, [score, *_])] = published
    assert [index for index, _ in published] == [0, 1, 2]
    assert isinstance(nan, WindowFailed) and nan.attempts == 1
    assert nan.reason == inf.reason == "ValueError: non-finite scores: 1 of 2 labels NaN/inf"
    assert isinstance(score, ScoreEvent) and (loop.stats.failed, loop.stats.scored) == (2, 1)


def test_an_event_that_cannot_be_encoded_is_refused_whole_before_anything_is_sent():
    builder = EventBuilder("cam-a", "tiny", LabelSet(labels=list(GOOD)))
    good = builder.stream_event("connected", "rtsp://cam")
    bad = builder.stream_event("gap", "rtsp://cam", gap=(float("nan"), 1.0))
    sent = []
    delivery = SimpleNamespace(submit=lambda *record, on_ack: sent.append(record))
    with pytest.raises(ValueError, match="not JSON compliant"):
        send_events(delivery, "events", [good, bad])
    assert sent == []
    send_events(delivery, "events", [good])
    assert len(sent) == 1 and strict_json(sent[0][2])["state"] == "connected"
