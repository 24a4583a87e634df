"""A source's open container, read on the caller's thread (files) or on a thread of its own (live).

Network and device inputs are opened and read on a thread the source owns, so ``stop()`` and the
stall watchdog never wait on a blocked FFmpeg call; that thread exits within ``read_timeout``
(PyAV's interrupt) once told to, and closes the container itself.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import av

POLL_S = 0.1  # how often a waiting party looks at its stop or close event
_EOF, _ERROR = "eof", "error"


class Stalled(Exception):
    """No data for read_timeout: the watchdog's verdict, raised on the reading thread."""


class Input:
    """An open container read on the caller's thread (local files: nothing there can block)."""

    def __init__(self, container: av.container.InputContainer):
        self.container = container
        self.stream = container.streams.video[0]
        self._packets = container.demux(self.stream)

    def next(self, _timeout: float) -> tuple[av.Packet, float] | None:
        """The next packet and its arrival time, or None at the end; raises queue.Empty on timeout."""
        packet = next(self._packets, None)
        return None if packet is None else (packet, time.monotonic())

    def close(self) -> None:
        self.container.close()


class ThreadedInput(Input):
    """Opens and demuxes on a thread of its own, handing packets over through a bounded queue; the
    thread owns the container (opens and closes it) and ends once ``close()`` was called."""

    def __init__(self, opener: Callable[[], av.container.InputContainer], name: str, read_timeout: float):
        self._opener = opener
        self._read_timeout = read_timeout
        self._items: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=64)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wait_open(self, stop: threading.Event, limit: float) -> bool:
        """True once open, False if stopped first; raises the open error, or TimeoutError."""
        deadline = time.monotonic() + limit
        while not stop.is_set():
            try:
                kind, value = self._items.get(timeout=POLL_S)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer within {limit:g} s") from None
                continue
            if kind == _ERROR:
                raise value  # type: ignore[misc]
            self.container = value  # type: ignore[assignment]
            self.stream = self.container.streams.video[0]
            return True
        return False

    def next(self, timeout: float) -> tuple[av.Packet, float] | None:
        kind, value = self._items.get(timeout=timeout)
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        return None if kind == _EOF else value  # type: ignore[return-value]

    def close(self) -> None:
        self._closing.set()

    def _run(self) -> None:
        try:
            container = self._opener()
        except Exception as e:  # handed to the consumer, which reports it
            self._put(_ERROR, e)
            return
        last_data = time.monotonic()
        try:
            if self._put("open", container):
                for packet in container.demux(container.streams.video[0]):
                    last_data = time.monotonic()
                    if not self._put("packet", (packet, last_data)):
                        return
                self._put(_EOF, None)
        except Exception as e:
            # PyAV's timeout ends a silent read with ExitError, or EIO from some demuxers (RTSP).
            silent = time.monotonic() - last_data >= 0.9 * self._read_timeout
            if silent or isinstance(e, av.error.ExitError):
                e = Stalled(f"stalled: no data within {self._read_timeout:g} s")
            self._put(_ERROR, e)
        finally:
            self._closing.wait()  # the consumer may still be decoding with this container's stream
            container.close()

    def _put(self, kind: str, value: object) -> bool:
        while not self._closing.is_set():
            try:
                self._items.put((kind, value), timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False
