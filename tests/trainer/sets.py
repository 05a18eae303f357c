"""Small labelled sets the tests write in the real on-disk layouts: EMNIST letters' IDX files
(transposed images, labels 1-26) and an ImageFolder tree of colour PNGs. Each class has its own
pattern, so a judge learns them in a few steps."""

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)


def letter_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Upright (N, 28, 28) images: class c is a bright 5x5 block in cell c of a 6x5 grid, on noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 26
    images = rng.integers(0, 30, (n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 5)
        images[i, 1 + r * 4 : 5 + r * 4, 2 + col * 5 : 7 + col * 5] = 255
    return images, labels


def write_emnist_letters(root: Path, n_train: int = 26 * 30, n_test: int = 26 * 6) -> Path:
    """torchvision's EMNIST/raw layout, gzipped, images stored transposed, labels counted from 1."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("test", n_test)):
        images, labels = letter_images(n, seed=n)
        write_idx(raw / f"emnist-letters-{stem}-images-idx3-ubyte.gz", images.transpose(0, 2, 1))
        write_idx(raw / f"emnist-letters-{stem}-labels-idx1-ubyte.gz", (labels + 1).astype(np.uint8))
    return root


COLOURS = {"apples": (200, 30, 30), "grass": (40, 180, 50), "sky": (60, 90, 220)}


def write_colour_folder(root: Path, per_class: int = 12, size: tuple[int, int] = (40, 36),
                        mode: str = "RGB") -> Path:
    """One sub-folder per class of ``per_class`` PNGs of its colour, with noise and a lighter
    square at a random place; ``size`` is not the training side (the loader resizes and crops)."""
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255)
            x, y = rng.integers(0, size[0] - 10), rng.integers(0, size[1] - 10)
            pixels[y : y + 10, x : x + 10] = np.minimum(pixels[y : y + 10, x : x + 10] + 60, 255)
            Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(root / name / f"{i:03d}.png")
    return root
