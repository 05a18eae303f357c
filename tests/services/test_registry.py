"""The service's model registry, in process: which versions it serves and where it loads them."""

import asyncio
import json
import threading
import uuid

import pytest

from ganforge import store
from ganforge.card import ModelCard
from ganforge.errors import ModelNotFound
from ganforge.settings import get_settings
from services.registry import DEFAULT_MODEL_DIR, ModelRegistry

NAME = "mnist-registry-test"


def register(stage: str) -> store.StoredModel:
    meta = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())
    meta.pop("name"), meta.pop("run_id")
    model, _ = store.register(name=NAME, run_id=uuid.uuid4().hex, stage=stage,
                              card=ModelCard.from_metadata(meta),
                              onnx_path=DEFAULT_MODEL_DIR / store.GENERATOR_FILE)
    return model


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
