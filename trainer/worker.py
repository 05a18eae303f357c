"""The worker side of the queue: the ``train_gan`` task (registered on the core's Celery app,
``ganforge.queue``), its progress reports, job lock and metrics. ``ganforge worker`` runs it.

The task is thin: it takes a validated spec (a dict, never tensors), and re-fetches everything
else (the job's cancel flag, its checkpoint, the model store) so that a redelivered or duplicated
job is safe to run again: a job that already registered its model returns that model, and a job
whose previous worker died resumes from its last checkpoint.

Stopping a worker (SIGTERM from a rollout, a scale-in or a node drain; Ctrl-C) never loses its
job: Celery's warm shutdown would wait for the whole job (hours) and its soft shutdown does not
work with the solo pool (measured on Celery 5.7: the task pauses inside the signal handler, then
fails with ``NotImplementedError: solo.TaskPool does not implement kill_job`` and the message is
acknowledged: the job is lost). So the worker's own hook sees the shutdown, the running job stops
at the next step boundary with its checkpoint written, and its message goes straight back to the
head of its queue (``Reject(requeue=True)``), where the next worker resumes it; then the worker
exits. A worker that dies without a word (SIGKILL, a lost node) stops renewing its delivery
(:class:`LockKeeper`), and the broker hands the job to another worker after the visibility
timeout (``ganforge.queue``). On the embedded queue a worker re-queues interrupted jobs at start.
"""

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from celery import Task, signals
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded, TimeLimitExceeded
from prometheus_client import Counter, Gauge, Histogram

from ganforge.errors import GanforgeError, TrainingCancelled
from ganforge.jobs import CANCELLED, PROGRESS, JobStore, interrupted, job_store, latest_grid, lock_owner
from ganforge.queue import TASK_NAME, app, queue_for
from ganforge.settings import Settings, get_settings
from ganforge.spec import TrainConfig
from trainer.loop import Callback, GANTrainer

log = logging.getLogger(__name__)

STEPS = Counter("ganforge_training_steps_total", "G steps trained by this worker", ["family"])
IMAGES_PER_SECOND = Gauge("ganforge_training_images_per_second",
                          "Real images per second through D in the running job", ["family"])
JOBS = Counter("ganforge_jobs_total", "Jobs that ended on this worker, by final state",
               ["family", "state"])
RUNNING = Gauge("ganforge_jobs_running", "Jobs running on this worker", ["family"])
DURATION = Histogram("ganforge_job_duration_seconds", "Wall time of one job delivery",
                     ["family", "state"],
                     buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800))


REQUEUED = "REQUEUED"  # a delivery that a stopping worker handed back (a metric label)
SHUTDOWN = threading.Event()  # set when this worker is asked to stop
_HANDED_BACK: dict[str, dict[str, Any]] = {}  # job id -> its last progress, once requeued


class JobFailed(GanforgeError):
    """What a job that failed for a known reason reports (plain args: survives JSON results)."""


@signals.worker_shutting_down.connect
def _on_shutdown(sig: str = "", how: str = "", **_: Any) -> None:
    """Celery calls this from its SIGTERM/SIGINT/SIGQUIT handler, in the main thread (where the
    solo pool runs the job): only set a flag, which the job's ``should_stop`` reads between two
    steps."""
    SHUTDOWN.set()


class JobReporter(Callback):
    """Publishes PROGRESS to the result backend, counts steps, answers ``should_stop``."""

    def __init__(self, task: Task, job_id: str, cfg: TrainConfig, store: JobStore,
                 deadline: float, run_dir: str) -> None:
        self.task, self.job_id, self.cfg, self.store = task, job_id, cfg, store
        self.deadline, self.run_dir = deadline, run_dir
        self.resumed_from = 0
        self.timed_out = self.shutting_down = False
        self.meta: dict[str, Any] = {}
        self._last_report = self._last_check = 0.0
        self._stop = False

    def publish(self, trainer: GANTrainer, logs: dict[str, float], phase: str) -> None:
        self.meta = self.describe(trainer, logs, phase)
        self._last_report = time.monotonic()
        try:
            self.task.update_state(state=PROGRESS, meta=self.meta)
        except Exception as exc:  # Redis restarting: training goes on, the next report catches up
            log.warning("job %s: progress not reported (%s: %s)", self.job_id,
                        type(exc).__name__, exc)

    def describe(self, trainer: GANTrainer, logs: dict[str, float], phase: str) -> dict[str, Any]:
        cfg = trainer.cfg
        rate = trainer.images_per_s
        left = (cfg.steps - trainer.step) * cfg.batch_size * cfg.critic_steps
        grid = latest_grid(Path(self.run_dir))
        return {
            "phase": phase,
            "step": trainer.step,
            "total": cfg.steps,
            "resumed_from": self.resumed_from,
            "checkpoint_step": trainer.step - trainer.step % cfg.checkpoint_every,
            "images_per_s": round(rate, 1),
            "d_loss": logs.get("d_loss"),
            "g_loss": logs.get("g_loss"),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
            "sample": str(grid) if grid else None,
            "run_dir": self.run_dir,
            "worker": self.task.request.hostname,
        }

    def on_train_start(self, trainer: GANTrainer) -> None:
        self.resumed_from = trainer.step
        if trainer.step:
            log.info("job %s resumes from step %d", self.job_id, trainer.step)
        self.publish(trainer, {}, "training")

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        STEPS.labels(self.cfg.family).inc()
        IMAGES_PER_SECOND.labels(self.cfg.family).set(logs["images_per_s"])
        if time.monotonic() - self._last_report >= 1.0 or trainer.step == trainer.cfg.steps:
            self.publish(trainer, logs, "training")

    def on_train_end(self, trainer: GANTrainer, cancelled: bool) -> None:
        IMAGES_PER_SECOND.labels(self.cfg.family).set(0)
        if cancelled:  # the checkpoint of this very step is written by now
            self.meta = self.describe(trainer, {}, "cancelled")
        else:
            self.publish(trainer, {}, "evaluating")

    def should_stop(self) -> bool:
        if SHUTDOWN.is_set() and not self._stop:  # an Event: cheap enough for every step
            self.shutting_down = self._stop = True
        now = time.monotonic()
        if not self._stop and now - self._last_check >= 0.5:
            self._last_check = now
            if time.time() > self.deadline:
                self.timed_out = self._stop = True
            elif self.cancel_requested():
                self._stop = True
        return self._stop

    def cancel_requested(self) -> bool:
        try:
            return self.store.cancel_requested(self.job_id)
        except Exception as exc:  # the flag is read again half a second later
            log.warning("job %s: cancel flag unreadable (%s)", self.job_id, type(exc).__name__)
            return False


class LockKeeper:
    """Holds the job's lock while the job runs, renewing it from a background thread, and keeps
    the job's delivery alive in the broker (so that it is not handed to another worker after the
    visibility timeout while this one lives). Both lapse on their own when the worker dies."""

    def __init__(self, store: JobStore, job_id: str, ttl: int, *, delivery_tag: str | None = None,
                 every: float | None = None) -> None:
        self.store, self.job_id, self.ttl = store, job_id, ttl
        self.delivery_tag, self.every = delivery_tag, max(every or ttl / 4, 0.5)
        self.owner = lock_owner()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="job-lock")

    def acquire(self) -> bool:
        if not self.store.acquire(self.job_id, self.owner, self.ttl):
            return False
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._done.wait(self.every):
            try:
                if self.delivery_tag:
                    self.store.keep_delivery(self.delivery_tag)
                if not self.store.acquire(self.job_id, self.owner, self.ttl):
                    log.warning("job %s: lost its lock to another worker", self.job_id)
            except Exception as exc:  # Redis restarting: try again next round, never die
                log.warning("job %s: lock not renewed (%s: %s)", self.job_id,
                            type(exc).__name__, exc)

    def release(self) -> None:
        self._done.set()
        try:
            self.store.release(self.job_id, self.owner)
        except Exception as exc:  # it expires on its own
            log.warning("job %s: lock not released (%s)", self.job_id, type(exc).__name__)


def _hard_limit(seconds: int) -> None:
    """Arm SIGALRM for the hard time limit (the solo pool runs the task in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def expired(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"job ran past its hard time limit of {seconds} s")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def finished_result(job_id: str) -> dict[str, Any] | None:
    """The model a previous delivery of this job registered, as the task's result."""
    from ganforge import store

    model = store.find_run(job_id)
    if model is None:
        return None
    return {"tag": model.tag, "stage": model.stage, "created": False,
            "steps": model.card.steps, "metrics": model.card.metrics}


def execute(task: Task, spec: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    from trainer import pipeline

    settings = settings or get_settings()
    job_id = task.request.id
    if SHUTDOWN.is_set():  # taken while stopping (the file transport fetches once more): hand back
        with contextlib.suppress(Exception):  # what it showed before this delivery's STARTED
            task.update_state(state=PROGRESS, meta=_HANDED_BACK.get(job_id, {"phase": "requeued"}))
        raise Reject("worker stopping; job left on the queue", requeue=True)
    cfg = TrainConfig.model_validate(spec)
    store = job_store(settings)
    if store.cancel_requested(job_id) and finished_result(job_id) is None:
        task.update_state(state=CANCELLED, meta={"step": 0, "total": cfg.steps})
        JOBS.labels(cfg.family, CANCELLED).inc()
        raise Ignore()
    lock = LockKeeper(store, job_id, settings.job_lock_ttl,
                      delivery_tag=(task.request.properties or {}).get("delivery_tag"),
                      every=min(settings.job_lock_ttl, settings.visibility_timeout) / 4)
    if not lock.acquire():  # a live worker runs this job: look again once its lock could lapse
        look_again_later(task, spec, settings)
    # looked up under the lock: the delivery that trains registers its model before it returns,
    # and a duplicate that found the model in between would store its result first (Celery
    # keeps the first SUCCESS), without the trainer's own fields
    done = finished_result(job_id)
    if done is not None:
        lock.release()
        log.info("job %s registered %s before; not training again", job_id, done["tag"])
        return done

    run_dir = settings.runs_dir.resolve() / job_id
    reporter = JobReporter(task, job_id, cfg, store, time.time() + settings.job_soft_time_limit,
                           str(run_dir))
    family, state, start = cfg.family, "FAILURE", time.monotonic()
    RUNNING.labels(family).inc()
    _hard_limit(settings.job_time_limit)
    try:
        with job_stream():
            result = pipeline.run(cfg, run_dir, settings=settings, run_id=job_id,
                                  callbacks=[reporter], should_stop=reporter.should_stop,
                                  progress_bar=False)
        state = "SUCCESS"
        return {**result.to_dict(), "resumed_from": reporter.resumed_from}
    except TrainingCancelled:
        if reporter.shutting_down and not reporter.cancel_requested():
            state = REQUEUED
            requeue(task, reporter)
        if reporter.timed_out:
            raise SoftTimeLimitExceeded(f"job ran past its soft time limit of "
                                        f"{settings.job_soft_time_limit} s; checkpoint kept at "
                                        f"step {reporter.meta.get('step')}") from None
        state = CANCELLED
        task.update_state(state=CANCELLED, meta=reporter.meta)
        raise Ignore() from None
    except GanforgeError as exc:
        raise JobFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.alarm(0)
        lock.release()
        RUNNING.labels(family).dec()
        JOBS.labels(family, state).inc()
        DURATION.labels(family, state).observe(time.monotonic() - start)


def job_stream() -> contextlib.AbstractContextManager[Any]:
    """A CUDA stream of its own for a job that shares the worker with others (``--jobs K``: one
    thread each), so that one job's kernels run while another's are queued; else nothing."""
    import torch

    if threading.current_thread() is threading.main_thread() or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream())


def look_again_later(task: Task, spec: dict[str, Any], settings: Settings) -> None:
    """Another delivery of this job runs (its lock is held): send the job again for later and
    drop this delivery. Not ``task.retry``: that would mark the running job RETRY in the result
    backend. The wait stays under half the visibility timeout, so that the held message is never
    delivered twice meanwhile."""
    wait = max(1, min(settings.job_lock_ttl, settings.visibility_timeout // 2))
    log.info("job %s runs elsewhere; looking again in %d s", task.request.id, wait)
    app.send_task(TASK_NAME, args=[spec], task_id=task.request.id, queue=queue_for(spec),
                  countdown=wait)
    raise Ignore()


def requeue(task: Task, reporter: JobReporter) -> None:
    """The worker is stopping: the checkpoint of this step is written; put the job back at the
    head of its queue for the next worker, which resumes from that checkpoint."""
    step = reporter.meta.get("step")
    log.warning("job %s: worker stopping; checkpoint at step %s, job back on the queue",
                reporter.job_id, step)
    _HANDED_BACK[reporter.job_id] = {**reporter.meta, "phase": "requeued"}
    with contextlib.suppress(Exception):  # the next worker reports soon enough
        task.update_state(state=PROGRESS, meta=_HANDED_BACK[reporter.job_id])
    raise Reject(f"worker stopping; job requeued at step {step}", requeue=True) from None


@app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
def train_gan(self: Task, spec: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate, export and register the generator that ``spec`` describes."""
    return execute(self, spec)


class QueueLength:
    """``ganforge_queue_length{queue}``: jobs waiting in each queue, read from Redis on scrape
    (the backlog alert's input). Nothing on the embedded default."""

    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=2)

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from ganforge.queue import QUEUES

        family = GaugeMetricFamily("ganforge_queue_length", "Jobs waiting in each queue",
                                   labels=["queue"])
        try:
            for queue in QUEUES:
                family.add_metric([queue], self.redis.llen(queue))
        except Exception as exc:  # a scrape must not fail because the broker blinked
            log.warning("queue length unavailable: %s", exc)
        yield family


@signals.worker_ready.connect
def _requeue_interrupted(**_: Any) -> None:
    """The embedded queue has no redelivery: the jobs a killed worker left half done go back on
    their queues when a worker starts, and resume from their checkpoints."""
    settings = get_settings()
    if settings.embedded_queue:
        requeue_interrupted(settings)


def requeue_interrupted(settings: Settings) -> list[str]:
    found = interrupted(settings)
    for record in found:
        last = app.AsyncResult(record.id).info
        app.backend.store_result(record.id, {**(last if isinstance(last, dict) else {}),
                                             "phase": "requeued"}, PROGRESS)
        app.send_task(TASK_NAME, args=[record.spec], task_id=record.id, queue=record.queue)
        log.warning("job %s was interrupted (its worker is gone): back on the %s queue",
                    record.id, record.queue)
    return [r.id for r in found]


class GpuStats:
    """The GPUs' load on scrape: ``ganforge_gpu_utilization_ratio{gpu}`` (NVML's busy share of the
    last sample period, where NVML is there), ``ganforge_gpu_memory_used_bytes{gpu}`` and
    ``_total_bytes`` (the whole card, every process) and ``ganforge_gpu_memory_allocated_bytes``
    (this worker's tensors). One series per card: the label set is bounded by the machine.
    ``cuda`` is ``torch.cuda`` (a test passes a stand-in: no GPU here)."""

    def __init__(self, cuda: Any, nvml: Any = None) -> None:
        self.cuda, self.nvml = cuda, nvml

    @classmethod
    def for_this_machine(cls) -> "GpuStats | None":
        import torch

        if not torch.cuda.is_available():
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # no NVML (the package or the driver's library): memory only
            log.info("GPU utilisation unavailable (%s); memory only", exc)
            pynvml = None
        return cls(torch.cuda, pynvml)

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        util = GaugeMetricFamily("ganforge_gpu_utilization_ratio",
                                 "Share of time a kernel ran on the GPU (NVML)", labels=["gpu"])
        used = GaugeMetricFamily("ganforge_gpu_memory_used_bytes", "GPU memory in use, all processes",
                                 labels=["gpu"])
        total = GaugeMetricFamily("ganforge_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        mine = GaugeMetricFamily("ganforge_gpu_memory_allocated_bytes",
                                 "GPU memory held by this worker's tensors", labels=["gpu"])
        try:
            for i in range(self.cuda.device_count()):
                free, size = self.cuda.mem_get_info(i)
                used.add_metric([str(i)], size - free)
                total.add_metric([str(i)], size)
                mine.add_metric([str(i)], self.cuda.memory_allocated(i))
                if self.nvml is not None:
                    rates = self.nvml.nvmlDeviceGetUtilizationRates(self.nvml.nvmlDeviceGetHandleByIndex(i))
                    util.add_metric([str(i)], rates.gpu / 100.0)
        except Exception as exc:  # a scrape must not fail because a query did
            log.warning("GPU stats unavailable: %s", exc)
        yield from (util, used, total, mine)


@signals.worker_init.connect
def _start_metrics(**_: Any) -> None:
    settings = get_settings()
    if not settings.worker_metrics_port:
        return
    from prometheus_client import REGISTRY, start_http_server

    if settings.redis_url:
        REGISTRY.register(QueueLength(settings.redis_url))
    gpus = GpuStats.for_this_machine()
    if gpus is not None:
        REGISTRY.register(gpus)
    start_http_server(settings.worker_metrics_port)
    log.info("worker metrics on :%d/metrics", settings.worker_metrics_port)
