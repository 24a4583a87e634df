"""Per-stream sampling by timestamp and the sliding window ring buffer."""

from __future__ import annotations

import numpy as np
import pytest

from xclip_stream.pipeline.windows import RateSampler, WindowBuffer


def kept_times(sampler: RateSampler, times) -> list[float]:
    return [round(t, 4) for t in times if sampler.keep(t)]


def test_sampler_keeps_the_target_rate_by_timestamp():
    times = [i / 30 for i in range(90)]  # 3 s at 30 fps
    kept = kept_times(RateSampler(10), times)
    assert len(kept) == 30
    assert np.allclose(np.diff(kept), 0.1, atol=0.011)


def test_sampler_on_uneven_source_does_not_drift():
    times = [i * 0.04 for i in range(250)]  # 10 s at 25 fps, sampled at 10 fps (not a divisor)
    kept = kept_times(RateSampler(10), times)
    assert len(kept) == 100  # exactly the target rate over the stream, no drift
    assert max(np.diff(kept)) <= 0.12 + 1e-9


def test_sampler_restarts_after_a_gap_and_when_time_runs_backwards():
    sampler = RateSampler(5)
    assert kept_times(sampler, [0.0, 0.1, 0.2]) == [0.0, 0.2]
    assert kept_times(sampler, [10.0, 10.1, 10.2]) == [10.0, 10.2]  # gap: schedule restarts at 10.0
    assert kept_times(sampler, [1.0, 1.1, 1.2]) == [1.0, 1.2]  # a restarted stream
    assert kept_times(RateSampler(None), [0.0, 0.01, 0.02]) == [0.0, 0.01, 0.02]
    with pytest.raises(ValueError, match="positive"):
        RateSampler(0)


def test_an_absolute_sampler_read_again_from_any_kept_frame_keeps_the_same_frames():
    """What a Kafka member re-reading a partition from a window's first frame relies on: the frames
    kept from there on do not depend on what came before. A schedule started at the first frame
    seen does depend on it (the member before it started elsewhere)."""
    rng = np.random.default_rng(7)
    times = list(1796000000.0 + np.cumsum(rng.uniform(0.09, 0.16, 400)))  # a jittery 8 fps camera
    whole = kept_times(RateSampler(4, absolute=True), times)
    assert 0.9 * 4 * (times[-1] - times[0]) <= len(whole) <= 4 * (times[-1] - times[0]) + 2  # partial ends
    assert min(np.diff(whole)) > 0 and max(np.diff(whole)) <= 0.25 + 0.16 + 1e-6
    def from_(start: float) -> list[float]:  # the stream read again from the frame kept at ``start``
        return times[[round(t, 4) for t in times].index(start):]

    for start in whole[1::17]:
        assert kept_times(RateSampler(4, absolute=True), from_(start)) == [t for t in whole if t >= start]
    first = kept_times(RateSampler(4), times)
    assert any(kept_times(RateSampler(4), from_(s)) != [t for t in first if t >= s] for s in first[1::17])
    sampler = RateSampler(4, absolute=True)  # time running backwards starts again
    assert kept_times(sampler, [10.0, 10.1, 10.3]) == [10.0, 10.3] and kept_times(sampler, [5.0]) == [5.0]


def frame(i: int) -> np.ndarray:
    return np.full((3, 4, 4), i % 256, dtype=np.uint8)


def feed(buffer: WindowBuffer, seqs, dt: float = 0.125):
    return [w for s in seqs if (w := buffer.push(s, s * dt, frame(s))) is not None]


def test_windows_every_hop_frames_with_overlap():
    windows = feed(WindowBuffer("cam-1", num_frames=8, hop=4), range(20))
    assert [w.frame_seqs[0] for w in windows] == [0, 4, 8, 12]
    w = windows[1]
    assert w.camera_id == "cam-1" and w.index == 1 and w.frame_count == 8
    assert w.frames.shape == (8, 3, 4, 4) and list(w.frames[:, 0, 0, 0]) == list(range(4, 12))
    assert (w.start_time, w.end_time) == (4 * 0.125, 11 * 0.125)


def test_hop_longer_than_window_skips_frames():
    windows = feed(WindowBuffer("c", num_frames=4, hop=6), range(20))
    assert [w.frame_seqs for w in windows] == [(0, 1, 2, 3), (6, 7, 8, 9), (12, 13, 14, 15)]


def test_a_gap_empties_the_ring_so_no_window_spans_it():
    buffer = WindowBuffer("c", num_frames=4, hop=4, max_gap_seconds=1.0)
    seqs = [0, 1, 2, 3, 4, 5, 30, 31, 32, 33, 34]  # seq 6..29 lost: 3 s of stream
    windows = feed(buffer, seqs)
    assert [w.frame_seqs for w in windows] == [(0, 1, 2, 3), (30, 31, 32, 33)]
    assert buffer.gaps == 1


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="positive"):
        WindowBuffer("c", num_frames=0, hop=1)
    with pytest.raises(ValueError, match="max_gap_seconds"):
        WindowBuffer("c", num_frames=8, hop=1, max_gap_seconds=0)


def test_time_going_back_empties_the_ring():
    """A producer's clock stepped back: no window may mix frames from both sides of the step."""
    buffer = WindowBuffer("cam", num_frames=3, hop=3, max_gap_seconds=2.0)
    image = np.zeros((3, 4, 4), np.uint8)
    assert buffer.push(0, 100.0, image) is None and buffer.push(1, 100.5, image) is None
    assert buffer.push(2, 40.0, image) is None  # an hour... or a minute back
    assert buffer.gaps == 1
    assert buffer.push(3, 40.5, image) is None
    window = buffer.push(4, 41.0, image)
    assert window is not None and window.frame_times == (40.0, 40.5, 41.0)
