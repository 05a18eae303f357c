"""Test helpers: real ``ganforge worker`` processes and polling a job."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ganforge import jobs
from tests.utils import ROOT, free_port

TINY = {"family": "dcgan", "width": 8, "batch_size": 16, "subset": 512, "device": "cpu",
        "sample_every": 50, "checkpoint_every": 50}
# tests/conftest.py shortens these for the whole session; a test that must run with the
# defaults (what a deployment gets) removes them from its processes' environment
TEST_TIMINGS = ("GANFORGE_VISIBILITY_TIMEOUT", "GANFORGE_JOB_LOCK_TTL")


def default_env(**extra: str) -> dict[str, str]:
    """This process's environment without the session's short queue timings."""
    return {**{k: v for k, v in os.environ.items() if k not in TEST_TIMINGS}, **extra}


class Worker:
    """A ``ganforge worker`` in its own process group, logging to a file."""

    def __init__(self, log: Path, env: dict[str, str] | None = None, queues: str = "cpu", *,
                 default_timings: bool = False, jobs: int = 1) -> None:
        """``env`` is added to this process's environment; ``default_timings`` drops the
        session's short queue timings (the worker runs with the settings' defaults)."""
        self.log, self.metrics_port = log, free_port()
        self.name = f"test-{log.stem}"
        env = {**os.environ, "GANFORGE_EVAL_SAMPLES": "500", **(env or {}),
               "GANFORGE_WORKER_METRICS_PORT": str(self.metrics_port)}
        if default_timings:
            env = {k: v for k, v in env.items() if k not in TEST_TIMINGS}
        with open(log, "w") as out:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ganforge.cli", "worker", "--queues", queues,
                 "--name", f"{self.name}@%h", "--jobs", str(jobs)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def steps_lasting(seconds: float, spec: dict) -> int:
    """How many steps of ``spec`` train for about ``seconds`` on this machine now, timed in this
    process (after a few warm-up steps, without the run's callbacks). A job that must outlast a
    test's checks is sized in seconds this way: a step count that outlasts them on the fastest
    CPU costs a slow one minutes. The worker that trains the job shares the CPU with the test's
    polling and runs the callbacks too, so the job lasts at least about this long."""
    from ganforge.settings import get_settings
    from ganforge.spec import TrainConfig
    from trainer.loop import GANTrainer
    from trainer.pipeline import load_data

    cfg = TrainConfig(**{**spec, "steps": 10_000})
    trainer = GANTrainer(cfg, load_data(cfg, get_settings()))
    trainer.begin()
    for _ in range(3):
        trainer.advance()
    start, steps = time.perf_counter(), 0
    while steps < 5 or time.perf_counter() - start < 1.0:
        trainer.advance()
        steps += 1
    return max(20, round(seconds * steps / (time.perf_counter() - start)))


def queued_ids(redis_db, queue: str) -> list[str]:
    """The job ids waiting in a queue (kombu keeps each message as JSON in a Redis list)."""
    return [json.loads(raw)["headers"]["id"] for raw in redis_db.lrange(queue, 0, -1)]


def wait_for(job_id: str, predicate, timeout: float = 240, every: float = 0.25):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        st = jobs.status(job_id)
        seen.append(st)
        if predicate(st):
            return st, seen
        time.sleep(every)
    raise AssertionError(f"job {job_id} stuck in {seen[-1].state}: {seen[-1].progress}")
