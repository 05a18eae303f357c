"""The models a service process serves: loaded from the store, swapped in when a new production
version appears, never dropped for a version that fails to load.

Each loaded version has its own ONNX Runtime session and batcher. A swap replaces one dict
entry (atomic for the event loop); requests already queued on the old version finish there.
"""

import asyncio
import json
import logging
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganforge import store
from ganforge.card import ModelCard
from ganforge.errors import CorruptModel, ModelNotFound
from ganforge.files import write_bytes_atomic
from ganforge.generator import OnnxGenerator
from ganforge.settings import Settings
from services import metrics
from services.batching import Batcher

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"


@dataclass
class LoadedModel:
    model: store.StoredModel
    session: OnnxGenerator
    batcher: Batcher

    @property
    def tag(self) -> str:
        return self.model.tag

    def describe(self) -> dict[str, Any]:
        card = self.model.card
        return {"name": self.model.name, "version": self.model.version, "tag": self.tag,
                "family": card.family, "conditional": card.conditional,
                "num_classes": card.num_classes, "latent_dim": card.latent_dim,
                "stage": self.model.stage, "steps": card.steps, "metrics": card.metrics,
                "provider": self.session.provider,
                "created": self.model.created.isoformat()}


@dataclass
class ModelRegistry:
    settings: Settings
    live: dict[str, LoadedModel] = field(default_factory=dict)  # name -> serving version
    pinned: "OrderedDict[str, LoadedModel]" = field(default_factory=OrderedDict)  # name:version
    failed: set[str] = field(default_factory=set)  # tags that failed to load: not retried
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _load(self, model: store.StoredModel) -> LoadedModel:
        session = OnnxGenerator(model.onnx_path, model.spec, threads=self.settings.ort_threads)
        name = model.name
        batcher = Batcher(session, max_batch_size=self.settings.serve_max_batch_size,
                          max_latency_ms=self.settings.serve_max_latency_ms,
                          inline_max=self.settings.serve_inline_max,
                          on_batch=metrics.BATCH_SIZE.labels(name).observe)
        metrics.MODEL_LOADS.labels(name).inc()
        return LoadedModel(model, session, batcher)

    def refresh(self) -> list[str]:
        """Load the newest production version of every model name; returns what changed."""
        newest: dict[str, store.StoredModel] = {}
        for m in store.list_models(stage=store.PRODUCTION):  # newest first
            newest.setdefault(m.name, m)
        changes = []
        with self._lock:
            for name, m in newest.items():
                current = self.live.get(name)
                if (current and current.tag == m.tag) or m.tag in self.failed:
                    continue
                if current and current.model.created > m.created:
                    continue
                try:
                    loaded = self._load(m)
                except CorruptModel as exc:
                    self.failed.add(m.tag)
                    metrics.MODEL_LOAD_FAILURES.labels(name).inc()
                    log.error("model %s failed to load, still serving %s: %s", m.tag,
                              current.tag if current else "nothing", exc)
                    continue
                self.live[name] = loaded
                self._info(loaded, 1)
                if current is not None:
                    self._info(current, 0)
                    current.batcher.close()
                log.info("serving %s (%s)", m.tag, loaded.session.provider)
                changes.append(m.tag)
        return changes

    @staticmethod
    def _info(loaded: LoadedModel, value: int) -> None:
        metrics.MODEL_INFO.labels(loaded.model.name, loaded.model.version,
                                  loaded.model.card.family,
                                  str(loaded.model.spec.conditional).lower(),
                                  loaded.session.provider).set(value)

    @property
    def ready(self) -> bool:
        return bool(self.live)

    def default(self) -> LoadedModel:
        """The newest production conditional model (else the newest production one)."""
        ranked = sorted(self.live.values(), key=lambda x: (x.model.spec.conditional,
                                                           x.model.created), reverse=True)
        if not ranked:
            raise ModelNotFound("model: no model is loaded yet")
        return ranked[0]

    def get(self, tag: str | None) -> LoadedModel:
        """``None`` (the default), a name (its serving version) or ``name:version``."""
        if not tag:
            return self.default()
        if ":" not in tag:
            if tag in self.live:
                return self.live[tag]
            raise ModelNotFound(f"model: {tag!r} is not served; served: {sorted(self.live)}")
        served = self._served(tag)
        if served is not None:
            return served
        with self._lock:
            if tag in self.pinned:
                self.pinned.move_to_end(tag)
                return self.pinned[tag]
            loaded = self._load(store.get_model(tag))  # ModelNotFound for an unknown tag
            self.pinned[tag] = loaded
            while len(self.pinned) > 4:  # keep a few older versions warm
                self.pinned.popitem(last=False)[1].batcher.close()
            return loaded

    async def aget(self, tag: str | None) -> LoadedModel:
        """``get`` for the event loop: a served or already pinned model at once; a version that
        must be loaded first (~0.1 s, or longer while a refresh holds the lock) loads on a worker
        thread, so other requests keep flowing meanwhile."""
        if tag and ":" in tag and (self._served(tag) or self.pinned.get(tag)) is None:
            return await asyncio.to_thread(self.get, tag)
        return self.get(tag)  # no loading on this path

    def _served(self, tag: str) -> LoadedModel | None:
        """The live model when ``name:version`` is the version its name serves."""
        live = self.live.get(tag.split(":", 1)[0])
        return live if live is not None and live.tag == tag else None

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in sorted(self.live.values(), key=lambda x: x.model.name)]


def import_default_model(source: Path = DEFAULT_MODEL_DIR) -> str | None:
    """Register the shipped generator when the store holds no production model (first start)."""
    if store.list_models(stage=store.PRODUCTION) or not (source / store.GENERATOR_FILE).exists():
        return None
    meta = json.loads((source / "metadata.json").read_text())
    extra = [p for p in source.iterdir() if p.suffix in (".png", ".pt")]
    model, _ = store.register(name=meta["name"], run_id=meta["run_id"],
                              onnx_path=source / store.GENERATOR_FILE,
                              card=ModelCard.from_metadata(meta), stage=store.PRODUCTION,
                              extra_files=extra)
    log.info("imported the default model as %s", model.tag)
    return model.tag


def export_default_model(tag: str, dest: Path = DEFAULT_MODEL_DIR) -> None:
    """Copy a registered model into the repository as the shipped default (``make pretrained``)."""
    model = store.get_model(tag)
    dest.mkdir(parents=True, exist_ok=True)
    for f in model.path.iterdir():
        if f.name == store.GENERATOR_FILE or f.suffix in (".png", ".pt"):
            shutil.copyfile(f, dest / f.name)
    meta = {"name": model.name, "run_id": model.run_id, **model.card.to_metadata()}
    write_bytes_atomic(dest / "metadata.json",
                       (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
