"""The replica's batcher (pipeline/batching.py), on a plain event loop: batches formed when the last
one ends take everything waiting, never more than the maximum; a lone call waits at most the
timeout; a failing batch fails only its own calls; a cancelled call is skipped."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from xclip_stream.pipeline.batching import Batcher


class SlowDouble:
    """A batch function that takes ``seconds`` and records each batch it was given."""

    def __init__(self, seconds: float = 0.0, fail_on=None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot do {self.fail_on}")
        return [2 * i for i in items]


def test_calls_waiting_while_a_batch_runs_all_go_into_the_next_one():
    """Ray Serve's batching formed the next batch from what arrived in one timeout while the last
    ran (about 2 windows with 16 outstanding); here the 7 calls made during a slow batch are one."""
    fn = SlowDouble(seconds=0.3)
    ended = []
    batcher = Batcher(fn, max_batch_size=8, batch_wait_timeout_s=0.01, after_batch=lambda: ended.append(1))

    async def main():
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.1)  # the first batch, [0], is running
        later = []
        for i in range(1, 8):
            later.append(asyncio.create_task(batcher.submit(i)))
            await asyncio.sleep(0.02)  # spread over more than one timeout
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(main())
    assert first == 0 and later == [2 * i for i in range(1, 8)]
    assert fn.batches == [[0], list(range(1, 8))] and len(ended) == 2


def test_batches_never_exceed_the_maximum_and_keep_call_order():
    fn = SlowDouble(seconds=0.05)
    batcher = Batcher(fn, max_batch_size=4, batch_wait_timeout_s=0.05)

    async def main():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert max(len(b) for b in fn.batches) == 4 and [i for b in fn.batches for i in b] == list(range(10))


def test_a_lone_call_waits_at_most_the_timeout():
    fn = SlowDouble()
    batcher = Batcher(fn, max_batch_size=8, batch_wait_timeout_s=0.2)

    async def main():
        began = time.monotonic()
        result = await batcher.submit(5)
        return result, time.monotonic() - began

    result, took = asyncio.run(main())
    assert result == 10 and fn.batches == [[5]] and 0.15 <= took < 1.0


def test_a_failed_batch_fails_its_calls_only_and_the_batcher_goes_on():
    fn = SlowDouble(seconds=0.05, fail_on=3)
    batcher = Batcher(fn, max_batch_size=8, batch_wait_timeout_s=0.02)

    async def main():
        failed = await asyncio.gather(*(batcher.submit(i) for i in (1, 3)), return_exceptions=True)
        return failed, await batcher.submit(4)

    failed, after = asyncio.run(main())
    assert all(isinstance(e, ValueError) and "cannot do 3" in str(e) for e in failed)
    assert after == 8 and fn.batches == [[1, 3], [4]]


def test_a_call_cancelled_before_its_batch_is_not_run():
    fn = SlowDouble(seconds=0.2)
    batcher = Batcher(fn, max_batch_size=8, batch_wait_timeout_s=0.0)

    async def main():
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(2))
        kept = asyncio.create_task(batcher.submit(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await first, await kept

    assert asyncio.run(main()) == (2, 6)
    assert fn.batches == [[1], [3]]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(SlowDouble(), max_batch_size=0, batch_wait_timeout_s=0.01)
