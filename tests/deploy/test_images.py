"""The service image spec builds a Bento (Docker itself does not run here: `bentoml
containerize` and `docker build` are the users' step)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_packs_the_service(tmp_path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true"}
    out = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "build", "-o", "tag"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (bento,) = (tmp_path / "bentos" / "ganforge").glob("*/bento.yaml")
    info = yaml.safe_load(bento.read_text())
    assert info["service"] == "services.service:Ganforge"
    root = bento.parent
    assert (root / "src" / "services" / "assets" / "default" / "generator.onnx").exists()
    assert (root / "src" / "services" / "playground" / "playground.js").exists()
    assert not (root / "src" / "tests").exists() and not (root / "src" / ".venv").exists()
    requirements = (root / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "bentoml" in requirements
    # serving needs no PyTorch (the `train` extra): gigabytes kept out of the service image
    names = {line.split("=")[0].split(">")[0].split(";")[0].split("[")[0].strip().lower()
             for line in requirements.splitlines() if line.strip() and not line.startswith("#")}
    assert not names & {"torch", "torchvision", "matplotlib"}, names
    assert "FROM python:3.11" in (root / "env" / "docker" / "Dockerfile").read_text()


def test_worker_dockerfile_builds_the_cli_on_a_cuda_base() -> None:
    text = (ROOT / "deploy" / "docker" / "worker.Dockerfile").read_text()
    assert "nvidia/cuda" in text and 'ENTRYPOINT ["ganforge"]' in text and "USER 10001" in text
    assert "'.[train]'" in text  # the worker trains: PyTorch comes with the train extra
