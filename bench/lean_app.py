"""The lean per-request baseline: what a short hand-written ONNX server does, with no framework.

Bare ASGI, one ONNX Runtime session (1 thread) run once per request on the event loop (batch 1
for one image; ``n`` images run as one batch and come back as one grid), Pillow PNG at zlib
level 1; uvicorn with httptools + uvloop, 2 workers. It checks ``digit`` (0-9), ``n`` (1-256)
and ``seed`` (0 to 2^32-1) and draws the same latents as the service (PCG64 from the seed), so
its images are ganforge's. No batching across requests, no metrics, no model registry: the bar
that ganforge's layers must beat.

    GANFORGE_LEAN_MODEL=services/assets/default/generator.onnx .venv/bin/uvicorn \\
        bench.lean_app:app --workers 2 --http httptools --loop uvloop --no-access-log --port 8002
"""

import io
import math
import os
from urllib.parse import parse_qsl

import numpy as np
import onnxruntime as ort
from PIL import Image

_opts = ort.SessionOptions()
_opts.intra_op_num_threads = 1
SESSION = ort.InferenceSession(os.environ.get("GANFORGE_LEAN_MODEL",
                                              "services/assets/default/generator.onnx"),
                               sess_options=_opts, providers=["CPUExecutionProvider"])
BAD = (422, [(b"content-type", b"application/json")],
       b'{"detail": "digit 0-9, n 1-256, seed 0-4294967295"}')


def draw(digit: int, n: int, seed: int) -> bytes:
    z = np.random.default_rng(seed).standard_normal((n, 100), dtype=np.float32)
    (x,) = SESSION.run(["image"], {"z": z, "label": np.full(n, digit, dtype=np.int64)})
    pixels = np.rint((np.clip(x[:, 0], -1, 1) + 1) * 127.5).astype(np.uint8)
    if n > 1:  # a square grid, 2-pixel gaps (ganforge's layout)
        side = math.ceil(math.sqrt(n))
        grid = np.zeros((math.ceil(n / side) * 30 + 2, side * 30 + 2), dtype=np.uint8)
        for i, p in enumerate(pixels):
            r, c = divmod(i, side)
            grid[2 + 30 * r: 30 + 30 * r, 2 + 30 * c: 30 + 30 * c] = p
        pixels = grid[None]
    buf = io.BytesIO()
    Image.fromarray(pixels[0]).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    q = dict(parse_qsl(scope["query_string"].decode()))
    try:
        digit, n, seed = int(q["digit"]), int(q.get("n", 1)), int(q.get("seed", 0))
        ok = 0 <= digit <= 9 and 1 <= n <= 256 and 0 <= seed < 2**32
    except (KeyError, ValueError):
        ok = False
    status, headers, body = (200, [(b"content-type", b"image/png")], draw(digit, n, seed)) if ok \
        else BAD
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
