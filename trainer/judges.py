"""The evaluator's judge for each labelled set, kept where every worker and the CLI find it.

A judge is the project's small CNN (``trainer.classifier.JudgeCNN``) trained on one set at one
shape (channels x side), because a generator is judged at the shape it draws. MNIST at 1x28x28
keeps its shipped weights (``trainer/assets/mnist_cnn.pt``); every other judge lives in the
model store (BentoML, ``BENTOML_HOME``: the volume workers and the service share) as
``judge-<dataset>-<C>x<S>`` (``judge-fashion-mnist-1x28``) with ``judge.pt`` inside and labels
``ganforge=judge``. The newest version is the one used, so ``ganforge classifier --dataset``
replaces a judge by training a new one.

A job on a set with no judge trains it first (:func:`ensure`): under an exclusive file lock in
the store's folder, with a second look once the lock is held, so that two workers starting on
the same new set train it once; the other waits and uses it.
"""

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ganforge.datasets import IMAGEFOLDER, folder_path
from ganforge.errors import ModelNotFound
from ganforge.spec import dataset_slug
from trainer import classifier
from trainer.classifier import JudgeCNN

log = logging.getLogger(__name__)

JUDGE_FILE = "judge.pt"
KIND_LABEL = ("ganforge", "judge")
SHIPPED = ("mnist", 1, 28)  # the key whose judge ships with the code
SHIPPED_SOURCE = "trainer/assets/mnist_cnn.pt"


@dataclass(frozen=True)
class JudgeKey:
    """Which judge: a set at a shape. An image folder is told apart by its resolved path."""

    dataset: str
    channels: int = 1
    image_size: int = 28

    @property
    def shipped(self) -> bool:
        return (self.dataset, self.channels, self.image_size) == SHIPPED

    def name(self, data_dir: Path) -> str:
        """The store name, at most 63 characters of [a-z0-9-]."""
        slug = dataset_slug(self.dataset)
        if self.dataset.startswith(IMAGEFOLDER):  # two folders may share a base name
            where = str(folder_path(self.dataset, data_dir).resolve())
            slug = f"{slug[:38].rstrip('-')}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"
        return f"judge-{slug}-{self.channels}x{self.image_size}"

    def flags(self) -> str:
        """The command that trains this judge, for messages."""
        return (f"ganforge classifier --dataset {self.dataset} --channels {self.channels} "
                f"--image-size {self.image_size}")


@dataclass(frozen=True)
class JudgeRecipe:
    """How a missing judge is trained: ``epochs`` over the first ``subset`` images (0: all)."""

    epochs: int = 3
    subset: int = 0
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> "JudgeRecipe":
        """``GANFORGE_JUDGE_EPOCHS`` / ``GANFORGE_JUDGE_SUBSET``."""
        return cls(epochs=settings.judge_epochs, subset=settings.judge_subset)


@dataclass(frozen=True, eq=False)  # hashed by identity: evaluate caches per judge object
class Judge:
    model: JudgeCNN
    class_names: tuple[str, ...]
    source: str  # the store tag, or the shipped file's path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)


def _store_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")


@lru_cache(maxsize=8)
def _load(path: str, source: str, names: tuple[str, ...]) -> Judge:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return Judge(classifier.load(Path(path)), names, source, dict(ckpt.get("info", {})))


def _versions(name: str) -> list[Any]:
    import bentoml

    found = [m for m in bentoml.models.list(name)
             if m.info.labels.get(KIND_LABEL[0]) == KIND_LABEL[1]]
    return sorted(found, key=lambda m: m.info.creation_time, reverse=True)


def find(key: JudgeKey, data_dir: Path) -> Judge | None:
    """The judge for ``key`` (the newest store version), or None when there is none yet."""
    if key.shipped:
        return _load(str(classifier.WEIGHTS), SHIPPED_SOURCE, tuple("0123456789"))
    from bentoml.exceptions import NotFound

    try:
        versions = _versions(key.name(data_dir))
    except NotFound:  # no version of that name yet
        return None
    if not versions:
        return None
    m = versions[0]
    names = tuple(str(c) for c in m.info.metadata.get("class_names", ()))
    return _load(m.path_of(JUDGE_FILE), str(m.tag), names)


def get(key: JudgeKey, data_dir: Path) -> Judge:
    judge = find(key, data_dir)
    if judge is None:
        raise ModelNotFound(f"judge: no judge for {key.dataset} at {key.channels}x{key.image_size}x"
                            f"{key.image_size} in the model store; train one: {key.flags()}")
    return judge


def train(key: JudgeKey, data_dir: Path, recipe: JudgeRecipe = JudgeRecipe(), *,
          download: bool = False, log_line: Callable[[str], Any] = log.info) -> Judge:
    """Train a judge on the set's train split, measure it on the test split and register it
    (MNIST 1x28x28: write the shipped weights file instead, as ``make classifier`` does)."""
    from trainer.data import load_dataset

    def split(train: bool) -> Any:
        s = load_dataset(key.dataset, data_dir, train=train, image_size=key.image_size,
                         channels=key.channels, download=download)
        return s.head(recipe.subset) if recipe.subset else s

    from trainer.loop import exclusive

    with exclusive():  # it seeds and draws from the global RNG: jobs beside it wait (once a set)
        model, info = classifier.train_classifier(split(True), split(False), epochs=recipe.epochs,
                                                  seed=recipe.seed, log=log_line)
    names = split(False).class_names
    if key.shipped:
        classifier.save(model, info, classifier.WEIGHTS)
        _load.cache_clear()
        return Judge(model.eval(), names, SHIPPED_SOURCE, info)
    return register(key, data_dir, model, info, names)


def register(key: JudgeKey, data_dir: Path, model: JudgeCNN, info: dict[str, Any],
             class_names: tuple[str, ...]) -> Judge:
    import bentoml

    meta = {**info, "dataset": key.dataset, "channels": key.channels, "image_size": key.image_size,
            "class_names": list(class_names), "subset": int(info.get("train_images", 0))}
    with bentoml.models.create(key.name(data_dir), labels=dict([KIND_LABEL]), metadata=meta) as m:
        torch.save({"state_dict": model.state_dict(), "info": info, "arch": model.arch()},
                   m.path_of(JUDGE_FILE))
    saved = bentoml.models.get(m.tag)  # created in a scratch folder, moved into the store on exit
    log.info("registered judge %s (test accuracy %s)", saved.tag, info.get("test_accuracy"))
    return _load(saved.path_of(JUDGE_FILE), str(saved.tag), class_names)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock on ``<BENTOML_HOME>/.locks/<name>.lock``: the store's own folder is
    what every worker shares (the RWX volume on k8s), so the lock reaches them all."""
    folder = _store_home() / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(key: JudgeKey, data_dir: Path, recipe: JudgeRecipe = JudgeRecipe(), *,
           download: bool = False, log_line: Callable[[str], Any] = log.info) -> Judge:
    """The judge for ``key``, trained and registered first when there is none (once: a second
    worker waits on the lock, then finds the first one's judge)."""
    judge = find(key, data_dir)
    if judge is not None:
        return judge
    with _locked(key.name(data_dir)):
        judge = find(key, data_dir)
        if judge is None:
            log_line(f"no judge for {key.dataset} at {key.channels}x{key.image_size}: training one "
                     f"({recipe.epochs} epochs{f', {recipe.subset} images' if recipe.subset else ''})")
            judge = train(key, data_dir, recipe, download=download, log_line=log_line)
    return judge
