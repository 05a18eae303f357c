"""The service image has no torch: the service must start and serve with torch, torchvision, the
trainer and the models made unimportable (a real ``bentoml serve``, every worker process)."""

import subprocess
import sys

import httpx

from tests.utils.server import start_server, stop_server

# Runs at interpreter start in every process of the server (PYTHONPATH carries it): any import
# of these packages fails as it would in the service image.
BLOCKER = '''
import importlib.abc, sys

BLOCKED = {"torch", "torchvision", "trainer", "models", "matplotlib", "onnx"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the service image (test blocker)")
        return None


sys.meta_path.insert(0, Blocker())
'''


def test_service_serves_without_torch(tmp_path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER)
    srv = start_server(tmp_path / "bentoml", tmp_path / "serve.log", PYTHONPATH=str(shim))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.get("/generate", params={"digit": 7, "seed": 3})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
            assert c.get("/models").json()["default"].startswith("mnist-dcgan-cond:")
            # a job spec is validated (and refused) with no torch either
            bad = c.post("/jobs", json={"family": "stylegan"},
                         headers={"Authorization": f"Bearer {srv.env['GANFORGE_API_TOKEN']}"})
            assert bad.status_code == 422 and "family" in bad.text
        # the blocker is active in a process started with the server's environment
        probe = subprocess.run([sys.executable, "-c", "import torch"], env=srv.env,
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "test blocker" in probe.stderr
    finally:
        stop_server(srv)
    assert "test blocker" not in (tmp_path / "serve.log").read_text()  # nothing tried torch
