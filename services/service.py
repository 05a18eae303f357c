"""The ganforge HTTP service (BentoML 1.4): sample digits and list models; the job routes come
from ``services.jobs_api`` through the mounted app (``services.app``).

    bentoml serve services.service:Ganforge      # or: ganforge serve --port 3000

Loading happens in ``__init__``; each route's inputs are typed and bounded in its signature
(``services.schemas``) and the work is done by plain modules (``services.generate``,
``services.registry``). Generation needs no token.
"""

import logging
import threading
import time
from typing import Annotated, Any

import bentoml
from fastapi import Query
from fastapi.responses import FileResponse, Response

from ganforge import __version__
from ganforge.generator import MAX_SEED
from ganforge.settings import get_settings
from services import bentoml_fixes, generate
from services.app import PAGE_HEADERS, PLAYGROUND, app, settle_gc
from services.registry import ModelRegistry, import_default_model
from services.schemas import (
    CountQuery,
    DigitQuery,
    Format,
    GenerateRequest,
    GenerateResponse,
    ModelQuery,
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
    async def generate_get(self, digit: DigitQuery = None, n: CountQuery = 1,
                           seed: SeedQuery = None, model: ModelQuery = None,
                           format: Format = "png") -> Response:
        loaded = await self.models.aget(model)
        seed = generate.pick_seed(seed)
        images = await generate.by_seed(loaded, None if digit is None else [digit], n, seed)
        return await generate.image_response(images, format, loaded.tag, seed)

    @app.post("/generate", response_model=None,
              responses={200: {"model": GenerateResponse, "content": {"application/x-npy": {}}}})
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
            return await generate.image_response(images, "npy", loaded.tag, seed)
        return {"model": loaded.tag, "seed": seed, "images": generate.png_list(images)}

    @app.get("/interpolate", response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def interpolate(
        self,
        seed_a: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the first latent")],
        seed_b: Annotated[int, Query(ge=0, le=MAX_SEED, description="seed of the last latent")],
        digit: DigitQuery = None,
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
        """ganforge's version."""
        return {"version": __version__}

    @app.get("/models")
    def list_models(self) -> dict[str, Any]:
        default = self.models.default().tag if self.models.ready else None
        return {"default": default, "models": self.models.describe()}
