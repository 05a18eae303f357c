"""A real ``bentoml serve`` on a damaged model store: it starts, serves the newest good production
version, counts the bad ones in /metrics, and takes a damaged version up once it is repaired."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.utils import ROOT, free_port
from tests.utils.server import Server, start_server, stop_server

PREPARE = """
import json, os, shutil, sys, time, uuid
from pathlib import Path
from ganforge import store
from ganforge.card import ModelCard

DEFAULT_MODEL_DIR = Path("services/assets/default")
meta = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())
meta.pop("name"), meta.pop("run_id")
card = ModelCard.from_metadata(meta)

def register(stage):
    m, _ = store.register(name="mnist-dcgan-cond", run_id=uuid.uuid4().hex, stage=stage,
                          card=card, onnx_path=DEFAULT_MODEL_DIR / "generator.onnx")
    return m

good = register("production") if "good" in sys.argv else None
time.sleep(0.05)
broken = register("production")
data = broken.onnx_path.read_bytes()
broken.onnx_path.write_bytes(data[: len(data) // 3])  # truncated
root = broken.path.parent
(root / "zzznomodelyaml").mkdir()  # a version folder without model.yaml (sorts last)
shutil.copy(DEFAULT_MODEL_DIR / "generator.onnx", root / "zzznomodelyaml")
garbled = root / "zzzgarbled"
shutil.copytree(broken.path, garbled)
(garbled / "model.yaml").write_text("name: [unclosed")
# a registration killed midway: its half-written version in the staging folder
half = store.store_root().parent / store.STAGING_DIR / "register-killed" / "mnist-dcgan-cond" / "x"
half.mkdir(parents=True)
(half / "generator.onnx").write_bytes(data[:100])
print(json.dumps({"good": good.tag if good else None, "broken": broken.tag}))
"""


def prepare(home: Path, *args: str) -> dict[str, str]:
    import json

    out = subprocess.run([sys.executable, "-c", PREPARE, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "BENTOML_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def repair(home: Path, tag: str) -> None:
    """Put the damaged version's generator back whole (its files change: it is tried again)."""
    name, version = tag.split(":")
    onnx = home / "models" / name / version / "generator.onnx"
    onnx.write_bytes((ROOT / "services/assets/default/generator.onnx").read_bytes())


def wait_for(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    tags = prepare(root / "bentoml", "good")
    srv = start_server(root / "bentoml", root / "serve.log")  # raises unless /readyz is 200
    yield srv, tags
    stop_server(srv)


def test_the_service_serves_the_newest_good_version_and_counts_the_bad(damaged) -> None:
    srv, tags = damaged
    with srv.client() as c:
        assert c.get("/readyz").status_code == 200
        r = c.get("/generate", params={"digit": 4, "seed": 1})
        assert r.status_code == 200 and r.headers["x-model"] == tags["good"]
        assert c.get("/models").json()["default"] == tags["good"]
        pinned = c.get("/generate", params={"digit": 4, "model": tags["broken"]})
        assert pinned.status_code == 404 and "does not load" in pinned.json()["detail"]
    assert srv.metric("ganforge_model_store_skipped", reason="missing_model_yaml") == 1
    assert srv.metric("ganforge_model_store_skipped", reason="bad_model_yaml") == 1
    assert srv.metric("ganforge_model_store_skipped", reason="load_failed") == 1
    assert srv.metric("ganforge_model_load_failures_total") >= 1
    log = srv.log.read_text()
    assert "zzznomodelyaml" in log and "Traceback" not in log


def test_a_repaired_version_is_tried_again_and_served(damaged) -> None:
    srv, tags = damaged
    failures = srv.metric("ganforge_model_load_failures_total")
    time.sleep(1.5)  # three polls: a version that failed with the same files is not retried
    assert srv.metric("ganforge_model_load_failures_total") == failures
    repair(srv.home, tags["broken"])
    with srv.client() as c:
        wait_for(lambda: c.get("/models").json()["default"] == tags["broken"])
        r = c.get("/generate", params={"digit": 4, "seed": 1})
        assert r.status_code == 200 and r.headers["x-model"] == tags["broken"]
    assert srv.metric("ganforge_model_store_skipped", reason="load_failed") == 0


def test_with_only_a_damaged_production_version_it_becomes_ready_once_repaired(tmp_path) -> None:
    home = tmp_path / "bentoml"
    tags = prepare(home)  # no good version: the only production one is truncated
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "GANFORGE_MODEL_POLL_INTERVAL": "0.5"}
    with open(tmp_path / "serve.log", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "serve", "--port",
                                 str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", home, env, proc, tmp_path / "serve.log")

    def status(path: str) -> int:
        try:
            return httpx.get(srv.url + path, timeout=2).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_for(lambda: status("/livez") == 200, 120)  # it starts ...
        assert status("/readyz") == 503  # ... and says it has nothing to serve
        repair(home, tags["broken"])
        wait_for(lambda: status("/readyz") == 200)
        r = httpx.get(srv.url + "/generate", params={"digit": 2})
        assert r.status_code == 200 and r.headers["x-model"] == tags["broken"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
