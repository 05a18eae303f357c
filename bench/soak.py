"""Soak: a real `ganforge serve` under valid, invalid and hostile traffic for minutes.

    .venv/bin/python bench/soak.py                      # 10 minutes at concurrency 64
    .venv/bin/python bench/soak.py --minutes 1 --warmup 15

Starts the service on 127.0.0.1 (a throwaway model store with the shipped default model, the
embedded job queue under the same folder, an API token), then drives it with wrk (a C load
generator: a Python client would take a core from the server on 2 cores) through a Lua script
(`bench/soak.lua`) that rotates ~40 kinds of request: valid sampling (GET/POST /generate, grids, latents,
/interpolate, version aliases), invalid input (out-of-range fields, bad JSON, contradictory
bodies, unknown models), and hostile requests (random 404 paths and job ids, path tricks with
encoded dots and slashes, made-up methods, non-ASCII tokens, bodies declaring 60 MB, 9 MiB bodies
streamed in full). Phases: a warm-up with the same mix (every kind of answer has been given
once), then the soak. Bounded: wrk's duration and connection count; the target is loopback only.

Reports, against the targets of issue 11: the number of 5xx answers (target 0), the service's
resident memory (all its processes) after the warm-up and at the end (target: within 50 MB), and
the number of series of every metric family in /metrics after the warm-up and at the end
(target: unchanged, so the hostile part adds no label values). Exit status 1 when one is missed.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from serve import stop

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "soak-token-not-a-secret"
MB = 1024 * 1024

LUA = ROOT / "bench" / "soak.lua"  # the request mix (__TOKEN__ and __SERVED__ filled in)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(home: Path, port: int, workers: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GANFORGE_", "BENTOML_HOME"))}  # no shared Redis, no test store
    env.update({"BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "true",
                "GANFORGE_API_TOKEN": TOKEN, "GANFORGE_VAR_DIR": str(home / "var"),
                "GANFORGE_RUNS_DIR": str(home / "runs"), "GANFORGE_SERVE_WORKERS": str(workers)})
    with open(home / "serve.log", "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("ganforge")), "serve",
                                 "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the service exited: see {home / 'serve.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit("the service did not become ready in 120 s")


stop_service = stop  # bench/serve.py's: SIGTERM to the process group, SIGKILL after 30 s


def rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def series(url: str) -> Counter[str]:
    """Number of series of every metric family in /metrics."""
    counts: Counter[str] = Counter()
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            counts[line.split("{", 1)[0].split(" ", 1)[0]] += 1
    return counts


def run_wrk(url: str, script: Path, seconds: int, connections: int, proc: subprocess.Popen,
            samples: list[tuple[float, int]]) -> dict:
    """wrk for ``seconds``, sampling the service's memory every 10 s meanwhile."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
           str(script), url]
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(10):
            samples.append((round(time.monotonic() - start), rss(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    finally:
        stop.set()
        sampler.join()
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        sys.exit(f"wrk gave no report:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the soak (after warm-up)")
    p.add_argument("--warmup", type=int, default=30, help="seconds of the same mix before it")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (1-256)")
    p.add_argument("--workers", type=int, default=1, help="GANFORGE_SERVE_WORKERS")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk")
    if not 1 <= args.connections <= 256 or not 0 < args.minutes <= 120:
        sys.exit("--connections must be 1-256 and --minutes 0-120")
    home = Path(tempfile.mkdtemp(prefix="ganforge-soak-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_service(home, port, args.workers)
    try:
        served = httpx.get(f"{url}/models", timeout=10).json()["default"]
        script = home / "soak.lua"
        script.write_text(LUA.read_text().replace("__TOKEN__", TOKEN)
                          .replace("__SERVED__", served))
        print(f"# {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}"
              f"; {args.minutes} min at c{args.connections} after a {args.warmup} s warm-up; "
              f"serving {served} with {args.workers} worker(s)", flush=True)
        memory: list[tuple[float, int]] = []
        warm = run_wrk(url, script, args.warmup, args.connections, proc, [])
        time.sleep(2)
        rss_warm, series_warm = rss(proc.pid), series(url)
        soak = run_wrk(url, script, int(args.minutes * 60), args.connections, proc, memory)
        time.sleep(2)
        rss_end, series_end = rss(proc.pid), series(url)
    finally:
        stop_service(proc)
    report(args, warm, soak, rss_warm, rss_end, memory, series_warm, series_end, home)


def report(args: argparse.Namespace, warm: dict, soak: dict, rss_warm: int, rss_end: int,
           memory: list[tuple[float, int]], series_warm: Counter[str], series_end: Counter[str],
           home: Path) -> None:
    errors_5xx = sum(v for phase in (warm, soak) for k, v in phase["statuses"].items()
                     if int(k) >= 500)
    changed = {k: [series_warm.get(k, 0), v] for k, v in series_end.items()
               if series_warm.get(k, 0) != v}
    changed.update({k: [v, 0] for k, v in series_warm.items() if k not in series_end})
    grown = (rss_end - rss_warm) / MB
    figures = {"warmup": warm, "soak": soak, "5xx": errors_5xx,
               "rss_mb": {"after_warmup": round(rss_warm / MB, 1), "end": round(rss_end / MB, 1),
                          "grown": round(grown, 1),
                          "max": round(max([rss_end, *(b for _, b in memory)]) / MB, 1)},
               "series": {"families": len(series_end), "total_after_warmup": sum(series_warm.values()),
                          "total_end": sum(series_end.values()), "changed": changed},
               "samples_mb": [(t, round(b / MB, 1)) for t, b in memory]}
    print(json.dumps(figures, indent=1))
    targets = {"zero 5xx": errors_5xx == 0, "memory within 50 MB": abs(grown) <= 50,
               "metric series unchanged": not changed}
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    print(f"(service log: {home / 'serve.log'})")
    if args.json:
        args.json.write_text(json.dumps({**figures, "targets": targets}, indent=1))
    if not all(targets.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
