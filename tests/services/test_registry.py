"""The service's model registry, in process: which versions it serves and where it loads them."""

import asyncio
import shutil
import threading
import uuid

import pytest

from ganforge import store
from ganforge.errors import ModelNotFound
from ganforge.settings import get_settings
from services.registry import ModelRegistry
from tests.utils.models import register_default, spy_loads

NAME = "mnist-registry-test"


def register(stage: str, name: str = NAME) -> store.StoredModel:
    return register_default(name, stage)


def test_aget_loads_an_unserved_version_off_the_event_loop() -> None:
    prod, candidate = register(store.PRODUCTION), register("candidate")
    registry = ModelRegistry(get_settings())
    registry.refresh()
    loads: list[tuple[str, threading.Thread]] = []
    load = registry._load

    def watched(model: store.StoredModel):
        loads.append((model.tag, threading.current_thread()))
        return load(model)

    registry._load = watched  # type: ignore[method-assign]

    async def ask():
        return [await registry.aget(tag) for tag in (prod.tag, NAME, candidate.tag,
                                                     candidate.tag)]

    try:
        served, by_name, pinned, again = asyncio.run(ask())
        assert served is by_name and served.tag == prod.tag  # the served version: no load
        assert pinned.tag == candidate.tag and again is pinned  # loaded once, then kept
        assert [tag for tag, _ in loads] == [candidate.tag]
        assert loads[0][1] is not threading.main_thread()  # not on the event loop's thread
        with pytest.raises(ModelNotFound):
            asyncio.run(registry.aget(f"{NAME}:nosuchversion"))
    finally:
        for loaded in [*registry.live.values(), *registry.pinned.values()]:
            loaded.batcher.close()


def test_a_damaged_version_is_skipped_and_taken_once_repaired() -> None:
    """The newest production version is truncated: the next older one is served, the damaged
    one is not loaded again while its files stay the same, and is swapped in once repaired."""
    name = f"mnist-registry-{uuid.uuid4().hex[:8]}"
    good, damaged = register(store.PRODUCTION, name), register(store.PRODUCTION, name)
    whole = damaged.onnx_path.read_bytes()
    damaged.onnx_path.write_bytes(whole[: len(whole) // 2])
    registry = ModelRegistry(get_settings())
    tried = spy_loads(registry)
    try:
        registry.refresh()
        assert registry.live[name].tag == good.tag
        assert tried.count(damaged.tag) == 1 and damaged.tag in registry.failed
        registry.refresh()
        registry.refresh()
        assert tried.count(damaged.tag) == 1  # same files: not tried again
        with pytest.raises(ModelNotFound, match="does not load"):
            registry.get(damaged.tag)
        damaged.onnx_path.write_bytes(whole)  # repaired: its signature changes
        assert registry.refresh() == [damaged.tag]
        assert registry.live[name].tag == damaged.tag and not registry.failed
    finally:
        for loaded in [*registry.live.values(), *registry.pinned.values()]:
            loaded.batcher.close()
        shutil.rmtree(store.store_root() / name, ignore_errors=True)
