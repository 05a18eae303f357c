"""The model store: exported generators registered in BentoML's store (``BENTOML_HOME``).

Each model is named ``mnist-<family>[-cond]`` and holds ``generator.onnx`` with the sample grid
and loss plot of its run beside it. Labels: ``stage`` (production or candidate, from the quality
gate) and ``run_id`` (one model per run: registering a run twice returns the first tag).
Metadata: family, conditional, num_classes, latent_dim, image shape, the training config, steps,
evaluation metrics, parity error, ganforge version. No torch here: the service imports this.
"""

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ganforge.errors import InvalidInput, ModelNotFound
from services.sampling import GeneratorSpec

GENERATOR_FILE = "generator.onnx"
PRODUCTION, CANDIDATE = "production", "candidate"


@dataclass(frozen=True)
class StoredModel:
    tag: str
    name: str
    version: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]
    created: datetime

    @property
    def onnx_path(self) -> Path:
        return self.path / GENERATOR_FILE

    @property
    def stage(self) -> str:
        return self.labels.get("stage", CANDIDATE)

    @property
    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(int(self.metadata["latent_dim"]), int(self.metadata["num_classes"]))

    @classmethod
    def from_bento(cls, m: Any) -> "StoredModel":
        return cls(tag=str(m.tag), name=m.tag.name, version=m.tag.version, path=Path(m.path),
                   labels=dict(m.info.labels), metadata=dict(m.info.metadata),
                   created=m.info.creation_time)


def _bento_models() -> list[Any]:
    import bentoml

    return [m for m in bentoml.models.list() if m.tag.name.startswith("mnist-")]


def list_models(stage: str | None = None, name: str | None = None) -> list[StoredModel]:
    """Registered generators, newest first."""
    found = [StoredModel.from_bento(m) for m in _bento_models()]
    found = [m for m in found if (stage is None or m.stage == stage)
             and (name is None or m.name == name)]
    return sorted(found, key=lambda m: m.created, reverse=True)


def get_model(tag: str) -> StoredModel:
    """``name`` (its newest version) or ``name:version``."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    name = tag.split(":", 1)[0]
    if not name.startswith("mnist-"):
        raise ModelNotFound(f"model: {tag!r} is not a ganforge model (names start with mnist-)")
    try:
        if ":" not in tag or tag.endswith(":latest"):
            versions = list_models(name=name)
            if not versions:
                raise NotFound(tag)
            return versions[0]
        return StoredModel.from_bento(bentoml.models.get(tag))
    except (NotFound, BentoMLException, ValueError) as exc:
        known = sorted({m.name for m in list_models()})
        raise ModelNotFound(f"model: no model {tag!r} in the store; known: {known}") from exc


def find_run(run_id: str) -> StoredModel | None:
    for m in list_models():
        if m.labels.get("run_id") == run_id:
            return m
    return None


def _without_none(value: Any) -> Any:
    """BentoML metadata takes no None: leave such entries out (readers use ``.get``)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def register(*, name: str, run_id: str, onnx_path: Path, metadata: dict[str, Any], stage: str,
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
    with bentoml.models.create(name, labels={"stage": stage, "run_id": run_id},
                               metadata=_without_none(metadata)) as model:
        shutil.copyfile(onnx_path, model.path_of(GENERATOR_FILE))
        for f in extra_files:
            if Path(f).exists():
                shutil.copyfile(f, model.path_of(Path(f).name))
    return get_model(str(model.tag)), True
