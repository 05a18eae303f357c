"""The ganforge HTTP service (BentoML 1.4): sample digits, list models, queue training jobs.

    bentoml serve services.service:Ganforge      # or: ganforge serve --port 3000

Loading happens in ``__init__``; each route validates its inputs in its signature and hands the
work to plain modules (``services/generate.py``, ``services/registry.py``, ``trainer/jobs.py``).
Generation needs no token; the job endpoints need ``Authorization: Bearer $GANFORGE_API_TOKEN``.
"""

import gc
import hmac
import logging
import threading
import time
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import bentoml
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ganforge import __version__
from ganforge.errors import GanforgeError
from ganforge.settings import get_settings
from services import bentoml_fixes, generate, metrics
from services.registry import ModelRegistry, import_default_model
from services.sampling import MAX_SEED

log = logging.getLogger("ganforge.service")
settings = get_settings()
bentoml_fixes.apply()

app = FastAPI(title="ganforge", version=__version__,
              description="Sample MNIST digits from trained GAN generators; queue training jobs.")
PLAYGROUND = FilePath(__file__).with_name("playground")
# The page's own files only: no inline script, no third-party origin, images from the service or
# the page's own data:/blob: URLs.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                           "object-src 'none'; base-uri 'none'",
                "Cache-Control": "no-cache"}
app.mount("/playground", StaticFiles(directory=PLAYGROUND), name="playground")

Digit = Annotated[int, Field(ge=0, le=9)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Latent = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1,
                                                                               max_length=1024)]
MODEL_PATTERN = r"^[A-Za-z0-9_.:-]+$"  # name or name:version
ModelTag = Annotated[str, Field(min_length=1, max_length=200, pattern=MODEL_PATTERN)]
ModelQuery = Annotated[str | None, Query(min_length=1, max_length=200, pattern=MODEL_PATTERN,
                                         description="name or name:version; default: the default")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$")]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    digits: Annotated[list[Digit], Field(min_length=1, max_length=256)] | None = None
    latents: Annotated[list[Latent], Field(min_length=1, max_length=256)] | None = None
    n: Annotated[int, Field(ge=1, le=256)] = 1
    seed: Seed | None = None
    model: ModelTag | None = None
    format: Literal["png", "npy"] = "png"


@app.exception_handler(GanforgeError)
async def _ganforge_error(request: Request, exc: GanforgeError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)


@app.exception_handler(ValidationError)
@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: ValidationError | RequestValidationError) -> JSONResponse:
    """422 naming each field and what it allows (without echoing the input: it may be NaN)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


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
        route = f"{scope['method']} {scope['path']}"
        start, code = time.perf_counter(), 500

        async def send_and_see(message: Any) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.asgi(scope, receive, send_and_see)
        finally:
            metrics.REQUESTS.labels(route, str(code)).inc()
            metrics.LATENCY.labels(route).observe(time.perf_counter() - start)


app.add_middleware(RequestMetrics)


def settle_gc() -> None:
    """Collect, then freeze what survives (the app, modules, sessions) out of the collector's
    view: full collections then walk only request-time objects. Measured: p99 of a trivial
    route at concurrency 1 went from ~90 ms (periodic full collections over ~100k start-up
    objects) to ~1.4 ms."""
    gc.collect()
    gc.freeze()


def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
    token = settings.api_token
    if token is None:
        raise HTTPException(503, "job endpoints are off: set GANFORGE_API_TOKEN on the service")
    expected = f"Bearer {token.get_secret_value()}"
    if authorization is None or not hmac.compare_digest(authorization, expected):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


async def _image_response(images: Any, fmt: generate.Format, tag: str,
                          seed: int | None) -> Response:
    headers = {"X-Model": tag}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    media = "application/x-npy" if fmt == "npy" else "image/png"
    return Response(await generate.encoded(images, fmt), media_type=media, headers=headers)


# `bentoml build` packs the service with this image spec; `bentoml containerize ganforge:latest`
# turns it into an OCI image (deploy/README.md).
IMAGE = (bentoml.images.Image(python_version="3.11", lock_python_packages=False)
         .system_packages("libgomp1")
         .pyproject_toml("pyproject.toml"))


@bentoml.service(name="ganforge", image=IMAGE, workers=settings.serve_workers,
                 traffic={"timeout": 60}, logging={"access": {"enabled": False}})
@bentoml.asgi_app(app, path="/")
class Ganforge:
    def __init__(self) -> None:
        import_default_model()
        self.models = ModelRegistry(settings)
        self.models.refresh()
        threading.Thread(target=self._poll, daemon=True, name="model-poll").start()

    def _poll(self) -> None:
        """Notice new production versions in the store and swap them in."""
        time.sleep(1.0)  # BentoML builds the app after __init__ returns
        settle_gc()
        while True:
            time.sleep(settings.model_poll_interval)
            try:
                if self.models.refresh():
                    settle_gc()
            except Exception:  # the store may be mid-write; the next poll sees it whole
                log.exception("model refresh failed")

    def __is_ready__(self) -> bool:
        return self.models.ready

    @app.get("/generate", response_class=Response,
             responses={200: {"content": {"image/png": {}, "application/x-npy": {}}}})
    async def generate_get(
        self,
        digit: Annotated[int | None, Query(ge=0, le=9, description="digit to draw")] = None,
        n: Annotated[int, Query(ge=1, le=256, description="images; a grid when > 1")] = 1,
        seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
        model: ModelQuery = None,
        format: Literal["png", "npy"] = "png",
    ) -> Response:
        loaded = await self.models.aget(model)
        seed = generate.pick_seed(seed)
        images = await generate.by_seed(loaded, None if digit is None else [digit], n, seed)
        return await _image_response(images, format, loaded.tag, seed)

    @app.post("/generate", response_model=None)
    async def generate_post(self, body: GenerateRequest) -> Response | dict[str, Any]:
        loaded = await self.models.aget(body.model)
        seed = None
        if body.latents is not None:
            images = await generate.by_latents(loaded, body.latents, body.digits)
        else:
            seed = generate.pick_seed(body.seed)
            n = len(body.digits) if body.digits else body.n
            images = await generate.by_seed(loaded, body.digits, n, seed)
        if body.format == "npy":
            return await _image_response(images, "npy", loaded.tag, seed)
        return {"model": loaded.tag, "seed": seed, "images": generate.png_list(images)}

    @app.get("/interpolate", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def interpolate(
        self,
        seed_a: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the first latent")],
        seed_b: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the last latent")],
        digit: Annotated[int | None, Query(ge=0, le=9, description="digit to draw")] = None,
        steps: Annotated[int, Query(ge=2, le=32, description="images in the strip")] = 8,
        model: ModelQuery = None,
    ) -> Response:
        """A PNG strip: ``steps`` images along the spherical path between two seeds' latents."""
        loaded = await self.models.aget(model)
        images = await generate.interpolation(loaded, digit, seed_a, seed_b, steps)
        return Response(generate.strip_png(images), media_type="image/png",
                        headers={"X-Model": loaded.tag, "X-Steps": str(steps)})

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    async def playground(self) -> FileResponse:
        """The web playground (services/playground/)."""
        return FileResponse(PLAYGROUND / "index.html", headers=PAGE_HEADERS)

    @app.get("/version")
    async def version(self) -> dict[str, str]:
        """ganforge's version (and the cheapest route: the benchmarks' HTTP floor)."""
        return {"version": __version__}

    @app.get("/models")
    def list_models(self) -> dict[str, Any]:
        default = self.models.default().tag if self.models.ready else None
        return {"default": default, "models": self.models.describe()}

    @app.post("/jobs", status_code=202, dependencies=[Depends(require_token)])
    def submit_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        from trainer import jobs

        job_id = jobs.submit(spec)
        return jobs.status(job_id).to_dict()

    @app.get("/jobs", dependencies=[Depends(require_token)])
    def list_jobs(self, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        from trainer import jobs

        return {"jobs": [st.to_dict() for st in jobs.list_jobs(limit)]}

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def job_status(self, job_id: JobId) -> dict[str, Any]:
        from trainer import jobs

        return jobs.status(job_id).to_dict()

    @app.get("/jobs/{job_id}/{name}", dependencies=[Depends(require_token)],
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def job_artifact(self, job_id: JobId, name: Literal["samples.png", "losses.png"]
                     ) -> Response:
        """The job's newest fixed-noise sample grid, or its loss curves, as PNG."""
        from trainer import jobs

        file_name, data = jobs.artifact(job_id, name)
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-File": file_name})

    @app.delete("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def cancel_job(self, job_id: JobId) -> dict[str, Any]:
        from trainer import jobs

        return jobs.cancel(job_id).to_dict()
