"""Image helpers shared by the trainer and the service: numpy and Pillow only, no torch."""

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ganforge.files import atomic_write


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map generator output in [-1, 1], shape (N, 1, H, W), to uint8 pixels (N, H, W)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 1, H, W), got {images.shape}")
    pixels = (np.clip(images[:, 0], -1.0, 1.0) + 1.0) * 127.5
    return np.rint(pixels).astype(np.uint8)


def make_grid(pixels: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, H, W) into one image, ``nrow`` images per row (default: square)."""
    n, h, w = pixels.shape
    ncol = nrow or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncol)
    grid = np.zeros((nrows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode one uint8 grayscale image (H, W) as PNG bytes (deterministic for equal input).
    zlib level 1: a 256-digit grid encodes in ~4 ms instead of ~6 ms, ~10% larger."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def save_png(pixels: np.ndarray, path: str | Path) -> None:
    """Written to a temporary name, then renamed: a reader (the service showing a job's newest
    grid) never sees half a file."""
    with atomic_write(path, fsync=False) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
