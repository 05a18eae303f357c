"""The model store: exported generators registered in BentoML's store (``BENTOML_HOME``).

Each model is named ``<dataset>-<family>[-cond]`` (``mnist-dcgan-cond``) and holds
``generator.onnx`` with the sample grid and loss plot of its run beside it. Labels: ``stage``
(production or candidate, from the quality gate), ``run_id`` (one model per run: registering a
run twice returns the first tag) and ``ganforge: generator`` (what marks our models among the
store's others). Metadata: the model card (``ganforge.card.ModelCard``). No torch here: the
service imports this.

The store is shared (an RWX volume: workers write, service replicas read), so both sides are
careful. Writers: a version is built whole in a staging folder beside the store and renamed
into ``models/<name>/<version>`` (BentoML's own ``bentoml.models.create`` copies file by file
into place, so a writer killed midway left a half-written version that readers loaded).
Readers: the store is listed folder by folder (``scan``), never through
``bentoml.models.list``, which fails as a whole on one unreadable ``model.yaml``; a version
that cannot be read is skipped with a reason and read again once its files change (a
signature of names, sizes and mtimes), and unchanged versions are not parsed again.
"""

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ganforge.card import ModelCard
from ganforge.errors import CorruptModel, InvalidInput, ModelNotFound
from ganforge.files import write_bytes_atomic
from ganforge.generator import GeneratorSpec

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.onnx"
MODEL_YAML = "model.yaml"  # BentoML's metadata file in each version folder
PRODUCTION, CANDIDATE = "production", "candidate"
KIND_LABEL = ("ganforge", "generator")
STAGING_DIR = ".ganforge-staging"  # in BENTOML_HOME, beside models/: the same file system
STALE_STAGING_SECONDS = 3600  # older staging folders are leftovers of killed registrations
# Why a version folder is skipped (a bounded set: metric labels)
MISSING_MODEL_YAML, BAD_MODEL_YAML, BAD_CARD, MISSING_GENERATOR = (
    "missing_model_yaml", "bad_model_yaml", "bad_card", "missing_generator")

Signature = tuple[tuple[str, int, int], ...]  # (file, size, mtime_ns) of a version's files


@dataclass(frozen=True)
class StoredModel:
    tag: str
    name: str
    version: str
    path: Path
    labels: dict[str, str]
    card: ModelCard
    created: datetime
    signature: Signature = field(default=(), compare=False)  # its files when it was read

    @property
    def onnx_path(self) -> Path:
        return self.path / GENERATOR_FILE

    @property
    def stage(self) -> str:
        return self.labels.get("stage", CANDIDATE)

    @property
    def spec(self) -> GeneratorSpec:
        return self.card.spec

    @property
    def run_id(self) -> str:
        return self.labels.get("run_id", self.version)

    @classmethod
    def from_bento(cls, m: Any, signature: Signature = ()) -> "StoredModel":
        """Raises CorruptModel when the version's card cannot be read."""
        return cls(tag=str(m.tag), name=m.tag.name, version=m.tag.version, path=Path(m.path),
                   labels=dict(m.info.labels), card=ModelCard.from_metadata(dict(m.info.metadata)),
                   created=m.info.creation_time, signature=signature)


@dataclass(frozen=True)
class Scan:
    """What the store holds, as read folder by folder."""

    models: list[StoredModel]  # readable versions of ours, newest first
    skipped: dict[str, str]  # "name:version" -> why it cannot be read (MISSING_MODEL_YAML, ...)
    stamps: dict[str, int]  # name -> mtime of its folder (a new version changes it)


def _is_ours(m: Any) -> bool:
    labels = m.info.labels
    return labels.get(KIND_LABEL[0]) == KIND_LABEL[1] or m.tag.name.startswith("mnist-")


def store_root() -> Path:
    """``$BENTOML_HOME/models``: one folder per model name, one per version inside."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


# folder -> (signature, what it held when read: a model, a skip reason, or None: not ours)
_read_cache: dict[Path, tuple[Signature, StoredModel | str | None]] = {}
_scan_lock = threading.Lock()


def scan() -> Scan:
    """Every version folder of the store: readable generators, and the others with a reason.
    Only folders whose files changed since the last scan are parsed again."""
    root = store_root()
    models, skipped, stamps, seen = [], {}, {}, set()
    with _scan_lock:
        for name_dir in _folders(root):
            try:
                stamps[name_dir.name] = name_dir.stat().st_mtime_ns
            except FileNotFoundError:  # removed meanwhile
                continue
            for folder in _folders(name_dir):
                seen.add(folder)
                found = _read_cached(folder)
                if isinstance(found, StoredModel):
                    models.append(found)
                elif found is not None:
                    skipped[f"{name_dir.name}:{folder.name}"] = found
        for gone in set(_read_cache) - seen:
            del _read_cache[gone]
    return Scan(sorted(models, key=lambda s: s.created, reverse=True), skipped, stamps)


def _folders(path: Path) -> list[Path]:
    """Sub-folders, hidden ones left out; none when ``path`` is gone."""
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_cached(folder: Path) -> StoredModel | str | None:
    try:
        signature = _signature(folder)
    except FileNotFoundError:  # removed meanwhile
        return None
    cached = _read_cache.get(folder)
    if cached is not None and cached[0] == signature:
        return cached[1]
    found = _read_version(folder, signature)
    if isinstance(found, str):
        log.warning("skipping %s:%s in the model store: %s", folder.parent.name, folder.name,
                    found.replace("_", " "))
    _read_cache[folder] = (signature, found)
    return found


def _signature(folder: Path) -> Signature:
    """Names, sizes and mtimes of a version's files: any rewrite or truncation changes it."""
    files = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_file():
                st = e.stat()
                files.append((e.name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(files))


def _read_version(folder: Path, signature: Signature) -> StoredModel | str | None:
    """The generator in ``folder``, why it cannot be read, or None when it is not ours."""
    import bentoml

    if not (folder / MODEL_YAML).is_file():
        return MISSING_MODEL_YAML
    tag = f"{folder.parent.name}:{folder.name}"
    try:
        m = bentoml.models.get(tag)
    except Exception as exc:  # YAML, cattrs, tag and file errors alike: skip the version
        log.debug("cannot read %s: %r", tag, exc)
        return BAD_MODEL_YAML
    if str(m.tag) != tag:  # a model.yaml copied from another version
        return BAD_MODEL_YAML
    if not _is_ours(m):
        return None
    if not (folder / GENERATOR_FILE).is_file():
        return MISSING_GENERATOR
    try:
        return StoredModel.from_bento(m, signature)
    except CorruptModel:
        return BAD_CARD


def list_models(stage: str | None = None, name: str | None = None) -> list[StoredModel]:
    """Registered generators, newest first; a version that cannot be read is skipped (``scan``
    says why)."""
    return [m for m in scan().models
            if (name is None or m.name == name) and (stage is None or m.stage == stage)]


def match_version(models: Iterable[StoredModel], tag: str) -> StoredModel:
    """``name`` or ``name:latest`` (the newest version), ``name:version`` or a unique prefix of
    the version, any case (BentoML's tags are lower case), among ``models`` (newest first).
    ModelNotFound when none matches, or more than one does."""
    name, _, version = tag.strip().lower().partition(":")
    versions = [m for m in models if m.name == name]
    if not versions:
        known = sorted({m.name for m in models})
        raise ModelNotFound(f"model: no model {name!r} in the store; known: {known}")
    if version in ("", "latest"):
        return versions[0]
    found = ([m for m in versions if m.version == version]
             or [m for m in versions if m.version.startswith(version)])
    if len(found) == 1:
        return found[0]
    if found:
        raise ModelNotFound(f"model: {tag!r} is ambiguous: it starts {len(found)} versions of "
                            f"{name} ({', '.join(m.version for m in found[:5])}); give more of it")
    raise ModelNotFound(f"model: {name} has no version {version!r}; newest: {versions[0].tag}")


def get_model(tag: str) -> StoredModel:
    """``name`` (its newest version), ``name:latest``, ``name:version`` or a version prefix."""
    return match_version(list_models(), tag)


def find_run(run_id: str) -> StoredModel | None:
    for m in list_models():
        if m.run_id == run_id:
            return m
    return None


def register(*, name: str, run_id: str, onnx_path: Path, card: ModelCard, stage: str,
             extra_files: Sequence[Path] = ()) -> tuple[StoredModel, bool]:
    """Copy the generator and its side files into a new store version, all or nothing.

    Returns ``(model, created)``; a run registered before gives its first model back with
    ``created`` False, so a retried job never registers twice.
    """
    import bentoml

    if stage not in (PRODUCTION, CANDIDATE):
        raise InvalidInput("stage", f"must be {PRODUCTION} or {CANDIDATE}, got {stage!r}")
    existing = find_run(run_id)
    if existing is not None:
        return existing, False
    labels = {"stage": stage, "run_id": run_id, KIND_LABEL[0]: KIND_LABEL[1]}
    with _staging() as staging:
        from bentoml._internal.models import ModelStore

        # BentoML writes the version (files, model.yaml) into a store of its own in the staging
        # folder; readers see nothing of it until the rename below
        with bentoml.models.create(name, labels=labels, metadata=card.to_metadata(),
                                   _model_store=ModelStore(staging)) as model:
            shutil.copyfile(onnx_path, model.path_of(GENERATOR_FILE))
            for f in extra_files:
                if Path(f).exists():
                    shutil.copyfile(f, model.path_of(Path(f).name))
        name, version = model.tag.name, str(model.tag.version)
        _publish(staging / name / version, name, version)
    return get_model(str(model.tag)), True


@contextmanager
def _staging() -> Iterator[Path]:
    """A fresh folder beside the store (same file system: renames from it are atomic), removed
    afterwards; leftovers of registrations killed midway are removed here too."""
    parent = store_root().parent / STAGING_DIR
    parent.mkdir(parents=True, exist_ok=True)
    for old in _folders(parent):
        try:
            if time.time() - old.stat().st_mtime > STALE_STAGING_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            pass
    path = Path(tempfile.mkdtemp(prefix="register-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _publish(built: Path, name: str, version: str) -> None:
    """Make a built version visible at once: its files reach the disk, then one rename puts the
    folder in place, then BentoML's ``latest`` pointer is replaced (atomically too)."""
    for f in built.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    target = store_root() / name / version
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(built, target)
    write_bytes_atomic(target.parent / "latest", version.encode())
