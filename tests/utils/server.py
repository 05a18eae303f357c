"""A real ``ganforge serve`` (bentoml serve) on a free port, with a model store of its own."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.utils import ROOT, free_port

TOKEN = "test-token-not-a-secret"


@dataclass
class Server:
    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log: Path

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def in_store(self, code: str) -> str:
        """Run Python against the server's model store (BENTOML_HOME is fixed per process)."""
        out = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def start_server(home: Path, log: Path, **extra: str) -> Server:
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "GANFORGE_API_TOKEN": TOKEN,
           "GANFORGE_MODEL_POLL_INTERVAL": "0.5", "GANFORGE_EVAL_SAMPLES": "500", **extra}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "serve", "--port",
                                 str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"service did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return Server(url, home, env, proc, log)


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
