"""bench/soak.py: its growth arithmetic, and a short run end to end (the real pipeline, a live
camera and a frames topic) whose accounting must find every scored window's event."""

from __future__ import annotations

import json

from tests.benches import load_bench


def _samples(rss_at):
    return [(t, {1: {"title": "a", "rss_mb": rss_at(t), "fds": 10}, 2: {"title": "b", "rss_mb": 100.0, "fds": 5}})
            for t in range(0, 600, 5)]


def test_growth_compares_the_first_and_last_minute_after_warm_up():
    bench = load_bench("soak")
    flat = bench.growth(_samples(lambda t: 200.0), start=120)
    assert flat["total"]["rss_mb"] == (300.0, 300.0, 0.0)
    leaking = bench.growth(_samples(lambda t: 200.0 + t / 10), start=120)  # 6 MB a minute
    rows = {r["pid"]: r for r in leaking["processes"]}
    before, after, ratio = rows[1]["rss_mb"]
    assert 200 + 120 / 10 <= before <= 200 + 180 / 10 and after >= 200 + 540 / 10 and ratio > 0.05
    assert rows[2]["rss_mb"][2] == 0.0 and rows[2]["fds"][2] == 0.0


def test_short_soak_loses_no_event(tmp_path):
    bench = load_bench("soak")
    out = tmp_path / "soak.json"
    code = bench.main(["--minutes", "0.15", "--warmup", "0", "--interval", "2", "--cameras", "1",
                       "--max-growth", "10", "--out", str(out)])
    report = json.loads(out.read_text())
    sources = {r["source"]: r for r in report["sources"]}
    assert len(sources) == 2 and sources["frames:xclip.soak.frames#0"]["windows_scored"] > 0
    assert all(row["lost"] == 0 and row["windows_scored"] == row["score_events"] for row in sources.values())
    assert report["lost"] == 0 and code == 0
    assert any(p["title"] == "tansu" for p in report["growth"]["processes"])  # the broker is sampled too
