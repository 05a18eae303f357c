"""Autoscaling: the service's HPA and the workers' KEDA ScaledObject point at things that exist
in the rendered overlays (Deployments, the Redis Service and Secret, the worker's queues), and
the custom metric the HPA asks for is the one the shipped prometheus-adapter rule serves."""

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import (
    NAMESPACE,
    OVERLAYS,
    PROMETHEUS,
    Obj,
    by_kind,
    container,
    declared_metrics,
    env,
    named,
    render,
)

# The Celery queues (ganforge's QUEUES; written out here, not imported, because the module that
# defines them is moving): jobs asking for device=cuda wait in the Redis list `gpu`, every other
# job in `cpu`.
QUEUES = ("gpu", "cpu")


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


def scale_target(objs: list[Obj], ref: Obj) -> Obj:
    """The Deployment a scaleTargetRef names (KEDA's default kind is a Deployment too)."""
    assert ref.get("apiVersion", "apps/v1") == "apps/v1"
    assert ref.get("kind", "Deployment") == "Deployment"
    return named(objs, "Deployment", ref["name"])


def worker_queues(objs: list[Obj]) -> list[str]:
    args = container(named(objs, "Deployment", "ganforge-worker"))["args"]
    return args[args.index("--queues") + 1].split(",")


def test_hpa_scales_the_service_deployment(objects) -> None:
    _, objs = objects
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = scale_target(objs, hpa["spec"]["scaleTargetRef"])
    assert target["metadata"]["name"] == "ganforge-service"
    assert "replicas" not in target["spec"]  # the HPA owns the count: an apply must not reset it
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "ganforge_generate_requests_per_second"


def jobs_per_worker(objs) -> int:
    """The worker's ``--jobs`` (jobs trained at once in one pod), 1 when not given."""
    args = container(named(objs, "Deployment", "ganforge-worker"))["args"]
    return int(args[args.index("--jobs") + 1]) if "--jobs" in args else 1


def test_keda_scales_the_worker_on_its_own_queues(objects) -> None:
    overlay, objs = objects
    (scaled,) = by_kind(objs, "ScaledObject")
    target = scale_target(objs, scaled["spec"]["scaleTargetRef"])
    assert target["metadata"]["name"] == "ganforge-worker"
    assert "replicas" not in target["spec"]
    # two autoscalers on one Deployment would fight: KEDA makes the worker's HPA itself
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(objs, "HorizontalPodAutoscaler")}
    assert "ganforge-worker" not in hpa_targets
    spec = scaled["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    triggers = spec["triggers"]
    for trigger in triggers:  # KEDA's trigger metadata is a map of strings
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
    lists = [t["metadata"]["listName"] for t in triggers if t["type"] == "redis"]
    # one trigger per queue the worker consumes, named like the Celery queue (= Redis list)
    assert sorted(lists) == sorted(worker_queues(objs))
    assert set(lists) <= set(QUEUES)
    assert sorted(lists) == (["cpu", "gpu"] if overlay == "gpu" else ["cpu"])
    per_worker = jobs_per_worker(objs)
    assert per_worker == (4 if overlay == "gpu" else 1)
    for trigger in triggers:  # one worker per `--jobs` waiting jobs, and per as many running
        key = "listLength" if trigger["type"] == "redis" else "threshold"
        assert int(trigger["metadata"][key]) == per_worker, trigger["name"]


def test_keda_reaches_redis_like_the_pods_do(objects) -> None:
    """KEDA's operator lives in another namespace: the address is the Service's full DNS name,
    and the password the Secret the Redis pod itself reads."""
    _, objs = objects
    (scaled,) = by_kind(objs, "ScaledObject")
    redis_svc = named(objs, "Service", "redis")
    redis = named(objs, "StatefulSet", "redis")
    secret_ref = env(container(redis))["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    port = redis_svc["spec"]["ports"][0]["port"]
    expected = f"{redis_svc['metadata']['name']}.{redis_svc['metadata']['namespace']}.svc.cluster.local"
    for trigger in [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]:
        assert trigger["metadata"]["address"] == f"{expected}:{port}"
        assert trigger["metadata"]["databaseIndex"] == "0"  # the broker URL's /0
        auth = named(objs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "password"
        assert {"name": ref["name"], "key": ref["key"]} == secret_ref
        assert auth["metadata"]["namespace"] == scaled["metadata"]["namespace"] == NAMESPACE


def test_keda_never_scales_below_the_running_jobs(objects) -> None:
    """A running job has left its Redis list: without this trigger an empty list would shrink
    the Deployment under busy workers."""
    _, objs = objects
    (scaled,) = by_kind(objs, "ScaledObject")
    (running,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    query = running["metadata"]["query"]
    assert query.startswith("sum(ganforge_jobs_running{") and f'namespace="{NAMESPACE}"' in query
    assert re.search(r'pod=~"ganforge-worker-\.\*"', query)
    assert running["metadata"]["threshold"] == str(jobs_per_worker(objs))  # jobs a pod trains
    assert running["metadata"]["serverAddress"].startswith("http")
    assert "ganforge_jobs_running" in declared_metrics()  # the gauge the workers export
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert behavior["stabilizationWindowSeconds"] >= 300
    assert behavior["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


def adapter_rules() -> list[Obj]:
    return yaml.safe_load((PROMETHEUS / "prometheus-adapter.yaml").read_text())["rules"]["custom"]


def test_the_adapter_serves_the_metric_the_hpa_asks_for(objects) -> None:
    _, objs = objects
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    served = {}
    for rule in adapter_rules():
        found = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\""))
        assert found, rule["seriesQuery"]
        series = found.group()
        assert re.fullmatch(rule["name"]["matches"], series)
        served[rule["name"]["as"]] = (series, rule)
    assert wanted <= served.keys()
    series, rule = served["ganforge_generate_requests_per_second"]
    # the counter the service exports and the ServiceMonitor scrapes
    assert series in declared_metrics()
    # adapter form: per-pod, namespaced, templated by the adapter
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
    assert "rate(" in rule["metricsQuery"]  # a counter becomes a per-second rate


def test_custom_resources_have_their_essential_fields(objects) -> None:
    """kubernetes-validate has no schemas for KEDA's and the Prometheus Operator's kinds."""
    _, objs = objects
    (scaled,) = by_kind(objs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] in {"redis", "prometheus"} and trigger["metadata"]
    (auth,) = by_kind(objs, "TriggerAuthentication")
    assert all({"parameter", "name", "key"} <= r.keys() for r in auth["spec"]["secretTargetRef"])
    (rules,) = by_kind(objs, "PrometheusRule")
    for group in rules["spec"]["groups"]:
        assert group["name"] and group["rules"]
        assert all(r["alert"] and r["expr"] for r in group["rules"])


def test_the_prometheus_rule_carries_the_alerts_of_rules_yml(objects) -> None:
    _, objs = objects
    (rules,) = by_kind(objs, "PrometheusRule")
    shipped = yaml.safe_load(Path(PROMETHEUS / "rules.yml").read_text())["groups"]
    assert rules["spec"]["groups"] == shipped
