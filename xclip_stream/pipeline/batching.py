"""Concurrent calls gathered into batches for one function run in a worker thread, one batch at a time.

A batch is formed when the one before it has finished: it takes every call waiting then (up to
``max_batch_size``) and, while it is smaller, waits for more until its oldest call has waited
``batch_wait_timeout_s``. So under load batches are as large as the load, and an idle replica
answers a lone call after at most the timeout. Ray Serve's ``@serve.batch`` forms each batch while
the previous one runs and queues it, so a forward pass longer than the timeout leaves batches as
small as what arrives in one timeout (about 2 windows with 16 calls outstanding; bench/serve.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any


class Batcher:
    """``await submit(item)`` -> ``fn(items)[i]`` for this item, ``fn`` run in the loop's default
    executor; an exception from ``fn`` is raised in every call of its batch. ``after_batch`` runs on
    the event loop once each batch has ended, however it ended."""

    def __init__(self, fn: Callable[[list], Sequence], max_batch_size: int, batch_wait_timeout_s: float,
                 after_batch: Callable[[], None] | None = None):
        if max_batch_size < 1 or batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be at least 1 and batch_wait_timeout_s not negative")
        self.fn, self.after_batch = fn, after_batch
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self._waiting: deque[tuple[Any, asyncio.Future, float]] = deque()  # item, its future, when it came
        self._arrived = asyncio.Event()  # binds to the loop of its first wait
        self._worker: asyncio.Task | None = None

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((item, future, loop.time()))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch(loop)
            try:
                results = await loop.run_in_executor(None, self.fn, [item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} calls")
            except Exception as e:  # noqa: BLE001 - every call of the batch gets it
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(e)
            else:
                for (_, future, _), result in zip(batch, results):
                    if not future.done():  # a call cancelled meanwhile wants no answer
                        future.set_result(result)
            finally:
                if self.after_batch is not None:
                    self.after_batch()

    async def _next_batch(self, loop) -> list[tuple[Any, asyncio.Future, float]]:
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._waiting[0][2] + self.batch_wait_timeout_s
            while len(self._waiting) < self.max_batch_size and loop.time() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            taken = [self._waiting.popleft() for _ in range(min(len(self._waiting), self.max_batch_size))]
            batch = [entry for entry in taken if not entry[1].cancelled()]
            if batch:
                return batch
