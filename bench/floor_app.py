"""The HTTP floor: a bare ASGI app answering every request with one fixed 28x28 PNG.

No model, no parsing, no framework: what uvicorn (httptools + uvloop, 2 workers) and the
loopback cost on this machine. Nothing that serves an image over HTTP here can beat it.

    .venv/bin/uvicorn bench.floor_app:app --workers 2 --http httptools --loop uvloop \\
        --no-access-log --port 8003
"""

import io

import numpy as np
from PIL import Image

_buf = io.BytesIO()
Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(_buf, format="PNG")
PNG = _buf.getvalue()
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(PNG)).encode())]}
BODY = {"type": "http.response.body", "body": PNG}


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":  # lifespan: nothing to set up
        return
    await send(START)
    await send(BODY)
