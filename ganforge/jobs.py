"""The job client and the job records: submit, list, status, cancel, artifacts. Used by the CLI
and the HTTP service (no torch: a job is queued by task name, ``ganforge.queue``); the worker side
(``trainer.worker``) reads the same records, cancel flags and locks.

A job is a Celery task whose id is the job id. Its record (spec, queue, time) and its cancel flag
live in a small job store beside the broker: Redis keys under ``ganforge:`` when the broker is
Redis, files under ``var/jobs`` on the embedded default. States are Celery's (PENDING, STARTED,
PROGRESS, SUCCESS, FAILURE) plus CANCELLED.
"""

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ganforge.errors import ArtifactNotReady, InvalidInput, JobNotFound
from ganforge.files import write_bytes_atomic
from ganforge.settings import Settings, get_settings
from ganforge.spec import TrainConfig

CANCELLED = "CANCELLED"
PROGRESS = "PROGRESS"
FINISHED = {"SUCCESS", "FAILURE", CANCELLED, "REVOKED"}


ARTIFACTS = ("samples.png", "losses.png")


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec: dict[str, Any]
    queue: str
    submitted_at: float


@dataclass(frozen=True)
class JobStatus:
    id: str
    state: str
    spec: dict[str, Any]
    queue: str
    submitted_at: float
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStore(Protocol):
    def add(self, record: JobRecord) -> None: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def all(self) -> list[JobRecord]: ...
    def request_cancel(self, job_id: str) -> None: ...
    def cancel_requested(self, job_id: str) -> bool: ...
    def acquire(self, job_id: str, owner: str, ttl: int) -> bool: ...
    def release(self, job_id: str, owner: str) -> None: ...


class RedisJobStore:
    """Job records in a Redis hash, newest-first index in a sorted set, flags and locks as keys."""

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)

    def add(self, record: JobRecord) -> None:
        pipe = self.r.pipeline()
        pipe.hset("ganforge:jobs", record.id, json.dumps(asdict(record)))
        pipe.zadd("ganforge:jobs:by_time", {record.id: record.submitted_at})
        pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.r.hget("ganforge:jobs", job_id)
        return JobRecord(**json.loads(raw)) if raw else None

    def all(self) -> list[JobRecord]:
        ids: list[Any] = list(self.r.zrevrange("ganforge:jobs:by_time", 0, -1))
        raws = self.r.hmget("ganforge:jobs", ids) if ids else []
        return [JobRecord(**json.loads(r)) for r in raws if r]

    def request_cancel(self, job_id: str) -> None:
        self.r.set(f"ganforge:job:{job_id}:cancel", 1)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(f"ganforge:job:{job_id}:cancel"))

    def acquire(self, job_id: str, owner: str, ttl: int) -> bool:
        """Take or renew the job's lock; False while another live owner holds it."""
        key = f"ganforge:job:{job_id}:lock"
        if self.r.set(key, owner, nx=True, ex=ttl):
            return True
        if self.r.get(key) == owner.encode():
            self.r.expire(key, ttl)
            return True
        return False

    def release(self, job_id: str, owner: str) -> None:
        key = f"ganforge:job:{job_id}:lock"
        if self.r.get(key) == owner.encode():
            self.r.delete(key)


class FileJobStore:
    """The embedded default: one JSON file per job, flag and lock files beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        if not job_id.replace("-", "").isalnum():
            raise JobNotFound(f"job: {job_id!r} is not a job id")
        return self.root / f"{job_id}.{suffix}"

    def add(self, record: JobRecord) -> None:
        write_bytes_atomic(self._path(record.id, "json"), json.dumps(asdict(record)).encode())

    def get(self, job_id: str) -> JobRecord | None:
        path = self._path(job_id, "json")
        return JobRecord(**json.loads(path.read_text())) if path.exists() else None

    def all(self) -> list[JobRecord]:
        records = [JobRecord(**json.loads(p.read_text())) for p in self.root.glob("*.json")]
        return sorted(records, key=lambda r: r.submitted_at, reverse=True)

    def request_cancel(self, job_id: str) -> None:
        self._path(job_id, "cancel").touch()

    def cancel_requested(self, job_id: str) -> bool:
        return self._path(job_id, "cancel").exists()

    def acquire(self, job_id: str, owner: str, ttl: int) -> bool:
        path = self._path(job_id, "lock")
        now = time.time()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, owner.encode())
            os.close(fd)
            return True
        except FileExistsError:
            holder = path.read_text()
            if holder == owner or now - path.stat().st_mtime > ttl:
                path.write_text(owner)  # renew, or take over a dead owner's lock
                return True
            return False

    def release(self, job_id: str, owner: str) -> None:
        path = self._path(job_id, "lock")
        if path.exists() and path.read_text() == owner:
            path.unlink()


def job_store(settings: Settings | None = None) -> JobStore:
    settings = settings or get_settings()
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return FileJobStore(settings.var_dir.resolve() / "jobs")


# --------------------------------------------------------------------- the client side
def validate_spec(spec: dict[str, Any] | TrainConfig) -> TrainConfig:
    """Raises pydantic's ValidationError naming the field; nothing is queued then."""
    return spec if isinstance(spec, TrainConfig) else TrainConfig.model_validate(spec)


def submit(spec: dict[str, Any] | TrainConfig, *, job_id: str | None = None) -> str:
    """Validate the spec, record the job, queue it; returns the job id."""
    from ganforge.queue import TASK_NAME, app, queue_for

    cfg = validate_spec(spec)
    payload = cfg.to_dict()
    job_id = job_id or uuid.uuid4().hex
    queue = queue_for(payload)
    job_store().add(JobRecord(id=job_id, spec=payload, queue=queue, submitted_at=time.time()))
    app.send_task(TASK_NAME, args=[payload], task_id=job_id, queue=queue)
    return job_id


def status(job_id: str) -> JobStatus:
    from celery.result import AsyncResult

    from ganforge.queue import app

    store = job_store()
    record = store.get(job_id)
    if record is None:
        raise JobNotFound(f"job: no job {job_id!r}")
    res = AsyncResult(job_id, app=app)
    state, info = res.state, res.info
    progress: dict[str, Any] = {}
    result = error = None
    if state == "SUCCESS":
        result = info
    elif state == "FAILURE":
        error = f"{type(info).__name__}: {info}" if isinstance(info, BaseException) else str(info)
    elif isinstance(info, dict):
        progress = info
    if state == "PENDING" and store.cancel_requested(job_id):
        state = CANCELLED
    return JobStatus(id=job_id, state=state, spec=record.spec, queue=record.queue,
                     submitted_at=record.submitted_at, progress=progress, result=result,
                     error=error)


def list_jobs(limit: int = 100) -> list[JobStatus]:
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit", f"must be between 1 and 10000, got {limit}")
    return [status(r.id) for r in job_store().all()[:limit]]


def artifact(job_id: str, name: str) -> tuple[str, bytes]:
    """A file of the job's run folder (``GANFORGE_RUNS_DIR/<job id>``, shared by workers and the
    service): ``samples.png``, its newest fixed-noise grid, or ``losses.png``, its loss curves.
    Returns the file's own name and its bytes."""
    path = _artifact_path(job_id, name)
    try:
        return path.name, path.read_bytes()
    except FileNotFoundError:  # the run folder went away between the look and the read
        raise ArtifactNotReady(f"job {job_id}: {name} is gone from its run folder") from None


def latest_grid(run_dir: Path) -> Path | None:
    """The newest ``samples/step-XXXXXX.png`` (trainer.callbacks.SampleGrid writes them)."""
    return max((run_dir / "samples").glob("step-*.png"), default=None)


def _artifact_path(job_id: str, name: str) -> Path:
    if name not in ARTIFACTS:
        raise InvalidInput("name", f"must be one of {', '.join(ARTIFACTS)}, got {name!r}")
    if job_store().get(job_id) is None:
        raise JobNotFound(f"job: no job {job_id!r}")
    run_dir = get_settings().runs_dir.resolve() / job_id
    if name == "samples.png":
        grid = latest_grid(run_dir)
        if grid is not None:
            return grid
        raise ArtifactNotReady(f"job {job_id} has no sample grid yet (the first one is drawn "
                               f"when training starts)")
    if (run_dir / name).exists():
        return run_dir / name
    raise ArtifactNotReady(f"job {job_id} has no loss curves yet (drawn every sample_every "
                           f"steps)")


def cancel(job_id: str) -> JobStatus:
    """Ask a job to stop: a queued one never starts, a running one stops between two steps,
    writes its checkpoint and ends CANCELLED. Cancelling a finished job changes nothing."""
    current = status(job_id)
    if current.finished:
        return current
    job_store().request_cancel(job_id)
    return status(job_id)
