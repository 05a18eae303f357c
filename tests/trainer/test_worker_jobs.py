"""One worker, K jobs at once (``ganforge worker --jobs K``: a thread each, a CUDA stream each
on a GPU), and the worker's GPU metrics."""

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ganforge import jobs
from ganforge.settings import get_settings
from tests.utils import run_cli
from tests.utils.workers import TINY, Worker, queued_ids, wait_for
from trainer.checkpoint import CHECKPOINT_NAME, load_checkpoint
from trainer.worker import GpuStats

MLP = {"family": "mlp", "batch_size": 16, "subset": 512, "device": "cpu", "sample_every": 50,
       "checkpoint_every": 50}


def test_three_jobs_train_side_by_side_and_each_is_its_own(tmp_path, redis_db) -> None:
    """Three jobs in one worker: all three run at once, each registers its own model, and two
    of them with the same seed (the mlp family draws dropout masks from the global RNG, which
    the threads share) end with the same weights, whatever the third did meanwhile."""
    worker = Worker(tmp_path / "worker.log", jobs=3)
    try:
        ids = [jobs.submit({**MLP, "steps": 80, "seed": 5}),
               jobs.submit({**TINY, "steps": 80, "seed": 6}),
               jobs.submit({**MLP, "steps": 80, "seed": 5})]
        together = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = [jobs.status(i) for i in ids]
            training = {i for i, st in zip(ids, states, strict=True)
                        if st.state == "PROGRESS" and st.progress.get("step", 0) > 0
                        and st.progress.get("phase") == "training"}
            if len(training) >= 2:
                together |= training
            if all(st.finished for st in states):
                break
            time.sleep(0.2)
        results = [wait_for(i, lambda s: s.finished, timeout=60)[0] for i in ids]
        assert [st.state for st in results] == ["SUCCESS"] * 3, [st.error for st in results]
        assert len(together) >= 2, "the jobs never trained at the same time"
        assert len({st.result["tag"] for st in results}) == 3
        a, c = (torch.load(Path(results[i].result["run_dir"]) / "checkpoint.pt",
                           weights_only=False)["G"] for i in (0, 2))
        assert all(torch.equal(a[k], c[k]) for k in a)
        assert 'ganforge_jobs_total{family="mlp",state="SUCCESS"} 2.0' in worker.metrics()
    finally:
        worker.stop()


def test_sigterm_hands_every_running_job_back(tmp_path, redis_db) -> None:
    """Two jobs running in one worker (threads pool), SIGTERM: both stop at a step boundary with
    their checkpoints written and are back on the queue within seconds (the default one-minute
    visibility timeout: only the worker's own requeue can be that fast), and the worker exits."""
    worker = Worker(tmp_path / "worker.log", jobs=2, default_timings=True)
    ids = [jobs.submit({**TINY, "steps": 100_000, "seed": s}) for s in (1, 2)]
    try:
        for job_id in ids:
            wait_for(job_id, lambda s: s.progress.get("step", 0) >= 20)
        asked = time.monotonic()
        os.killpg(worker.proc.pid, signal.SIGTERM)
        while not set(ids) <= set(queued_ids(redis_db, "cpu")):
            assert time.monotonic() - asked < 15, "the jobs did not go back on the queue"
            time.sleep(0.05)
        worker.proc.wait(60)
        assert worker.proc.returncode == 0, worker.log.read_text()[-3000:]
        for job_id in ids:
            st = jobs.status(job_id)
            assert st.state == "PROGRESS" and st.progress["phase"] == "requeued"
            left = load_checkpoint(get_settings().runs_dir / job_id / CHECKPOINT_NAME)
            assert left["step"] == st.progress["step"] >= 20
    finally:
        worker.kill()
        for job_id in ids:  # no later test's worker may pick them up
            jobs.cancel(job_id)
            for raw in redis_db.lrange("cpu", 0, -1):
                if json.loads(raw)["headers"]["id"] == job_id:
                    redis_db.lrem("cpu", 0, raw)


def test_jobs_out_of_range_is_a_cli_error() -> None:
    out = run_cli("worker", "--jobs", "0")
    assert out.returncode == 2 and "jobs" in out.stderr and "between 1 and 64" in out.stderr


class FakeCuda:
    """torch.cuda's answers on a two-card machine (no GPU here)."""

    def device_count(self) -> int:
        return 2

    def mem_get_info(self, i: int) -> tuple[int, int]:
        return (30 << 30, 80 << 30) if i == 0 else (70 << 30, 80 << 30)

    def memory_allocated(self, i: int) -> int:
        return (3 << 30) if i == 0 else 0


class FakeNvml:
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=(87, 3)[handle])


@pytest.mark.parametrize("nvml", [FakeNvml(), None])
def test_gpu_stats_per_card(nvml) -> None:
    registry = CollectorRegistry()
    registry.register(GpuStats(FakeCuda(), nvml))
    got = {(sample.name, sample.labels["gpu"]): sample.value
           for family in text_string_to_metric_families(generate_latest(registry).decode())
           for sample in family.samples}
    assert got[("ganforge_gpu_memory_used_bytes", "0")] == 50 << 30
    assert got[("ganforge_gpu_memory_used_bytes", "1")] == 10 << 30
    assert got[("ganforge_gpu_memory_total_bytes", "1")] == 80 << 30
    assert got[("ganforge_gpu_memory_allocated_bytes", "0")] == 3 << 30
    util = {gpu: v for (name, gpu), v in got.items() if name == "ganforge_gpu_utilization_ratio"}
    assert util == ({} if nvml is None else {"0": 0.87, "1": 0.03})  # no NVML: memory only


def test_no_gpu_no_gpu_metrics() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert GpuStats.for_this_machine() is None
