"""The embedded (serverless) default, and a worker killed mid-job on it. (A worker killed on
Redis: test_worker_lost.py, with the default timings.) Separate from test_worker so that no other
worker is consuming the queue while these run."""

import json
import os
import signal
import time
from pathlib import Path

from ganforge import jobs, store
from ganforge.settings import get_settings
from tests.utils import run_cli
from tests.utils.workers import Worker
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """No broker configured: the embedded queue under ``tmp_path/var``, whose feature cache is
    the session's (the judge's features of the test images are not computed again)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GANFORGE_BROKER_URL", "GANFORGE_RESULT_BACKEND")}
    session_cache = get_settings().feature_cache.resolve()
    session_cache.mkdir(parents=True, exist_ok=True)
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "cache").symlink_to(session_cache, target_is_directory=True)
    env.update(GANFORGE_VAR_DIR=str(tmp_path / "var"), GANFORGE_BROKER_URL="",
               GANFORGE_RESULT_BACKEND="")
    return env


def embedded_state(var: Path, job_id: str) -> dict:
    """The job's record in Celery's file result backend ({} until there is a whole one)."""
    try:
        return json.loads((var / "results" / f"celery-task-meta-{job_id}").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet, or being written
        return {}


def test_embedded_default_needs_no_server(tmp_path) -> None:
    """No broker configured: filesystem transport and file results under GANFORGE_VAR_DIR."""
    env = embedded_env(tmp_path)
    w = Worker(tmp_path / "embedded.log", env=env)
    try:
        flags = ["--family", "mlp", "--no-conditional", "--width", "8", "--batch-size", "16",
                 "--subset", "512", "--steps", "50", "--device", "cpu"]
        out = run_cli("jobs", "submit", "--json", *flags, env=env)
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job_id"]
        deadline = time.monotonic() + 240
        while True:
            out = run_cli("jobs", "status", job_id, "--json", env=env)
            assert out.returncode == 0, out.stderr
            st = json.loads(out.stdout)
            if st["state"] in jobs.FINISHED or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        w.stop()
    assert st["state"] == "SUCCESS", st
    assert st["result"]["tag"].startswith("mnist-mlp:")
    assert (tmp_path / "var" / "jobs" / f"{job_id}.json").exists()


def test_embedded_worker_resumes_an_interrupted_job_when_it_starts_again(tmp_path) -> None:
    """The embedded queue has no redelivery: a message leaves the queue folder when a worker
    takes it. A worker killed mid-job leaves it recorded as in progress with a dead lock; the
    next ``ganforge worker`` to start puts it back on its queue and it resumes. A worker stopped
    with SIGTERM puts it back itself, and the next one to start does not queue it twice."""
    env, var = embedded_env(tmp_path), tmp_path / "var"
    first = Worker(tmp_path / "first.log", env=env)
    try:
        flags = ["--family", "dcgan", "--width", "8", "--batch-size", "16", "--subset", "512",
                 "--steps", "300", "--checkpoint-every", "50", "--sample-every", "50",
                 "--device", "cpu"]
        out = run_cli("jobs", "submit", "--json", *flags, env=env)
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job_id"]
        deadline = time.monotonic() + 240
        while ((embedded_state(var, job_id).get("result") or {}).get("checkpoint_step") or 0) < 50:
            assert time.monotonic() < deadline, first.log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        first.kill()
    left = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)
    assert 50 <= left["step"] < 300
    assert embedded_state(var, job_id)["status"] == "PROGRESS"
    assert not any(job_id in f.read_text() for f in (var / "broker" / "queue").iterdir())

    second = Worker(tmp_path / "second.log", env=env)
    try:
        deadline = time.monotonic() + 300
        while (embedded_state(var, job_id).get("result") or {}).get("step", 0) <= left["step"]:
            assert time.monotonic() < deadline, second.log.read_text()[-3000:]
            time.sleep(0.5)
        assert f"job {job_id} was interrupted" in second.log.read_text()
        assert embedded_state(var, job_id)["result"]["resumed_from"] == left["step"]
        # stopped (SIGTERM) in turn: the job goes back into the queue folder at once
        asked = time.monotonic()
        os.killpg(second.proc.pid, signal.SIGTERM)
        while not any(job_id in f.read_text() for f in (var / "broker" / "queue").iterdir()):
            assert time.monotonic() - asked < 15, second.log.read_text()[-3000:]
            time.sleep(0.1)
        assert second.proc.wait(60) == 0
    finally:
        second.kill()
    handed = embedded_state(var, job_id)
    assert handed["status"] == "PROGRESS" and handed["result"]["phase"] == "requeued", handed
    stopped_at = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)["step"]
    assert stopped_at == handed["result"]["step"] > left["step"]

    third = Worker(tmp_path / "third.log", env=env)
    try:
        deadline = time.monotonic() + 300
        while embedded_state(var, job_id).get("status") not in jobs.FINISHED:
            assert time.monotonic() < deadline, third.log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        third.stop()
    assert "was interrupted" not in third.log.read_text()  # its message was waiting already
    st = embedded_state(var, job_id)
    assert st["status"] == "SUCCESS", st
    assert st["result"]["resumed_from"] == stopped_at
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1
