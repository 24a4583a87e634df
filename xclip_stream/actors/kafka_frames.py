"""A member of a consumer group reading a Kafka topic of encoded frames (many cameras per topic).

    poll thread: consume -> decode (bad -> dead-letter topic) -> per-camera WindowStage -> PendingWindows
    actor loop:  PendingWindows -> ScoringLoop -> events -> sink

At-least-once: every consumed record is tracked in an ``OffsetTracker``. A record is done when it
was sampled out, or dead-lettered and that was acknowledged, or when it has left its camera's
window ring and every window containing it had all its events (or, for a window the model could
not score, its ``xclip.window.failed`` event) acknowledged. Only offsets below
the oldest unfinished record are committed, so a restarted member re-reads whatever was not
fully published (consumers drop the repeats by event id). Topics never drop: a full queue blocks
the poll thread, which slows consumption instead.

Faults: events and dead letters go through a ``Delivery`` that retries until acknowledged, so an
offset is never released for a record whose output was lost. A rebalance hands partitions over
(``HandOver``: commit what is done, forget the rest, drop those cameras' frames; a partition given
straight back is read again from where this member stopped). A camera that goes quiet has the
offsets of its ring's frames released (the frames stay) and its incidents ended (``IdleCameras``).
On stop or removal, every camera's open incidents are ended and acknowledged before the final
commit.

Hostile input: camera ids come from the messages, so a bounded ``CameraRegistry`` holds at most
``max_cameras`` of them (optionally only ``allowed_cameras``), evicting ones silent for
``camera_idle_s``; a camera with no room is dead-lettered. Decoding limits (``limits``) hold before
any allocation, and a dead letter too big to republish is sent as a marked, truncated copy.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from dataclasses import replace

import ray

from ..pipeline.cameras import CameraRegistry
from ..pipeline.consumer_lag import partition_lags
from ..pipeline.events import EventBuilder
from ..pipeline.idle import IdleCameras
from ..pipeline.jpeg import THUMBNAIL_BIT_RATE, JpegEncoder
from ..pipeline.kafka_io import (
    BadMessage,
    OffsetTracker,
    dead_letter_record,
    decode_frame_message,
    fetch_sizes,
    make_consumer,
)
from ..pipeline.offsets import FrameRef, HandOver
from ..pipeline.scoring import ModelInfo, frame_preprocessor
from ..pipeline.stream import PendingWindows, QueueClosed, WindowStage
from ..schemas.config import KafkaFrames, LabelSet, StreamOptions
from .metrics import MemberMetrics
from .output import SinkSpec, make_delivery
from .replica import get_handle
from .scoring import ScoringLoop, send_events

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
METRICS_INTERVAL_S = 1.0  # how often the member's health goes to Ray's metrics (actors/metrics.py)
STOP_DELIVERY_S = 10.0  # on stop, how long queued events still get to be acknowledged


@ray.remote(num_cpus=0.1, max_restarts=0)
class KafkaFramesActor:
    def __init__(self, frames: dict, labels: dict, options: dict, model: ModelInfo, sink: SinkSpec,
                 session_timeout_ms: int = 10000, member: int = 0, request_timeout_s: float = 60.0):
        self.spec = KafkaFrames.model_validate(frames)
        self.labels = LabelSet.model_validate(labels)
        self.options = StreamOptions.model_validate(options)
        self.model = model
        self.sink_spec = sink
        self.session_timeout_ms = session_timeout_ms
        self.request_timeout_s = request_timeout_s
        self.name = f"{self.spec.topic}#{member}"
        self.delivery, self.lines = make_delivery(sink, client_id=f"xclip-stream-frames-{member}")
        self.preprocess = frame_preprocessor(model)
        self.pending = PendingWindows(self.options.max_pending_windows, drop_oldest=False)
        self.tracker = OffsetTracker()
        self.lock = threading.Lock()  # tracker and refs: touched by the poll thread and sink callbacks
        # Cameras come from the messages: a bounded registry holds their window stages (poll thread).
        self.cameras = CameraRegistry(self.spec.max_cameras, self.spec.camera_idle_s, self.spec.allowed_cameras,
                                      create=self._new_stage, close=self._close_camera, busy=self._busy)
        self.builders: dict[str, EventBuilder] = {}
        self.refs: dict[tuple[str, int], FrameRef] = {}  # (camera, internal seq) -> the frame's record
        self.window_refs: dict[tuple[str, int], list] = {}  # (camera, window index) -> its frames' refs
        self.next_seq = 0
        self.camera_tps: dict[str, object] = {}  # camera -> the partition its frames came from last
        self.latest: dict[str, object] = {}  # camera -> its latest sampled image (for thumbnails)
        self._jpeg = JpegEncoder(THUMBNAIL_BIT_RATE)
        self._jpeg_lock = threading.Lock()
        self.idle = IdleCameras(self.options.max_gap_seconds)
        self.stopping = threading.Event()
        self.scored_all = threading.Event()  # set when the scoring loop has drained
        self.stats = {"records": 0, "dead_letters": 0, "windows": 0, "commits": 0, "commit_failures": 0,
                      "revocations": 0, "idle_released": 0, "cameras_dropped": 0}
        self.dead_letter_reasons: Counter[str] = Counter()  # BadMessage.reason -> records
        self.lag: dict[int, int] = {}  # partition -> records past its committed offset (poll thread)
        self.assigned: list[int] = []  # the partitions the group gave this member, as of the last commit (poll thread)
        self.polled_at = 0.0  # monotonic: the poll thread's last turn (a stuck thread stops it)
        self.error = ""
        self.loop: ScoringLoop | None = None
        self.aio = None  # the actor's event loop: builders are used on it only

    async def run(self) -> dict:
        self.aio = asyncio.get_running_loop()
        self.loop = ScoringLoop(get_handle(), self.pending, self._builder, self._publish,
                                source_seqs=self._source_seqs, request_timeout_s=self.request_timeout_s,
                                congested=lambda: self.delivery.congested)
        poller = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
        poller.start()
        metrics = asyncio.get_running_loop().create_task(self._export_metrics(MemberMetrics(self.spec.topic)))
        try:
            await self.loop.run()
        finally:
            metrics.cancel()
        self.scored_all.set()
        await asyncio.get_running_loop().run_in_executor(None, poller.join)
        await asyncio.get_running_loop().run_in_executor(None, self.delivery.close, 1.0)  # drained in _poll
        if self.error and not self.stopping.is_set():
            # A consumer failure ends this member; raising makes the supervisor start a fresh one,
            # which resumes from the committed offsets.
            raise RuntimeError(f"{self.name}: consumer failed: {self.error}")
        return await self.health()

    async def stop(self) -> None:
        self.stopping.set()
        if self.loop is not None:
            self.loop.abandoned = True  # only matters while the sink is congested

    async def relabel(self, labels: dict) -> None:
        """New label set for every camera of the topic; ended incidents are published."""
        self.labels = LabelSet.model_validate(labels)
        for builder in self.builders.values():
            send_events(self.delivery, self.sink_spec.events_topic, builder.relabel(self.labels))

    async def health(self) -> dict:
        with self.lock:
            outstanding = self.tracker.outstanding()
            committed = self.tracker.committed()
            reasons = dict(self.dead_letter_reasons)
        return {"source": self.name, **self.stats, "outstanding": outstanding,
                "windows_scored": self.loop.stats.scored if self.loop else 0, "pending": len(self.pending),
                "windows_failed": self.loop.stats.failed if self.loop else 0,
                "request_timeouts": self.loop.stats.timeouts if self.loop else 0,
                "cameras": self.cameras.ids(), "cameras_evicted": self.cameras.evicted,
                "cameras_refused": self.cameras.refused, "last_error": self.error,
                "dead_letter_reasons": reasons, "lag": dict(self.lag), "partitions": list(self.assigned),
                "committed": {tp.partition: o for tp, o in committed.items()},
                "poll_s_ago": round(time.monotonic() - self.polled_at, 1) if self.polled_at else None,
                "latency_ms": list(self.loop.stats.latencies_ms)[-50:] if self.loop else [],
                **self.delivery.health(self.sink_spec.events_topic)}

    async def _export_metrics(self, metrics: MemberMetrics) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            try:
                metrics.record(await self.health())
            except Exception as e:  # noqa: BLE001 - metrics must never stop a member; said in its log
                log.warning("%s: metrics not recorded: %s: %s", self.name, type(e).__name__, e)

    async def take_output(self) -> list[str]:
        return self.lines.take() if self.lines is not None else []

    async def thumbnails(self, width: int) -> dict[str, bytes]:
        """Each camera's latest sampled frame as a JPEG ``width`` wide, for the live page."""
        def encode() -> dict[str, bytes]:
            with self._jpeg_lock:
                return {camera: self._jpeg.encode(image, width) for camera, image in list(self.latest.items())}

        return await asyncio.get_running_loop().run_in_executor(None, encode)

    # -- poll thread ----------------------------------------------------------------------------
    def _poll(self) -> None:
        consumer = None
        try:
            handover = HandOver(self.tracker, lambda offsets: self._commit_offsets(consumer, offsets),
                                self._drop_partitions, self.name, rewind=lambda resume: _rewind(consumer, resume))
            consumer = make_consumer(self.sink_spec.bootstrap, self.spec.topic, self.spec.group_id,
                                     session_timeout_ms=self.session_timeout_ms, security=self.sink_spec.security,
                                     listener=handover, **fetch_sizes(self.spec.limits))
            last_commit = time.monotonic()
            while not self.stopping.is_set():
                self.polled_at = time.monotonic()
                if self.delivery.congested:  # the sink is behind or down: read no more (dead letters)
                    self.stopping.wait(0.1)
                    continue
                began = time.monotonic()
                batches = consumer.poll(timeout_ms=200, max_records=64)
                if not batches and self._caught_up(consumer):  # waiting, not behind: the cameras are quiet
                    self.idle.waited(time.monotonic() - began)
                handover.settle()  # partitions revoked during that poll, before its records
                self.stats["revocations"] = handover.revocations
                for tp, records in batches.items():
                    if tp in handover.rewound:  # read again from the rewound position
                        continue
                    for record in records:
                        self._consume(tp, record)
                for camera in self.idle.due():
                    self.release_idle(camera)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    self.cameras.sweep()
                    self._commit(consumer)
                    self.lag = partition_lags(consumer, self.tracker.committed())
                    self.assigned = sorted(tp.partition for tp in consumer.assignment())
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

    def _caught_up(self, consumer) -> bool:
        """Every assigned partition read up to the broker's last reported end. A poll that returns
        nothing while records are still to be read is a broker outage or a slow fetch, not silence
        of the cameras: counting it would release rings whose frames later records would window."""
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None or consumer.position(tp, timeout_ms=0) < high:
                    return False
        except Exception:  # noqa: BLE001 - no position or end known yet: not caught up
            return False
        return True

    def _consume(self, tp, record) -> None:
        self.stats["records"] += 1
        with self.lock:
            try:
                epoch = self.tracker.add(tp, record.offset)
            except ValueError as e:  # read again while still being handled (a seek, a re-delivery)
                log.warning("%s: skipping a record already in hand: %s", self.name, e)
                return
        try:
            frame = decode_frame_message(record.key, record.value, list(record.headers or []), self.spec.limits)
            stage = self.cameras.get(frame.camera_id)  # refused (dead-lettered) past max_cameras
        except BadMessage as e:
            self._dead_letter(tp, record, e, epoch)
            return
        camera = frame.camera_id
        self.camera_tps[camera] = tp
        self.idle.seen(camera)
        if not stage.keep(frame.time):
            self._release(tp, record.offset, epoch)
            return
        self.latest[camera] = frame.image
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        with self.lock:
            self.refs[(camera, seq)] = FrameRef(tp, record.offset, frame.seq, epoch)
        window = stage.push(replace(frame, seq=seq))
        if window is not None:
            with self.lock:
                held = [self.refs[(camera, s)] for s in window.frame_seqs]
                for ref in held:
                    if ref.tp is not None:  # None: released as idle already (release_idle)
                        self.tracker.hold(ref.tp, ref.offset)
                self.window_refs[(camera, window.index)] = held
                # Frames no later window contains are done with the ring now, not when pushed out:
                # the commit point then sits at the next window's first frame, so a member that
                # takes this partition over cuts the same windows (the same event ids) again.
                for s in window.frame_seqs[:stage.buffer.hop]:
                    self._release_ref(self.refs.pop((camera, s)))
            self.stats["windows"] += 1
            self.pending.put(window)  # blocks while the model is behind: the topic slows down

    def _new_stage(self, camera: str) -> WindowStage:
        def evicted(seq: int) -> None:
            with self.lock:
                ref = self.refs.pop((camera, seq), None)  # None: released when its last window was cut
                if ref is not None:
                    self._release_ref(ref)

        return WindowStage(camera, self.preprocess, self.model.num_frames, self.options.sample_fps,
                           self.options.hop, self.options.max_gap_seconds, on_evict=evicted,
                           absolute_sampling=True)  # a re-read cuts the same windows (RateSampler)

    def _busy(self, camera: str) -> bool:
        """Windows of the camera are queued or being scored: it is not evicted yet."""
        with self.lock:
            return any(c == camera for c, _ in self.window_refs)

    def _close_camera(self, camera: str, stage: WindowStage) -> None:
        """An idle camera leaves the registry (poll thread): its ring's frames are released and, on
        the actor's loop, its incidents end and its builder goes, as on a hand-over."""
        stage.buffer.reset()
        self.camera_tps.pop(camera, None)
        self.latest.pop(camera, None)
        self.idle.forget(camera)
        self.aio.call_soon_threadsafe(self._end_incidents, camera, True)
        log.info("%s: camera %r evicted after %g s without frames", self.name, camera, self.spec.camera_idle_s)

    def _dead_letter(self, tp, record, error: BadMessage, epoch: int) -> None:
        self.stats["dead_letters"] += 1
        with self.lock:
            self.dead_letter_reasons[error.reason] += 1
        log.warning("%s: offset %d of %s[%d] to the dead-letter topic: %s", self.name, record.offset,
                    tp.topic, tp.partition, error)
        key, value, headers = dead_letter_record(record.key, record.value, list(record.headers or []), error,
                                                 tp.topic, tp.partition, record.offset,
                                                 self.spec.limits.dead_letter_max_bytes)
        # Retried until acknowledged (see Delivery); only then is the record's offset released.
        self.delivery.submit(self.sink_spec.dead_letter_topic, key, value, headers,
                             on_ack=lambda _: self._release(tp, record.offset, epoch))

    def _release(self, tp, offset: int, epoch: int) -> None:
        with self.lock:
            self.tracker.release(tp, offset, epoch)

    def _release_ref(self, ref: FrameRef) -> None:
        """(Under ``self.lock``.) One reference of the frame's record dropped; one released as idle
        is done with already, and one from before its partition was handed over is not tracked."""
        if ref.tp is not None:
            self.tracker.release(ref.tp, ref.offset, ref.epoch)

    def _commit(self, consumer) -> None:
        with self.lock:
            offsets = self.tracker.committable()
        if not offsets:
            return
        from kafka.errors import KafkaError

        try:
            self._commit_offsets(consumer, offsets)
        except KafkaError as e:  # CommitFailedError in a rebalance, or a broker hiccup: next interval
            self.stats["commit_failures"] += 1
            log.warning("%s: commit failed (%s: %s); retried at the next interval", self.name, type(e).__name__, e)
            return
        with self.lock:
            self.tracker.mark_committed(offsets)

    def _commit_offsets(self, consumer, offsets: dict) -> None:
        from kafka.structs import OffsetAndMetadata

        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        self.stats["commits"] += 1

    def _drain_and_close(self, consumer) -> None:
        """Shutdown: wait for the windows already cut to be scored and published, end every
        camera's open incidents, wait for the acknowledgements, then commit what is done. Frames
        still in a ring stay uncommitted and are read again by the next member."""
        if not self.scored_all.wait(timeout=120):
            log.warning("%s: windows still in flight at shutdown; their frames will be re-read", self.name)
        for builder in list(self.builders.values()):
            self._flush_builder(builder)
        if not self.delivery.drain(STOP_DELIVERY_S):
            log.error("%s: %d events unacknowledged at shutdown; their frames stay uncommitted",
                      self.name, self.delivery.backlog)
        try:
            self._commit(consumer)
        finally:
            consumer.close()

    # -- partitions and cameras leaving ----------------------------------------------------------
    def release_idle(self, camera: str) -> None:
        """A camera sent nothing for a while: release the offsets of its ring's frames, so that its
        partition's commit point moves past them, and end its open incidents.

        The frames stay in the ring (their refs say ``tp`` None). A camera that has stopped leaves
        them there until a gap empties the ring or the camera is evicted. A producer that only
        stalled sends frames with no gap in their capture times, which still make windows with the
        frames kept; emptying the ring here lost them (8 frames in a loaded cluster run). The cost:
        a member that dies before the next window loses those frames' windows (their offsets are
        committed), and the next owner's windows start after them."""
        stage = self.cameras.peek(camera)
        if stage is not None:
            with self.lock:
                for seq in stage.buffer.seqs():
                    ref = self.refs.get((camera, seq))
                    if ref is not None and ref.tp is not None:
                        self._release_ref(ref)
                        self.refs[(camera, seq)] = ref._replace(tp=None, offset=None)
        self.aio.call_soon_threadsafe(self._end_incidents, camera, False)
        self.stats["idle_released"] += 1
        log.info("%s: camera %s idle; its frames' offsets were released (the frames stay for a window)",
                 self.name, camera)

    def _drop_partitions(self, revoked: set) -> None:
        """Partitions went to another member: forget their cameras here (frames in rings, queued
        windows, incidents, which end now); the new owner re-reads from the committed offsets."""
        cameras = {camera for camera, tp in self.camera_tps.items() if tp in revoked}
        if not cameras:
            return
        gone = self.pending.discard(lambda w: w.camera_id in cameras)
        with self.lock:
            for w in gone:
                self.window_refs.pop((w.camera_id, w.index), None)
        for camera in cameras:
            stage = self.cameras.remove(camera)
            if stage is not None:
                stage.buffer.reset()  # releases into the forgotten partitions: no effect on commits
            self.latest.pop(camera, None)
            self.aio.call_soon_threadsafe(self._end_incidents, camera, True)
            del self.camera_tps[camera]
            self.idle.forget(camera)
        self.stats["cameras_dropped"] += len(cameras)

    # -- scoring side (the actor's event loop) ---------------------------------------------------
    def _end_incidents(self, camera: str, drop: bool) -> None:
        """End a camera's open incidents. Idle (``drop`` False): once its last windows are scored, in
        window order. Handed over (``drop``): now, forgetting its builder, so windows it sends later
        (if its partition comes back) start afresh. After shutdown began, ``_drain_and_close`` ends
        them all."""
        if self.scored_all.is_set():
            return
        if drop:
            self._flush_builder(self.builders.pop(camera, None))
            self.aio.call_later(0.5, self._end_stragglers, camera)
            return
        if self.loop.in_flight_for(camera) or self.pending.holds(camera):
            self.aio.call_later(0.2, self._end_incidents, camera, drop)
            return
        self._flush_builder(self.builders.get(camera))

    def _end_stragglers(self, camera: str) -> None:
        """Windows cut before a hand-over but scored after it may have opened incidents here: end
        them once those windows are done, unless the camera's partition came back to this member."""
        if self.scored_all.is_set():
            return
        if self.loop.in_flight_for(camera):
            self.aio.call_later(0.5, self._end_stragglers, camera)
        elif camera not in self.camera_tps:
            self._flush_builder(self.builders.pop(camera, None))

    def _flush_builder(self, builder: EventBuilder | None) -> None:
        if builder is not None:
            send_events(self.delivery, self.sink_spec.events_topic, builder.flush())

    def _builder(self, camera: str) -> EventBuilder:
        """Each camera's event state; windows are scored with its builder's current labels."""
        if camera not in self.builders:
            self.builders[camera] = EventBuilder(camera, self.model.name, self.labels, self.options.continue_every)
        return self.builders[camera]

    def _source_seqs(self, window) -> tuple[int, int]:
        with self.lock:
            held = self.window_refs[(window.camera_id, window.index)]
        return held[0].seq, held[-1].seq

    def _publish(self, window, events: list) -> None:
        # The refs are dropped only once the events are queued: an event that cannot be encoded raises
        # (sending nothing) and the scoring loop publishes the window's failed event in their place.
        key = (window.camera_id, window.index)
        with self.lock:
            held = self.window_refs[key]
        send_events(self.delivery, self.sink_spec.events_topic, events,
                    on_all_acked=lambda: self._release_all(held))
        with self.lock:
            self.window_refs.pop(key, None)

    def _release_all(self, held: list[FrameRef]) -> None:
        with self.lock:
            for ref in held:
                self._release_ref(ref)


def _rewind(consumer, resume: dict) -> None:
    """Seek the partitions given straight back to where this member's work on them stopped."""
    for tp, offset in resume.items():
        consumer.seek(tp, offset)
