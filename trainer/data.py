"""Labelled image sets as in-memory tensors.

A whole training split (MNIST: 60,000 x 28 x 28 bytes) fits in memory, so batches are gathered
by index instead of through a DataLoader: each step's indices depend only on ``(seed, step)``,
which is what makes resuming a run exact.

:func:`load_dataset` loads any set ``ganforge.datasets`` knows by name (``mnist``,
``fashion-mnist``, ``emnist-letters``, ``imagefolder:PATH``) at the size and channel count the
networks are built for, and downloads the IDX sets through torchvision when allowed.
:func:`load_mnist` is the MNIST-only form older callers use: its images are (N, 28, 28).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

import models
from ganforge.datasets import (
    DatasetInfo,
    IdxSet,
    check_request,
    dataset_info,
    dataset_names,
    find_idx,
    has_dataset,
    idx_set,
    load_arrays,
)
from ganforge.errors import DataNotFound, InvalidInput

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (n, C, H, W) -> float in [-1, 1], same shape. A 3-d batch (n, H, W), the
    form :func:`load_mnist` gives, is one channel: (n, 1, H, W). Works on any device."""
    x = images.unsqueeze(1) if images.dim() == 3 else images
    return x.float().div(127.5).sub(1.0)


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W); (N, H, W) from load_mnist, meaning C = 1
    labels: torch.Tensor  # int64 (N,), 0 .. num_classes - 1
    class_names: tuple[str, ...] = ()  # empty when the constructor was not told

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.images.dim() == 3 else int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalized(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Float images in [-1, 1], shape (n, C, H, W): (n, 1, 28, 28) for MNIST."""
        x = self.images[index]
        return (x.unsqueeze(-3) if self.images.dim() == 3 else x).float().div(127.5).sub(1.0)

    def head(self, n: int) -> "Split":
        """The first ``n`` images (a job's ``subset``), class names kept."""
        return Split(self.images[:n], self.labels[:n], self.class_names)


def check_family_size(family: str, image_size: int) -> None:
    """``models.check_image_size`` as the job-spec error: InvalidInput on ``image_size``."""
    try:
        models.check_image_size(family, image_size)
    except models.UnsupportedImageSize as e:
        raise InvalidInput("image_size", str(e).removeprefix("image_size: ")) from e


def load_dataset(name: str, data_dir: Path, *, train: bool = True, image_size: int = 28,
                 channels: int = 1, download: bool = False, family: str | None = None) -> Split:
    """One split of the set ``name``, images uint8 (N, channels, image_size, image_size).

    ``family``, when given, also refuses a side that family cannot build. Bad requests raise
    ``InvalidInput`` (field ``dataset``, ``image_size`` or ``channels``); a set that is not on
    disk raises ``DataNotFound`` unless ``download`` lets torchvision fetch it into ``data_dir``.
    """
    check_request(name, image_size=image_size, channels=channels)
    if family is not None:
        check_family_size(family, image_size)
    entry = idx_set(name)
    if entry is not None:
        _ensure_idx(entry, name, Path(data_dir), download)
    arrays = load_arrays(name, Path(data_dir), train=train, image_size=image_size, channels=channels)
    return Split(torch.from_numpy(arrays.images), torch.from_numpy(arrays.labels), arrays.class_names)


def _ensure_idx(entry: IdxSet, name: str, data_dir: Path, download: bool) -> None:
    """Find both splits, or download them (torchvision's layout, into ``data_dir``) if allowed."""
    if all(find_idx(entry, data_dir, train) is not None for train in (True, False)):
        return
    if not data_dir.is_dir():
        raise DataNotFound(f"data_dir: {data_dir} is not a directory (set GANFORGE_DATA_DIR)")
    if not download:
        where = " or ".join(str(d) for d in entry.dirs(data_dir))
        raise DataNotFound(f"data_dir: no {name} under {where} and downloads are off "
                           "(GANFORGE_DOWNLOAD=0); point GANFORGE_DATA_DIR at a copy or allow the download")
    import torchvision.datasets  # imported here: torchvision is slow to import

    extra = {"split": entry.torchvision_split} if entry.torchvision_split else {}
    try:
        getattr(torchvision.datasets, entry.torchvision)(root=str(data_dir), download=True, **extra)
    except (OSError, RuntimeError) as e:  # torchvision reports a failed mirror as RuntimeError
        raise DataNotFound(f"data_dir: could not download {name} into {data_dir}: {e}") from e


def has_mnist(data_dir: Path) -> bool:
    raw = Path(data_dir) / "MNIST" / "raw"
    return all((raw / name).exists() or (raw / f"{name}.gz").exists() for name in RAW_FILES)


def load_mnist(data_dir: Path, train: bool = True, download: bool = False) -> Split:
    """One MNIST split from ``<data_dir>/MNIST/raw`` (downloaded there only when allowed), images
    uint8 (N, 28, 28) as before sets had channels; new code calls :func:`load_dataset`."""
    split = load_dataset("mnist", data_dir, train=train, download=download)
    return Split(split.images[:, 0], split.labels, split.class_names)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: epochs are seeded permutations, walked in order."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return perm[pos * batch_size : (pos + 1) * batch_size]


__all__ = ["DatasetInfo", "Split", "batch_indices", "check_family_size", "dataset_info", "dataset_names",
           "has_dataset", "has_mnist", "load_dataset", "load_mnist", "normalize"]
