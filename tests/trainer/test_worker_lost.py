"""Workers that die without a word, and deliveries that must not run a job twice.

Real ``ganforge worker`` processes on the tests' Redis. The lost-worker test runs with the
default queue timings (what a deployment gets: the session's short ones are dropped), so it
lasts about as long as the default visibility timeout (a minute) plus the job.
"""

import json
import os
import signal
import subprocess
import sys
import time

from ganforge import jobs, store
from ganforge.queue import TASK_NAME, UNACKED_INDEX_KEY, app
from ganforge.settings import Settings, get_settings
from tests.utils import ROOT
from tests.utils.workers import TINY, Worker, default_env, steps_lasting, wait_for
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint


def delivery_tag(redis_db, job_id: str) -> str | None:
    """The tag of the job's unacknowledged delivery (kombu's ``unacked`` hash)."""
    for tag, raw in redis_db.hgetall("unacked").items():
        if json.loads(raw)[0]["headers"]["id"] == job_id:
            return tag.decode()
    return None


def queued(redis_db, job_id: str) -> bool:
    return any(json.loads(raw)["headers"]["id"] == job_id for raw in redis_db.lrange("cpu", 0, -1))


def trained_steps(worker: Worker) -> float:
    return sum(float(line.split()[-1]) for line in worker.metrics().splitlines()
               if line.startswith("ganforge_training_steps_total{"))


def test_live_job_longer_than_the_visibility_timeout_runs_once(tmp_path, redis_db) -> None:
    """Session timings (visibility 8 s, lock 4 s): a job running far past the visibility timeout
    stays with its worker while an idle worker sweeps for overdue deliveries; a duplicate
    delivery meanwhile waits on the lock, trains nothing, and returns the registered model."""
    vt = get_settings().visibility_timeout
    # the reference width, D without the third conv: ~20 s of steps outlast the checks (the
    # timeout, the duplicate's delivery) on this machine, whatever its speed
    spec = {**TINY, "width": 64, "batch_size": 64, "d_extra_convs": 0}
    steps = steps_lasting(20, spec)
    first = Worker(tmp_path / "first.log")
    try:
        job_id = jobs.submit({**spec, "steps": steps})
        wait_for(job_id, lambda s: s.progress.get("step", 0) > 0)
        second = Worker(tmp_path / "second.log")  # idle: it sweeps for overdue deliveries
        try:
            started, worst = time.monotonic(), 0.0
            while time.monotonic() - started < vt + 2:  # the delivery outlives the timeout
                tag = delivery_tag(redis_db, job_id)
                assert tag is not None and not queued(redis_db, job_id)
                worst = max(worst, time.time() - redis_db.zscore(UNACKED_INDEX_KEY, tag))
                time.sleep(0.25)
            assert worst < vt / 2, f"delivery not renewed: {worst:.1f} s old"
            st = jobs.status(job_id)
            assert st.state == "PROGRESS" and st.progress["step"] < steps, "job too short to test"
            assert job_id not in second.log.read_text()  # nothing was delivered to it

            # a duplicate delivery (what a false redelivery would be) while the job runs
            app.send_task(TASK_NAME, args=[st.spec], task_id=job_id, queue="cpu")
            deadline = time.monotonic() + 60
            while "runs elsewhere" not in second.log.read_text():
                assert time.monotonic() < deadline, second.log.read_text()[-3000:]
                time.sleep(0.25)
            st, _ = wait_for(job_id, lambda s: s.finished, timeout=600)
            assert st.state == "SUCCESS", st.error
            assert st.result["resumed_from"] == 0
            tag = st.result["tag"]
            # the duplicate looks again after the lock's TTL, finds the model and returns it
            deadline = time.monotonic() + 60
            while f"Task {TASK_NAME}[{job_id}] succeeded" not in second.log.read_text():
                assert time.monotonic() < deadline, second.log.read_text()[-3000:]
                time.sleep(0.25)
            steps_by_second = trained_steps(second)
        finally:
            second.stop()
    finally:
        first.stop()
    # the duplicate returned the registered model; the job's result stays the first one's
    # (Celery never overwrites a SUCCESS)
    assert f"'tag': '{tag}', 'stage': '{st.result['stage']}', 'created': False" in \
        second.log.read_text()
    st = jobs.status(job_id)
    assert st.state == "SUCCESS" and st.result["tag"] == tag and st.result["created"] is True
    assert steps_by_second == 0
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1


def test_killed_worker_job_moves_on_within_the_default_visibility_timeout(tmp_path,
                                                                          redis_db) -> None:
    vt = Settings.model_fields["visibility_timeout"].default  # what a deployment gets
    ttl = Settings.model_fields["job_lock_ttl"].default
    env = default_env()
    assert "GANFORGE_VISIBILITY_TIMEOUT" not in env and vt <= 300
    # two workers from the start: the one that takes the job is killed, the other stands by (no
    # worker start between the checkpoint and the kill, so a short job cannot finish first)
    workers = [Worker(tmp_path / f"{name}.log", default_timings=True) for name in ("a", "b")]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ganforge.cli", "jobs", "submit", "--json", "--family", "dcgan",
             "--width", "8", "--batch-size", "16", "--subset", "512", "--steps", "200",
             "--checkpoint-every", "50", "--sample-every", "50", "--device", "cpu"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job_id"]
        st, _ = wait_for(job_id, lambda s: s.progress.get("checkpoint_step", 0) >= 50)
        first, second = sorted(workers, key=lambda w: not st.progress["worker"].startswith(
            w.name + "@"))
        os.killpg(first.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        first.proc.wait(10)
        left = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)
        assert left["step"] < 200, "the job ended before its worker was killed"
        st, _ = wait_for(job_id, lambda s: (s.progress.get("worker") or "").startswith(
            second.name + "@") and s.progress.get("step", 0) > 0, timeout=400, every=1)
        moved_after = time.monotonic() - killed
        st, seen = wait_for(job_id, lambda s: s.finished, timeout=600)
    finally:
        for w in workers:
            w.stop()
    print(f"killed worker's job resumed by another after {moved_after:.0f} s "
          f"(visibility timeout {vt} s)")
    # the delivery was last renewed at most lock_ttl/4 before the kill, and idle workers sweep
    # every visibility_timeout/10 (at most 10 s); then the data loads and training resumes
    assert vt - ttl / 4 <= moved_after <= vt + 60
    assert st.state == "SUCCESS", st.error
    # the worker may have gone on past its last progress report before SIGKILL landed: the new
    # one resumes from the checkpoint the dead one left on disk
    resumed = st.result["resumed_from"]
    assert resumed == left["step"] >= 50 and resumed % 50 == 0
    assert any(s.progress.get("resumed_from") == resumed for s in seen)
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1
