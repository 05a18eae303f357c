"""BentoML's HTTP metrics with the endpoint label bounded (``services.bentoml_fixes``), in
process: route templates, BentoML's fixed routes, and one value for everything else."""

import asyncio
import secrets

import pytest
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from prometheus_client import REGISTRY, generate_latest

from services import bentoml_fixes


@pytest.mark.parametrize(("path", "label"), [
    ("/jobs", "/jobs"), ("/jobs/0123abcd", "/jobs/{job_id}"),
    ("/jobs/0123abcd/samples.png", "/jobs/{job_id}/{name}"),
    ("/jobs/../../etc/passwd", "other"), ("/jobs/a/b/c", "other"),
    ("/playground/app.js", "/playground/{path}"), ("/docs", "/docs"), ("/", "/"),
    ("/metrics", "/metrics"), ("/readyz", "/readyz"), ("/static_content/x.css",
                                                      "/static_content/{path}"),
    ("/wp-admin.php", "other"), ("/jobs/", "other"), ("", "other"),
])
def test_paths_map_to_templates_or_other(path: str, label: str) -> None:
    assert bentoml_fixes.endpoint_label(path) == label


def test_every_native_endpoint_has_its_own_label() -> None:
    """The @bentoml.api routes live in BentoML's app, not ours: each is a label of its own."""
    from services.service import Ganforge

    routes = {api.route for api in Ganforge.apis.values()}
    assert routes >= {"/sample", "/sample_png"}
    for route in routes:
        assert bentoml_fixes.endpoint_label(route) == route


def test_the_patched_middleware_labels_by_template() -> None:
    assert bentoml_fixes.apply() and bentoml_fixes.apply()  # idempotent

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    namespace = f"labels_{secrets.token_hex(4)}"
    middleware = RunnerTrafficMetricsMiddleware(app, namespace=namespace)
    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    async def main() -> None:
        for i in range(30):
            for path in (f"/jobs/{secrets.token_hex(8)}", f"/{secrets.token_hex(8)}",
                         f"/jobs/{i}/samples.png"):
                await middleware({"type": "http", "path": path, "method": "GET",
                                  "headers": []}, None, send)

    asyncio.run(main())
    assert len(sent) == 2 * 90 and sent[0]["status"] == 404  # the app's answers pass through
    lines = [ln for ln in generate_latest(REGISTRY).decode().splitlines()
             if ln.startswith(f"{namespace}_request_total")]
    labels = sorted(ln.split('endpoint="', 1)[1].split('"', 1)[0] for ln in lines)
    assert labels == ["/jobs/{job_id}", "/jobs/{job_id}/{name}", "other"]
    assert all(ln.endswith(" 30.0") for ln in lines)
