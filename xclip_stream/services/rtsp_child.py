"""The RTSP camera's child process: gst-rtsp-server serving an H.264 mp4 as a live, endlessly looping
stream, without re-encoding. ``services.rtsp_server.RtspCamera`` runs this file with ``/usr/bin/python3``
(python3-gi exists only for the system interpreter), so it imports nothing but the standard library and
``gi`` (lazily: the venv has no gi). It prints ``READY <port>`` once it listens, and exits when its
stdin reaches EOF (the parent closed the pipe or died).

How the loop works without re-encoding: the child demuxes the mp4 once into H.264 access units
(``filesrc ! qtdemux ! h264parse ! appsink``), then a live ``appsrc`` replays them forever, each pass's
timestamps offset by the file's duration and each buffer pushed when its time comes, so every client
sees one continuous camera clock. The served pipeline is
``appsrc is-live=true format=time ! h264parse config-interval=-1 ! rtph264pay`` (SPS/PPS before every
keyframe, so a client joining or reconnecting decodes from the next keyframe; set on the parser, which
works per access unit, not on the payloader, which would split multi-slice keyframes). The media is shared:
all clients watch the same camera.
"""

from __future__ import annotations

import sys
import time

_SERVED = (
    "( appsrc name=src is-live=true format=time ! h264parse config-interval=-1 "
    "! rtph264pay name=pay0 pt=96 )"
)


def _load_access_units(video: str):
    """Demux the mp4 once into (data, pts, dts, duration, delta) tuples (ns, zero-based) and caps."""
    from gi.repository import Gst

    pipeline = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! h264parse ! video/x-h264,stream-format=avc,alignment=au "
        "! appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", video)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units, caps = [], None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        delta = bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)
        units.append((buf.extract_dup(0, buf.get_size()), buf.pts, buf.dts, buf.duration, delta))
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"{video}: no H.264 video found")
    none = Gst.CLOCK_TIME_NONE
    start = min(dts if dts != none else pts for _, pts, dts, _, _ in units)
    units = [(d, pts - start, (dts if dts != none else pts) - start, dur, delta)
             for d, pts, dts, dur, delta in units]
    step = units[1][1] - units[0][1] if len(units) > 1 else Gst.SECOND // 25
    length = max(pts + (dur if dur != none else step) for _, pts, _, dur, _ in units)
    return units, caps, length


class _Replayer:
    """Feeds one media's appsrc: the access units in a loop, each pushed when the camera clock
    reaches it (need-data runs on appsrc's streaming thread, so sleeping here paces the camera)."""

    def __init__(self, units, length: int):
        self.units, self.length = units, length
        self.index = 0
        self.origin: int | None = None

    def need_data(self, src, _size) -> None:
        from gi.repository import Gst

        clock = src.get_clock()
        now = clock.get_time() - src.get_base_time() if clock is not None else 0
        if self.origin is None:
            self.origin = now
        data, pts, dts, dur, delta = self.units[self.index % len(self.units)]
        offset = self.origin + (self.index // len(self.units)) * self.length
        self.index += 1
        wait = offset + dts - now
        if wait > 0:
            time.sleep(wait / Gst.SECOND)
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts, buf.dts, buf.duration = offset + pts, offset + dts, dur
        if delta:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        src.emit("push-buffer", buf)


def _serve(video: str, port: int, path: str) -> None:
    import threading

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    units, caps, length = _load_access_units(video)

    def configure(_factory, media) -> None:
        src = media.get_element().get_by_name("src")
        src.set_property("caps", caps)
        replayer = _Replayer(units, length)
        src.connect("need-data", replayer.need_data)
        media.replayer = replayer  # keep it alive as long as the media

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_SERVED)
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on port {port}")
    loop = GLib.MainLoop()

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    print("READY", server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
