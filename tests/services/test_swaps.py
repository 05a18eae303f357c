"""The registry and the batcher in process: swaps drain, aliases resolve to one loaded version,
unknown versions are refused from memory, and loading never holds the event loop."""

import asyncio
import threading
import time

import numpy as np
import pytest

from ganforge import store
from ganforge.errors import ModelNotFound
from ganforge.settings import get_settings
from services.batching import Batcher
from services.registry import ModelRegistry
from tests.utils.models import own_name, register_default, spy_loads

register = register_default


@pytest.fixture
def name():
    with own_name("mnist-swap") as name:
        yield name


@pytest.fixture
def registry():
    reg = ModelRegistry(get_settings())
    yield reg
    for loaded in [*reg.live.values(), *reg.pinned.values()]:
        loaded.batcher.close()


def z_for(n: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.random.default_rng(n).standard_normal((n, 100)).astype(np.float32),
            np.arange(n, dtype=np.int64) % 10)


# ---- 4. swaps drain ---------------------------------------------------------------------------

def slow_double(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    time.sleep(0.05)
    return z * 2


def test_a_closed_batcher_still_serves_what_reaches_it() -> None:
    async def main() -> None:
        batcher = Batcher(slow_double, max_batch_size=8)
        ones = np.ones((2, 3), np.float32)
        first = asyncio.ensure_future(batcher.submit(ones, None))
        await asyncio.sleep(0.01)  # the first run is on the worker thread
        queued = asyncio.ensure_future(batcher.submit(ones * 2, None))
        batcher.close()  # a swap, from the poll thread in the service
        late = asyncio.ensure_future(batcher.submit(ones * 3, None))  # consumer still draining
        results = await asyncio.gather(first, queued, late)
        assert [float(r[0, 0]) for r in results] == [2.0, 4.0, 6.0]
        assert batcher._task is not None and batcher._task.done()  # the consumer has stopped
        after = await batcher.submit(ones * 4, None)  # after it stopped: run alone
        assert float(after[0, 0]) == 8.0 and after.shape == (2, 3)
        never = Batcher(slow_double)
        never.close()  # closed before any request: nothing to drain
        assert float((await never.submit(ones, None))[0, 0]) == 2.0

    asyncio.run(main())


def test_a_request_holding_the_old_version_is_served_through_a_hot_swap(registry, name) -> None:
    old = register(name)
    registry.refresh()

    async def main() -> tuple[np.ndarray, np.ndarray]:
        held = await registry.aget(name)  # a request took the model ...
        assert held.tag == old.tag
        new = register(name)
        changed = await asyncio.to_thread(registry.refresh)  # ... and the poll swapped it out
        assert new.tag in changed and registry.live[name].tag == new.tag
        assert held.batcher._closing
        z, labels = z_for(6)
        images = await held.batcher.submit(z, labels)  # was: RuntimeError -> a 500
        fresh = await registry.live[name].batcher.submit(z, labels)
        return images, fresh

    images, fresh = asyncio.run(main())
    assert images.shape == (6, 1, 28, 28)
    np.testing.assert_allclose(images, fresh, atol=1e-5)  # same weights, same images


# ---- 3. aliases, unknown versions, the lock --------------------------------------------------

def test_aliases_resolve_to_one_loaded_version(registry, name) -> None:
    prod, cand = register(name), register(name, "candidate")
    registry.refresh()
    loads = spy_loads(registry)

    async def ask(tags: list[str]):
        return [await registry.aget(t) for t in tags]

    served = asyncio.run(ask([prod.tag, name, f"{name}:latest", f"{name}:LATEST", name.upper(),
                              f"{name}:{prod.version[:3]}", f"{name}:{prod.version.upper()}"]))
    assert {m.tag for m in served} == {prod.tag} and len({id(m) for m in served}) == 1
    pinned = asyncio.run(ask([cand.tag, f"{name}:{cand.version[:5]}",
                              f"{name.upper()}:{cand.version.upper()}"]))
    assert {m.tag for m in pinned} == {cand.tag} and len({id(m) for m in pinned}) == 1
    assert loads == [cand.tag]  # the candidate once; the served version never again
    assert list(registry.pinned) == [cand.tag]


def test_unknown_versions_are_refused_without_listing_the_store(registry, name, monkeypatch
                                                                 ) -> None:
    register(name)
    registry.refresh()
    listings: list[float] = []
    scan = store.scan

    def counted():
        listings.append(time.monotonic())
        return scan()

    monkeypatch.setattr(store, "scan", counted)

    async def refuse(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            for tag in (f"{name}:nosuch{i}", f"mnist-nothing-{i}:abc", f"..:{i}", f"{name}x"):
                with pytest.raises(ModelNotFound, match="model"):
                    await registry.aget(tag)
        return (time.perf_counter() - start) / (4 * n)

    per_request = asyncio.run(refuse(100))
    assert listings == [] and per_request < 0.005
    # a version registered since the last poll: its name's folder changed, one listing finds it
    new = register(name, "candidate")  # (registering lists the store itself)
    listings.clear()
    assert asyncio.run(registry.aget(new.tag)).tag == new.tag
    assert len(listings) == 1
    asyncio.run(refuse(5))
    assert len(listings) == 1


def test_a_slow_load_never_holds_the_event_loop(registry, name) -> None:
    """While a refresh holds the registry's lock (a slow load), a pinned version waits on a
    worker thread; the loop keeps serving the served version and its timers."""
    prod, cand = register(name), register(name, "candidate")
    registry.refresh()

    async def main() -> tuple[float, float, str]:
        registry._lock.acquire()  # a refresh in the middle of a slow load
        try:
            pinned = asyncio.ensure_future(registry.aget(cand.tag))
            start = time.perf_counter()
            for _ in range(20):
                served = await registry.aget(name)
                assert served.tag == prod.tag
                await asyncio.sleep(0.01)
            loop_time = time.perf_counter() - start
            assert not pinned.done()  # still waiting for the lock, off the loop
        finally:
            threading.Timer(0.05, registry._lock.release).start()
        start = time.perf_counter()
        loaded = await pinned
        return loop_time, time.perf_counter() - start, loaded.tag

    loop_time, waited, tag = asyncio.run(main())
    assert loop_time < 0.2 * 3  # 20 x 10 ms: no stall behind the lock (slack for a busy box)
    assert tag == cand.tag and waited < 5
