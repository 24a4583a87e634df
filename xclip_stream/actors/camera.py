"""Camera actors: each holds one or more cameras in one process (``placement.cameras_per_process``).
Every camera decodes and windows in a thread it owns and scores and publishes in the actor's loop:

    VideoSource --frames--> WindowStage --windows--> PendingWindows --> ScoringLoop --> sink
    (decode thread)                                   (bounded)         (actor event loop)

Cameras sharing a process share its Serve handle and its Ray worker, so a box holds more of them;
each keeps its own source, queue, event builder and delivery, so one camera's failure, drops or
stop touch no other. Live cameras drop their oldest pending window when the model falls behind
(counted, and reported as a ``dropped`` stream event); files block instead and lose nothing.
``stop()`` stops the source, drains every window already cut, ends open incidents, and flushes the
sink before ``run()`` returns. Events are retried until the sink acknowledges them: a source that
ended is not finished while any is undelivered, and one stopped with undelivered events reports
them (``events_undelivered``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import ray

from ..pipeline.events import EventBuilder
from ..pipeline.jpeg import THUMBNAIL_BIT_RATE, JpegEncoder
from ..pipeline.redact import redact_text
from ..pipeline.scoring import ModelInfo, frame_preprocessor
from ..pipeline.sources import VideoSource, redact_url
from ..pipeline.stream import PendingWindows, QueueClosed, WindowStage
from ..schemas.config import CameraConfig, LabelSet, StreamOptions
from ..schemas.events import StreamStats
from .metrics import CameraMetrics
from .output import SinkSpec, make_delivery
from .replica import get_handle
from .scoring import ScoringLoop, send_events

log = logging.getLogger(__name__)

DROP_REPORT_INTERVAL_S = 5.0
METRICS_INTERVAL_S = 1.0  # how often each camera's health goes to Ray's metrics (actors/metrics.py)
STOP_DELIVERY_S = 5.0  # on stop, how long undelivered events still get to reach the sink


class CameraStream:
    """One camera of a camera actor (not an actor itself): its decode thread, queue and scoring loop."""

    def __init__(self, camera: dict, labels: dict, options: dict, model: ModelInfo, sink: SinkSpec,
                 handle, max_windows: int | None = None, request_timeout_s: float = 60.0,
                 restarts: int = 0, lost_at: float | None = None):
        self.camera = CameraConfig.model_validate(camera)
        self.options = StreamOptions.model_validate(options)
        self.model = model
        self.handle = handle
        self.sink_spec = sink
        self.max_windows = max_windows
        self.request_timeout_s = request_timeout_s
        self.restarts, self.lost_at = restarts, lost_at  # a restart after the last actor was lost
        self.source_name = redact_url(self.camera.url)
        self.builder = EventBuilder(self.camera.id, model.name, LabelSet.model_validate(labels),
                                    self.options.continue_every)
        self.source = VideoSource(
            self.camera.id, self.camera.url, loop=self.camera.loop, realtime=self.camera.realtime,
            rtsp_transport=self.camera.rtsp_transport, on_status=self._on_status,
            credentials=self.camera.credentials,
        )
        self.pending = PendingWindows(self.options.max_pending_windows, drop_oldest=self.source.is_live)
        self.stage = WindowStage(self.camera.id, frame_preprocessor(model), model.num_frames,
                                 self.options.sample_fps, self.options.hop, self.options.max_gap_seconds)
        self.delivery, self.lines = make_delivery(sink, client_id=f"xclip-stream-{self.camera.id}")
        self.stopping = False
        self.loop: ScoringLoop | None = None
        self.windows = 0
        self.gaps = 0
        self.error = ""
        self._last_drop_report = 0.0
        self._reported_drops = 0
        self.latest = None  # the latest sampled frame's image (a reference, for thumbnails)
        self._jpeg = JpegEncoder(THUMBNAIL_BIT_RATE)
        self._jpeg_lock = threading.Lock()

    # -- control (called through the camera actor) ---------------------------------------------
    async def run(self) -> dict:
        """Stream until the source ends (a file), ``max_windows`` or ``stop()``; returns final stats."""
        self.loop = ScoringLoop(self.handle, self.pending, lambda _: self.builder, self._publish,
                                request_timeout_s=self.request_timeout_s,
                                redact=lambda text: redact_text(text, self.camera.url),
                                congested=lambda: self.delivery.congested)
        decoder = threading.Thread(target=self._decode, name=f"decode-{self.camera.id}", daemon=True)
        decoder.start()
        await self.loop.run()
        await asyncio.get_running_loop().run_in_executor(None, decoder.join)
        self._send(self.builder.flush())
        self._report_drops(force=True)
        executor = asyncio.get_running_loop().run_in_executor
        while not self.stopping and not await executor(None, self.delivery.drain, 1.0):
            pass  # the sink is failing: keep retrying until acknowledged or stopped
        await executor(None, self.delivery.close, STOP_DELIVERY_S)
        return self.health()

    async def stop(self) -> None:
        self.stopping = True
        if self.loop is not None:
            self.loop.abandoned = True  # only matters while the sink is congested
        self.source.stop()

    def abandon(self) -> None:
        """After a failed run: stop the decode thread and the delivery (what it still holds is logged)."""
        self.stopping = True
        self.source.stop()
        self.pending.close()
        self.delivery.close(STOP_DELIVERY_S)

    async def relabel(self, labels: dict) -> None:
        self._send(self.builder.relabel(LabelSet.model_validate(labels)))

    def health(self) -> dict:
        s = self.source.stats
        return {
            "camera_id": self.camera.id, "source": self.source_name, "state": s.state,
            "frames_decoded": s.frames_decoded, "frames_sampled": s.frames_kept,
            "windows_emitted": self.windows, "windows_scored": self.loop.stats.scored if self.loop else 0,
            "windows_dropped": self.pending.dropped, "pending": len(self.pending),
            "windows_failed": self.loop.stats.failed if self.loop else 0,
            "request_timeouts": self.loop.stats.timeouts if self.loop else 0,
            "reconnects": s.reconnects, "gaps": self.gaps, "last_error": s.last_error or self.error,
            "latency_ms": list(self.loop.stats.latencies_ms)[-50:] if self.loop else [],
            **self.delivery.health(self.sink_spec.events_topic),
        }

    def take_output(self) -> list[str]:
        return self.lines.take() if self.lines is not None else []

    def thumbnail(self, width: int) -> bytes | None:
        """The latest sampled frame as a JPEG ``width`` wide (None before the first)."""
        image = self.latest
        if image is None:
            return None
        with self._jpeg_lock:
            return self._jpeg.encode(image, width)

    # -- decode thread --------------------------------------------------------------------------
    def _decode(self) -> None:
        last_time = None
        try:
            for frame in self.source.frames(keep=self.stage.keep, sample_interval=self.stage.sampler.interval):
                if last_time is None and self.restarts:
                    self._send([self._stream_event(
                        "restarted", f"restart {self.restarts} of the camera's actor: the last one failed or was lost "
                        "with the windows it held", gap=(self.lost_at or frame.time, frame.time))])
                if last_time is not None and frame.time - last_time > self.options.max_gap_seconds:
                    self.gaps += 1
                    self._send([self._stream_event("gap", "no frames", gap=(last_time, frame.time))])
                last_time, self.latest = frame.time, frame.image
                window = self.stage.push(frame)
                if window is None:
                    continue
                self.windows += 1
                if self.pending.put(window) is not None:
                    self._report_drops()
                if self.max_windows is not None and self.windows >= self.max_windows:
                    self.source.stop()
        except QueueClosed:
            pass
        except Exception as e:  # noqa: BLE001 - reported as a failed stream, the actor stays up
            self.error = redact_text(f"{type(e).__name__}: {e}", self.camera.url)
            log.error("camera %s: stream failed: %s", self.camera.id, self.error)
            self._send([self._stream_event("failed", self.error)])
        finally:
            self.pending.close()

    def _on_status(self, state: str, reason: str) -> None:
        self._send([self._stream_event(state, reason)])

    def _report_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        new = self.pending.dropped - self._reported_drops
        if new and (force or now - self._last_drop_report >= DROP_REPORT_INTERVAL_S):
            self._last_drop_report, self._reported_drops = now, self.pending.dropped
            self._send([self._stream_event("dropped", f"{new} pending windows dropped: inference is behind")])

    # -- output ---------------------------------------------------------------------------------
    def _stream_event(self, state: str, reason: str, gap=None):
        h = self.health()
        stats = StreamStats(h["frames_decoded"], h["frames_sampled"], h["windows_emitted"], h["windows_scored"],
                            h["windows_dropped"], h["reconnects"], h["gaps"], 0, h["windows_failed"])
        return self.builder.stream_event(state, self.source_name, reason, stats, gap)

    def _publish(self, window, events: list) -> None:
        self._send(events)

    def _send(self, events: list) -> None:
        if events:
            send_events(self.delivery, self.sink_spec.events_topic, events)


@ray.remote(num_cpus=0.1, max_restarts=0)
class CameraActor:
    """Cameras in one process, each started by a ``run()`` call of its own that returns when that
    camera ends; the supervisor chooses which cameras share an actor, and how many. A camera that
    ended stays until the supervisor has taken its last output (``take_output(..., last=True)``)."""

    def __init__(self, model: ModelInfo, sink: SinkSpec, max_windows: int | None = None,
                 request_timeout_s: float = 60.0):
        self.model, self.sink = model, sink
        self.max_windows, self.request_timeout_s = max_windows, request_timeout_s
        self.handle = None  # one Serve handle for every camera of the process, made at the first run
        self.streams: dict[str, CameraStream] = {}
        self.metrics: CameraMetrics | None = None  # made at the first run, with the task feeding it
        self._metrics_task: asyncio.Task | None = None

    async def run(self, camera: dict, labels: dict, options: dict, restarts: int = 0,
                  lost_at: float | None = None) -> dict:
        camera_id = camera["id"]
        if camera_id in self.streams:
            raise ValueError(f"camera {camera_id!r} already runs in this actor")
        if self.handle is None:
            self.handle = get_handle()
        if self.metrics is None:
            self.metrics = CameraMetrics()
            self._metrics_task = asyncio.get_running_loop().create_task(self._export_metrics())
        self.streams[camera_id] = stream = CameraStream(
            camera, labels, options, self.model, self.sink, self.handle, self.max_windows,
            self.request_timeout_s, restarts, lost_at)
        try:
            return await stream.run()
        except Exception:  # this camera failed (the supervisor restarts it): the others go on
            self.streams.pop(camera_id, None)
            await asyncio.get_running_loop().run_in_executor(None, stream.abandon)
            raise

    async def stop(self, camera_id: str) -> None:
        if camera_id in self.streams:
            await self.streams[camera_id].stop()

    async def relabel(self, camera_id: str, labels: dict) -> None:
        if camera_id in self.streams:  # else it has ended meanwhile: nothing left to label
            await self.streams[camera_id].relabel(labels)

    async def health(self, camera_id: str) -> dict:
        return self.streams[camera_id].health()

    async def thumbnail(self, camera_id: str, width: int) -> bytes | None:
        """For the live page, asked only while someone watches it (off the actor's event loop)."""
        stream = self.streams.get(camera_id)
        if stream is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, stream.thumbnail, width)

    async def take_output(self, camera_id: str, last: bool = False) -> list[str]:
        stream = self.streams.pop(camera_id, None) if last else self.streams.get(camera_id)
        if last and stream is not None and self.metrics is not None:  # its final counts, then forget it
            self._record(camera_id, stream)
            self.metrics.forget(camera_id)
        return stream.take_output() if stream is not None else []

    async def _export_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            for camera_id, stream in list(self.streams.items()):
                self._record(camera_id, stream)

    def _record(self, camera_id: str, stream: CameraStream) -> None:
        try:
            self.metrics.record(camera_id, stream.health())
        except Exception as e:  # noqa: BLE001 - metrics must never stop a camera; said in its log
            log.warning("camera %s: metrics not recorded: %s: %s", camera_id, type(e).__name__, e)

    async def cameras(self) -> list[str]:
        return list(self.streams)
