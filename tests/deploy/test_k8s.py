"""The Kubernetes manifests: each overlay rendered by kustomize and every object validated
against the Kubernetes schemas (strict: no unknown fields), then the deployment policy."""

import re

import kubernetes_validate
import pytest

from tests.deploy.manifests import (
    NAMESPACE,
    OVERLAYS,
    ROOT,
    WORKLOAD_KINDS,
    Obj,
    by_kind,
    container,
    env,
    named,
    pod_labels,
    pod_spec,
    render,
    selects,
)

KUBERNETES_VERSION = "1.33.0"
# Custom resources that kubernetes-validate has no schema for, by name and API group: they are
# skipped by the strict validation and checked field by field instead (test_monitors_...,
# tests/deploy/test_autoscaling.py). Any other kind must validate.
OPERATOR_CRDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
BROKER_URL = "redis://:$(REDIS_PASSWORD)@redis:6379/0"
REDIS_SECRET = {"name": "ganforge-redis", "key": "password"}


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> tuple[str, list[Obj]]:
    return request.param, render(request.param)


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def test_every_object_validates_strictly(objects) -> None:
    _, objs = objects
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim",
            "ConfigMap", "HorizontalPodAutoscaler", "NetworkPolicy",
            "PodDisruptionBudget"} <= kinds
    assert set(OPERATOR_CRDS) <= kinds
    for obj in objs:
        if obj["kind"] in OPERATOR_CRDS:
            assert obj["apiVersion"] == OPERATOR_CRDS[obj["kind"]], obj["metadata"]["name"]
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_everything_lives_in_the_ganforge_namespace(objects) -> None:
    _, objs = objects
    (ns,) = by_kind(objs, "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, (obj["kind"], obj["metadata"]["name"])


def test_monitors_have_their_required_fields(objects) -> None:
    _, objs = objects
    sm, = by_kind(objs, "ServiceMonitor")
    pm, = by_kind(objs, "PodMonitor")
    assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"][0]["port"] == "http"
    assert pm["spec"]["selector"]["matchLabels"]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # they select what exists, on ports that exist
    svc = named(objs, "Service", "ganforge")
    assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert "http" in {p["name"] for p in svc["spec"]["ports"]}
    worker = named(objs, "Deployment", "ganforge-worker")
    assert selects(pm["spec"]["selector"]["matchLabels"], pod_labels(worker))
    assert "metrics" in {p["name"] for p in container(worker)["ports"]}


def test_every_pod_is_hardened_bounded_and_without_api_token(objects) -> None:
    _, objs = objects
    assert len(workloads(objs)) == 3
    for obj in workloads(objs):
        pod = pod_spec(obj)
        name = obj["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), name
            assert c["readinessProbe"] and c["livenessProbe"], name


def test_images_are_pinned(objects) -> None:
    """kustomize's images: gives every container a version tag (or a digest), never latest."""
    _, objs = objects
    for obj in workloads(objs):
        for c in pod_spec(obj)["containers"]:
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*", tag), image
            assert tag != "latest" and c["imagePullPolicy"] == "Always", image


def test_service_deployment_policy(objects) -> None:
    _, objs = objects
    dep = named(objs, "Deployment", "ganforge-service")
    assert "replicas" not in dep["spec"]  # the HPA owns the count (test_autoscaling.py)
    pod = pod_spec(dep)
    c = container(dep)
    # started = the process answers; ready = a model is loaded (no good model: NotReady pods,
    # not a crash loop)
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    # endpoints drain before the server stops, inside the grace period
    drain = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 3 <= drain < pod["terminationGracePeriodSeconds"]
    token = env(c)["GANFORGE_API_TOKEN"]
    assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"]
    assert not by_kind(objs, "Secret")  # the token and the Redis password: out of band, never in git
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    config = named(objs, "ConfigMap", "ganforge-config")["data"]
    assert config["BENTOML_HOME"].startswith("/models") and "/models" in mounts


def test_service_spreads_and_has_a_disruption_budget(objects) -> None:
    _, objs = objects
    dep = named(objs, "Deployment", "ganforge-service")
    spread = {t["topologyKey"]: t for t in pod_spec(dep)["topologySpreadConstraints"]}
    assert {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= spread.keys()
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels(dep))
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    pdb = named(objs, "PodDisruptionBudget", "ganforge-service")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(dep))
    # one pod at a time, out of at least two
    assert pdb["spec"]["maxUnavailable"] == 1 and hpa["spec"]["minReplicas"] >= 2


def test_the_model_store_is_shared_on_an_rwx_storage_class(objects) -> None:
    _, objs = objects
    pvc = named(objs, "PersistentVolumeClaim", "ganforge-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["storageClassName"]  # set by deploy/k8s/components/storage
    for name in ("ganforge-service", "ganforge-worker"):
        volumes = pod_spec(named(objs, "Deployment", name))["volumes"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes
                  if "persistentVolumeClaim" in v}
        assert claims == {"ganforge-models"}


def test_gpu_only_in_the_gpu_overlay_and_replaced_with_recreate(objects) -> None:
    overlay, objs = objects
    worker = named(objs, "Deployment", "ganforge-worker")
    pod = pod_spec(worker)
    limits = container(worker)["resources"]["limits"]
    gpus = [c for o in workloads(objs) for c in pod_spec(o)["containers"]
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})]
    strategy = worker["spec"]["strategy"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1 and len(gpus) == 1
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"]
        args = container(worker)["args"]
        assert "gpu" in args[args.index("--queues") + 1]
        # a surge pod would wait forever for the one GPU its predecessor holds
        assert strategy == {"type": "Recreate"}
    else:
        assert gpus == [] and "tolerations" not in pod and "nodeSelector" not in pod
        assert strategy["type"] == "RollingUpdate"


def test_worker_stops_gracefully_and_keda_owns_its_count(objects) -> None:
    _, objs = objects
    worker = named(objs, "Deployment", "ganforge-worker")
    # on SIGTERM the worker checkpoints its job and requeues it: time for one checkpoint
    assert 60 <= pod_spec(worker)["terminationGracePeriodSeconds"] <= 300
    assert "replicas" not in worker["spec"]


def test_brokers_are_reached_with_the_password_from_the_secret(objects) -> None:
    _, objs = objects
    config = named(objs, "ConfigMap", "ganforge-config")["data"]
    assert not [k for k, v in config.items() if "redis://" in v or "PASSWORD" in k]
    redis_svc = named(objs, "Service", "redis")
    assert BROKER_URL.split("@")[1].split(":")[0] == redis_svc["metadata"]["name"]
    assert f":{redis_svc['spec']['ports'][0]['port']}/" in BROKER_URL
    for name in ("ganforge-service", "ganforge-worker"):
        c = container(named(objs, "Deployment", name))
        names = [e["name"] for e in c["env"]]
        variables = env(c)
        assert variables["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == REDIS_SECRET
        for url in ("GANFORGE_BROKER_URL", "GANFORGE_RESULT_BACKEND"):
            assert variables[url]["value"] == BROKER_URL
            # $(VAR) expands only from variables defined earlier in the list
            assert names.index("REDIS_PASSWORD") < names.index(url)
        assert {"configMapRef": {"name": "ganforge-config"}} in c["envFrom"]
    # job results expire (seconds, read by the Python side)
    assert 86400 <= int(config["GANFORGE_RESULT_EXPIRES"]) <= 30 * 86400


def quantity(pattern: str, value: str) -> tuple[str, str]:
    """A memory size split into its number and its unit."""
    found = re.fullmatch(pattern, value)
    assert found, f"not a memory size: {value}"
    number, unit = found.groups()
    return number, unit


def redis_bytes(value: str) -> int:
    """Redis memory units: 1kb = 1024 bytes, 1k = 1000 bytes (redis.conf)."""
    number, unit = quantity(r"(\d+)([a-z]*)", value.lower())
    units = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
             "g": 1000**3, "gb": 1024**3}
    return int(number) * units[unit]


def k8s_bytes(value: str) -> int:
    number, unit = quantity(r"(\d+)([A-Za-z]*)", value)
    units = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}
    return int(number) * units[unit]


def test_redis_persists_never_evicts_and_has_room_to_rewrite(objects) -> None:
    _, objs = objects
    redis = named(objs, "StatefulSet", "redis")
    c = container(redis)
    args = c["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"]
    # an AOF rewrite forks: the child's copy-on-write pages can reach the dataset's size again,
    # inside the same memory limit; keep the dataset under 40% of it
    maxmemory = redis_bytes(args[args.index("--maxmemory") + 1])
    limit = k8s_bytes(c["resources"]["limits"]["memory"])
    assert 0 < maxmemory <= 0.4 * limit
    assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]
    # the password: from the Secret, expanded by the kubelet; the probe authenticates too
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    for variable in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        assert env(c)[variable]["valueFrom"]["secretKeyRef"] == REDIS_SECRET
    pdb = named(objs, "PodDisruptionBudget", "redis")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(redis))
    assert pdb["spec"]["maxUnavailable"] == 0  # one replica: a drain waits for a person


def test_only_this_apps_workers_service_and_keda_reach_redis(objects) -> None:
    _, objs = objects
    redis = named(objs, "StatefulSet", "redis")
    policy = named(objs, "NetworkPolicy", "redis")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(redis))
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    local = [p["podSelector"]["matchLabels"] for p in rule["from"] if "namespaceSelector" not in p]
    clients = [pod_labels(named(objs, "Deployment", n))
               for n in ("ganforge-service", "ganforge-worker")]
    # each peer names one of this app's workloads by name, component and part-of
    assert len(local) == 2
    for selector in local:
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component",
                "app.kubernetes.io/part-of"} <= selector.keys()
        assert sum(selects(selector, labels) for labels in clients) == 1
    assert not any(selects(selector, pod_labels(redis)) for selector in local)
    (keda,) = [p for p in rule["from"] if "namespaceSelector" in p]
    assert keda["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "keda"}
    assert keda["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keda-operator"}


def test_every_pod_is_covered_by_a_network_policy(objects) -> None:
    _, objs = objects
    policies = by_kind(objs, "NetworkPolicy")
    for obj in workloads(objs):
        covering = [p for p in policies
                    if selects(p["spec"]["podSelector"]["matchLabels"], pod_labels(obj))]
        assert len(covering) == 1, obj["metadata"]["name"]
        ports = {port["port"] for rule in covering[0]["spec"]["ingress"] for port in rule["ports"]}
        declared = {p["containerPort"] for c in pod_spec(obj)["containers"] for p in c["ports"]}
        assert ports == declared, obj["metadata"]["name"]


def test_the_readme_says_what_the_cluster_needs(objects) -> None:
    """deploy/README.md names each prerequisite with its command and the values the manifests
    depend on (the storage class, the adapter's values file, the Secrets)."""
    _, objs = objects
    readme = (ROOT / "deploy" / "README.md").read_text()
    for needed in ("NetworkPolicy", "ReadWriteMany", "helm install keda kedacore/keda -n keda",
                   "helm install kube-prometheus-stack", "helm install prometheus-adapter",
                   "nvidia-device-plugin", "metrics-server"):
        assert needed in readme, needed
    adapter = re.search(r"-f (deploy/prometheus/\S+\.yaml)", readme)
    assert adapter and (ROOT / adapter.group(1)).exists()
    storage_class = named(objs, "PersistentVolumeClaim", "ganforge-models")["spec"]["storageClassName"]
    assert f"`{storage_class}`" in readme
    for secret in ("ganforge-api-token", "ganforge-redis"):
        assert f"kubectl -n {NAMESPACE} create secret generic {secret}" in readme
    assert "SIGTERM" in readme and "checkpoint" in readme
