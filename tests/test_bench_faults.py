"""bench/fault_accounting.py: what the fault suite calls lost and duplicated, from events as a consumer sees
them (the scenarios themselves are long runs; their core cases are in the fault tests)."""

from __future__ import annotations

from tests.benches import load_bench


def _score(camera, index, first, last, event_id=None):
    return {"event_type": "xclip.window.scores", "camera_id": camera, "window_index": index,
            "first_seq": first, "last_seq": last, "event_id": event_id or f"{camera}-{first}-{last}"}


def _dropped(camera, total):
    return {"event_type": "xclip.stream.dropped", "camera_id": camera, "stats": {"windows_dropped": total}}


def test_camera_holes_count_as_lost_unless_reported_dropped():
    bench = load_bench("fault_accounting")
    events = [_score("cam", i, 10 * i, 10 * i + 7) for i in (0, 1, 2, 5, 6)]  # 3 and 4 missing
    rows = bench.account(events, {})
    assert rows["cam"]["lost"] == 2 and rows["cam"]["windows"] == 5 and rows["cam"]["runs"] == 1
    rows = bench.account([*events[:3], _dropped("cam", 2), *events[3:]], {})
    assert rows["cam"]["lost"] == 0 and rows["cam"]["dropped"] == 2


def test_a_restarted_actor_starts_a_new_run_and_a_republished_window_is_a_duplicate():
    bench = load_bench("fault_accounting")
    first = [_score("cam", i, 10 * i, 10 * i + 7) for i in range(3)]
    again = _score("cam", 2, 20, 27)  # the same window published twice (same event id)
    second = [_score("cam", i, 100 + 10 * i, 107 + 10 * i) for i in range(2)]  # a new actor, from 0
    rows = bench.account([*first, again, *second], {})
    assert rows["cam"] == {"windows": 5, "score_events": 6, "duplicates": 1, "runs": 2, "dropped": 0, "lost": 0,
                           "lost_with_actor": 0}


def test_holes_in_a_run_whose_actor_was_lost_are_counted_apart_when_its_successor_reports_it():
    bench = load_bench("fault_accounting")
    first = [_score("cam", i, 10 * i, 10 * i + 7) for i in (0, 1, 2, 4)]  # 3: in the lost actor's hands
    second = [_score("cam", i, 100 + 10 * i, 107 + 10 * i) for i in (0, 1, 3)]  # 2: not reported
    restarted = {"event_type": "xclip.stream.restarted", "camera_id": "cam"}
    rows = bench.account([*first, restarted, *second], {})
    assert rows["cam"]["runs"] == 2 and rows["cam"]["lost_with_actor"] == 1 and rows["cam"]["lost"] == 1
    rows = bench.account([*first, *second], {})  # no report: both holes are lost
    assert rows["cam"]["lost_with_actor"] == 0 and rows["cam"]["lost"] == 2


def test_topic_cameras_are_judged_by_frame_coverage():
    bench = load_bench("fault_accounting")
    camera = f"{bench.TOPIC_CAMERA}-1"
    step = round(bench.PUBLISH_FPS / bench.SAMPLE_FPS)  # frames between two sampled ones
    windows = [(0, 6), (8, 14), (16, 22)]  # back to back: nothing uncovered
    rows = bench.account([_score(camera, i, a, b) for i, (a, b) in enumerate(windows)], {camera: 24})
    assert rows[camera]["lost"] == 0 and rows[camera]["published"] == 24
    # a member restarted from the commit point re-cuts windows at other boundaries: overlap is fine,
    # a hole past one sampling step is not
    shifted = [(0, 6), (4, 10), (8, 14), (30, 36)]
    rows = bench.account([_score(camera, i % 2, a, b) for i, (a, b) in enumerate(shifted)], {camera: 40})
    assert rows[camera]["lost"] == 30 - 14 - step


def test_a_ring_emptied_at_a_publishing_gap_is_not_lost_and_frames_past_the_commit_are_unconsumed():
    bench = load_bench("fault_accounting")
    camera = f"{bench.TOPIC_CAMERA}-1"
    windows = [(0, 14), (16, 30), (50, 64)]  # 31..49 uncovered: the publisher was held up after seq 40
    events = [_score(camera, i, a, b) for i, (a, b) in enumerate(windows)]
    held_up = bench.account(events, {camera: 200}, {camera: [40]}, {camera: 64})
    assert held_up[camera]["lost"] == 0 and held_up[camera]["cut_by_gap"] > 0
    assert held_up[camera]["unconsumed"] == 200 - 1 - 64  # re-read by the next member: not lost
    no_gap = bench.account(events, {camera: 200}, {camera: []}, {camera: 150})
    # the hole, and frames declared done (committed) far past the last window, are lost
    assert no_gap[camera]["lost"] == (50 - 30 - 2) + (150 - 64 - 2 * bench.NUM_FRAMES)


def test_a_camera_without_any_event_gets_a_row_and_fails_the_scenario():
    bench = load_bench("fault_accounting")
    topic_camera = f"{bench.TOPIC_CAMERA}-2"
    events = [_score("cam", i, 10 * i, 10 * i + 7) for i in range(3)]
    rows = bench.account(events, {topic_camera: 120}, {topic_camera: []}, {topic_camera: -1}, cameras=["cam", "quiet"])
    assert rows["quiet"]["windows"] == 0 and rows["quiet"]["lost"] == 0
    assert rows[topic_camera]["windows"] == 0 and rows[topic_camera]["unconsumed"] == 120
    result = {"lost": 0, "error": "", "pipeline_hung": False, "caught_up_s": 3.0,
              "silent": sorted(c for c, r in rows.items() if not r["windows"])}
    assert bench.failed_because(result) == [f"no window from quiet, {topic_camera}"]
    assert bench.failed_because({**result, "silent": [], "caught_up_s": None}) == ["topic not caught up"]
    assert bench.failed_because({**result, "silent": []}) == []
