"""Test helpers: copies of the shipped default generator registered under a test's own name,
and a spy on the registry's loads."""

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ganforge import store
from ganforge.card import ModelCard
from tests.utils import ROOT

DEFAULT = ROOT / "services" / "assets" / "default"  # the shipped generator and its metadata


def default_card() -> ModelCard:
    meta = json.loads((DEFAULT / "metadata.json").read_text())
    meta.pop("name"), meta.pop("run_id")
    return ModelCard.from_metadata(meta)


def register_default(name: str, stage: str = store.PRODUCTION) -> store.StoredModel:
    """A new version of ``name`` holding the shipped generator, at ``stage``."""
    model, _ = store.register(name=name, run_id=uuid.uuid4().hex, stage=stage, card=default_card(),
                              onnx_path=DEFAULT / store.GENERATOR_FILE)
    return model


def spy_loads(registry: Any) -> list[str]:
    """The tags ``registry`` loads from now on, in order."""
    loaded: list[str] = []
    load = registry._load

    def watched(model: store.StoredModel) -> Any:
        loaded.append(model.tag)
        return load(model)

    registry._load = watched
    return loaded


@contextmanager
def own_name(prefix: str) -> Iterator[str]:
    """A model name of the test's own (``<prefix>-<8 hex>``), removed from the store afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    yield name
    shutil.rmtree(store.store_root() / name, ignore_errors=True)
