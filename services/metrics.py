"""The service's Prometheus metrics (served by BentoML at /metrics with its own) and the
middleware that counts and times the sampling routes."""

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

IMAGES = Counter("ganforge_images_generated_total", "Images generated",
                 ["model", "version"])
REQUESTS = Counter("ganforge_generate_requests_total",
                   "Sampling requests (/generate, /interpolate) by route and status code",
                   ["route", "code"])
LATENCY = Histogram("ganforge_generate_request_seconds",
                    "Sampling request latency (/generate, /interpolate)",
                    ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_SIZE = Histogram("ganforge_batch_size", "Images per batch the batcher formed",
                       ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
MODEL_LOADS = Counter("ganforge_model_loads_total", "Model versions loaded", ["model"])
MODEL_LOAD_FAILURES = Counter("ganforge_model_load_failures_total",
                              "Model versions that failed to load (the old one kept serving)",
                              ["model"])
STORE_SKIPPED = Gauge("ganforge_model_store_skipped",
                      "Model store versions not served, by reason: unreadable (missing_model_yaml, "
                      "bad_model_yaml, bad_card, missing_generator) or failing to load "
                      "(load_failed); each is read again when its files change",
                      ["reason"], multiprocess_mode="livemax")
MODEL_INFO = Gauge("ganforge_model_info", "Loaded models (1 = serving)",
                   ["model", "version", "family", "conditional", "provider"],
                   multiprocess_mode="livesum")


SAMPLING_ROUTES = frozenset({"/generate", "/interpolate"})


class RequestMetrics:
    """Pure ASGI middleware (BaseHTTPMiddleware costs a task per request): counts the sampling
    routes' requests by status code and times them."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in SAMPLING_ROUTES:
            await self.asgi(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in ("GET", "POST") else "OTHER"  # bounded
        route = f"{method} {scope['path']}"
        start, code = time.perf_counter(), 500

        async def send_and_see(message: Any) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, send_and_see)
        finally:
            REQUESTS.labels(route, str(code)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)
