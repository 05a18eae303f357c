"""One settings object for the whole process, read once from ``GANFORGE_*`` variables."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANFORGE_", env_file=".env", extra="ignore")

    # Where MNIST lives (torchvision layout: <data_dir>/MNIST/raw). Downloaded there when absent
    # unless ``download`` is off; tests and CI turn it off and point at a local copy.
    data_dir: Path = Path("data")
    download: bool = True
    # Where ``ganforge train`` puts run directories (checkpoints, sample grids, loss curves).
    runs_dir: Path = Path("runs")

    # Quality gate: a registered model is labelled stage=production only when it passes.
    gate_min_label_accuracy: float = Field(0.95, ge=0.0, le=1.0)  # conditional models
    # ... capped at the judge's own accuracy on the real test images less this margin
    gate_judge_margin: float = Field(0.02, ge=0.0, le=1.0)
    # How a job trains a missing judge for its set (trainer/judges.py): epochs, first N images
    judge_epochs: int = Field(3, ge=1, le=100)
    judge_subset: int = Field(0, ge=0)
    gate_max_class_kl: float = Field(0.1, ge=0.0)  # every model: mode coverage
    # Samples the evaluator draws from a generator.
    eval_samples: int = Field(10_000, ge=100, le=200_000)

    # --- the job queue (Celery) ---
    # Broker and result backend, e.g. redis://127.0.0.1:6379/0. With neither set, one machine
    # works with no server: kombu's filesystem transport and Celery's file result backend under
    # var_dir.
    broker_url: str | None = None
    result_backend: str | None = None
    var_dir: Path = Path("var")
    # The evaluator's files of real images' judge features under var_dir/cache
    # (trainer/feature_cache.py): the least recently used go past this many bytes; 0: none kept
    # (the MNIST test split's features take 10 MB).
    feature_cache_bytes: int = Field(256 * 2**20, ge=0)
    # A job whose worker stopped renewing its delivery (SIGKILL, a lost node) goes back to the
    # queue after this long, for another worker to resume from its checkpoint. A running job's
    # worker renews its delivery every quarter of this (with its lock, whose TTL is as long), so
    # jobs may run far longer than this (Redis broker only; the embedded queue re-queues
    # interrupted jobs when a worker starts).
    visibility_timeout: int = Field(60, ge=1)
    # Per-job limits, enforced by the worker: past the soft one the job checkpoints and fails,
    # past the hard one it is interrupted.
    job_soft_time_limit: int = Field(6 * 3600, ge=1)
    job_time_limit: int = Field(6 * 3600 + 600, ge=1)
    # A running job holds a lock it renews every ttl/4 seconds (and at most every
    # visibility_timeout/4); a lock not renewed for this long belongs to a dead worker and may be
    # taken over by the next delivery of the job.
    job_lock_ttl: int = Field(60, ge=2)
    # Jobs one worker trains at once, side by side in threads of one process (a GPU worker: its
    # small jobs share the card; the hard time limit then applies to 1 job a worker only).
    worker_jobs: int = Field(1, ge=1, le=64)
    # Training processes (worker, `ganforge train`) have glibc's malloc keep freed memory for the
    # next step instead of giving it back to the kernel: no page faults for a step's fresh tensors
    # (trainer.fastpath.keep_freed_memory; BENCHMARKS.md, "Page faults").
    malloc_keep: bool = True
    # The worker's Prometheus endpoint (0: none).
    worker_metrics_port: int = Field(9101, ge=0, le=65535)

    # --- the HTTP service ---
    api_token: SecretStr | None = None  # bearer token for the job endpoints; no default
    serve_workers: int = Field(1, ge=1, le=64)  # BentoML worker processes
    serve_max_batch_size: int = Field(256, ge=1, le=4096)  # images per ONNX Runtime call
    serve_max_latency_ms: float = Field(0.0, ge=0.0, le=1000.0)  # wait for a fuller batch
    serve_inline_max: int = Field(4, ge=0, le=256)  # batches up to this run on the event loop
    ort_threads: int = Field(0, ge=0, le=64)  # ONNX Runtime intra-op threads (0: up to 4)
    model_poll_interval: float = Field(5.0, gt=0.0)  # seconds between model store checks
    # Largest request body the service reads (413 above it, refused before it is buffered).
    # 8 MiB: 256 latents of 1024 floats as JSON take at most 6.8 MB (each float in repr's
    # longest form, "-2.2250738585072014e-308, ": 26 bytes), plus room for the other fields.
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    # How long a finished job's result stays in the result backend (its record in the job store
    # stays); None: forever.
    result_expires: int | None = Field(7 * 24 * 3600, ge=60)

    @property
    def embedded_queue(self) -> bool:
        return not self.broker_url and not self.result_backend

    @property
    def feature_cache(self) -> Path:
        """Where the evaluator keeps its judge's features of real images between processes
        (``trainer.evaluate.real_features``: files named by what they are a function of)."""
        return self.var_dir / "cache"

    @property
    def redis_url(self) -> str | None:
        """The Redis server behind the queue (job store, locks, queue lengths), if any."""
        url = self.broker_url or self.result_backend
        return url if url and url.startswith(("redis://", "rediss://")) else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
