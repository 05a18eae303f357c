"""The naive baseline: the tutorials' way to serve a generator. Plain FastAPI + uvicorn, the
PyTorch generator in eager mode, one forward pass per request, no batching.

    GANFORGE_NAIVE_WEIGHTS=services/assets/default/generator.pt \\
        .venv/bin/uvicorn bench.naive_app:app --port 8001 --no-access-log
"""

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, Query
from fastapi.responses import Response
from PIL import Image

from trainer.export import load_torch_generator

if threads := int(os.environ.get("GANFORGE_NAIVE_THREADS", "0")):  # 0: PyTorch's default
    torch.set_num_threads(threads)
G = load_torch_generator(os.environ.get("GANFORGE_NAIVE_WEIGHTS",
                                        "services/assets/default/generator.pt"))
app = FastAPI()


@app.get("/generate")
def generate(digit: int = Query(ge=0, le=9), seed: int = Query(0, ge=0)) -> Response:
    z = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 100), dtype=np.float32))
    with torch.no_grad():
        x = G(z, torch.tensor([digit]))
    pixels = ((x[0, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")
