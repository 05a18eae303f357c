"""Job files the service shows (sample grids, loss curves), read from the shared runs folder."""

import time
import uuid

import pytest

from ganforge import jobs
from ganforge.errors import InvalidInput
from ganforge.settings import get_settings


@pytest.fixture
def job_id(redis_db) -> str:
    job_id = uuid.uuid4().hex
    jobs.job_store().add(jobs.JobRecord(id=job_id, spec={"steps": 10}, queue="cpu",
                                        submitted_at=time.time()))
    return job_id


def test_artifacts_are_the_newest_grid_and_the_loss_plot(job_id) -> None:
    run_dir = get_settings().runs_dir / job_id
    with pytest.raises(jobs.ArtifactNotReady, match="no sample grid yet"):
        jobs.artifact(job_id, "samples.png")
    with pytest.raises(jobs.ArtifactNotReady, match="no loss curves yet"):
        jobs.artifact(job_id, "losses.png")
    (run_dir / "samples").mkdir(parents=True)
    for step in (0, 500, 1000):
        (run_dir / "samples" / f"step-{step:06d}.png").write_bytes(f"grid {step}".encode())
    (run_dir / "samples" / ".step-001500.png.tmp").write_bytes(b"half written")
    (run_dir / "losses.png").write_bytes(b"curves")
    assert jobs.artifact(job_id, "samples.png") == ("step-001000.png", b"grid 1000")
    assert jobs.artifact(job_id, "losses.png") == ("losses.png", b"curves")


def test_artifact_refuses_other_names_and_unknown_jobs(job_id) -> None:
    with pytest.raises(InvalidInput, match="samples.png, losses.png"):
        jobs.artifact(job_id, "../checkpoint.pt")
    with pytest.raises(jobs.JobNotFound):
        jobs.artifact(uuid.uuid4().hex, "samples.png")
