"""The serving stack under the routes: uvicorn's C parser and loop in BentoML's workers, and the
short path for the sampling GET routes (``services.fastpath``)."""

import inspect
import os
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services import fastpath


def children(pid: int) -> list[int]:
    """Every process below ``pid`` (BentoML's circus arbiter starts the HTTP workers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def test_uvicorn_as_bentoml_configures_it_picks_httptools_and_uvloop() -> None:
    """BentoML's HTTP worker builds ``uvicorn.Config`` without ``http``/``loop`` (outside
    Windows), so uvicorn's "auto" choice decides; with the dependencies installed it is the C
    parser and libuv."""
    from _bentoml_impl.worker import service as worker

    source = inspect.getsource(worker.main.callback)
    assert "uvicorn.Config(" in source and "http=" not in source
    assert source.count('uvicorn_extra_options["loop"]') == 1  # the Windows branch only
    config = uvicorn.Config(app=lambda *a: None, log_config=None, workers=1, server_header=False)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None and "uvloop" in factory.__module__


def test_running_workers_have_httptools_and_uvloop_loaded(server) -> None:
    """The worker processes of the running service have both C extensions mapped."""
    with server.client() as c:
        assert c.get("/generate", params={"digit": 1}).status_code == 200
    workers = [p for p in children(server.proc.pid)
               if "_bentoml_impl.worker.service" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == int(os.environ.get("GANFORGE_SERVE_WORKERS", "1"))
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/httptools/parser/parser." in maps, pid
        assert "/uvloop/loop." in maps, pid


def test_fast_routes_are_the_sampling_gets() -> None:
    from services.app import app
    from services.service import Ganforge

    routes = fastpath.fast_routes(app, Ganforge.inner)
    assert set(routes) == {"/generate", "/interpolate"}
    generate = routes["/generate"]
    assert generate.method_name == "generate_get" and not generate.required
    assert {"label", "digit", "n", "seed", "model", "format"} <= set(generate.params)
    assert routes["/interpolate"].required == {"seed_a", "seed_b"}


@pytest.mark.parametrize(("query", "expected"), [
    (b"digit=7&seed=1", {"digit": 7, "seed": 1, "n": 1, "format": "png", "label": None}),
    (b"label=T-shirt%2Ftop&n=4", {"label": "T-shirt/top", "n": 4}),
    (b"digit=7&unknown=x", {"digit": 7}),
    (b"digit=+7", {"digit": 7}),  # '+' is a space, which pydantic's int parsing trims
])
def test_arguments_follow_the_routes_rules(query, expected) -> None:
    from services.app import app
    from services.service import Ganforge

    route = fastpath.fast_routes(app, Ganforge.inner)["/generate"]
    kwargs = fastpath.arguments(route, fastpath.parse_query(query))
    assert {k: kwargs[k] for k in expected} == expected


@pytest.mark.parametrize("query", [b"digit=10", b"digit=abc", b"n=0", b"seed=-1", b"format=gif",
                                   b"model=../etc", b"digit=1&digit=2", b"label="])
def test_anything_invalid_goes_to_the_full_stack(query) -> None:
    from services.app import app
    from services.service import Ganforge

    route = fastpath.fast_routes(app, Ganforge.inner)["/generate"]
    with pytest.raises(fastpath.Delegate):
        fastpath.arguments(route, fastpath.parse_query(query))


def test_fast_path_answers_and_errors_take_the_full_stack(server) -> None:
    """A valid GET /generate is answered before BentoML's layers (its request counter does not
    move) and counted in ganforge's metrics; an invalid one gets the full stack's 422."""
    bentoml_total = server.metric("bentoml_service_request_total")
    ok = server.metric("ganforge_generate_requests_total", route="GET /generate", code="200")
    bad = server.metric("ganforge_generate_requests_total", route="GET /generate", code="422")
    with server.client() as c:
        r = c.get("/generate", params={"digit": 4, "seed": 2})
        assert r.status_code == 200 and r.headers["x-seed"] == "2"
        assert set(r.headers) == {"date", "content-length", "content-type", "x-model", "x-seed"}
        assert server.metric("bentoml_service_request_total") == bentoml_total
        wrong = c.get("/generate", params={"digit": 4, "seed": 2, "n": 0})
        assert wrong.status_code == 422
        assert wrong.json()["detail"][0]["loc"] == ["query", "n"]
    assert server.metric("bentoml_service_request_total") == bentoml_total + 1
    assert server.metric("ganforge_generate_requests_total", route="GET /generate",
                         code="200") == ok + 1
    assert server.metric("ganforge_generate_requests_total", route="GET /generate",
                         code="422") == bad + 1


def test_a_get_with_a_body_takes_the_full_stack(server) -> None:
    """The body limit applies whatever the method: a GET with a large body gets its 413."""
    r = httpx.request("GET", f"{server.url}/generate?digit=1", content=b"x" * (9 * 2**20),
                      timeout=30)
    assert r.status_code == 413
