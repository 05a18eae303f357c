"""The models a service process serves: loaded from the store, swapped in when a new production
version appears, never dropped for a version that fails to load.

Each loaded version has its own ONNX Runtime session and batcher. A swap replaces one dict
entry (atomic for the event loop); requests already queued on the old version finish there.

Every request names a model by what it means: nothing (the default), a name or ``name:latest``
(the version that name serves, as ``/models`` lists it), or ``name:version`` with the version in
any case or as a unique prefix. It is resolved in memory against the last listing of the store
(``catalog``, read by each poll) to one canonical tag, so one version is loaded once whatever
alias reaches it, and an unknown version is refused without touching the store (unless the
name's folder changed since the listing: one stat, on a worker thread). Loading happens on
worker threads only: the event loop never waits for the registry's lock.
"""

import asyncio
import contextlib
import json
import logging
import re
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganforge import store
from ganforge.card import ModelCard
from ganforge.errors import CorruptModel, ModelNotFound, ModelUnavailable
from ganforge.files import write_bytes_atomic
from ganforge.generator import OnnxGenerator
from ganforge.settings import Settings
from services import metrics
from services.batching import Batcher

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default"
LOAD_FAILED = "load_failed"  # the skip reason of a version whose files do not load
SKIP_REASONS = (store.MISSING_MODEL_YAML, store.BAD_MODEL_YAML, store.BAD_CARD,
                store.MISSING_GENERATOR, LOAD_FAILED)
MODEL_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]{0,61}[a-z0-9])?$")  # BentoML's tag rule


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
                "dataset": card.dataset, "image_shape": list(card.image_shape),
                "class_names": list(card.class_names),
                "stage": self.model.stage, "steps": card.steps, "metrics": card.metrics,
                "provider": self.session.provider,
                "created": self.model.created.isoformat()}


@dataclass
class ModelRegistry:
    settings: Settings
    live: dict[str, LoadedModel] = field(default_factory=dict)  # name -> serving version
    pinned: "OrderedDict[str, LoadedModel]" = field(default_factory=OrderedDict)  # name:version
    # tag -> its files when it failed to load: not tried again until they change
    failed: dict[str, store.Signature] = field(default_factory=dict)
    # the store's readable versions by name (newest first), as the last listing found them
    versions: dict[str, list[store.StoredModel]] = field(default_factory=dict)
    stamps: dict[str, int] = field(default_factory=dict)  # name -> its folder's mtime then
    _lock: threading.Lock = field(default_factory=threading.Lock)  # loads and swaps
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)

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
        """List the store again, then serve the newest production version of every name that
        loads (a version that fails is skipped: the next older one, or the one served, stays);
        returns the tags swapped in."""
        found = self._list_store()
        newest: dict[str, list[store.StoredModel]] = {}
        for m in found.models:  # newest first
            if m.stage == store.PRODUCTION:
                newest.setdefault(m.name, []).append(m)
        with self._lock:
            changes = [tag for name, versions in newest.items()
                       if (tag := self._serve_newest(name, versions))]
            self._count_skipped(found)
        return changes

    def _list_store(self) -> store.Scan:
        with self._catalog_lock:
            found = store.scan()
            versions: dict[str, list[store.StoredModel]] = {}
            for m in found.models:
                versions.setdefault(m.name, []).append(m)
            self.versions, self.stamps = versions, found.stamps  # one assignment each
        return found

    def _serve_newest(self, name: str, versions: list[store.StoredModel]) -> str | None:
        """Swap in the newest of ``versions`` that is newer than the served one and loads."""
        current = self.live.get(name)
        for m in versions:
            if current is not None and (current.tag == m.tag or current.model.created > m.created):
                return None
            if self.failed.get(m.tag) == m.signature:
                continue  # failed with these very files
            try:
                loaded = self.pinned.pop(m.tag, None) or self._load(m)
            except CorruptModel as exc:
                self._failed(m, exc, current.tag if current else "nothing")
                continue
            self.failed.pop(m.tag, None)
            self.live[name] = loaded
            self._info(loaded, 1)
            if current is not None:
                self._info(current, 0)
                current.batcher.close()
            log.info("serving %s (%s)", m.tag, loaded.session.provider)
            return m.tag
        return None

    def _failed(self, m: store.StoredModel, exc: Exception, serving: str) -> None:
        self.failed[m.tag] = m.signature
        metrics.MODEL_LOAD_FAILURES.labels(m.name).inc()
        log.error("model %s failed to load, still serving %s: %s", m.tag, serving, exc)

    def _count_skipped(self, found: store.Scan) -> None:
        """The store's versions that are not served, by reason (the metric); failures of
        versions that are gone or whose files changed are forgotten."""
        signatures = {m.tag: m.signature for m in found.models}
        for tag in [t for t, sig in self.failed.items() if signatures.get(t) != sig]:
            del self.failed[tag]
        counts = dict.fromkeys(SKIP_REASONS, 0)
        for reason in found.skipped.values():
            counts[reason] = counts.get(reason, 0) + 1
        counts[LOAD_FAILED] = len(self.failed)
        for reason, n in counts.items():
            metrics.STORE_SKIPPED.labels(reason).set(n)

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
        """The model a request means (see the module's docstring), loading a version that is
        not loaded yet on this thread; for threads and tests (the routes use ``aget``)."""
        try:
            found = self._find(tag)
        except ModelNotFound:
            if not (tag and self._relist_if_changed(tag)):
                raise
            found = self._find(tag)
        return found if isinstance(found, LoadedModel) else self._load_pinned(found)

    async def aget(self, tag: str | None) -> LoadedModel:
        """``get`` for the event loop: a loaded model at once; a version that must be loaded
        first (~0.1 s, or longer while a refresh holds the lock), or a store folder to look at,
        on a worker thread, so other requests keep flowing meanwhile."""
        try:
            found = self._find(tag)
        except ModelNotFound:
            if not tag or not await asyncio.to_thread(self._relist_if_changed, tag):
                raise
            found = self._find(tag)
        if isinstance(found, LoadedModel):
            return found
        return await asyncio.to_thread(self._load_pinned, found)

    def _find(self, tag: str | None) -> "LoadedModel | store.StoredModel":
        """In memory only (safe on the event loop): the loaded model ``tag`` means, or the
        stored version to load. ModelNotFound when the last listing has no such version."""
        if not tag:
            return self.default()
        name, _, version = tag.strip().lower().partition(":")
        live = self.live.get(name)
        if version in ("", "latest"):
            if live is None:
                raise ModelNotFound(f"model: {name!r} is not served; served: {sorted(self.live)}")
            return live
        versions = self.versions.get(name)
        if not versions:
            raise ModelNotFound(f"model: no model {name!r} in the store; "
                                f"known: {sorted(self.versions)}")
        m = store.match_version(versions, f"{name}:{version}")
        if live is not None and live.tag == m.tag:
            return live
        pinned = self.pinned.get(m.tag)
        if pinned is None:
            return m
        # most recently used; evicted by a worker thread meanwhile: still usable (it drains)
        with contextlib.suppress(KeyError):
            self.pinned.move_to_end(m.tag)
        return pinned

    def _relist_if_changed(self, tag: str) -> bool:
        """List the store again when the name's folder changed since the last listing (a new
        version was added): one stat otherwise. True when it listed again."""
        name = tag.strip().lower().partition(":")[0]
        if not MODEL_NAME.match(name):
            return False
        try:
            stamp = (store.store_root() / name).stat().st_mtime_ns
        except OSError:
            return False
        if stamp == self.stamps.get(name):
            return False
        self._list_store()
        return True

    def _load_pinned(self, m: store.StoredModel) -> LoadedModel:
        """Load a version that its name does not serve (once: the lock and the checks under
        it), keeping the four most recently used."""
        with self._lock:
            live = self.live.get(m.name)
            if live is not None and live.tag == m.tag:
                return live
            if m.tag in self.pinned:
                return self.pinned[m.tag]
            if self.failed.get(m.tag) == m.signature:
                raise ModelUnavailable(f"model: {m.tag} is in the store but does not load "
                                       f"(damaged files); served: {sorted(self.live)}")
            try:
                loaded = self._load(m)
            except CorruptModel as exc:
                self._failed(m, exc, m.name)
                raise ModelUnavailable(f"model: {m.tag} is in the store but does not load: "
                                       f"{exc}") from exc
            self.pinned[m.tag] = loaded
            while len(self.pinned) > 4:  # keep a few older versions warm
                self.pinned.popitem(last=False)[1].batcher.close()
            return loaded

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
