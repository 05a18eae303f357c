"""The Celery app: built here, once, from settings, and shared by both sides of the queue: the job
client (``ganforge.jobs``: submit, status) sends and reads tasks by name through it, and the worker
(``trainer.worker``) registers the one task, ``train_gan``, on it. Nothing here imports the
trainer, so the service can queue jobs without torch.

Broker and result backend come from ``GANFORGE_BROKER_URL`` / ``GANFORGE_RESULT_BACKEND``
(Redis in production and tests). With neither set the app runs on one machine with no server:
kombu's filesystem transport and Celery's file result backend, under ``GANFORGE_VAR_DIR``.

Reliability: a job is acknowledged only when it ends (``task_acks_late``), a worker reserves one
job at a time (``worker_prefetch_multiplier=1``). On Redis, kombu keeps each unacknowledged
delivery in the ``unacked`` hash, indexed by delivery time in ``unacked_index``; idle workers put
back on the queue every delivery older than ``visibility_timeout`` (a minute by default). The
worker running a job renews its delivery's time there every few seconds (:func:`keep_delivery`),
so a live job of any length stays put, and a job whose worker died (SIGKILL, a lost node: the
solo pool never sees ``task_reject_on_worker_lost``) is delivered again within
``visibility_timeout`` plus one sweep, and resumes from its checkpoint. A worker asked to stop
(SIGTERM) requeues its job itself at once (``trainer.worker``).

Queues: ``gpu`` and ``cpu``. A spec asking for ``device=cuda`` goes to ``gpu``; every other job
to ``cpu``. A GPU worker consumes both (``ganforge worker`` picks its queues from the hardware).
"""

import json
import time
from typing import Any

from celery import Celery

from ganforge.settings import Settings, get_settings

TASK_NAME = "ganforge.train_gan"
QUEUES = ("gpu", "cpu")


UNACKED_INDEX_KEY = "unacked_index"  # kombu's sorted set: delivery tag -> time delivered


def restore_interval(visibility_timeout: int) -> int:
    """Seconds between two sweeps for overdue deliveries: a tenth of the timeout, 1 to 10 s."""
    return max(1, min(10, visibility_timeout // 10))


def keep_delivery(client: Any, delivery_tag: str) -> bool:
    """Mark a delivery as alive now, so that no sweep puts it back on the queue. ``XX``: a
    delivery already acknowledged (gone from the index) is never added back. ``client`` is a
    redis client on the broker; returns whether the delivery was still there."""
    return bool(client.zadd(UNACKED_INDEX_KEY, {delivery_tag: time.time()}, xx=True, ch=True))


def embedded_waiting(settings: Settings) -> set[str]:
    """Ids of the jobs whose messages wait in the embedded queue's folder (one JSON file each)."""
    found = set()
    for path in (settings.var_dir.resolve() / "broker" / "queue").glob("*.msg"):
        try:
            found.add(json.loads(path.read_text())["headers"]["id"])
        except (OSError, ValueError, KeyError, TypeError):  # taken meanwhile, or not ours
            continue
    return found


def queue_for(spec: dict[str, Any]) -> str:
    return "gpu" if spec.get("device") == "cuda" else "cpu"


def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
    """Celery router: training jobs go to the queue their device asks for."""
    if name == TASK_NAME:
        return {"queue": queue_for(args[0] if args else kwargs.get("spec", {}))}
    return None


def broker_settings(settings: Settings) -> dict[str, Any]:
    if settings.embedded_queue:
        var = settings.var_dir.resolve()
        folder = var / "broker" / "queue"
        processed = var / "broker" / "processed"
        control = var / "broker" / "control"  # broadcast (pidbox) exchanges; kombu's default is ./control
        results = var / "results"
        for d in (folder, processed, control, results):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "broker_url": "filesystem://",
            "broker_transport_options": {"data_folder_in": str(folder),
                                         "data_folder_out": str(folder),
                                         "processed_folder": str(processed),
                                         "control_folder": str(control),
                                         "store_processed": False},
            "result_backend": f"file://{results}",
        }
    broker = settings.broker_url or settings.result_backend
    return {
        "broker_url": broker,
        "result_backend": settings.result_backend or broker,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_index_key": UNACKED_INDEX_KEY,
            # every idle worker sweeps for overdue deliveries this often (kombu's default is a
            # scan every 100 s); one ZRANGE under a mutex, so cheap
            "unacked_restore_interval": restore_interval(settings.visibility_timeout),
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("ganforge")
    app.conf.update(
        **broker_settings(settings),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_extended=True,
        result_expires=settings.result_expires,  # the job store keeps the record itself
        task_default_queue="cpu",
        task_routes=(route,),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


app = make_app()
