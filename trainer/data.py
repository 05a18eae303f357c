"""MNIST as in-memory tensors, read through torchvision.

The whole training split (60,000 x 28 x 28 bytes) fits in memory, so batches are gathered by
index instead of through a DataLoader: each step's indices depend only on ``(seed, step)``, which
is what makes resuming a run exact.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from ganforge.errors import DataNotFound

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalized(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Float images in [-1, 1], shape (n, 1, 28, 28)."""
        return self.images[index].unsqueeze(1).float().div(127.5).sub(1.0)


def has_mnist(data_dir: Path) -> bool:
    raw = data_dir / "MNIST" / "raw"
    return all((raw / name).exists() or (raw / f"{name}.gz").exists() for name in RAW_FILES)


def load_mnist(data_dir: Path, train: bool = True, download: bool = False) -> Split:
    """Read one split from ``<data_dir>/MNIST/raw``; download it there only when allowed."""
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataNotFound(f"data_dir: {data_dir} is not a directory (set GANFORGE_DATA_DIR)")
    if not has_mnist(data_dir) and not download:
        raise DataNotFound(
            f"data_dir: no MNIST under {data_dir / 'MNIST' / 'raw'} and downloads are off "
            "(GANFORGE_DOWNLOAD=0); point GANFORGE_DATA_DIR at a copy or allow the download"
        )
    ds = MNIST(root=str(data_dir), train=train, download=download and not has_mnist(data_dir))
    return Split(images=ds.data.clone(), labels=ds.targets.clone().long())


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch for ``step``: epochs are seeded permutations, walked in order."""
    per_epoch = max(n // batch_size, 1)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return perm[pos * batch_size : (pos + 1) * batch_size]
