"""Hostile HTTP against a real ``bentoml serve``: huge bodies, label floods, path tricks,
contradictory bodies, version aliases, odd tokens. Raw sockets where a client library would
clean the request up (dot segments, encoded slashes, NUL, non-ASCII headers)."""

import json
import secrets
import select
import socket
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ganforge import jobs
from ganforge.settings import Settings, get_settings
from tests.utils.server import TOKEN, Server

LIMIT = Settings().max_body_bytes  # what the server runs with (no override in its environment)
MB = 1024 * 1024


# ---- raw HTTP ----------------------------------------------------------------------------------

def connect(server: Server, timeout: float = 10) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (read until the server closes or the body is
    complete)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw(server: Server, method: str, target: str, headers: dict[str, str] | None = None,
        body: bytes = b"", header_bytes: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request exactly as written: the target is not normalised or re-encoded."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    with connect(server) as s:
        s.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n" + header_bytes + b"\r\n"
                  + body)
        return read_response(s)


def service_rss(server: Server) -> int:
    """Resident memory (bytes) of the service's processes: ``bentoml serve`` and its workers."""
    pids, todo = [], [server.proc.pid]
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


# ---- 1. the body limit ------------------------------------------------------------------------

def test_the_limit_fits_256_latents_of_1024_floats() -> None:
    row = json.dumps([-2.2250738585072014e-308] * 1024)  # repr's longest float, 1024 times
    worst = (f'{{"latents": [{", ".join([row] * 256)}], "digits": {json.dumps([9] * 256)}, '
             f'"model": "{"m" * 200}", "format": "npy"}}')
    assert json.loads(worst)["latents"][255][1023] == -2.2250738585072014e-308
    assert len(worst) <= LIMIT < 16 * MB


def declared_too_large(server: Server, path: str, size: int) -> tuple[int, dict, bytes, float]:
    """Headers declaring ``size`` bytes, and no body: the answer must come without it."""
    with connect(server) as s:
        start = time.perf_counter()
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        status, headers, body = read_response(s)
        return status, headers, body, time.perf_counter() - start


def streamed_too_large(server: Server, path: str, size: int) -> tuple[int, int | None, bytes]:
    """A chunked body of up to ``size`` bytes, sent in 256 KiB chunks until the server answers
    or closes. Returns the bytes sent, the status (None when the connection was reset before
    the answer could be read) and the body."""
    chunk = b"[" + b"1," * (128 * 1024 - 1) + b"1"  # 256 KiB of JSON-ish bytes
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with connect(server, timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            while sent < size:
                if select.select([s], [], [], 0)[0]:
                    break  # the answer is there: stop sending
                s.sendall(frame)
                sent += len(chunk)
            status, _, body = read_response(s)
            return sent, status, body
        except (ConnectionResetError, BrokenPipeError):
            return sent, None, b""


@pytest.mark.parametrize("path", ["/generate", "/jobs"])
def test_a_60_mb_body_is_refused_before_it_is_read_and_memory_stays_flat(server, path) -> None:
    with server.client() as c:  # warm up: the routes have run once
        c.post("/generate", json={"digits": [1, 2], "seed": 1})
        c.post("/jobs", json={"steps": 10})
    before = service_rss(server)
    refused_413 = server.metric("bentoml_service_request_total", http_response_code="413")
    # declared: refused at once, before a byte of the body is sent, and before authentication
    status, headers, body, seconds = declared_too_large(server, path, 60_000_000)
    assert status == 413 and headers["content-type"] == "application/json", body
    detail = json.loads(body)["detail"]
    assert str(LIMIT) in detail and "60000000" in detail and "GANFORGE_MAX_BODY_BYTES" in detail
    assert seconds < 2
    # streamed without a length: counted as it arrives and cut off near the limit
    sent, status, body = streamed_too_large(server, path, 60_000_000)
    assert sent < LIMIT + 16 * MB  # nowhere near 60 MB went in
    if status is not None:  # else the reset beat the answer to the client: the metric says
        assert status == 413 and str(LIMIT) in json.loads(body)["detail"]
    # just over the limit, then waiting: the answer is always readable
    sent, status, body = streamed_too_large(server, path, LIMIT + 256 * 1024)
    assert status == 413 and str(LIMIT) in json.loads(body)["detail"], body
    time.sleep(0.5)
    assert server.metric("bentoml_service_request_total", http_response_code="413",
                         endpoint=path) >= 3
    assert server.metric("bentoml_service_request_total",
                         http_response_code="413") == refused_413 + 3
    grown = service_rss(server) - before
    assert grown < 20 * MB, f"the service grew by {grown / MB:.1f} MB"
    with server.client() as c:  # and it still serves
        assert c.post("/generate", json={"digits": [3], "seed": 1}).status_code == 200


def test_a_large_valid_body_under_the_limit_is_served(server) -> None:
    latents = [[0.0] * 100] * 256
    with server.client() as c:
        r = c.post("/generate", json={"latents": latents, "digits": [7], "format": "npy"})
    assert r.status_code == 200 and r.headers["x-model"]


# ---- 2. bounded metric labels -----------------------------------------------------------------

def series(server: Server) -> Counter[str]:
    """Number of series of every metric family in /metrics."""
    counts: Counter[str] = Counter()
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            counts[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    return counts


def hostile_round(server: Server, n: int) -> None:
    """``n`` random 404 paths, ``n`` job ids with and without the token, odd methods."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with server.client() as c:
        for _ in range(n):
            word = secrets.token_hex(6)
            assert c.get(f"/{word}/{word}").status_code == 404
            assert c.get(f"/jobs/{word}", headers=auth).status_code == 404
            assert c.get(f"/jobs/{word}").status_code == 401
            assert c.get(f"/jobs/{word}/samples.png", headers=auth).status_code == 404
            assert c.get(f"/playground/{word}.js").status_code == 404
        for method in ["FOO", "PURGE", "BREW", "X" + secrets.token_hex(3).upper()][: max(2, n)]:
            for path in ("/generate", "/interpolate", f"/jobs/{secrets.token_hex(4)}",
                         f"/{secrets.token_hex(4)}"):
                status, _, _ = raw(server, method, path)
                assert 400 <= status < 500


def test_hostile_paths_and_methods_add_no_metric_series(server) -> None:
    hostile_round(server, 1)  # every kind of answer has been counted once
    with server.client() as c:
        c.get("/generate", params={"digit": 1})
    time.sleep(0.3)
    before = series(server)
    hostile_round(server, 50)
    time.sleep(0.3)
    after = series(server)
    assert after == before, {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    text = httpx.get(f"{server.url}/metrics").text
    assert 'endpoint="/jobs/{job_id}"' in text and 'endpoint="other"' in text
    assert 'route="OTHER /generate"' in text


# ---- 3. version aliases -----------------------------------------------------------------------

def test_aliases_of_the_served_version_load_nothing(server) -> None:
    with server.client() as c:
        served = c.get("/models").json()["default"]
        name, version = served.split(":")
        loads = server.metric("ganforge_model_loads_total")
        first = c.get("/generate", params={"digit": 3, "seed": 9, "model": served})
        for alias in (f"{name}:{version[:4]}", f"{name}:{version.upper()}", f"{name}:latest",
                      name.upper(), f"{name.upper()}:{version[:6].upper()}", f"{name}:LATEST"):
            r = c.get("/generate", params={"digit": 3, "seed": 9, "model": alias})
            assert r.status_code == 200, (alias, r.text)
            assert r.headers["x-model"] == served and r.content == first.content
        assert server.metric("ganforge_model_loads_total") == loads  # no second session
        start = time.perf_counter()
        for i in range(50):
            r = c.get("/generate", params={"digit": 3, "model": f"{name}:nosuch{i}"})
            assert r.status_code == 404 and "model" in r.json()["detail"]
        assert (time.perf_counter() - start) / 50 < 0.05  # refused from memory
        assert c.get("/generate", params={"digit": 3, "model": "mnist-nothing:latest"}
                     ).status_code == 404
        assert c.get("/models").json()["default"] == served  # what :latest meant


# ---- 5. contradictory bodies ------------------------------------------------------------------

@pytest.mark.parametrize(("body", "needles"), [
    ({"digits": [1, 2, 3], "n": 5}, ["n: 5", "3 digits"]),
    ({"digits": [4], "n": 2}, ["n: 2", "1 digits"]),
    ({"latents": [[0.0] * 100], "digits": [1], "seed": 3}, ["seed", "latents"]),
    ({"latents": [[0.0] * 100] * 2, "digits": [1], "n": 3}, ["n: 3", "2 latents"]),
])
def test_contradictory_bodies_are_422_saying_why(server, body, needles) -> None:
    with server.client() as c:
        r = c.post("/generate", json=body)
    assert r.status_code == 422, r.text
    assert all(n in r.text for n in needles), r.text


def test_agreeing_bodies_are_served(server) -> None:
    with server.client() as c:
        by_digits = c.post("/generate", json={"digits": [1, 2, 3], "n": 3, "seed": 1})
        by_latents = c.post("/generate", json={"latents": [[0.0] * 100] * 2, "digits": [1],
                                               "n": 2})
    assert by_digits.status_code == 200 and len(by_digits.json()["images"]) == 3
    assert by_latents.status_code == 200 and len(by_latents.json()["images"]) == 2


# ---- 6. path tricks on the job routes ----------------------------------------------------------

@pytest.fixture(scope="module")
def planted_job(server, redis_db):
    """A job record with a run folder holding a grid, and a secret just outside the folder."""
    job_id = uuid.uuid4().hex
    jobs.job_store().add(jobs.JobRecord(job_id, {"steps": 10}, "cpu", time.time()))
    runs = get_settings().runs_dir.resolve()
    (runs / job_id / "samples").mkdir(parents=True)
    (runs / job_id / "samples" / "step-000001.png").write_bytes(b"\x89PNG grid")
    (runs / "secret.txt").write_text("TOP-SECRET")
    (runs / job_id / "history.jsonl").write_text("TOP-SECRET")
    return job_id


TRICKS = [
    "/jobs/..%2f..%2fetc/passwd", "/jobs/../../etc/passwd", "/jobs/%2e%2e/samples.png",
    "/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/jobs/{id}/..%2fsecret.txt",
    "/jobs/{id}/%2e%2e%2f%2e%2e%2fsecret.txt", "/jobs/{id}/../secret.txt",
    "/jobs/{id}/history.jsonl", "/jobs/{id}/%2fetc%2fpasswd", "/jobs//etc/passwd",
    "/jobs/{id}%00/samples.png", "/jobs/{id}/samples.png%00.txt", "/jobs/%2Fetc%2Fpasswd",
    "/jobs/{id}/..%5c..%5csecret.txt", "/jobs/%2e%2e%5c%2e%2e%5csecret.txt",
    "/jobs/{id}/samples.png/..", "/playground/..%2f..%2fganforge%2fsettings.py",
    "/playground/%2e%2e/app.py", "/jobs/" + "a" * 65,
]


@pytest.mark.parametrize("target", TRICKS)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_path_tricks_are_404_or_422(server, planted_job, target, method) -> None:
    status, headers, body = raw(server, method, target.replace("{id}", planted_job),
                                {"Authorization": f"Bearer {TOKEN}"})
    assert status in (404, 405, 422), (status, body[:200])
    assert b"TOP-SECRET" not in body and b"root:" not in body and b"BaseSettings" not in body


def test_the_planted_job_reads_its_own_grid(server, planted_job) -> None:
    """The tricks above fail for the path, not because the job cannot be read at all."""
    status, headers, body = raw(server, "GET", f"/jobs/{planted_job}/samples.png",
                                {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body == b"\x89PNG grid" and headers["x-file"] == "step-000001.png"


# ---- the lead's two fixes, checked over HTTP ---------------------------------------------------

@pytest.mark.parametrize("token", ["Bearer \xe9t\xe9".encode("latin-1"),
                                   "Bearer 日本".encode(), b"Bearer \xff\xfe", b"\xc3\xa9"])
def test_a_non_ascii_bearer_token_is_401(server, token: bytes) -> None:
    status, headers, body = raw(server, "GET", "/jobs", header_bytes=b"Authorization: " + token
                                + b"\r\n")
    assert status == 401, body
    assert headers.get("www-authenticate") == "Bearer"


def test_made_up_methods_count_as_other(server) -> None:
    """Methods the HTTP parser lets through reach the app (405) and are counted as OTHER; the
    parser refuses the others itself (400)."""
    before = server.metric("ganforge_generate_requests_total", route="OTHER /generate")
    statuses = [raw(server, m, "/generate")[0] for m in ("FOO", "BREW", "PURGE", "MKCOL", "XYZ")]
    assert set(statuses) <= {400, 405} and statuses.count(405) >= 2, statuses
    assert server.metric("ganforge_generate_requests_total",
                         route="OTHER /generate") == before + statuses.count(405)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'route="FOO /generate"' not in text and 'route="PURGE /generate"' not in text
