"""Serving benchmark: ganforge against a lean hand-written ONNX server, the HTTP floor, the
compute floor and the naive baseline, side by side in one run.

    .venv/bin/python bench/serve.py --quick          # 1 round, 3 s a point: ~1.5 minutes
    .venv/bin/python bench/serve.py                  # 3 rounds, 8 s a point: ~9 minutes
    .venv/bin/python bench/serve.py --soak 300       # then 5 minutes at c64: worker memory

Starts, each on a free loopback port with its own throwaway model store:
- ganforge: ``ganforge serve`` (BentoML) with the shipped default model;
- lean: ``bench/lean_app.py``, bare ASGI, one ONNX Runtime session (1 thread) run per request,
  Pillow PNG at zlib level 1, uvicorn with 2 workers, httptools + uvloop;
- floor: ``bench/floor_app.py``, bare ASGI answering a fixed 28x28 PNG, same uvicorn settings:
  what HTTP alone costs here, the bound no image server on this machine can pass;
- naive: ``bench/naive_app.py``, FastAPI + uvicorn (1 worker) + PyTorch eager, one forward per
  request: the tutorials' way.
All four stay up; each round measures every point on every server in turn (so that a slower
period of a shared machine hits all of them), with wrk (C, ``-t1``: a Python client would take
a core from the servers) after a 2 s warm-up. Points: ``GET /generate?digit=7&seed=1`` at
concurrency 1, 8 and 64; bulk ``n=256`` at concurrency 2 (images/s). The compute floor is
in-process ONNX Runtime on the same generator, no HTTP. Prints each point's median over the
rounds (req/s, p50, p99), errors and non-2xx summed over the rounds, the ratios and the issue's
targets; exits 1 when any point had an error or a non-2xx answer.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
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
ONE = "/generate?digit=7&seed=1"
BULK = "/generate?digit=7&n=256&seed=1"
POINTS = {"c1": (ONE, 1), "c8": (ONE, 8), "c64": (ONE, 64), "bulk": (BULK, 2)}
SERVERS = {"ganforge": ("c1", "c8", "c64", "bulk"), "lean": ("c1", "c8", "c64", "bulk"),
           "floor": ("c1", "c8", "c64"), "naive": ("c1", "c8", "c64")}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
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
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def uvicorn_cmd(bin_dir: Path, app: str, port: int, workers: int, fast: bool) -> list[str]:
    cmd = [str(bin_dir / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    return cmd + (["--http", "httptools", "--loop", "uvloop", "--lifespan", "off"] if fast else [])


def wrk(url: str, connections: int, seconds: int) -> dict:
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", url], capture_output=True,
                   timeout=60)  # warm-up, not measured
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    return json.loads(out.strip().splitlines()[-1])


def compute_floor(seconds: float) -> dict[str, float]:
    """In-process ONNX Runtime images/s on the shipped generator (the service's session
    settings), batch 1 and 256, 1 and 2 threads."""
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


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        found += frontier
    return found


def worker_rss_mb(pid: int) -> float:
    """Resident memory of the service's HTTP worker processes, summed (MB)."""
    total = 0
    for p in descendants(pid):
        try:
            if "_bentoml_impl.worker.service" not in Path(f"/proc/{p}/cmdline").read_text():
                continue
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines()
                          if line.startswith("VmRSS:")))
    return total / 1024


def soak(url: str, pid: int, seconds: int) -> dict:
    """wrk at c64 for ``seconds`` while sampling the workers' memory every 10 s; the first 60 s
    are the warm-up (allocator pools, ONNX Runtime's arenas and caches fill)."""
    proc = subprocess.Popen(["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", str(LUA), url + ONE],
                            stdout=subprocess.PIPE, text=True)
    samples, start = [], time.monotonic()
    while proc.poll() is None:
        samples.append((round(time.monotonic() - start), worker_rss_mb(pid)))
        time.sleep(10)
    load = json.loads(proc.stdout.read().strip().splitlines()[-1]) if proc.stdout else {}
    after = [mb for t, mb in samples if t >= 60]
    return {"wrk": load, "rss_mb": samples, "warm_mb": after[0] if after else None,
            "end_mb": after[-1] if after else None,
            "growth_mb": (max(after) - after[0]) if after else None}


def median_point(runs: list[dict], bulk: bool) -> dict:
    rps = statistics.median(r["rps"] for r in runs)
    return {"rps": rps, "images_per_s": rps * 256 if bulk else rps,
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "p99_max_ms": max(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs), "non_2xx": sum(r["non_2xx"] for r in runs),
            "rounds": [r["rps"] for r in runs]}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def targets(m: dict, best256: float) -> list[tuple[str, bool, str]]:
    g, lean, naive = m["ganforge"], m["lean"], m["naive"]
    x_lean = g["c64"]["rps"] / lean["c64"]["rps"]
    x_naive = g["c64"]["rps"] / naive["c64"]["rps"]
    bulk = g["bulk"]["images_per_s"] / best256
    return [
        ("c64 >= 1.2x lean", x_lean >= 1.2, f"{x_lean:.2f}x"),
        ("c64 >= 3x naive", x_naive >= 3, f"{x_naive:.2f}x"),
        ("c64 p99 <= lean's", g["c64"]["p99_ms"] <= lean["c64"]["p99_ms"],
         f"{g['c64']['p99_ms']:.1f} vs {lean['c64']['p99_ms']:.1f} ms"),
        ("c1 p99 < 5 ms", g["c1"]["p99_ms"] < 5, f"{g['c1']['p99_ms']:.2f} ms"),
        ("bulk >= 70% of the ORT floor", bulk >= 0.7, f"{100 * bulk:.0f}%"),
    ]


def report(m: dict, cf: dict[str, float]) -> list[tuple[str, bool, str]]:
    best256 = max(v for k, v in cf.items() if k.startswith("batch256"))
    print("\npoint     server     req/s   images/s   p50 ms   p99 ms (max)   errors non-2xx")
    for point in POINTS:
        for name, points in SERVERS.items():
            if point in points:
                r = m[name][point]
                print(f"{point:<9} {name:<9} {r['rps']:8.1f} {r['images_per_s']:10.0f} "
                      f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} ({r['p99_max_ms']:.2f}) "
                      f"{r['errors']:8d} {r['non_2xx']:7d}")
    print("compute floor (in-process ONNX Runtime images/s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in cf.items()))
    print("\npoint     ganforge/lean  ganforge/naive  ganforge/floor")
    for point in POINTS:
        g = m["ganforge"][point]
        lean = m["lean"][point]["rps"]
        naive = m["naive"].get(point, {}).get("rps")
        floor = (g["images_per_s"] / best256 if point == "bulk"
                 else g["rps"] / m["floor"][point]["rps"])
        over_naive = f"{g['rps'] / naive:.2f}" if naive else "-"
        print(f"{point:<9} {g['rps'] / lean:13.2f}  {over_naive:>14}  {floor:14.3f}"
              + ("  (floor: in-process ORT, batch 256)" if point == "bulk" else ""))
    checks = targets(m, best256)
    print("\ntargets: " + "; ".join(f"{name}: {value} {'ok' if ok else 'MISSED'}"
                                    for name, ok, value in checks))
    return checks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round of 3 s points")
    p.add_argument("--seconds", type=int, help="seconds per point (default 8, quick 3)")
    p.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    p.add_argument("--soak", type=int, default=0, help="then this many seconds at c64 on "
                   "ganforge, sampling its workers' memory (the issue: 300)")
    p.add_argument("--workers", type=int, default=2, help="BentoML workers")
    p.add_argument("--ort-threads", type=int, default=2, help="ONNX Runtime threads per worker")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-latency-ms", type=float, default=0.0)
    p.add_argument("--inline-max", type=int, default=4)
    p.add_argument("--naive-workers", type=int, default=1)
    p.add_argument("--only", choices=list(SERVERS), action="append",
                   help="measure only these servers (repeatable; the ratios need all four)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    secs = args.seconds or (3 if args.quick else 8)
    rounds = args.rounds or (1 if args.quick else 3)
    servers = {k: v for k, v in SERVERS.items() if not args.only or k in args.only}
    tmp = Path(tempfile.mkdtemp(prefix="ganforge-bench-serve-"))
    settings = {"GANFORGE_SERVE_WORKERS": str(args.workers),
                "GANFORGE_ORT_THREADS": str(args.ort_threads),
                "GANFORGE_SERVE_MAX_BATCH_SIZE": str(args.max_batch_size),
                "GANFORGE_SERVE_MAX_LATENCY_MS": str(args.max_latency_ms),
                "GANFORGE_SERVE_INLINE_MAX": str(args.inline_max)}
    env = {**os.environ, "BENTOML_HOME": str(tmp / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
           "GANFORGE_LEAN_MODEL": str(DEFAULT / "generator.onnx"),
           "GANFORGE_NAIVE_WEIGHTS": str(DEFAULT / "generator.pt"), **settings}
    bin_dir = Path(sys.executable).parent
    urls: dict[str, str] = {}
    procs: dict[str, subprocess.Popen] = {}
    commands = {
        "ganforge": lambda port: [str(bin_dir / "ganforge"), "serve", "--port", str(port),
                                  "--host", "127.0.0.1"],
        "lean": lambda port: uvicorn_cmd(bin_dir, "bench.lean_app:app", port, 2, True),
        "floor": lambda port: uvicorn_cmd(bin_dir, "bench.floor_app:app", port, 2, True),
        "naive": lambda port: uvicorn_cmd(bin_dir, "bench.naive_app:app", port,
                                          args.naive_workers, False),
    }
    try:
        for name in servers:
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            ready = urls[name] + ("/readyz" if name == "ganforge" else "/generate?digit=1")
            procs[name] = start(commands[name](port), env, ready, tmp / f"{name}.log")
        print(f"# {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}"
              f", load average {load_average()}; {rounds} round(s), {secs:g} s a point, wrk -t1;"
              f" ganforge settings: {settings}; lean and floor: 2 uvicorn workers, httptools + "
              f"uvloop; naive: {args.naive_workers} uvicorn worker", flush=True)
        runs: dict[str, dict[str, list[dict]]] = {n: {pt: [] for pt in pts}
                                                  for n, pts in servers.items()}
        for rnd in range(1, rounds + 1):
            for point, (path, conc) in POINTS.items():
                for name, points in servers.items():
                    if point not in points:
                        continue
                    r = wrk(urls[name] + path, conc, secs)
                    runs[name][point].append(r)
                    print(f"round {rnd} {point:<4} {name:<8} {r['rps']:8.1f} req/s  p50 "
                          f"{r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}"
                          f"  non-2xx {r['non_2xx']}", flush=True)
        medians = {n: {pt: median_point(rs, pt == "bulk") for pt, rs in pts.items()}
                   for n, pts in runs.items()}
        figures: dict = {"settings": settings, "seconds_per_point": secs, "rounds": rounds,
                         "load_average_start": load_average(), "points": medians}
        soaked = None
        if args.soak and "ganforge" in procs:
            soaked = soak(urls["ganforge"], procs["ganforge"].pid, args.soak)
            figures["soak"] = soaked
        for proc in procs.values():
            stop(proc)
        procs.clear()
        cf = compute_floor(secs)
        figures["compute_floor"] = cf
        figures["load_average_end"] = load_average()
        if set(servers) == set(SERVERS):
            figures["targets"] = [{"target": t, "met": ok, "value": v}
                                  for t, ok, v in report(medians, cf)]
        if soaked is not None:
            w = soaked["wrk"]
            print(f"soak c64 {args.soak} s: {w.get('rps', 0):.0f} req/s, p99 "
                  f"{w.get('p99_ms', 0):.1f} ms, errors {w.get('errors')}, non-2xx "
                  f"{w.get('non_2xx')}; workers' RSS after warm-up {soaked['warm_mb']:.1f} MB, "
                  f"at the end {soaked['end_mb']:.1f} MB, growth {soaked['growth_mb']:.1f} MB "
                  f"({'ok' if soaked['growth_mb'] <= 50 else 'MISSED'}: within 50 MB)")
        print(f"# load average at the end: {figures['load_average_end']}")
        bad = [f"{n} {pt}" for n, pts in medians.items() for pt, r in pts.items()
               if r["errors"] or r["non_2xx"]]
        if soaked is not None and (soaked["wrk"].get("errors") or soaked["wrk"].get("non_2xx")):
            bad.append("soak")
        figures["points_with_errors"] = bad
        print("errors and non-2xx: " + ("none in any point" if not bad else
                                        "IN " + ", ".join(bad)))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        if bad:
            sys.exit(1)
    finally:
        for proc in procs.values():
            stop(proc)


if __name__ == "__main__":
    main()
