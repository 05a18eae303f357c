"""A worker stopped the way Kubernetes stops a pod (SIGTERM) hands its job back at once.

Real ``ganforge worker`` processes on the tests' Redis, with the default queue timings (a
one-minute visibility timeout and lock): the job must be back on the queue within
seconds, so only the worker's own requeue can have put it there.
"""

import os
import signal
import time

from ganforge import jobs, store
from ganforge.settings import get_settings
from tests.utils.workers import TINY, Worker, queued_ids, wait_for
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint


def trained_steps(worker: Worker) -> float:
    lines = [line for line in worker.metrics().splitlines()
             if line.startswith("ganforge_training_steps_total{")]
    return sum(float(line.split()[-1]) for line in lines)


def test_sigterm_checkpoints_requeues_and_another_worker_resumes(tmp_path, redis_db) -> None:
    first = Worker(tmp_path / "first.log", default_timings=True)
    try:
        job_id = jobs.submit({**TINY, "steps": 300})
        # past the first periodic checkpoint, so the one written on SIGTERM is a later one
        st, _ = wait_for(job_id, lambda s: s.progress.get("step", 0) >= 60)
        seen_step = st.progress["step"]
        asked = time.monotonic()
        os.killpg(first.proc.pid, signal.SIGTERM)  # what Kubernetes sends
        while job_id not in queued_ids(redis_db, "cpu"):
            assert time.monotonic() - asked < 10, "the job did not go back on the queue"
            time.sleep(0.05)
        requeued_after = time.monotonic() - asked
        first.proc.wait(60)
        exited_after = time.monotonic() - asked
        assert first.proc.returncode == 0, first.log.read_text()[-3000:]
    finally:
        first.kill()
    log = first.log.read_text()
    assert "worker stopping" in log and "Warm shutdown" in log

    st = jobs.status(job_id)
    assert st.state == "PROGRESS" and st.progress["phase"] == "requeued"
    left = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)
    # the checkpoint of the step the job stopped at, written on SIGTERM, is what it reports
    assert left["step"] == st.progress["step"] >= seen_step
    assert left["step"] < 300
    print(f"SIGTERM at step >= {seen_step}: checkpoint at step {left['step']}, requeued after "
          f"{requeued_after:.2f} s, worker exited after {exited_after:.2f} s")
    assert exited_after < 30  # far inside the pod's 120 s grace period

    second = Worker(tmp_path / "second.log", default_timings=True)
    try:
        st, seen = wait_for(job_id, lambda s: s.finished, timeout=600)
        steps_by_second = trained_steps(second)
    finally:
        second.stop()
    assert st.state == "SUCCESS", st.error
    assert st.result["resumed_from"] == left["step"]
    assert st.result["steps"] == 300
    assert any(s.progress.get("worker", "").startswith(second.name + "@") for s in seen)
    assert steps_by_second == 300 - left["step"]  # nothing trained twice
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1
