"""Training benchmark: the loop against the tutorials' loop, the fast path, many jobs on one GPU.

    .venv/bin/python bench/train.py                          # naive vs today's loop vs fast path
    .venv/bin/python bench/train.py --each-option --repeat 3 # and each CPU-capable option alone
                                                             # on today's loop
    .venv/bin/python bench/train.py --gpu-report             # the GPU report (issue 15), CUDA only
    .venv/bin/python bench/train.py --throughput            # each family x loss, 150 steps
    .venv/bin/python bench/train.py --quality --max-steps 6000
    .venv/bin/python bench/train.py --submit 1500 5500       # through the queue, end to end

Loops (the default): images/s of the reference recipe over ``--steps`` steps after a warm-up
(which holds torch.compile's compilation and CUDA graph recording), on the device ``auto``
picks, for three loops in one run: the naive loop (``bench/naive_train.py``: a DataLoader,
``.item()`` every step), today's loop (the fast options off, and a CPU ``randperm`` per step as
before the epoch order was cached) and the fast path (the spec's defaults: ``auto``).
``--repeat`` runs the rows round-robin and prints the median, for a machine others share;
CPU ms/step is this process's CPU time a step (the naive loop's DataLoader workers excluded),
which other processes on a shared machine disturb far less than wall time.

GPU report: the loops above (with the two CUDA graph modes, ``compile: on`` and ``compile:
graph``, and bf16), then K = 1, 4 and 16 jobs at once (``trainer.multi``, seeds 0 .. K-1,
``compile: graph``; then one job with the defaults and one with bf16), each judged every
``--every`` steps on 2,000 samples and stopped at label accuracy 0.95: total images/s, and per
job the training seconds to 0.95 (judging excluded). It prints the card, driver, torch version,
command and date. Without CUDA it says so and measures nothing. ``bench/gpu_report.sh`` runs it
and the CUDA tests on a lent GPU machine in one call.

Throughput: real images per second through D (batch x D steps per step), over the steps after
a 20-step warm-up, conditional models, batch 64, on the device `auto` picks (CUDA when present).
Time to quality: the reference recipe trains while the EMA generator is judged every
`--every` steps on 2,000 samples (judging time is excluded); printed are the training seconds
and steps at which label accuracy first reached 0.95 and 0.99. Add the pipeline's tail (ONNX
export, 10,000-sample evaluation and registration: ~16 s on 2 CPU cores) for a registered model.
"""
import argparse
import contextlib
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from naive_train import Measured, naive_train

import trainer.loop as loop
from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from trainer.data import Split, batch_indices, load_mnist
from trainer.evaluate import evaluate, torch_sampler
from trainer.loop import Callback, GANTrainer
from trainer.multi import MultiTrainer

# the fast options off: the loop as it was before the fast path
TODAY = dict(log_every=1, adam="torch", compile="off", amp="off", channels_last="off")
# the whole step captured by hand in one CUDA graph (trainer.fastpath.StepGraph)
GRAPH: dict[str, Any] = {"compile": "graph"}
# one CPU-capable fast option at a time on top of today's loop (--each-option), and bf16 with
# channels_last (the CPU's auto where it has bf16 in hardware)
OPTIONS: dict[str, dict[str, Any]] = {
    "+ adam foreach": {"adam": "foreach"}, "+ adam fused": {"adam": "fused"},
    "+ channels_last": {"channels_last": "on"}, "+ log_every 50": {"log_every": 50},
    "+ bf16 autocast": {"amp": "bf16"},
    "+ bf16 autocast + channels_last": {"amp": "bf16", "channels_last": "on"},
}


class Clock(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start = warmup, 0.0

    def on_step_end(self, trainer: GANTrainer, logs: dict) -> None:
        if trainer.step == self.warmup:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()


def throughput(data, steps: int) -> None:
    print("| family | loss | D steps | device | images/s | steps/s |")
    print("|---|---|---|---|---|---|")
    for family in ("mlp", "dcgan"):
        for loss in ("bce", "hinge", "wgan-gp"):
            cfg = TrainConfig(family=family, loss=loss, steps=steps)
            clock = Clock(warmup=20)
            t = GANTrainer(cfg, data, callbacks=[clock])
            t.fit()
            if t.device.type == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - clock.start
            n = steps - clock.warmup
            print(f"| {family} | {loss} | {cfg.critic_steps} | {t.device.type} | "
                  f"{n * cfg.batch_size * cfg.critic_steps / secs:.0f} | {n / secs:.1f} |",
                  flush=True)


class Judge(Callback):
    def __init__(self, every: int, data_dir) -> None:
        self.every, self.data_dir = every, data_dir
        self.train_seconds, self.last = 0.0, time.perf_counter()
        self.reached: dict[float, tuple[int, float]] = {}

    def on_step_end(self, trainer: GANTrainer, logs: dict) -> None:
        if trainer.step % self.every:
            return
        self.train_seconds += time.perf_counter() - self.last
        acc = evaluate(torch_sampler(trainer.G_ema, trainer.device),
                       latent_dim=trainer.cfg.latent_dim, conditional=True,
                       data_dir=self.data_dir, n=2000).label_accuracy or 0.0
        print(f"step {trainer.step}: label accuracy {acc:.4f} after {self.train_seconds:.0f} s "
              "of training", flush=True)
        for goal in (0.95, 0.99):
            if acc >= goal and goal not in self.reached:
                self.reached[goal] = (trainer.step, self.train_seconds)
        if 0.99 in self.reached:
            trainer.should_stop = lambda: True
        self.last = time.perf_counter()


def quality(data, max_steps: int, every: int, seed: int) -> None:
    judge = Judge(every, get_settings().data_dir)
    t = GANTrainer(TrainConfig(steps=max_steps, seed=seed), data, callbacks=[judge])
    try:
        t.fit()
    except Exception as exc:  # TrainingCancelled once 0.99 is reached
        if "cancelled" not in str(exc):
            raise
    for goal in (0.95, 0.99):
        hit = judge.reached.get(goal)
        print(f"label accuracy >= {goal}: " + (f"step {hit[0]}, {hit[1]:.0f} s of training on "
              f"{t.device.type}" if hit else f"not reached in {t.step} steps"))


def submitted(steps_list: list[int]) -> None:
    """Wall time from `ganforge jobs submit` to a registered model, through a real worker on
    the embedded queue (a throwaway var dir and model store)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="ganforge-bench-train-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("GANFORGE_BROKER_URL", "GANFORGE_RESULT_BACKEND")}
    env.update(GANFORGE_VAR_DIR=str(tmp / "var"), BENTOML_HOME=str(tmp / "bentoml"),
               GANFORGE_RUNS_DIR=str(tmp / "runs"), GANFORGE_WORKER_METRICS_PORT="0")
    cli = [str(Path(sys.executable).with_name("ganforge"))]
    with open(tmp / "worker.log", "w") as log:
        worker = subprocess.Popen([*cli, "worker", "--queues", "cpu"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        while "ready." not in (tmp / "worker.log").read_text():
            time.sleep(0.5)
        print("| steps | submit -> registered s | train s | label acc | stage |")
        print("|---|---|---|---|---|")
        for steps in steps_list:
            start = time.perf_counter()
            out = subprocess.run([*cli, "jobs", "submit", "--steps", str(steps), "--seed", "0",
                                  "--device", "cpu"], env=env, capture_output=True, text=True)
            job = out.stdout.strip()
            while True:
                st = json.loads(subprocess.run([*cli, "jobs", "status", job, "--json"], env=env,
                                               capture_output=True, text=True).stdout)
                if st["state"] in ("SUCCESS", "FAILURE", "CANCELLED"):
                    break
                time.sleep(2)
            wall = time.perf_counter() - start
            r = st["result"] or {}
            acc = (r.get("metrics") or {}).get("label_accuracy")
            print(f"| {steps} | {wall:.0f} | {r.get('train_seconds', 0):.0f} | {acc} | "
                  f"{r.get('stage', st['state'])} |", flush=True)
    finally:
        worker.terminate()
        worker.wait(30)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_rate(data: Split, changes: dict[str, Any], steps: int, warmup: int,
              per_step_randperm: bool = False) -> tuple[Measured, float, str]:
    """(images/s over ``steps`` steps of the reference recipe, seconds of the warm-up, a note:
    the fast options in force after the warm-up, and why compile fell back if it did)."""
    t = GANTrainer(TrainConfig(**{**changes, "steps": warmup + steps}), data)
    if per_step_randperm:  # the data order as it was drawn before the fast path: every step
        n, b, seed = len(t.labels), t.cfg.batch_size, t.cfg.seed
        t.order = lambda i: batch_indices(n, b, i, seed).to(t.device)  # type: ignore[assignment,method-assign]
    t.begin()
    start = time.perf_counter()
    for _ in range(warmup):
        t.advance()
    sync(t.device)
    warm = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        t.advance()
    sync(t.device)
    f = t.fast
    note = (f"log_every {f.log_every}, adam {f.adam}" + ", compile" * f.compile
            + ", one CUDA graph" * (t.graph is not None and t.graph.graph is not None) + ", bf16" * f.amp
            + ", channels_last" * f.channels_last
            + (f"; compile fell back: {t.compile_error[:120]}" if t.compile_error else ""))
    return Measured(steps, time.perf_counter() - start, steps * t.cfg.batch_size,
                    time.process_time() - cpu), warm, note


def d_unfrozen(run: Callable[[], Any]) -> Any:
    """``run()`` with the G step computing D's weight gradients as the loop did before it froze
    D there (``trainer.loop.frozen``): the step that freeze saves, measured."""
    real = loop.frozen
    loop.frozen = lambda module, freeze=True: contextlib.nullcontext()  # type: ignore[assignment]
    try:
        return run()
    finally:
        loop.frozen = real


def loops(data: Split, steps: int, warmup: int, repeat: int, each_option: bool) -> None:
    """Naive loop, today's loop and the fast path (and each option alone), as a table with the
    ratio to the naive loop; rows run round-robin ``repeat`` times, medians printed."""
    data_dir = get_settings().data_dir
    rows: dict[str, Callable[[], tuple[Measured, float, str]]] = {
        "naive (DataLoader, .item() each step)": lambda: (
            naive_train(TrainConfig(), data_dir, steps=steps, warmup=warmup), 0.0, "DataLoader, 2 workers"),
        "today's loop (fast options off)": lambda: loop_rate(data, TODAY, steps, warmup, True),
        "fast path (defaults: auto)": lambda: loop_rate(data, {}, steps, warmup),
    }
    if torch.cuda.is_available():  # the two ways to CUDA graphs, and bf16 on the faster one
        rows["fast path, whole step in one CUDA graph (compile: graph)"] = lambda: loop_rate(
            data, GRAPH, steps, warmup)
        rows["fast path, compile: graph + bf16 autocast"] = lambda: loop_rate(
            data, {**GRAPH, "amp": "bf16"}, steps, warmup)
    if each_option:
        for name, change in OPTIONS.items():
            rows[name] = lambda change=change: loop_rate(  # type: ignore[misc]
                data, {**TODAY, **change}, steps, warmup)
        rows["today's loop, D's weight gradients in the G step (before 2026-11-29)"] = lambda: (
            d_unfrozen(lambda: loop_rate(data, TODAY, steps, warmup, True)))
    rates: dict[str, list[float]] = {name: [] for name in rows}
    cpu_ms: dict[str, list[float]] = {name: [] for name in rows}
    warm: dict[str, float] = {}
    notes: dict[str, str] = {}
    for _ in range(repeat):
        for name, run in rows.items():
            try:
                m, warm[name], notes[name] = run()
                rates[name].append(m.images_per_s)
                cpu_ms[name].append(1000 * m.cpu_seconds / m.steps)
            except Exception as exc:  # one row's failure (say, a compile error) is a row's result
                print(f"{name}: failed: {type(exc).__name__}: {exc}", flush=True)
    print(f"\n{steps} steps after {warmup} warm-up steps, median of {repeat}\n")
    print("| loop | images/s | steps/s | x naive | CPU ms/step | warm-up s | runs (images/s) | options |")
    print("|---|---|---|---|---|---|---|---|")
    naive = statistics.median(rates[next(iter(rows))] or [float("nan")])
    for name, got in rates.items():
        if not got:
            print(f"| {name} | failed | | | | | | |")
            continue
        med = statistics.median(got)
        print(f"| {name} | {med:.0f} | {med / 64:.1f} | {med / naive:.2f} | "
              f"{statistics.median(cpu_ms[name]):.1f} | {warm[name]:.1f} | "
              f"{', '.join(f'{r:.0f}' for r in got)} | {notes[name]} |", flush=True)


class Pauses:
    """A clock for training time: judging is paused out of it, for every job at once."""

    def __init__(self) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - began


class Goal(Callback):
    """Judges one job every ``every`` steps; stops it (``should_stop``) at label accuracy ``goal``,
    keeping the training seconds (``Pauses``) and the step it took."""

    def __init__(self, clock: Pauses, every: int, goal: float, data_dir: Path) -> None:
        self.clock, self.every, self.goal, self.data_dir = clock, every, goal, data_dir
        self.reached: tuple[int, float] | None = None

    def on_step_end(self, trainer: GANTrainer, logs: dict) -> None:
        if trainer.step % self.every:
            return
        sync(trainer.device)
        seconds = self.clock.elapsed()
        with self.clock.pause():
            acc = evaluate(torch_sampler(trainer.G_ema, trainer.device), latent_dim=trainer.cfg.latent_dim,
                           conditional=True, data_dir=self.data_dir, n=2000).label_accuracy or 0.0
        if acc >= self.goal and self.reached is None:
            self.reached = (trainer.step, seconds)

    def should_stop(self) -> bool:
        return self.reached is not None


def k_jobs(data: Split, k: int, max_steps: int, every: int, goal: float,
           changes: dict[str, Any]) -> str:
    """K reference-recipe jobs (seeds 0 .. K-1, ``changes`` to the spec) at once until each
    reaches ``goal``: a table row."""
    clock = Pauses()
    goals = [Goal(clock, every, goal, get_settings().data_dir) for _ in range(k)]
    trainers = [GANTrainer(TrainConfig(**{**changes, "seed": s, "steps": max_steps}), data,
                           callbacks=[g], should_stop=g.should_stop) for s, g in enumerate(goals)]
    torch.cuda.reset_peak_memory_stats()
    clock.start, clock.paused = time.perf_counter(), 0.0  # building the jobs is not training
    outcomes = MultiTrainer(trainers).fit()
    sync(trainers[0].device)
    seconds = clock.elapsed()
    images = sum(t.step * t.cfg.batch_size for t in trainers)
    times = [g.reached[1] for g in goals if g.reached]
    failed = [f"{o.trainer.cfg.seed}: {o.error}" for o in outcomes if o.state == "failed"]
    per_job = (f"{statistics.median(times):.1f} / {max(times):.1f}" if times else "-")
    mode = ", ".join(f"{key} {value}" for key, value in changes.items()) or "defaults"
    return (f"| {k} ({mode}) | {images / seconds:.0f} | {seconds:.1f} | {len(times)}/{k} | {per_job} | "
            f"{torch.cuda.max_memory_allocated() / 2**30:.2f} | {'; '.join(failed) or '-'} |")


def nvidia_driver() -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "unknown (no nvidia-smi)"
    out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def gpu_report(data_dir: Path, steps: int, warmup: int, max_steps: int, every: int,
               ks: list[int]) -> None:
    """The issue-15 GPU report; says so and measures nothing where there is no CUDA device."""
    if not torch.cuda.is_available():
        print(f"no CUDA device here (torch {torch.__version__}): the GPU report needs one and "
              "measured nothing; its table in BENCHMARKS.md stays empty")
        return
    print(f"# card: {torch.cuda.get_device_name()} | driver {nvidia_driver()} | torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}) | {platform.machine()}, {torch.get_num_threads()} CPU threads")
    print(f"# command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# date: {time.strftime('%Y-%m-%d %H:%M %Z')}", flush=True)
    data = load_mnist(data_dir)
    loops(data, steps, warmup, repeat=1, each_option=False)
    print(f"\nK jobs at once (seeds 0..K-1, the fast path), each stopped at label accuracy 0.95, judged "
          f"every {every} steps on 2,000 samples (judging excluded), at most {max_steps} steps\n")
    print("| K | total images/s | wall s | reached 0.95 | s to 0.95 per job (median / max) | "
          "peak GiB | failed |")
    print("|---|---|---|---|---|---|---|")
    runs = [(k, GRAPH) for k in ks] + [(1, {}), (1, {**GRAPH, "amp": "bf16"})]
    for k, changes in runs:
        try:
            print(k_jobs(data, k, max_steps, every, 0.95, changes), flush=True)
        except Exception as exc:  # keep the rows measured so far
            print(f"| {k} | failed: {type(exc).__name__}: {exc} | | | | | |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--gpu-report", action="store_true", help="the issue-15 GPU report (CUDA only)")
    p.add_argument("--each-option", action="store_true", help="loops: each fast option alone too")
    p.add_argument("--repeat", type=int, default=1, help="loops: rounds, medians printed")
    p.add_argument("--warmup", type=int, default=10, help="loops: warm-up steps (compilation)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16], help="GPU report: jobs at once")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per point (loops: 100, GPU report: 300, throughput: 150)")
    p.add_argument("--max-steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--submit", type=int, nargs="+", metavar="STEPS",
                   help="time queued jobs of the reference recipe with these step counts")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu_report:
        gpu_report(get_settings().data_dir, args.steps or 300, max(args.warmup, 20),
                   min(args.max_steps, 3000), args.every, args.ks)
        return
    if args.submit:
        submitted(args.submit)
        return
    data = load_mnist(get_settings().data_dir)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {dev}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    if args.throughput:
        throughput(data, args.steps or 150)
    if args.quality:
        quality(data, args.max_steps, args.every, args.seed)
    if not (args.throughput or args.quality):
        loops(data, args.steps or 100, args.warmup, args.repeat, args.each_option)


if __name__ == "__main__":
    main()
