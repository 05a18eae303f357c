"""A fix for BentoML 1.4's request timeout, applied when the service module is imported.

``bentoml._internal.server.http.traffic.TimeoutMiddleware`` arms ``loop.call_later(timeout)``
for every request and never cancels it, so each finished request's context (its OpenTelemetry
span, futures, send callables) stays reachable until the timer fires, 60 s later by default.
At 1,500 requests/s that is ~90,000 live request contexts: resident memory grows by ~3.5 kB a
request over the window, and Python's full garbage collections, walking all of them, stalled
the event loop for 100-450 ms (measured: p95 of /livez at concurrency 1 went from 0.4 ms to
230 ms). The fixed ``__call__`` below is BentoML's own, plus cancelling the timer when the
request ends.

And a fix for its HTTP metrics (``bentoml_service_request_total``, ``..._duration_seconds``,
``..._in_progress``): ``RunnerTrafficMetricsMiddleware`` labels them with the raw request path,
so every 404 path and every job id made new series, without bound (a scanner or a client
polling many jobs grows /metrics and Prometheus for ever). The patched ``__call__`` labels
a request with its route's template (``/jobs/{job_id}``) or ``other``.
"""

import asyncio
import re
from timeit import default_timer
from typing import Any

from starlette.responses import JSONResponse


async def _call(self: Any, scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504)
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()  # the missing line: drops the handle's references now
    return None


# BentoML's own routes (its Starlette app, outside ours); everything else is ours or unknown.
BENTOML_ROUTES = ("/metrics", "/livez", "/readyz", "/healthz", "/schema.json", "/docs.json",
                  "/sample", "/sample_png")  # the last two: our @bentoml.api endpoints
BENTOML_MOUNTS = ("/static_content", "/assets")
UNKNOWN_ROUTE = "other"
_templates: list[tuple[re.Pattern[str], str]] = []


def endpoint_label(path: str) -> str:
    """The route template that ``path`` matches (``/jobs/{job_id}``, ``/playground/{path}``), the
    path itself for BentoML's fixed routes, else ``other``: a bounded set of values."""
    if path in BENTOML_ROUTES:
        return path
    if not _templates:
        _templates.extend(_route_templates())
    for regex, template in _templates:
        if regex.match(path):
            return template
    for mount in BENTOML_MOUNTS:
        if path.startswith(mount + "/"):
            return mount + "/{path}"
    return UNKNOWN_ROUTE


def _route_templates() -> list[tuple[re.Pattern[str], str]]:
    """Our app's routes, read on the first request (when every route is declared): its own
    Starlette routes and mounts (``/docs``, ``/playground/{path}``), and the API's paths as its
    OpenAPI schema lists them (routers included in the app do not show their routes in
    ``app.routes``), plus the page at ``/``."""
    from starlette.routing import compile_path

    from services.app import app

    found = [(regex, str(getattr(route, "path_format", ""))) for route in app.routes
             if isinstance(regex := getattr(route, "path_regex", None), re.Pattern)]
    for path in ["/", *app.openapi()["paths"]]:
        regex, template, _ = compile_path(path)
        found.append((regex, template))
    return found


async def _metrics_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
    """BentoML 1.4's ``RunnerTrafficMetricsMiddleware.__call__`` for HTTP, with the endpoint
    label bounded (``endpoint_label``); websockets go to BentoML's own."""
    if scope["type"] != "http":
        return await self._ganforge_original_call(scope, receive, send)  # type: ignore[no-any-return]
    from bentoml._internal.context import server_context as ctx

    if not self._is_setup:
        self._setup()
    if scope["path"] == "/metrics":
        return await self.app(scope, receive, send)  # type: ignore[no-any-return]
    endpoint = endpoint_label(scope["path"])
    names = {"service_name": ctx.bento_name, "service_version": ctx.bento_version,
             "runner_name": ctx.service_name}
    if not endpoint.startswith(tuple(self.skip_paths)):
        self.metrics_last_request_timestamp.labels(**names).set_to_current_time()
    start, status = default_timer(), 0

    async def wrapped_send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.metrics_request_total.labels(endpoint=endpoint, http_response_code=status,
                                              **names).inc()
            self.metrics_request_duration.labels(endpoint=endpoint, http_response_code=status,
                                                 **names).observe(max(default_timer() - start, 0))
        await send(message)

    with self.metrics_request_in_progress.labels(endpoint=endpoint, **names).track_inprogress():
        await self.app(scope, receive, wrapped_send)
    return None


def apply() -> bool:
    """Patch the middleware classes once; False when BentoML no longer has them."""
    try:
        from bentoml._internal.server.http import instruments, traffic
    except ImportError:  # pragma: no cover - a BentoML without these modules
        return False
    if not getattr(traffic.TimeoutMiddleware, "_ganforge_fixed", False):
        traffic.TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]
        traffic.TimeoutMiddleware._ganforge_fixed = True  # type: ignore[attr-defined]
    metrics_cls: Any = instruments.RunnerTrafficMetricsMiddleware
    if not getattr(metrics_cls, "_ganforge_fixed", False):
        metrics_cls._ganforge_original_call = metrics_cls.__call__
        metrics_cls.__call__ = _metrics_call
        metrics_cls._ganforge_fixed = True
    return True
