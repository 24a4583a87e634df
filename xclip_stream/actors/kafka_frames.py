"""A member of a consumer group reading a Kafka topic of encoded frames (many cameras per topic).

    poll thread: consume -> decode (bad -> dead-letter topic) -> CameraRegistry (bounded; over the
                 cap -> dead-letter topic) -> per-camera WindowStage -> PendingWindows
    actor loop:  PendingWindows -> ScoringLoop -> events -> sink

At-least-once: every consumed record is tracked in an ``OffsetTracker``. A record is done when it
was sampled out, or dead-lettered and that was acknowledged, or when it has left its camera's
window ring and every window containing it had all its events acknowledged. Only offsets below
the oldest unfinished record are committed, so a restarted member re-reads whatever was not
fully published (consumers drop the repeats by event id). Topics never drop: a full queue blocks
the poll thread, which slows consumption instead.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import ray

from ..pipeline.cameras import CameraRegistry
from ..pipeline.events import EventBuilder
from ..pipeline.kafka_io import (
    BadMessage,
    OffsetTracker,
    dead_letter_record,
    decode_frame_message,
    make_consumer,
)
from ..pipeline.scoring import ModelInfo, frame_preprocessor
from ..pipeline.stream import PendingWindows, QueueClosed, WindowStage
from ..schemas.config import KafkaFrames, LabelSet, StreamOptions
from .output import SinkSpec, make_sink
from .replica import get_handle
from .scoring import ScoringLoop, send_events

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0


@ray.remote(num_cpus=0.1, max_restarts=0)
class KafkaFramesActor:
    def __init__(self, frames: dict, labels: dict, options: dict, model: ModelInfo, sink: SinkSpec,
                 session_timeout_ms: int = 10000, member: int = 0):
        self.spec = KafkaFrames.model_validate(frames)
        self.labels = LabelSet.model_validate(labels)
        self.options = StreamOptions.model_validate(options)
        self.model = model
        self.sink_spec = sink
        self.session_timeout_ms = session_timeout_ms
        self.name = f"{self.spec.topic}#{member}"
        self.sink, self.lines = make_sink(sink, client_id=f"xclip-stream-frames-{member}")
        self.preprocess = frame_preprocessor(model)
        self.pending = PendingWindows(self.options.max_pending_windows, drop_oldest=False)
        self.tracker = OffsetTracker()
        self.lock = threading.Lock()  # tracker and refs: touched by the poll thread and sink callbacks
        # Cameras come from the messages: a bounded registry holds their window stages (poll thread).
        self.cameras = CameraRegistry(self.spec.max_cameras, self.spec.camera_idle_s, self.spec.allowed_cameras,
                                      create=self._new_stage, close=self._close_camera, busy=self._busy)
        self.builders: dict[str, EventBuilder] = {}
        self.builders_lock = threading.Lock()  # the scoring side creates builders, eviction ends them
        self.refs: dict[tuple[str, int], tuple] = {}  # (camera, internal seq) -> (tp, offset, source seq)
        self.window_refs: dict[tuple[str, int], list] = {}  # (camera, window index) -> its frames' refs
        self.next_seq = 0
        self.stopping = threading.Event()
        self.scored_all = threading.Event()  # set when the scoring loop has drained
        self.stats = {"records": 0, "dead_letters": 0, "windows": 0, "commits": 0}
        self.error = ""
        self.loop: ScoringLoop | None = None

    async def run(self) -> dict:
        import asyncio

        self.loop = ScoringLoop(get_handle(), self.pending, self._builder, self._publish,
                                source_seqs=self._source_seqs)
        poller = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
        poller.start()
        await self.loop.run()
        self.scored_all.set()
        await asyncio.get_running_loop().run_in_executor(None, poller.join)
        if self.error and not self.stopping.is_set():
            # A consumer failure ends this member; raising makes the supervisor start a fresh one,
            # which resumes from the committed offsets.
            raise RuntimeError(f"{self.name}: consumer failed: {self.error}")
        return await self.health()

    async def stop(self) -> None:
        self.stopping.set()

    async def relabel(self, labels: dict) -> None:
        """New label set for every camera of the topic; ended incidents are published."""
        self.labels = LabelSet.model_validate(labels)
        with self.builders_lock:
            builders = list(self.builders.values())
        for builder in builders:
            send_events(self.sink, self.sink_spec.events_topic, builder.relabel(self.labels))

    async def health(self) -> dict:
        with self.lock:
            outstanding = self.tracker.outstanding()
        return {"source": self.name, **self.stats, "outstanding": outstanding,
                "windows_scored": self.loop.stats.scored if self.loop else 0, "pending": len(self.pending),
                "cameras": self.cameras.ids(), "cameras_evicted": self.cameras.evicted,
                "cameras_refused": self.cameras.refused, "last_error": self.error}

    async def take_output(self) -> list[str]:
        return self.lines.take() if self.lines is not None else []

    # -- poll thread ----------------------------------------------------------------------------
    def _poll(self) -> None:
        consumer = None
        try:
            consumer = make_consumer(self.sink_spec.bootstrap, self.spec.topic, self.spec.group_id,
                                     session_timeout_ms=self.session_timeout_ms)
            import time

            last_commit = time.monotonic()
            while not self.stopping.is_set():
                batches = consumer.poll(timeout_ms=200, max_records=64)
                for tp, records in batches.items():
                    for record in records:
                        self._consume(tp, record)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    self.cameras.sweep()
                    self._commit(consumer)
                    last_commit = time.monotonic()
        except QueueClosed:
            pass
        except Exception as e:  # noqa: BLE001 - reported in health; the supervisor restarts the actor
            self.error = f"{type(e).__name__}: {e}"
            log.error("%s: consumer failed: %s", self.name, self.error)
        finally:
            self.pending.close()
            if consumer is not None:
                self._drain_and_close(consumer)

    def _consume(self, tp, record) -> None:
        self.stats["records"] += 1
        with self.lock:
            self.tracker.add(tp, record.offset)
        try:
            frame = decode_frame_message(record.key, record.value, list(record.headers or []), self.spec.limits)
            stage = self.cameras.get(frame.camera_id)
        except BadMessage as e:
            self._dead_letter(tp, record, e)
            return
        camera = frame.camera_id
        if not stage.keep(frame.time):
            self._release(tp, record.offset)
            return
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        with self.lock:
            self.refs[(camera, seq)] = (tp, record.offset, frame.seq)
        window = stage.push(replace(frame, seq=seq))
        if window is not None:
            with self.lock:
                held = [self.refs[(camera, s)] for s in window.frame_seqs]
                for tp_, offset, _ in held:
                    self.tracker.hold(tp_, offset)
                self.window_refs[(camera, window.index)] = held
            self.stats["windows"] += 1
            self.pending.put(window)  # blocks while the model is behind: the topic slows down

    def _new_stage(self, camera: str) -> WindowStage:
        def evicted(seq: int) -> None:
            with self.lock:
                tp, offset, _ = self.refs.pop((camera, seq))
                self.tracker.release(tp, offset)

        return WindowStage(camera, self.preprocess, self.model.num_frames, self.options.sample_fps,
                           self.options.hop, self.options.max_gap_seconds, on_evict=evicted)

    def _busy(self, camera: str) -> bool:
        """Windows of the camera are queued or being scored: its builder is still in use."""
        with self.lock:
            return any(c == camera for c, _ in self.window_refs)

    def _close_camera(self, camera: str, stage: WindowStage) -> None:
        """An idle camera leaves: its ring's frames are released and its incidents end."""
        stage.buffer.reset()
        with self.builders_lock:
            builder = self.builders.pop(camera, None)
        if builder is not None:
            send_events(self.sink, self.sink_spec.events_topic, builder.flush())
        log.info("%s: camera %r evicted after %g s without frames", self.name, camera, self.spec.camera_idle_s)

    def _dead_letter(self, tp, record, error: BadMessage) -> None:
        self.stats["dead_letters"] += 1
        log.warning("%s: offset %d of %s[%d] to the dead-letter topic: %s", self.name, record.offset,
                    tp.topic, tp.partition, error)
        letter = dead_letter_record(record.key, record.value, list(record.headers or []), error, tp.topic,
                                    tp.partition, record.offset, self.spec.limits.dead_letter_max_bytes)
        future = self.sink.send(self.sink_spec.dead_letter_topic, *letter)
        future.add_callback(lambda _: self._release(tp, record.offset))

    def _release(self, tp, offset: int) -> None:
        with self.lock:
            self.tracker.release(tp, offset)

    def _commit(self, consumer) -> None:
        with self.lock:
            offsets = self.tracker.committable()
        if offsets:
            from kafka.structs import OffsetAndMetadata

            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            with self.lock:
                self.tracker.mark_committed(offsets)
            self.stats["commits"] += 1

    def _drain_and_close(self, consumer) -> None:
        """Shutdown: wait for the windows already cut to be scored and published, then commit what
        is done. Frames still in a ring stay uncommitted and are read again by the next member."""
        if not self.scored_all.wait(timeout=120):
            log.warning("%s: windows still in flight at shutdown; their frames will be re-read", self.name)
        self.sink.flush()
        try:
            self._commit(consumer)
        finally:
            consumer.close()

    # -- scoring side ---------------------------------------------------------------------------
    def _builder(self, camera: str) -> EventBuilder:
        """Each camera's event state; windows are scored with its builder's current labels."""
        with self.builders_lock:
            if camera not in self.builders:
                self.builders[camera] = EventBuilder(camera, self.model.name, self.labels,
                                                     self.options.continue_every)
            return self.builders[camera]

    def _source_seqs(self, window) -> tuple[int, int]:
        with self.lock:
            held = self.window_refs[(window.camera_id, window.index)]
        return held[0][2], held[-1][2]

    def _publish(self, window, events: list) -> None:
        with self.lock:
            held = self.window_refs.pop((window.camera_id, window.index))
        send_events(self.sink, self.sink_spec.events_topic, events,
                    on_all_acked=lambda: [self._release(tp, off) for tp, off, _ in held])
