"""The job client and the job records: submit, list, status, cancel, artifacts. Used by the CLI
and the HTTP service (no torch: a job is queued by task name, ``ganforge.queue``); the worker side
(``trainer.worker``) reads the same records, cancel flags and locks.

A job is a Celery task whose id is the job id. Its record (spec, queue, time) and its cancel flag
live in a small job store beside the broker: Redis keys under ``ganforge:`` when the broker is
Redis, files under ``var/jobs`` on the embedded default. States are Celery's (PENDING, STARTED,
PROGRESS, SUCCESS, FAILURE) plus CANCELLED.

When the queue's Redis cannot be reached, every client call raises :class:`QueueUnavailable`
(HTTP 503), never a bare connection error.
"""

import functools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from ganforge.errors import ArtifactNotReady, GanforgeError, InvalidInput, JobNotFound
from ganforge.files import write_bytes_atomic
from ganforge.settings import Settings, get_settings
from ganforge.spec import TrainConfig

CANCELLED = "CANCELLED"
PROGRESS = "PROGRESS"
FINISHED = {"SUCCESS", "FAILURE", CANCELLED, "REVOKED"}


ARTIFACTS = ("samples.png", "losses.png")
RUNNING = {"STARTED", PROGRESS, "RETRY"}  # what a job whose worker died mid-way is left showing
_PROCESS_START = time.time()

P = ParamSpec("P")
R = TypeVar("R")


class QueueUnavailable(GanforgeError):
    """The queue's server (Redis) does not answer: a 503 that says so, for the caller to retry."""

    http_status = 503


def _outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker or result backend cannot be reached (imports are lazy:
    the CLI's start stays quick)."""
    import redis
    from celery.exceptions import BackendError
    from kombu.exceptions import OperationalError

    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OperationalError,
                            BackendError, ConnectionError))


def queue_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost connection to the queue into :class:`QueueUnavailable`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GanforgeError:
            raise
        except Exception as exc:
            if not _outage(exc):
                raise
            raise QueueUnavailable(f"queue: the job queue is unavailable ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); try again when it is back") from exc

    return wrapper


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
    def locked(self, job_id: str, ttl: int) -> bool: ...
    def keep_delivery(self, delivery_tag: str) -> None: ...


@functools.lru_cache(maxsize=8)
def _redis(url: str) -> Any:
    """One client (one connection pool) per server and process. Short timeouts and two quick
    retries: an outage is reported in well under a second instead of the client's default
    back-off of several seconds, and the worker's lock renewal simply tries again later."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2))


class RedisJobStore:
    """Job records in a Redis hash, newest-first index in a sorted set, flags and locks as keys."""

    def __init__(self, url: str) -> None:
        self.r = _redis(url)

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

    def locked(self, job_id: str, ttl: int) -> bool:
        return bool(self.r.exists(f"ganforge:job:{job_id}:lock"))  # Redis expires a dead one

    def keep_delivery(self, delivery_tag: str) -> None:
        from ganforge.queue import keep_delivery

        keep_delivery(self.r, delivery_tag)


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
            try:
                holder, mtime = path.read_text(), path.stat().st_mtime
            except FileNotFoundError:  # released meanwhile: try again
                return self.acquire(job_id, owner, ttl)
            if holder == owner or now - mtime > ttl or _dead_owner(holder, mtime):
                path.write_text(owner)  # renew, or take over a dead owner's lock
                return True
            return False

    def release(self, job_id: str, owner: str) -> None:
        path = self._path(job_id, "lock")
        if path.exists() and path.read_text() == owner:
            path.unlink()

    def locked(self, job_id: str, ttl: int) -> bool:
        path = self._path(job_id, "lock")
        try:
            holder, mtime = path.read_text(), path.stat().st_mtime
        except FileNotFoundError:
            return False
        return time.time() - mtime <= ttl and not _dead_owner(holder, mtime)

    def keep_delivery(self, delivery_tag: str) -> None:
        """Nothing to renew: the filesystem transport has no visibility timeout."""


def lock_owner() -> str:
    """A lock owner's name: host, process and a token of its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_owner(owner: str, mtime: float) -> bool:
    """A lock taken on this machine by a process that is gone (the embedded queue is one
    machine: a restarted worker need not wait out the TTL). A lock of this very process from
    before it started is a previous incarnation's (a container's pid 1 is always 1)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return mtime < _PROCESS_START
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def job_store(settings: Settings | None = None) -> JobStore:
    settings = settings or get_settings()
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return FileJobStore(settings.var_dir.resolve() / "jobs")


def interrupted(settings: Settings | None = None) -> list[JobRecord]:
    """Jobs of the embedded queue that a worker started and nobody runs any more: recorded as
    started or in progress, their lock free or stale, no message of theirs waiting in the queue
    folder (a job a stopping worker handed back has one). Nothing redelivers them (a message
    leaves the folder when a worker takes it); ``ganforge worker`` re-queues them at start."""
    from celery.result import AsyncResult

    from ganforge.queue import app, embedded_waiting

    settings = settings or get_settings()
    store = job_store(settings)
    waiting = embedded_waiting(settings)
    return [r for r in store.all()
            if r.id not in waiting and AsyncResult(r.id, app=app).state in RUNNING
            and not store.locked(r.id, settings.job_lock_ttl)]


# --------------------------------------------------------------------- the client side
def validate_spec(spec: dict[str, Any] | TrainConfig) -> TrainConfig:
    """Raises pydantic's ValidationError naming the field; nothing is queued then."""
    return spec if isinstance(spec, TrainConfig) else TrainConfig.model_validate(spec)


@queue_errors
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


@queue_errors
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


@queue_errors
def list_jobs(limit: int = 100) -> list[JobStatus]:
    if not 1 <= limit <= 10_000:
        raise InvalidInput("limit", f"must be between 1 and 10000, got {limit}")
    return [status(r.id) for r in job_store().all()[:limit]]


@queue_errors
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


@queue_errors
def cancel(job_id: str) -> JobStatus:
    """Ask a job to stop: a queued one never starts, a running one stops between two steps,
    writes its checkpoint and ends CANCELLED. Cancelling a finished job changes nothing."""
    current = status(job_id)
    if current.finished:
        return current
    job_store().request_cancel(job_id)
    return status(job_id)
