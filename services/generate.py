"""What the HTTP routes do, as plain functions: draw latents, batch, encode."""

import asyncio
import base64
import io
import secrets
from collections.abc import Sequence

import numpy as np
from fastapi.responses import Response

from ganforge.card import resolve_label
from ganforge.errors import InvalidInput
from ganforge.generator import latents as seeded_latents
from ganforge.generator import slerp
from ganforge.images import encode_png, make_grid, to_uint8
from services import metrics
from services.registry import LoadedModel
from services.schemas import Format


def pick_seed(seed: int | None) -> int:
    return secrets.randbits(32) if seed is None else seed


def class_indices(loaded: LoadedModel, labels: Sequence[str | int] | None,
                  digits: Sequence[int] | None) -> list[int] | None:
    """The classes a request asks for: ``labels`` (class names or indices, any model) or
    ``digits`` (indices: the same thing, kept for digit models), never both. An unknown label is
    InvalidInput naming the field and listing the model's classes."""
    if labels and digits:
        raise InvalidInput("label", "give a label or a digit, not both")
    card = loaded.model.card
    if labels:
        return [resolve_label(card, v, "label") for v in labels]
    if digits:
        return [resolve_label(card, d, "digit") for d in digits]
    return None


def labels_for(classes: list[int] | None, n: int) -> np.ndarray | None:
    """One class for all ``n`` images, or one each; checked against the model by
    ``OnnxGenerator.check`` (``ganforge.generator.check_labels``)."""
    if not classes:
        return None
    return np.array(classes * n if len(classes) == 1 else classes, dtype=np.int64)


async def sample(loaded: LoadedModel, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    loaded.session.check(z, labels)  # a bad request fails alone, never inside a shared batch
    images = await loaded.batcher.submit(z, labels)
    metrics.IMAGES.labels(loaded.model.name, loaded.model.version).inc(len(images))
    return images


async def by_seed(loaded: LoadedModel, classes: list[int] | None, n: int, seed: int) -> np.ndarray:
    """``n`` images from ``seed``'s latents: one class for all, one per image, or none."""
    z = seeded_latents(seed, n, loaded.model.spec.latent_dim)
    return await sample(loaded, z, labels_for(classes, n))


async def by_latents(loaded: LoadedModel, latents: list[list[float]],
                     classes: list[int] | None) -> np.ndarray:
    dim = loaded.model.spec.latent_dim
    if any(len(v) != dim for v in latents):
        raise InvalidInput("latents", f"each latent must have length {dim}")
    with np.errstate(over="ignore"):
        z = np.asarray(latents, dtype=np.float32)  # beyond float32's range becomes inf: refused
    return await sample(loaded, z, labels_for(classes, len(z)))


async def draw(loaded: LoadedModel, classes: list[int] | None,
               latents: list[list[float]] | None, n: int,
               seed: int | None) -> tuple[np.ndarray, int | None]:
    """``POST /generate``'s rule, shared with the native API: the given latents (with one class
    for all or one each), else one image per class (``n`` for an unconditional model) from the
    seed's latents. Returns the images and the seed used (None for given latents)."""
    if latents is not None:
        return await by_latents(loaded, latents, classes), None
    seed = pick_seed(seed)
    return await by_seed(loaded, classes, len(classes) if classes else n, seed), seed


async def interpolation(loaded: LoadedModel, digit: int | None, seed_a: int, seed_b: int,
                        steps: int) -> np.ndarray:
    """``steps`` images along the spherical path from ``seed_a``'s latent to ``seed_b``'s."""
    dim = loaded.model.spec.latent_dim
    z = slerp(seeded_latents(seed_a, 1, dim)[0], seeded_latents(seed_b, 1, dim)[0], steps)
    return await sample(loaded, z, labels_for(None if digit is None else [digit], steps))


async def image_response(images: np.ndarray, fmt: Format, tag: str, seed: int | None) -> Response:
    """The images as one PNG (or npy), with the model and seed that made them in headers."""
    headers = {"X-Model": tag}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    media = "application/x-npy" if fmt == "npy" else "image/png"
    return Response(await encoded(images, fmt), media_type=media, headers=headers)


def strip_png(images: np.ndarray) -> bytes:
    """The images side by side in one row (2-pixel gaps), as one PNG."""
    return encode_png(make_grid(to_uint8(images), nrow=len(images)))


async def encoded(images: np.ndarray, fmt: Format) -> bytes:
    """PNG (one image, or a grid) or npy bytes. Large outputs are encoded on a worker thread
    (zlib releases the GIL), so a 256-image grid does not stall the event loop for ~4 ms."""
    encode = npy_bytes if fmt == "npy" else png_bytes
    if len(images) <= 16:
        return encode(images)
    return await asyncio.to_thread(encode, images)


def png_bytes(images: np.ndarray) -> bytes:
    """One image as a 28x28 PNG, several as one grid."""
    pixels = to_uint8(images)
    return encode_png(pixels[0] if len(pixels) == 1 else make_grid(pixels))


def npy_bytes(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, images, allow_pickle=False)
    return buf.getvalue()


def png_list(images: np.ndarray) -> list[str]:
    return [base64.b64encode(encode_png(p)).decode() for p in to_uint8(images)]
