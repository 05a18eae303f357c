"""The short path for the sampling GET routes: BentoML stays the runtime, its layers step aside.

Profiled under ``wrk`` (BENCHMARKS.md, "Where a request's time went"): a ``GET /generate`` that
went through BentoML's ASGI stack (its HTTP metrics, an OpenTelemetry span, the request timeout
task, its request context, Starlette's routing into the mounted app) and then FastAPI's (its
middleware, the dependency solver, the class-view ``self`` dependency, which FastAPI runs on a
worker thread because BentoML's ``get_current_service`` is a plain function) spent ~58% of a
worker's busy time in those layers, against ~23% in the model, the PNG and the latents.
``FastPath`` is the outermost ASGI layer of the service (``bentoml serve`` builds the app through
``Service.to_asgi``, which ``install`` wraps for this one service); for each sampling GET route
of the mounted FastAPI app whose inputs are all query parameters and whose endpoint is a
coroutine returning a Response (``/generate``, ``/interpolate``), it:

- reads the query string as Starlette does and validates each parameter with the route's own
  annotation (a pydantic ``TypeAdapter`` of the same ``Annotated[..., Query(...)]`` FastAPI
  validates with), then awaits the route's own method and sends the Response it returns;
- counts and times the request in ganforge's metrics, as ``services.metrics.RequestMetrics``
  does on the full path, and bounds it by the service's traffic timeout (504, BentoML's body).

Anything it does not handle goes down the full stack untouched: other routes, a request with a
body (the body limit answers it there), a repeated parameter, and every request that fails
validation or raises before a byte is sent, so that error answers (the 422s naming the field,
404s for an unknown model) and their metrics come from the one place that defines them. What the
fast path leaves out, on its routes only: BentoML's per-request HTTP metrics
(``bentoml_service_request_*``; ganforge's own metrics, which the dashboards and the autoscaler
read, are kept) and its OpenTelemetry span.

The same wrapper puts the body limit (``services.app.BodyLimit``) in front of BentoML's native
``@bentoml.api`` routes, which are served by BentoML's own router, outside the mounted app.
"""

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import FastAPI, params
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import metrics
from services.app import BodyLimit
from services.metrics import RequestMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryParam:
    name: str  # the method's argument
    key: str  # the query string's name (the alias, when the route declares one)
    adapter: TypeAdapter[Any]
    required: bool
    default: Any


@dataclass(frozen=True)
class FastRoute:
    """A GET route of the FastAPI app that the fast path answers: its method and its inputs."""

    method_name: str
    params: dict[str, QueryParam]  # by query key
    required: frozenset[str]
    requests: Any  # metrics.REQUESTS child for code 200
    latency: Any  # metrics.LATENCY child


class Delegate(Exception):
    """The fast path does not answer this request: the full stack does."""


def query_params(func: Callable[..., Any]) -> dict[str, QueryParam] | None:
    """The query parameters of an endpoint, keyed by query name; None when any argument (after
    ``self``) is not a plain query parameter (a header, a body, a dependency, ...)."""
    found: dict[str, QueryParam] = {}
    for i, (name, p) in enumerate(inspect.signature(func).parameters.items()):
        if i == 0:
            continue  # self: the service instance
        annotation = p.annotation
        extras: tuple[Any, ...] = ()
        if get_origin(annotation) is Annotated:
            extras = get_args(annotation)[1:]
        if p.annotation is inspect.Parameter.empty or isinstance(p.default, params.Depends | params.Param):
            return None
        if any(isinstance(m, params.Depends | params.Body) or (isinstance(m, params.Param)
               and not isinstance(m, params.Query)) for m in extras):
            return None
        alias = next((m.alias for m in extras if isinstance(m, params.Query) and m.alias), None)
        required = p.default is inspect.Parameter.empty
        found[alias or name] = QueryParam(name, alias or name, TypeAdapter(annotation), required,
                                          None if required else p.default)
    return found


def plain_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's APIRoutes, through included routers that add no prefix and no dependency (a
    route behind a router-level dependency, a token check say, is never on the fast path)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (inner := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            if context is not None and not context.prefix and not context.dependencies \
                    and not inner.dependencies:
                yield from plain_routes(inner.routes)


def fast_routes(app: FastAPI, service_cls: type) -> dict[str, FastRoute]:
    """The sampling GET routes of ``app`` whose endpoint is a coroutine method of ``service_cls``
    taking only query parameters (after BentoML's class-view ``self``) and returning a Response,
    keyed by path. None at all when the
    app has a dependency or a middleware the fast path does not stand in for."""
    unknown = [m.cls for m in app.user_middleware if m.cls not in (BodyLimit, RequestMetrics)]
    if unknown or app.router.dependencies:
        log.warning("no fast path: the app has middleware %s / dependencies %s", unknown,
                    app.router.dependencies)
        return {}
    methods = {f: name for name, f in vars(service_cls).items() if inspect.iscoroutinefunction(f)}
    routes: dict[str, FastRoute] = {}
    for route in plain_routes(app.routes):
        if not (route.methods == {"GET"} and route.path in metrics.SAMPLING_ROUTES
                and route.endpoint in methods and not route.dependencies):
            continue
        returns = inspect.signature(route.endpoint).return_annotation
        if not (isinstance(returns, type) and issubclass(returns, Response)):
            continue  # the fast path sends what the method returns, as it is
        found = query_params(route.endpoint)
        if found is None:
            continue
        label = f"GET {route.path}"
        routes[route.path] = FastRoute(
            methods[route.endpoint], found, frozenset(k for k, q in found.items() if q.required),
            metrics.REQUESTS.labels(label, "200"), metrics.LATENCY.labels(label))
    return routes


def parse_query(raw: bytes) -> dict[str, str]:
    """The query string as Starlette reads it (latin-1, then ``parse_qsl`` keeping blanks);
    raises Delegate on a repeated name (Starlette keeps the last one: rare, left to it)."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        pairs = parse_qsl(text, keep_blank_values=True)
    else:  # what parse_qsl does for plain text, without its per-pair unquoting
        pairs = [(k, v) for k, _, v in (f.partition("=") for f in text.split("&") if f)]
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Delegate
    return out


def arguments(route: FastRoute, query: dict[str, str]) -> dict[str, Any]:
    """The method's keyword arguments, validated by the route's own annotations; Delegate when
    one is missing or invalid (the full stack then answers with its 422)."""
    if not route.required.issubset(query):
        raise Delegate
    kwargs: dict[str, Any] = {}
    for key, q in route.params.items():
        value = query.get(key)
        if value is None:
            kwargs[q.name] = q.default
            continue
        try:
            kwargs[q.name] = q.adapter.validate_python(value)
        except ValidationError:
            raise Delegate from None
    return kwargs


def has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            return True
    return False


class FastPath:
    """The outermost ASGI layer of the service: answers the fast routes, passes the rest on."""

    def __init__(self, app: ASGIApp, routes: dict[str, FastRoute], instance: Callable[[], Any],
                 *, timeout: float | None, api_paths: frozenset[str],
                 limited: ASGIApp | None = None) -> None:
        self.app, self.routes, self.instance = app, routes, instance
        self.timeout = timeout
        self.api_paths, self.limited = api_paths, limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None and scope["method"] == "GET":
                if await self.answer(route, scope, send):
                    return
            elif self.limited is not None and scope["path"] in self.api_paths:
                await self.limited(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def answer(self, route: FastRoute, scope: Scope, send: Send) -> bool:
        """Answer the request and return True, or return False having sent nothing."""
        start = time.perf_counter()
        try:
            if has_body(scope):
                return False
            kwargs = arguments(route, parse_query(scope["query_string"]))
            method = getattr(self.instance(), route.method_name)
            async with asyncio.timeout(self.timeout):
                response = await method(**kwargs)
        except TimeoutError:
            response = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"}, 504)
            await response(scope, _no_body, send)
            metrics.REQUESTS.labels(f"GET {scope['path']}", "504").inc()
            route.latency.observe(time.perf_counter() - start)
            return True
        except Exception as exc:  # Delegate, a 4xx (GanforgeError), anything: the full stack
            if not isinstance(exc, Delegate):
                log.debug("fast path hands %s to the full stack: %r", scope["path"], exc)
            return False
        await response(scope, _no_body, send)
        if response.status_code == 200:
            route.requests.inc()
        else:
            metrics.REQUESTS.labels(f"GET {scope['path']}", str(response.status_code)).inc()
        route.latency.observe(time.perf_counter() - start)
        return True


async def _no_body() -> Message:  # pragma: no cover - a GET on the fast path reads nothing
    return {"type": "http.disconnect"}


def install(service: Any, app: FastAPI, *, max_body_bytes: int) -> None:
    """Serve ``service`` (a ``bentoml.Service`` mounting ``app``) behind FastPath: wraps
    ``Service.to_asgi``, which BentoML's HTTP worker calls to build the ASGI app it gives to
    uvicorn, for this service only; its native API routes get the body limit. Idempotent."""
    import bentoml

    cls = type(service)
    original = cls.to_asgi
    wrapped: dict[int, Any] = getattr(original, "_ganforge_services", {})
    if not wrapped:
        def to_asgi(self: Any, is_main: bool = True) -> Any:
            inner = original(self, is_main)
            build = wrapped.get(id(self))
            return inner if build is None else build(inner)

        to_asgi._ganforge_services = wrapped  # type: ignore[attr-defined]
        cls.to_asgi = to_asgi

    def build(inner: ASGIApp) -> FastPath:
        routes = fast_routes(app, service.inner)
        prefix = (service.path_prefix or "").rstrip("/")
        api_paths = frozenset(prefix + m.route for m in service.apis.values())
        timeout = (service.config.get("traffic") or {}).get("timeout")
        log.info("fast path for GET %s", ", ".join(sorted(routes)) or "nothing")
        return FastPath(inner, routes, bentoml.get_current_service, timeout=timeout,
                        api_paths=api_paths, limited=BodyLimit(inner, max_bytes=max_body_bytes))

    wrapped[id(service)] = build
