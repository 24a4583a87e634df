"""bench/faults.py's accounting: what a scenario lost, duplicated or left unconsumed, judged from
the events topic as a consumer sees it and from the frames topic's committed offsets (the rules are
in faults.py's docstring). Plain functions of the data, so tests check them without a rig."""

from __future__ import annotations

import time
from collections import defaultdict

FRAMES_TOPIC, EVENTS_TOPIC = "xclip.faults.frames", "xclip.faults.events"
TOPIC_CAMERA, TOPIC_CAMERAS, TOPIC_PARTITIONS, PUBLISH_FPS, SAMPLE_FPS = "topic-cam", 2, 4, 8, 4.0
NUM_FRAMES = 8  # the demo model's frames per window
MAX_GAP_S = 2.0  # the pipeline's default max_gap_seconds (the demo configuration keeps it)


def committed_seqs(bootstrap: str, cameras: list[str], group: str = "xclip-stream") -> tuple[dict, dict]:
    """Per topic camera (one partition each, in publishing order), the highest seq below the group's
    committed offset: the frames the pipeline declared done. Those above are re-read by the next
    member, so they are not lost, only not consumed yet. Also, per camera, what the partition holds
    (evidence of the broker's own losses: seqs that jump where offsets do not)."""
    from kafka import KafkaConsumer, TopicPartition

    out, logs = {}, {}
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        for i, camera in enumerate(cameras):
            tp = TopicPartition(FRAMES_TOPIC, i * TOPIC_PARTITIONS // len(cameras))
            end = probe.committed(tp) or 0
            reader.assign([tp])
            reader.seek(tp, 0)
            log, quiet_since = [], time.monotonic()
            while time.monotonic() - quiet_since < 2.0:  # the whole partition: Tansu's end offsets are unreliable
                records = reader.poll(timeout_ms=500).get(tp, [])
                log.extend((r.offset, int(dict(r.headers)["seq"])) for r in records)
                quiet_since = time.monotonic() if records else quiet_since
            out[camera] = max((seq for offset, seq in log if offset < end), default=-1)
            logs[camera] = {"committed_offset": end, "records": len(log), "log_end": log[-1][0] + 1 if log else 0,
                            "seq_jumps": [(o, a, b) for (_, a), (o, b) in zip(log, log[1:]) if b not in (a, a + 1)][:20]}
    finally:
        reader.close()
        probe.close()
    return out, logs


def account(events: list[dict], published: dict[str, int], gaps: dict[str, list[int]] | None = None,
            committed: dict[str, int] | None = None, cameras: list[str] = ()) -> dict:
    """Windows, duplicates and losses per camera, from the events topic (see the module docstring).
    Every camera of ``cameras`` and ``published`` gets a row, one that sent no event too: a camera
    the pipeline went silent on must show up, not vanish from the table."""
    per_camera: dict[str, list[dict]] = defaultdict(list)
    for camera in [*cameras, *published]:
        per_camera[camera] = []
    for e in events:
        per_camera[e.get("camera_id", "?")].append(e)
    rows = {}
    for camera, evs in sorted(per_camera.items()):
        ids = defaultdict(int)
        windows, runs, dropped_in_run, restarted_after, run = set(), [], [], set(), -1
        for e in evs:
            kind = e.get("event_type", "")
            if kind in ("xclip.window.scores", "xclip.window.failed"):
                repeat = ids.get(e["event_id"], 0) > 0  # a window published again, not a new run
                if kind == "xclip.window.scores":
                    ids[e["event_id"]] += 1
                index = e["window_index"]  # from 0 in each actor's run
                if run < 0 or (index == 0 and runs[run] and not repeat):
                    runs.append(set())
                    dropped_in_run.append(0)
                    run += 1
                runs[run].add(index)
                windows.add((run, e["first_seq"], e["last_seq"]))
            elif kind == "xclip.stream.dropped" and run >= 0:
                dropped_in_run[run] = max(dropped_in_run[run], e["stats"]["windows_dropped"])
            elif kind == "xclip.stream.restarted" and run >= 0:  # the run so far ended with its actor lost
                restarted_after.add(run)
        row = {"windows": len(windows), "score_events": sum(ids.values()),
               "duplicates": sum(n - 1 for n in ids.values()), "runs": len(runs)}
        if camera.startswith(TOPIC_CAMERA):
            spans = sorted((first, last) for _, first, last in windows)
            done = (committed or {}).get(camera)
            row["lost"], row["cut_by_gap"] = _uncovered(spans, SAMPLE_FPS, PUBLISH_FPS, (gaps or {}).get(camera, []),
                                                        done)
            row["published"] = published.get(camera, 0)
            if done is not None:  # frames after the commit point: the next member reads them again
                row["committed_seq"], row["unconsumed"] = done, max(0, row["published"] - 1 - done)
        else:
            unreported = [max(0, max(r) + 1 - len(r) - d) for r, d in zip(runs, dropped_in_run) if r]
            row["dropped"] = sum(dropped_in_run)
            row["lost"] = sum(n for i, n in enumerate(unreported) if i not in restarted_after)
            # a run whose actor was lost, as the next one reported ("restarted"): the windows it held,
            # and any it dropped after its last drop report, went with it
            row["lost_with_actor"] = sum(n for i, n in enumerate(unreported) if i in restarted_after)
        rows[camera] = row
    return rows


def _uncovered(windows: list[tuple[int, int]], sample_fps: float, fps: float, gaps: list[int] = (),
               committed: int | None = None) -> tuple[int, int]:
    """(lost, cut by a gap): frames between consecutive windows beyond one sampling step, and, given
    the ``committed`` seq, frames after the last window up to it (declared done, yet in no window).
    A hole that holds a publishing gap (``gaps``: seqs after which the next frame came over
    MAX_GAP_S later) is the ring emptied at that gap, by design (no window spans missing time)."""
    step = max(1, round(fps / sample_fps))
    lost = cut = 0
    end = None
    for first, last in windows:
        if end is not None and first > end + step:
            hole = first - end - step
            if any(end <= g < first for g in gaps):
                cut += hole
            else:
                lost += hole
        end = last if end is None else max(end, last)
    if committed is not None:  # the tail: a window's span (a ring not yet full) may stay uncovered
        end = -1 if end is None else end
        tail = committed - end - step * NUM_FRAMES
        if tail > 0:
            if any(end <= g <= committed for g in gaps):  # g: the last frame before the gap
                cut += tail
            else:
                lost += tail
    return lost, cut


def failed_because(r: dict) -> list[str]:
    """Why a scenario failed (empty: it survived): a loss, a crash, a hang, a camera that yielded no
    window, or a topic the pipeline did not finish within the drain time."""
    why = [f"{r['lost']} lost"] if r["lost"] else []
    why += [r["error"]] if r["error"] else []
    why += ["pipeline hung"] if r["pipeline_hung"] else []
    why += [f"no window from {', '.join(r['silent'])}"] if r["silent"] else []
    why += ["topic not caught up"] if r["caught_up_s"] is None else []
    return why


def wait_caught_up(bootstrap: str, cameras: list[str], limit: float, group: str = "xclip-stream") -> float | None:
    """Seconds until the group's committed offsets reach the end of every topic camera's partition
    once publishing stopped (a camera gone quiet has its ring released, so the whole log becomes
    done), or None after ``limit`` seconds: the lag the pipeline could not work off."""
    from kafka import KafkaConsumer, TopicPartition

    began = time.monotonic()
    tps = [TopicPartition(FRAMES_TOPIC, i * TOPIC_PARTITIONS // len(cameras)) for i in range(len(cameras))]
    probe = None
    try:
        while time.monotonic() - began < limit:
            try:
                probe = probe or KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
                # one record per batch (the publisher sends and waits): Tansu's end offsets are right here
                ends = probe.end_offsets(tps)
                if all((probe.committed(tp) or 0) >= ends[tp] for tp in tps):
                    return round(time.monotonic() - began, 1)
            except Exception:  # noqa: BLE001 - a broker hiccup: ask again
                pass
            time.sleep(1.0)
        return None
    finally:
        if probe is not None:
            probe.close()
