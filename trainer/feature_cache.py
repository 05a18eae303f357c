"""The judge's features of real images, kept on disk between processes.

Every process that evaluates a generator needs the judge's features of the whole test split
(and of a seeded draw of training images for the baseline): seconds of the judge on a small
CPU, the same every time. ``trainer.evaluate.real_features`` names a file by a digest of all
the features are a function of and keeps it here, so a changed judge, set or torch gets a file
of its own, never a stale one.

The folder is bounded: after each write the files least recently used go until the rest fit in
``max_bytes`` (a read marks a file used). Temporary files that a killed writer left behind go
after an hour. Nothing here can fail an evaluation: a file that does not read back as the
features is computed again and replaced, one that cannot be written costs time only.
"""

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganforge.files import atomic_write
from ganforge.settings import Settings

log = logging.getLogger(__name__)
PREFIX = "judge-features-"
STALE_TMP_SECONDS = 3600  # a writer's temporary file older than this belongs to a dead process


@dataclass(frozen=True)
class FeatureCache:
    folder: Path
    max_bytes: int = Settings.model_fields["feature_cache_bytes"].default  # the setting's default

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {self.max_bytes}")
        # absolute: the same folder is the same cache (the evaluator's per-process lru_caches)
        object.__setattr__(self, "folder", Path(self.folder).resolve())

    @classmethod
    def of(cls, settings: Settings) -> "FeatureCache | None":
        """The cache the settings ask for (``var_dir/cache``), or None where they keep none."""
        if settings.feature_cache_bytes == 0:
            return None
        return cls(settings.feature_cache, settings.feature_cache_bytes)

    def path(self, digest: str) -> Path:
        return self.folder / f"{PREFIX}{digest}.npy"

    def load(self, digest: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The float64 array of ``shape`` kept under ``digest``, or None (absent or damaged)."""
        path = self.path(digest)
        try:  # the header first (mapped, nothing read): a file that claims a huge array costs nothing
            feats = np.load(path, mmap_mode="r", allow_pickle=False)
            if feats.dtype == np.float64 and feats.shape == shape:
                feats = np.array(feats)
                if np.isfinite(feats).all():
                    _touch(path)
                    return feats
            log.warning("%s holds a %s array of %s, not the features: computing them again", path,
                        feats.dtype, feats.shape)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError) as exc:  # truncated, not an .npy, unreadable
            log.warning("%s does not read back (%s): computing the features again", path, exc)
        return None

    def store(self, digest: str, feats: np.ndarray) -> None:
        """Write ``feats`` whole under ``digest`` (atomic rename), then prune the folder."""
        path = self.path(digest)
        if feats.nbytes > self.max_bytes:
            return  # would be pruned at once
        try:
            with atomic_write(path, fsync=False) as tmp, open(tmp, "wb") as f:
                np.save(f, feats, allow_pickle=False)
        except OSError as exc:
            log.warning("could not keep the judge's features in %s: %s", self.folder, exc)
            return
        self.prune(keep=path)

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used files past ``max_bytes`` (never ``keep``) and
        temporary files older than an hour; returns what went. Other processes may prune at
        the same time: a file already gone is no error, and a reader holds its own copy."""
        now = time.time()
        entries: list[tuple[bool, float, int, Path]] = []
        removed: list[Path] = []
        try:
            found = list(self.folder.iterdir())
        except OSError:
            return removed
        for p in found:
            try:
                st = p.stat()
            except OSError:
                continue
            if p.name.startswith(f".{PREFIX}") and p.name.endswith(".tmp"):
                if now - st.st_mtime > STALE_TMP_SECONDS:
                    removed += _unlink(p)
            elif p.name.startswith(PREFIX) and p.suffix == ".npy":
                entries.append((p != keep, -st.st_mtime, st.st_size, p))
        total = 0
        for _, _, size, p in sorted(entries):  # ``keep`` first, then the newest
            total += size
            if total > self.max_bytes and p != keep:  # this one and every older one
                removed += _unlink(p)
        return removed


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still serves
        os.utime(path)


def _unlink(path: Path) -> list[Path]:
    try:
        path.unlink()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("could not remove %s from the feature cache: %s", path, exc)
        return []
    log.info("removed %s from the feature cache", path.name)
    return [path]
