"""The alert rules evaluated by promtool's rule unit tests on series shaped like a real
deployment: several workers report the same global queue lengths, several service pods their
own counters. An alert must fire once per queue or model, not once per reporting pod, and not on
a number summed over pods."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import PROMETHEUS

# Two workers scrape the same Redis lists: cpu holds 15 jobs (under the threshold of 20, but 30
# if summed over the workers), gpu holds 25.
QUEUE_SERIES = [
    {"series": f'ganforge_queue_length{{queue="{queue}", pod="ganforge-worker-{pod}"}}',
     "values": f"{length}x60"}
    for queue, length in (("cpu", 15), ("gpu", 25)) for pod in ("a", "b")
]
BACKLOG = {
    "eval_time": "40m",
    "alertname": "GanforgeQueueBacklog",
    "exp_alerts": [{"exp_labels": {"severity": "warning", "queue": "gpu"},
                    "exp_annotations": {"summary": "Training jobs pile up in queue gpu: add workers"}}],
}
# Both service pods fail to load the same new version once: one alert for the model.
LOAD_FAILURE_SERIES = [
    {"series": f'ganforge_model_load_failures_total{{model="mnist-dcgan-cond", pod="svc-{pod}"}}',
     "values": "0 0 1 1 1 1 1 1 1 1"}
    for pod in ("a", "b")
]
LOAD_FAILURES = {
    "eval_time": "5m",
    "alertname": "GanforgeModelLoadFailures",
    "exp_alerts": [{"exp_labels": {"severity": "warning", "model": "mnist-dcgan-cond"},
                    "exp_annotations": {"summary": "A new version of mnist-dcgan-cond failed to load;"
                                                   " the previous one keeps serving"}}],
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: make test installs Debian's prometheus package"
    return found


def run_unit_tests(tmp_path: Path, rules: str, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yml").write_text(rules)
    suite = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(tmp_path / "tests.yml")],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def rules() -> str:
    return (PROMETHEUS / "rules.yml").read_text()


def test_backlog_fires_once_per_queue_over_the_threshold(tmp_path, rules) -> None:
    out = run_unit_tests(tmp_path, rules, [
        {"interval": "1m", "input_series": QUEUE_SERIES, "alert_rule_test": [BACKLOG]},
    ])
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_unit_test_catches_a_backlog_summed_over_workers(tmp_path, rules) -> None:
    """The check above can fail: the old expression (a sum over every worker pod) fires for
    the cpu queue too, and promtool says so."""
    summed = rules.replace("max by (queue) (ganforge_queue_length)",
                           "sum by (queue) (ganforge_queue_length)")
    assert summed != rules
    out = run_unit_tests(tmp_path, summed, [
        {"interval": "1m", "input_series": QUEUE_SERIES, "alert_rule_test": [BACKLOG]},
    ])
    assert out.returncode != 0 and 'queue="cpu"' in out.stdout + out.stderr


def test_load_failures_fire_once_per_model(tmp_path, rules) -> None:
    out = run_unit_tests(tmp_path, rules, [
        {"interval": "1m", "input_series": LOAD_FAILURE_SERIES, "alert_rule_test": [LOAD_FAILURES]},
    ])
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_model_loaded_fires_when_no_pod_serves_one(tmp_path, rules) -> None:
    serving = [{"series": 'ganforge_model_info{model="m", version="v", pod="svc-a"}',
                "values": "1x20"},
               {"series": 'ganforge_model_info{model="m", version="v", pod="svc-b"}',
                "values": "0x20"}]
    none = [{"series": f'ganforge_model_info{{model="m", version="v", pod="svc-{p}"}}',
             "values": "0x20"} for p in ("a", "b")]
    expected = [{"exp_labels": {"severity": "critical"},
                 "exp_annotations": {
                     "summary": "The ganforge service has no model loaded",
                     "description": "/readyz fails and /generate cannot answer until a production"
                                    " model loads."}}]
    out = run_unit_tests(tmp_path, rules, [
        {"interval": "1m", "input_series": serving, "alert_rule_test": [
            {"eval_time": "10m", "alertname": "GanforgeNoModelLoaded", "exp_alerts": []}]},
        {"interval": "1m", "input_series": none, "alert_rule_test": [
            {"eval_time": "10m", "alertname": "GanforgeNoModelLoaded", "exp_alerts": expected}]},
    ])
    assert out.returncode == 0, out.stdout + out.stderr
