"""The ganforge HTTP service (BentoML 1.4): sample digits and list models; the job routes come
from ``services.jobs_api`` through the mounted app (``services.app``).

    bentoml serve services.service:Ganforge      # or: ganforge serve --port 3000

Loading happens in ``__init__``; each route's inputs are typed and bounded in its signature
(``services.schemas``) and the work is done by plain modules (``services.generate``,
``services.registry``). Generation needs no token.
"""

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType, DType
from fastapi import Query
from fastapi.responses import FileResponse, Response
from pydantic import Field

from ganforge import __version__
from ganforge.errors import GanforgeError
from ganforge.generator import MAX_IMAGES, MAX_SEED
from ganforge.settings import get_settings
from services import bentoml_fixes, fastpath, generate, metrics
from services.app import PAGE_HEADERS, PLAYGROUND, app, settle_gc
from services.registry import ModelRegistry, import_default_model
from services.schemas import (
    Count,
    CountQuery,
    DigitQuery,
    Format,
    GenerateRequest,
    GenerateResponse,
    Label,
    LabelQuery,
    Latent,
    ModelQuery,
    ModelTag,
    Seed,
    SeedQuery,
)

log = logging.getLogger("ganforge.service")
settings = get_settings()
bentoml_fixes.apply()

# `bentoml build` packs the service with this image spec; `bentoml containerize ganforge:latest`
# turns it into an OCI image (deploy/README.md).
IMAGE = (bentoml.images.Image(python_version="3.11", lock_python_packages=False)
         .system_packages("libgomp1")
         .pyproject_toml("pyproject.toml"))
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "application/x-npy": {}}}}
# the native API's inputs: POST /generate's fields and bounds
ApiLabels = Annotated[list[Label], Field(min_length=1, max_length=MAX_IMAGES)] | None
ApiLatents = Annotated[list[Latent], Field(min_length=1, max_length=MAX_IMAGES)] | None


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

    @app.get("/generate", response_class=Response, responses=IMAGE_RESPONSES)
    async def generate_get(self, label: LabelQuery = None, digit: DigitQuery = None,
                           n: CountQuery = 1, seed: SeedQuery = None, model: ModelQuery = None,
                           format: Format = "png") -> Response:
        loaded = await self.models.aget(model)
        classes = generate.class_indices(loaded, None if label is None else [label],
                                         None if digit is None else [digit])
        seed = generate.pick_seed(seed)
        images = await generate.by_seed(loaded, classes, n, seed)
        return await generate.image_response(images, format, loaded.tag, seed)

    @app.post("/generate", response_model=None,
              responses={200: {"model": GenerateResponse, "content": {"application/x-npy": {}}}})
    async def generate_post(self, body: GenerateRequest) -> Response | dict[str, Any]:
        loaded = await self.models.aget(body.model)
        classes = generate.class_indices(loaded, body.labels, body.digits)
        images, seed = await generate.draw(loaded, classes, body.latents, body.n, body.seed)
        if body.format == "npy":
            return await generate.image_response(images, "npy", loaded.tag, seed)
        return {"model": loaded.tag, "seed": seed, "images": generate.png_list(images)}

    @app.get("/interpolate", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def interpolate(
        self,
        seed_a: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the first latent")],
        seed_b: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the last latent")],
        label: LabelQuery = None,
        digit: DigitQuery = None,
        steps: Annotated[int, Query(ge=2, le=32, description="images in the strip")] = 8,
        model: ModelQuery = None,
    ) -> Response:
        """A PNG strip: ``steps`` images along the spherical path between two seeds' latents."""
        loaded = await self.models.aget(model)
        classes = generate.class_indices(loaded, None if label is None else [label],
                                         None if digit is None else [digit])
        images = await generate.interpolation(loaded, classes[0] if classes else None, seed_a,
                                              seed_b, steps)
        return Response(generate.strip_png(images), media_type="image/png",
                        headers={"X-Model": loaded.tag, "X-Steps": str(steps)})

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    async def playground(self) -> FileResponse:
        """The web playground (services/playground/)."""
        return FileResponse(PLAYGROUND / "index.html", headers=PAGE_HEADERS)

    @app.get("/version")
    async def version(self) -> dict[str, str]:
        """ganforge's version."""
        return {"version": __version__}

    @app.get("/models")
    def list_models(self) -> dict[str, Any]:
        default = self.models.default().tag if self.models.ready else None
        return {"default": default, "models": self.models.describe()}

    # BentoML's native API (POST, JSON in): what bentoml.SyncHTTPClient / AsyncHTTPClient and
    # services composed with bentoml.depends call, listed in /schema.json. The same registry,
    # batcher, rules and metrics as POST /generate; X-Model and X-Seed headers as there.
    @bentoml.api(route="/sample")
    async def sample(self, ctx: bentoml.Context, labels: ApiLabels = None,
                     latents: ApiLatents = None, n: Count = 1, seed: Seed | None = None,
                     model: ModelTag | None = None) -> Annotated[np.ndarray, DType("float32")]:
        """Images as an array (N, C, H, W), float32 in [-1, 1]: one per label from the seed's
        latents (``n`` for an unconditional model), or one per given latent."""
        async with _api_call("POST /sample", ctx):
            return await self._draw(ctx, labels, latents, n, seed, model)

    @bentoml.api(route="/sample_png")
    async def sample_png(self, ctx: bentoml.Context, labels: ApiLabels = None,
                         latents: ApiLatents = None, n: Count = 1, seed: Seed | None = None,
                         model: ModelTag | None = None) -> Annotated[bytes, ContentType("image/png")]:
        """The same images as one PNG: the image itself, or a square grid of several; the bytes
        of ``GET /generate`` for one image."""
        async with _api_call("POST /sample_png", ctx):
            return await generate.encoded(await self._draw(ctx, labels, latents, n, seed, model),
                                          "png")

    async def _draw(self, ctx: bentoml.Context, labels: list[str | int] | None,
                    latents: list[list[float]] | None, n: int, seed: int | None,
                    model: str | None) -> np.ndarray:
        loaded = await self.models.aget(model)
        classes = generate.class_indices(loaded, labels, None)
        images, used = await generate.draw(loaded, classes, latents, n, seed)
        ctx.response.headers["X-Model"] = loaded.tag
        if used is not None:
            ctx.response.headers["X-Seed"] = str(used)
        return images



@contextlib.asynccontextmanager
async def _api_call(route: str, ctx: bentoml.Context) -> AsyncIterator[None]:
    """Count and time a native API call like the HTTP routes (``route`` label), and answer our
    errors with their status and message (BentoML turns any other exception into a bare 500)."""
    start, code = time.perf_counter(), "500"
    try:
        yield
        code = "200"
    except GanforgeError as exc:
        code = str(exc.http_status)
        raise BentoMLException(str(exc), error_code=HTTPStatus(exc.http_status)) from exc
    finally:
        metrics.REQUESTS.labels(route, code).inc()
        metrics.LATENCY.labels(route).observe(time.perf_counter() - start)


async def _current_service() -> Any:
    """BentoML's class views reach ``self`` through ``Depends(bentoml.get_current_service)``, a
    plain function, which FastAPI runs on a worker thread for every request; this coroutine is
    the same lookup on the event loop."""
    return bentoml.get_current_service()


app.dependency_overrides[bentoml.get_current_service] = _current_service
# GET /generate and /interpolate on the short path, the native API behind the body limit
fastpath.install(Ganforge, app, max_body_bytes=settings.max_body_bytes)
