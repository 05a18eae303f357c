"""A worker killed mid-job, and the embedded (serverless) default. Separate from test_queue so
that no other worker is consuming the queue while these run."""

import json
import os
import time

from ganforge import jobs, store
from ganforge.settings import get_settings
from tests.utils import run_cli
from tests.utils.workers import TINY, Worker, wait_for
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint


def test_killed_worker_job_resumes_from_checkpoint(tmp_path, redis_db) -> None:
    first = Worker(tmp_path / "first.log")
    try:
        job_id = jobs.submit({**TINY, "width": 16, "batch_size": 32, "steps": 600,
                              "checkpoint_every": 50})
        wait_for(job_id, lambda s: s.progress.get("checkpoint_step", 0) >= 50)
        first.kill()
    finally:
        first.kill()
    # The worker may have gone on past the last progress report before SIGKILL landed: what a
    # new worker must resume from is the checkpoint the dead one left on disk.
    left = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)
    assert 50 <= left["step"] < 600
    second = Worker(tmp_path / "second.log")
    try:
        st, seen = wait_for(job_id, lambda s: s.finished, timeout=300)
    finally:
        second.stop()
    assert st.state == "SUCCESS", st.error
    resumed = st.result["resumed_from"]
    assert resumed == left["step"] and resumed % 50 == 0
    assert any(s.progress.get("resumed_from") == resumed for s in seen)
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1


def test_embedded_default_needs_no_server(tmp_path) -> None:
    """No broker configured: filesystem transport and file results under GANFORGE_VAR_DIR."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GANFORGE_BROKER_URL", "GANFORGE_RESULT_BACKEND")}
    env.update(GANFORGE_VAR_DIR=str(tmp_path / "var"), GANFORGE_BROKER_URL="",
               GANFORGE_RESULT_BACKEND="")
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
