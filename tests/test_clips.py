"""Window planning and decoding of video files."""

from __future__ import annotations

import pytest

from xclip_stream.pipeline.clips import WindowSampling, plan_windows, probe, read_windows

from .media import read_index, write_index_video


def test_segment_centres_over_whole_video():
    # The paper's evaluation: index_i = int((i + 0.5) * n / T).
    assert plan_windows(80, 25.0, WindowSampling(num_frames=8)) == [(5, 15, 25, 35, 45, 55, 65, 75)]
    assert plan_windows(8, 25.0, WindowSampling(num_frames=8)) == [tuple(range(8))]


def test_windows_of_seconds_with_hop():
    sampling = WindowSampling(num_frames=4, window_seconds=1.0, hop_seconds=0.5)
    windows = plan_windows(40, 16.0, sampling)  # 16-frame windows every 8 frames
    assert windows[0] == (2, 6, 10, 14)
    assert windows[1] == (10, 14, 18, 22)
    assert len(windows) == 4  # starts 0, 8, 16, 24; a window from 32 would need frames up to 47


def test_stride_windows_back_to_back():
    windows = plan_windows(20, 30.0, WindowSampling(num_frames=4, stride=2))
    assert windows == [(0, 2, 4, 6), (8, 10, 12, 14)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=8, window_seconds=1.0, stride=2), "not both"),
        (dict(num_frames=0), "num_frames"),
        (dict(num_frames=8, hop_seconds=1.0), "hop_seconds needs"),
        (dict(num_frames=8, stride=0), "stride"),
    ],
)
def test_bad_sampling_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowSampling(**kwargs)


def test_too_few_frames_is_a_clear_error():
    with pytest.raises(ValueError, match="has 5 frames, too few"):
        plan_windows(5, 25.0, WindowSampling(num_frames=8))


def test_read_windows_decodes_exactly_the_planned_frames(tmp_path):
    path = write_index_video(tmp_path / "counter.mp4", num_frames=30, fps=10)
    assert probe(path) == (30, 10.0)
    windows = list(read_windows(path, WindowSampling(num_frames=4, window_seconds=1.2, hop_seconds=0.6)))
    assert [w.frame_indices for w in windows] == plan_windows(30, 10.0, WindowSampling(4, 1.2, 0.6))
    for w in windows:
        assert w.frames.shape == (4, 96, 128, 3)
        assert [read_index(f) for f in w.frames] == [i % 32 for i in w.frame_indices]
        assert w.times == pytest.approx([i / 10 for i in w.frame_indices])


def test_unreadable_file_names_the_problem(tmp_path):
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="cannot open video"):
        list(read_windows(bad, WindowSampling(num_frames=8)))
