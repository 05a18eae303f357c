"""Serving benchmark: ganforge against the HTTP floor, the compute floor and a naive baseline.

    .venv/bin/python bench/serve.py --quick          # ~2 minutes: 5 s per point
    .venv/bin/python bench/serve.py                  # 20 s per point
    .venv/bin/python bench/serve.py --workers 1 --ort-threads 2 --max-latency-ms 5

Starts `ganforge serve` (BentoML) on loopback with a throwaway model store holding the shipped
default model, and the naive baseline (`bench/naive_app.py`: FastAPI + uvicorn + PyTorch eager,
one forward per request), and drives both with wrk (a C load generator: a Python client would
take a core from the server on 2 cores). Points: GET /generate?digit=7 at concurrency 1, 8, 64;
bulk n=256 at concurrency 2; GET /version on the same server (the HTTP floor); in-process ONNX
Runtime at batch 1 and 256 (the compute floor). Prints every figure, the ratios, and the
settings used.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "wrk_report.lua"
DEFAULT = ROOT / "services" / "assets" / "default"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    wait_ready(ready_url, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, connections: int, seconds: int, threads: int = 1) -> dict:
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", url], capture_output=True,
                   timeout=60)  # warm-up, not measured
    out = subprocess.run(["wrk", f"-t{min(threads, connections)}", f"-c{connections}",
                          f"-d{seconds}s", "-s", str(LUA), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def compute_floor(seconds: float) -> dict[str, float]:
    """In-process ONNX Runtime images/s on the shipped generator (same session settings)."""
    from ganforge.generator import GeneratorSpec, OnnxGenerator

    spec = GeneratorSpec(100, 10)
    result = {}
    for threads in (1, 2):
        g = OnnxGenerator(DEFAULT / "generator.onnx", spec, threads=threads)
        for batch in (1, 256):
            z = np.random.default_rng(0).standard_normal((batch, 100), dtype=np.float32)
            y = np.arange(batch) % 10
            g(z, y)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 4:
                g(z, y)
                n += batch
            result[f"batch{batch}_threads{threads}"] = n / (time.perf_counter() - start)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s per point (under 3 minutes)")
    p.add_argument("--seconds", type=int, help="seconds per point (default 20, quick 5)")
    p.add_argument("--workers", type=int, default=2, help="BentoML workers")
    p.add_argument("--ort-threads", type=int, default=2, help="ONNX Runtime threads per worker")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-latency-ms", type=float, default=0.0)
    p.add_argument("--inline-max", type=int, default=4)
    p.add_argument("--naive-workers", type=int, default=1)
    p.add_argument("--target", help="a running ganforge service URL instead of starting one")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    secs = args.seconds or (5 if args.quick else 20)
    tmp = Path(tempfile.mkdtemp(prefix="ganforge-bench-serve-"))
    settings = {"GANFORGE_SERVE_WORKERS": str(args.workers),
                "GANFORGE_ORT_THREADS": str(args.ort_threads),
                "GANFORGE_SERVE_MAX_BATCH_SIZE": str(args.max_batch_size),
                "GANFORGE_SERVE_MAX_LATENCY_MS": str(args.max_latency_ms),
                "GANFORGE_SERVE_INLINE_MAX": str(args.inline_max)}
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           **settings}
    bin_dir = Path(sys.executable).parent
    procs = []
    try:
        if args.target:
            url = args.target.rstrip("/")
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            procs.append(start([str(bin_dir / "ganforge"), "serve", "--port", str(port),
                                "--host", "127.0.0.1"], env, f"{url}/readyz", tmp / "serve.log"))
        print(f"# {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{secs} s per point, wrk -t1; service settings: {settings}", flush=True)
        figures: dict = {"settings": settings, "seconds_per_point": secs}
        for c in (1, 8, 64):
            r = wrk(f"{url}/generate?digit=7&seed=1", c, secs)
            figures[f"ganforge_c{c}"] = r
            print(f"ganforge GET /generate?digit=7 c{c}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} "
                  f"p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms, errors {r['errors']}", flush=True)
        r = wrk(f"{url}/generate?digit=7&n=256&seed=1", 2, secs)
        figures["ganforge_bulk"] = {**r, "images_per_s": r["rps"] * 256}
        print(f"ganforge bulk n=256 c2: {r['rps'] * 256:.0f} images/s, p99 {r['p99_ms']:.1f} ms, "
              f"errors {r['errors']}", flush=True)
        r = wrk(f"{url}/version", 64, secs)
        figures["http_floor_c64"] = r
        print(f"HTTP floor GET /version c64: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms",
              flush=True)
        if not args.target:
            stop(procs.pop())
        naive_port = free_port()
        naive_url = f"http://127.0.0.1:{naive_port}"
        procs.append(start([str(bin_dir / "uvicorn"), "bench.naive_app:app", "--port",
                            str(naive_port), "--no-access-log", "--log-level", "warning",
                            "--workers", str(args.naive_workers)],
                           {**env, "GANFORGE_NAIVE_WEIGHTS": str(DEFAULT / "generator.pt")},
                           f"{naive_url}/generate?digit=1", tmp / "naive.log"))
        for c in (1, 64):
            r = wrk(f"{naive_url}/generate?digit=7&seed=1", c, secs)
            figures[f"naive_c{c}"] = r
            print(f"naive baseline (PyTorch eager, {args.naive_workers} uvicorn worker) c{c}: "
                  f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms, "
                  f"errors {r['errors']}", flush=True)
        stop(procs.pop())
        cf = compute_floor(secs)
        figures["compute_floor"] = cf
        print("compute floor (in-process ONNX Runtime images/s): " +
              ", ".join(f"{k} {v:.0f}" for k, v in cf.items()), flush=True)
        best256 = max(v for k, v in cf.items() if k.startswith("batch256"))
        g64, naive64 = figures["ganforge_c64"], figures["naive_c64"]
        ratios = {
            "ganforge_c64_over_http_floor": g64["rps"] / figures["http_floor_c64"]["rps"],
            "bulk_over_compute_floor_256": figures["ganforge_bulk"]["images_per_s"] / best256,
            "ganforge_over_naive_c64": g64["rps"] / naive64["rps"],
            "p99_ganforge_over_naive_c64": g64["p99_ms"] / naive64["p99_ms"],
        }
        figures["ratios"] = ratios
        print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        for proc in procs:
            stop(proc)


if __name__ == "__main__":
    main()
