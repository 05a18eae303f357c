"""Redis restarted under a training job and a serving ``/jobs``: nothing is lost.

A Redis of the test's own (its own port, append-only file on, as in the k8s manifests), a real
``ganforge worker`` (default queue timings) and a real ``ganforge serve`` on it. While a job
trains, Redis stops and comes back: during the outage ``/jobs`` answers a 503 that names the
queue, after it the records written before are there, the job finishes with one model and the
worker takes new jobs again.
"""

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.utils import free_port, run_cli
from tests.utils.server import TOKEN, start_server, stop_server
from tests.utils.workers import TINY, Worker, steps_lasting

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs redis-server (make test installs it)")


def start_redis(port: int, folder: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
         "--dir", str(folder), "--save", "", "--daemonize", "no", "--logfile", str(log)],
        start_new_session=True)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.ping():
                return proc
        except redis.exceptions.RedisError:  # refused, or still loading its append-only file
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


def stop_redis(proc: subprocess.Popen) -> None:
    """SIGTERM, as a pod restart sends it: Redis flushes its append-only file and exits."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


def wait_job(client: httpx.Client, job_id: str, predicate, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = client.get(f"/jobs/{job_id}").json()
        if predicate(st):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.5)


def test_redis_restart_loses_no_job(tmp_path) -> None:
    port, folder = free_port(), tmp_path / "redis"
    folder.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    env = {"GANFORGE_BROKER_URL": url, "GANFORGE_RESULT_BACKEND": url,
           "BENTOML_HOME": str(tmp_path / "bentoml")}
    server = worker = None
    # G and D at the reference width, D without the third conv: ~20 s of steps on this machine
    # train across the outage
    spec = {**TINY, "width": 64, "batch_size": 64, "d_extra_convs": 0}
    steps = steps_lasting(20, spec)
    rds = start_redis(port, folder, tmp_path / "redis.log")
    try:
        worker = Worker(tmp_path / "worker.log", env=env, default_timings=True)
        server = start_server(tmp_path / "bentoml", tmp_path / "serve.log", **env)
        api = server.client(headers={"Authorization": f"Bearer {TOKEN}"})
        # a job no worker here takes (the gpu queue), and one that trains across the restart
        held = api.post("/jobs", json={**TINY, "device": "cuda", "steps": 10}).json()["id"]
        job = api.post("/jobs", json={**spec, "steps": steps}).json()["id"]
        wait_job(api, job, lambda s: s["progress"].get("step", 0) >= 20)
        assert {held, job} <= {j["id"] for j in api.get("/jobs").json()["jobs"]}

        stop_redis(rds)
        down = time.monotonic()
        asked = time.monotonic()
        r = api.get("/jobs")
        answered_in = time.monotonic() - asked
        assert r.status_code == 503, r.text
        assert "queue" in r.json()["detail"] and "unavailable" in r.json()["detail"]
        assert answered_in < 5
        assert api.get(f"/jobs/{job}").status_code == 503
        assert api.post("/jobs", json={**TINY, "steps": 10}).status_code == 503
        time.sleep(max(0.0, 5 - (time.monotonic() - down)))  # a few seconds of outage
        rds = start_redis(port, folder, tmp_path / "redis-2.log")
        print(f"Redis down {time.monotonic() - down:.1f} s; /jobs answered 503 in "
              f"{answered_in * 1000:.0f} ms")

        deadline = time.monotonic() + 30
        while (r := api.get("/jobs")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert {held, job} <= {j["id"] for j in r.json()["jobs"]}  # records from before
        assert api.get(f"/jobs/{held}").json()["state"] == "PENDING"
        assert redis.Redis(port=port).llen("gpu") == 1  # its message too

        st = wait_job(api, job, lambda s: s["state"] in ("SUCCESS", "FAILURE", "CANCELLED"))
        assert st["state"] == "SUCCESS", st
        assert st["result"]["steps"] == steps
        count = server.in_store("from ganforge import store; print(sum(m.labels.get('run_id') "
                                f"== {job!r} for m in store.list_models()))")
        assert count == "1"
        # the worker reconnected: it takes a new job
        after = api.post("/jobs", json={**TINY, "family": "mlp", "conditional": False,
                                        "steps": 30}).json()["id"]
        st = wait_job(api, after, lambda s: s["state"] in ("SUCCESS", "FAILURE", "CANCELLED"),
                      timeout=300)
        assert st["state"] == "SUCCESS", st
        assert worker.proc.poll() is None
    finally:
        if server is not None:
            stop_server(server)
        if worker is not None:
            worker.stop()
        stop_redis(rds)


def test_cli_says_the_queue_is_unavailable(tmp_path) -> None:
    """No Redis at the broker's address: one line naming the queue, exit 2, no traceback."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {"GANFORGE_BROKER_URL": url, "GANFORGE_RESULT_BACKEND": url}
    for args in (("jobs", "list"), ("jobs", "status", "0" * 32),
                 ("jobs", "submit", "--steps", "10", "--device", "cpu")):
        out = run_cli(*args, env=env, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "queue" in lines[0] and "unavailable" in lines[0], out.stderr
