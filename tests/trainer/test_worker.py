"""The job queue with a real Redis broker and real ``ganforge worker`` processes."""

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from ganforge import jobs, store
from ganforge.queue import queue_for
from ganforge.settings import get_settings
from tests.utils import run_cli
from tests.utils.workers import TINY, Worker, wait_for


@pytest.fixture(scope="module")
def worker(tmp_path_factory, redis_db):
    w = Worker(tmp_path_factory.mktemp("worker") / "worker.log")
    yield w
    w.stop()


def test_small_job_runs_to_a_registered_model(worker) -> None:
    job_id = jobs.submit({**TINY, "steps": 200})
    st, seen = wait_for(job_id, lambda s: s.finished)
    assert st.state == "SUCCESS", st.error
    assert any(s.state == "PROGRESS" and s.progress.get("step", 0) > 0 for s in seen)
    progress = next(s.progress for s in seen if s.state == "PROGRESS" and s.progress.get("step"))
    assert {"total", "images_per_s", "d_loss", "g_loss", "eta_s", "sample"} <= progress.keys()
    result = st.result
    assert result["created"] and result["steps"] == 200 and result["resumed_from"] == 0
    model = store.get_model(result["tag"])
    assert model.labels["run_id"] == job_id
    assert model.card.config["steps"] == 200
    # the evaluator kept its judge's features of the test split and the baseline's train images
    # in the session's var/ (GANFORGE_VAR_DIR) for the processes after it
    assert len(list(get_settings().feature_cache.glob("judge-features-*.npy"))) >= 2
    text = worker.metrics()
    assert 'ganforge_jobs_total{family="dcgan",state="SUCCESS"} 1.0' in text
    steps = [line for line in text.splitlines()
             if line.startswith('ganforge_training_steps_total{family="dcgan"}')]
    assert steps and float(steps[0].split()[-1]) >= 200
    assert "ganforge_job_duration_seconds_bucket" in text

    # the same job delivered again (a duplicate) returns the same model and registers nothing
    from ganforge.queue import TASK_NAME, app

    app.AsyncResult(job_id).forget()  # so that get() waits for the second delivery
    again = app.send_task(TASK_NAME, args=[st.spec], task_id=job_id, queue="cpu")
    assert again.get(timeout=60)["created"] is False
    assert sum(m.labels.get("run_id") == job_id for m in store.list_models()) == 1


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(worker) -> None:
    job_id = jobs.submit({**TINY, "steps": 100_000, "checkpoint_every": 100_000})
    wait_for(job_id, lambda s: s.state == "PROGRESS" and s.progress.get("step", 0) >= 20)
    asked = time.monotonic()
    jobs.cancel(job_id)
    st, _ = wait_for(job_id, lambda s: s.finished, timeout=30)
    assert st.state == "CANCELLED"
    assert time.monotonic() - asked < 10
    ckpt = Path(st.progress["run_dir"]) / "checkpoint.pt"
    import torch

    assert torch.load(ckpt, weights_only=True)["step"] == st.progress["step"] > 0
    assert store.find_run(job_id) is None


def test_invalid_spec_is_refused_before_queueing(redis_db) -> None:
    before = len(jobs.job_store().all()), redis_db.llen("cpu")
    with pytest.raises(ValidationError, match="latent_dim"):
        jobs.submit({**TINY, "latent_dim": 0})
    with pytest.raises(ValidationError, match="family"):
        jobs.submit({"family": "stylegan"})
    assert (len(jobs.job_store().all()), redis_db.llen("cpu")) == before
    out = run_cli("jobs", "submit", "--steps", "0")
    assert out.returncode == 2 and "steps" in out.stderr
    assert (len(jobs.job_store().all()), redis_db.llen("cpu")) == before


def test_device_routes_to_a_queue_and_queued_jobs_cancel(redis_db) -> None:
    assert queue_for({"device": "cuda"}) == "gpu" and queue_for({"device": "auto"}) == "cpu"
    job_id = jobs.submit({**TINY, "device": "cuda", "steps": 10})
    assert redis_db.llen("gpu") == 1  # no GPU worker here: it waits on the gpu queue
    assert jobs.status(job_id).state == "PENDING"
    assert jobs.cancel(job_id).state == "CANCELLED"
    assert job_id in {s.id for s in jobs.list_jobs()}


def test_unknown_job_is_not_found(redis_db) -> None:
    with pytest.raises(jobs.JobNotFound):
        jobs.status("0" * 32)
