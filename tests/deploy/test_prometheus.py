"""Prometheus config and rules pass promtool; a real Prometheus scrapes a running service and
worker and gives ganforge's metrics back through its HTTP API."""

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.utils import free_port
from tests.utils.server import start_server, stop_server
from tests.utils.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: make test installs Debian's prometheus package"
    return found


def test_promtool_accepts_config_and_rules() -> None:
    for args in (["check", "config", str(PROM / "prometheus.yml")],
                 ["check", "rules", str(PROM / "rules.yml")]):
        out = subprocess.run([tool("promtool"), *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    rules = (PROM / "rules.yml").read_text()
    for alert in ("GanforgeNoModelLoaded", "GanforgeHigh5xxRate", "GanforgeJobFailureRate",
                  "GanforgeQueueBacklog"):
        assert f"alert: {alert}" in rules


def test_dashboard_queries_metrics_that_exist() -> None:
    dash = json.loads((PROM / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("ganforge_images_generated_total", "ganforge_generate_request_seconds_bucket",
                   "ganforge_batch_size_bucket", "ganforge_training_images_per_second",
                   "ganforge_jobs_total"):
        assert metric in exprs
    sources = [ROOT / "services" / "metrics.py", ROOT / "trainer" / "worker.py"]
    declared = set(re.findall(r'"(ganforge_[a-z_]+)"', " ".join(p.read_text() for p in sources)))
    used = {re.sub(r"_(bucket|sum|count)$", "", m)
            for m in re.findall(r"ganforge_[a-z_]+", exprs)}
    assert used <= declared | {m.removesuffix("_total") for m in declared}


@pytest.fixture
def stack(tmp_path, redis_db):
    srv = start_server(tmp_path / "bentoml", tmp_path / "serve.log")
    worker = Worker(tmp_path / "worker.log", env=srv.env)
    yield srv, worker
    worker.stop()
    stop_server(srv)


def test_prometheus_scrapes_service_and_worker(stack, tmp_path) -> None:
    srv, worker = stack
    httpx.get(f"{srv.url}/generate", params={"digit": 7}, timeout=30)
    service_target = srv.url.removeprefix("http://")
    config = (PROM / "prometheus.yml").read_text()
    config = config.replace("127.0.0.1:3000", service_target)
    config = config.replace("127.0.0.1:9101", f"127.0.0.1:{worker.metrics_port}")
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(PROM / "rules.yml", tmp_path / "rules.yml")
    port = free_port()
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1/query"

    def query(expr: str) -> list:
        try:
            return httpx.get(api, params={"query": expr}, timeout=5).json()["data"]["result"]
        except (httpx.HTTPError, KeyError, ValueError):
            return []

    try:
        deadline = time.monotonic() + 60
        wanted = {
            "service up": 'up{job="ganforge-service"} == 1',
            "worker up": 'up{job="ganforge-worker"} == 1',
            "model info": "ganforge_model_info == 1",
            "images": "ganforge_images_generated_total > 0",
            "queue length": 'ganforge_queue_length{queue="cpu"}',
        }
        missing = dict(wanted)
        while missing and time.monotonic() < deadline:
            missing = {k: q for k, q in missing.items() if not query(q)}
            time.sleep(1)
        assert not missing, f"not scraped: {sorted(missing)}"
        (info,) = query("ganforge_model_info == 1")
        assert info["metric"]["model"] == "mnist-dcgan-cond"
    finally:
        prom.send_signal(signal.SIGTERM)
        prom.wait(20)
