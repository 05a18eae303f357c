"""encode_png writes exactly the bytes of Pillow's own PNG writer at zlib level 1."""

import io

import numpy as np
import pytest
from PIL import Image

from ganforge.generator import GeneratorSpec, OnnxGenerator, latents
from ganforge.images import encode_png, make_grid, to_uint8
from tests.utils import ROOT

DEFAULT_MODEL_DIR = ROOT / "services" / "assets" / "default"


def pillow_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def synthetic() -> list[np.ndarray]:
    """Noise, sparse, flat, mid-grey and smooth images, grey and RGB, from 1x1 to 1000x1000
    (random 1000x1000 compresses to more than one 64 KiB IDAT chunk)."""
    rng = np.random.default_rng(0)
    out = []
    for shape in [(1, 1), (2, 3), (28, 28), (7, 300), (300, 7), (1000, 1000), (64, 64, 3),
                  (500, 500, 3), (3, 1, 3)]:
        out += [rng.integers(0, 256, shape, dtype=np.uint8),
                (rng.random(shape) < 0.1).astype(np.uint8) * 255,
                np.zeros(shape, np.uint8), np.full(shape, 128, np.uint8),
                np.cumsum(rng.integers(0, 3, shape, dtype=np.uint8), axis=0, dtype=np.uint8)]
    return out


def digits() -> list[np.ndarray]:
    """The shipped generator's digits: one alone, square grids and strips of 1 to 256."""
    g = OnnxGenerator(DEFAULT_MODEL_DIR / "generator.onnx", GeneratorSpec(100, 10), threads=1)
    out = []
    for n in (1, 2, 5, 16, 100, 256):
        px = to_uint8(g(latents(n, n, 100), np.arange(n) % 10))
        out += [px[0], make_grid(px), make_grid(px, nrow=n)]
    return out


@pytest.mark.parametrize("kind", ["synthetic", "digits"])
def test_bytes_equal_pillows_writer(kind: str) -> None:
    images = synthetic() if kind == "synthetic" else digits()
    mismatched = [px.shape for px in images if encode_png(px) != pillow_png(px)]
    assert mismatched == []
    big = encode_png(images[25] if kind == "synthetic" else images[-2])
    assert (np.asarray(Image.open(io.BytesIO(big))) == (images[25] if kind == "synthetic"
                                                          else images[-2])).all()


def test_multi_chunk_image_decodes() -> None:
    px = np.random.default_rng(1).integers(0, 256, (1000, 1000), dtype=np.uint8)
    png = encode_png(px)
    assert png.count(b"IDAT") >= 2  # split like Pillow's writer: 64 KiB blocks
    assert (np.asarray(Image.open(io.BytesIO(png))) == px).all()


def test_non_contiguous_views_encode_like_copies() -> None:
    px = np.random.default_rng(2).integers(0, 256, (40, 60), dtype=np.uint8)
    view = px[::2, 5:45]
    assert encode_png(view) == pillow_png(np.ascontiguousarray(view))


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (2, 4, 4, 3)])
def test_other_layouts_are_refused(shape) -> None:
    with pytest.raises(ValueError, match="grey"):
        encode_png(np.zeros(shape, dtype=np.uint8))
