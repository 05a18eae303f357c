import asyncio
import threading
import time

import numpy as np
import pytest

from services.batching import Batcher


class SlowModel:
    """Doubles its input; records the batch sizes it saw."""

    def __init__(self, delay: float = 0.01) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        self.sizes.append(len(z))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        out = z * 2
        return out if labels is None else out + labels[:, None]


def run(coro):
    return asyncio.run(coro)


def test_each_request_gets_its_own_rows_back() -> None:
    model = SlowModel()
    batcher = Batcher(model, max_batch_size=64)

    async def main():
        reqs = [(np.full((k, 3), float(i), dtype=np.float32), np.full(k, i)) for i, k in
                enumerate([1, 2, 5, 1, 3] * 8)]
        outs = await asyncio.gather(*(batcher.submit(z, y) for z, y in reqs))
        return reqs, outs

    reqs, outs = run(main())
    for (z, y), out in zip(reqs, outs, strict=True):
        np.testing.assert_array_equal(out, z * 2 + y[:, None])
    assert max(model.sizes) > 1  # concurrent requests were batched
    assert sum(model.sizes) == sum(len(z) for z, _ in reqs)
    assert model.threads == {next(iter(model.threads))}  # one inference thread


def test_batches_never_exceed_the_limit() -> None:
    model = SlowModel()
    batcher = Batcher(model, max_batch_size=8)

    async def main():
        await asyncio.gather(*(batcher.submit(np.zeros((3, 2), np.float32), None)
                               for _ in range(20)))
        # a request larger than the limit runs alone
        return await batcher.submit(np.zeros((20, 2), np.float32), None)

    assert run(main()).shape == (20, 2)
    assert max(model.sizes[:-1]) <= 8 and model.sizes[-1] == 20


def test_a_lone_request_does_not_wait() -> None:
    model = SlowModel(delay=0.0)
    batcher = Batcher(model, max_batch_size=256)

    async def main():
        start = time.perf_counter()
        await batcher.submit(np.zeros((1, 2), np.float32), None)
        return time.perf_counter() - start

    run(main())  # warm up the thread
    assert model.sizes == [1]


def test_max_latency_lets_a_batch_fill() -> None:
    model = SlowModel(delay=0.0)
    batcher = Batcher(model, max_batch_size=256, max_latency_ms=200)

    async def main():
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32), None))
        await asyncio.sleep(0.02)
        second = batcher.submit(np.zeros((1, 2), np.float32), None)
        await asyncio.gather(first, second)

    run(main())
    assert model.sizes == [2]


def test_a_failing_batch_fails_only_its_requests() -> None:
    calls = []

    def flaky(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        calls.append(len(z))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return z

    batcher = Batcher(flaky, max_batch_size=4)

    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(np.zeros((1, 2), np.float32), None)
        return await batcher.submit(np.ones((1, 2), np.float32), None)

    assert run(main()).sum() == 2


def test_close_finishes_queued_work_then_serves_late_requests() -> None:
    """A request that took the model just before a hot swap closed its batcher is still served
    (it was a 500 before): swaps drain."""
    batcher = Batcher(SlowModel(), max_batch_size=4)

    async def main():
        pending = [asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32), None))
                   for _ in range(6)]
        await asyncio.sleep(0)
        batcher.close()
        done = await asyncio.gather(*pending)
        late = await batcher.submit(np.ones((1, 2), np.float32), None)
        return done, late

    done, late = run(main())
    assert len(done) == 6 and all(d.shape == (1, 2) for d in done)
    assert late.shape == (1, 2)


@pytest.mark.parametrize(("kwargs", "match"), [({"max_batch_size": 0}, "max_batch_size"),
                                               ({"max_latency_ms": -1}, "max_latency_ms")])
def test_invalid_settings(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        Batcher(SlowModel(), **kwargs)


def test_small_batches_run_on_the_event_loop() -> None:
    model = SlowModel(delay=0.0)
    batcher = Batcher(model, max_batch_size=64, inline_max=2)

    async def main():
        await batcher.submit(np.zeros((2, 2), np.float32), None)
        await batcher.submit(np.zeros((3, 2), np.float32), None)

    run(main())
    assert model.sizes == [2, 3]
    assert "MainThread" in model.threads and any(t.startswith("ort") for t in model.threads)
