"""Adaptive batching for one model: requests that arrive while the model is busy run together.

A single consumer takes everything queued (up to ``max_batch_size`` images) and runs it in one
ONNX Runtime call on a worker thread, so the event loop keeps accepting requests meanwhile. An
idle batcher runs a lone request at once; under load, batches grow by themselves to what
arrived during the previous run. ``max_latency_ms`` (0 by default) makes a batch that is not yet
full wait that long for company: measured in BENCHMARKS.md, waiting only adds latency here.
"""

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RunFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass
class _Request:
    z: np.ndarray
    labels: np.ndarray | None
    future: asyncio.Future[np.ndarray]


class Batcher:
    def __init__(self, run: RunFn, *, max_batch_size: int = 256, max_latency_ms: float = 0.0,
                 inline_max: int = 0, on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be 0 or more, got {max_latency_ms}")
        self.run, self.max_batch_size = run, max_batch_size
        self.max_latency = max_latency_ms / 1000.0
        # batches this small run on the event loop itself: the hop to the inference thread
        # costs more than the run (~0.15 ms an image on 2 cores)
        self.inline_max = inline_max
        self.on_batch = on_batch or (lambda n: None)
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_images = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ort")
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """Images for ``z`` (and ``labels``), computed in whichever batch comes next.

        A request that took this model just before a hot swap closed the batcher is still
        served: queued for the closing batcher's remaining runs while its consumer drains, or
        run on its own once the consumer has stopped (the session lives as long as a request
        holds it). A swap never turns a request into an error."""
        if self._closing and (self._task is None or self._task.done()):
            return await self._run_alone(z, labels)
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._consume())
        req = _Request(z, labels, loop.create_future())
        self._queue.append(req)
        self._queued_images += len(z)
        assert self._wake is not None
        self._wake.set()
        return await req.future

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].z) <= self.max_batch_size):
            req = self._queue.popleft()
            batch.append(req)
            size += len(req.z)
        self._queued_images -= size
        return batch

    async def _consume(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.max_latency and self._queued_images < self.max_batch_size:
                deadline = time.monotonic() + self.max_latency
                while self._queued_images < self.max_batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        break
                    self._wake.clear()
            while self._queue:
                batch = self._take()
                z = np.concatenate([r.z for r in batch])
                labels = (None if batch[0].labels is None
                          else np.concatenate([r.labels for r in batch if r.labels is not None]))
                try:
                    if len(z) <= self.inline_max:
                        images = self.run(z, labels)
                    else:
                        images = await loop.run_in_executor(self._pool, self.run, z, labels)
                except Exception as exc:
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(exc)
                    continue
                self.on_batch(len(z))
                start = 0
                for r in batch:
                    if not r.future.done():
                        r.future.set_result(images[start : start + len(r.z)])
                    start += len(r.z)
            if self._closing and not self._queue:
                self._pool.shutdown(wait=False)
                return

    async def _run_alone(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """One late request on a closed batcher: inline when small, else on a worker thread."""
        if len(z) <= self.inline_max:
            images = self.run(z, labels)
        else:
            images = await asyncio.to_thread(self.run, z, labels)
        self.on_batch(len(z))
        return images

    def close(self) -> None:
        """Finish what is queued, then stop; used when a new model version replaces this one.
        Safe to call from any thread."""
        self._closing = True
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)
        else:  # never used, or its loop is gone (tests): no consumer to wake
            self._pool.shutdown(wait=False)
