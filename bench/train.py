"""Training benchmark: images/s per family and loss, and time to quality of the reference recipe.

    .venv/bin/python bench/train.py --throughput            # each family x loss, 150 steps
    .venv/bin/python bench/train.py --quality --max-steps 6000
    .venv/bin/python bench/train.py --submit 1500 5500       # through the queue, end to end

Throughput: real images per second through D (batch x D steps per step), over the steps after
a 20-step warm-up, conditional models, batch 64, on the device `auto` picks (CUDA when present).
Time to quality: the reference recipe trains while the EMA generator is judged every
`--every` steps on 2,000 samples (judging time is excluded); printed are the training seconds
and steps at which label accuracy first reached 0.95 and 0.99. Add the pipeline's tail (ONNX
export, 10,000-sample evaluation and registration: ~16 s on 2 CPU cores) for a registered model.
"""

import argparse
import platform
import time

import torch

from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from trainer.data import load_mnist
from trainer.evaluate import evaluate, torch_sampler
from trainer.loop import Callback, GANTrainer


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--steps", type=int, default=150, help="steps per throughput point")
    p.add_argument("--max-steps", type=int, default=6000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--submit", type=int, nargs="+", metavar="STEPS",
                   help="time queued jobs of the reference recipe with these step counts")
    args = p.parse_args()
    if args.submit:
        submitted(args.submit)
        return
    data = load_mnist(get_settings().data_dir)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{dev}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    if args.throughput or not args.quality:
        throughput(data, args.steps)
    if args.quality:
        quality(data, args.max_steps, args.every, args.seed)


if __name__ == "__main__":
    main()
