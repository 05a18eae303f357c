"""The model store: exported generators registered in BentoML's store (``BENTOML_HOME``).

Each model is named ``<dataset>-<family>[-cond]`` (``mnist-dcgan-cond``) and holds
``generator.onnx`` with the sample grid and loss plot of its run beside it. Labels: ``stage``
(production or candidate, from the quality gate), ``run_id`` (one model per run: registering a
run twice returns the first tag) and ``ganforge: generator`` (what marks our models among the
store's others). Metadata: the model card (``ganforge.card.ModelCard``). No torch here: the
service imports this.
"""

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ganforge.card import ModelCard
from ganforge.errors import CorruptModel, InvalidInput, ModelNotFound
from ganforge.generator import GeneratorSpec

log = logging.getLogger(__name__)

GENERATOR_FILE = "generator.onnx"
PRODUCTION, CANDIDATE = "production", "candidate"
KIND_LABEL = ("ganforge", "generator")


@dataclass(frozen=True)
class StoredModel:
    tag: str
    name: str
    version: str
    path: Path
    labels: dict[str, str]
    card: ModelCard
    created: datetime

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
    def from_bento(cls, m: Any) -> "StoredModel":
        """Raises CorruptModel when the version's card cannot be read."""
        return cls(tag=str(m.tag), name=m.tag.name, version=m.tag.version, path=Path(m.path),
                   labels=dict(m.info.labels), card=ModelCard.from_metadata(dict(m.info.metadata)),
                   created=m.info.creation_time)


def _is_ours(m: Any) -> bool:
    labels = m.info.labels
    return labels.get(KIND_LABEL[0]) == KIND_LABEL[1] or m.tag.name.startswith("mnist-")


def list_models(stage: str | None = None, name: str | None = None) -> list[StoredModel]:
    """Registered generators, newest first; a version whose card cannot be read is skipped."""
    import bentoml

    found = []
    for m in bentoml.models.list():
        if (name is not None and m.tag.name != name) or not _is_ours(m):
            continue
        try:
            stored = StoredModel.from_bento(m)
        except CorruptModel as exc:
            log.warning("skipping %s: %s", m.tag, exc)
            continue
        if stage is None or stored.stage == stage:
            found.append(stored)
    return sorted(found, key=lambda s: s.created, reverse=True)


def get_model(tag: str) -> StoredModel:
    """``name`` (its newest version) or ``name:version``."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    name = tag.split(":", 1)[0]
    try:
        if ":" not in tag or tag.endswith(":latest"):
            versions = list_models(name=name)
            if not versions:
                raise NotFound(tag)
            return versions[0]
        found = bentoml.models.get(tag)
        if not _is_ours(found):
            raise NotFound(tag)
        return StoredModel.from_bento(found)
    except (NotFound, BentoMLException, ValueError) as exc:
        known = sorted({m.name for m in list_models()})
        raise ModelNotFound(f"model: no model {tag!r} in the store; known: {known}") from exc


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
    with bentoml.models.create(name, labels=labels, metadata=card.to_metadata()) as model:
        shutil.copyfile(onnx_path, model.path_of(GENERATOR_FILE))
        for f in extra_files:
            if Path(f).exists():
                shutil.copyfile(f, model.path_of(Path(f).name))
    return get_model(str(model.tag)), True
