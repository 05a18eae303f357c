"""Milliseconds a training step of each TrainConfig change, against the first, on this machine.

    python bench/step_time.py '{}' '{"d_label_spread": true}' '{"width": 48}'
    python bench/step_time.py '{}' '{"variant": "flathead"}'
    python bench/step_time.py '{}' '{"callbacks": true}' --steps 500 --rounds 2

Each config gets its own trainer on the real data set (the loop ``ganforge train`` runs, with
no callbacks unless asked: no judging, sampling or checkpointing); the configs take turns for ``--rounds``
rounds of ``--steps`` steps after ``--warmup`` steps each, so a machine that slows down mid-run
slows them all, and the medians are printed with each one's ratio to the first config and the
median of its round-by-round ratios to the first config's same rounds (steadier where the
machine's speed drifts: each ratio's two sides ran seconds apart). What a
sweep needs to give a slower change the same seconds as the recipe (``bench/sweep.py --steps``).
A config's ``"variant"`` key builds that architecture variant of ``bench/variants.py`` instead;
``"callbacks": true`` hangs the pipeline's checkpoint, sample grid and loss history off it, as
``ganforge train`` does, writing to a temporary folder (their cost, at the config's
``checkpoint_every`` and ``sample_every``: make the rounds as long as those to count each once).
Every trainer is driven as ``fit`` drives it (``begin``, then ``advance``: a step and its
callbacks). The process's malloc is set as a training process's (``Settings.malloc_keep``:
``GANFORGE_MALLOC_KEEP=false`` leaves glibc's defaults, to compare the two in two runs); each
config's minor page faults and system CPU time a step (``getrusage`` over its rounds) are printed
beside its time.
"""

import argparse
import json
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import variants  # bench/variants.py, beside this script
from train import sync  # bench/train.py, beside this script

from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from trainer.data import load_dataset
from trainer.fastpath import keep_freed_memory
from trainer.loop import GANTrainer
from trainer.pipeline import run_callbacks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="JSON objects of TrainConfig changes")
    p.add_argument("--steps", type=int, default=30, help="steps a round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = get_settings()
    kept = settings.malloc_keep and keep_freed_memory()
    print(f"# {platform.node()} {device} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')} | {args.rounds} rounds of {args.steps} steps, "
          f"{args.warmup} warm-up | malloc: {'kept' if kept else 'as it is'}", flush=True)
    data = load_dataset("mnist", settings.data_dir, train=True)
    steps = args.warmup + args.rounds * args.steps
    runs = Path(tempfile.mkdtemp(prefix="step_time-"))
    trainers = []
    for i, c in enumerate(args.configs):
        changes = json.loads(c)
        variant, with_callbacks = changes.pop("variant", "none"), changes.pop("callbacks", False)
        changes = variants.config(variant, changes)
        cfg = TrainConfig(**{"steps": steps, "device": device.type, **changes})
        callbacks = run_callbacks(cfg, runs / f"config-{i}") if with_callbacks else []
        with variants.building(variant):
            trainers.append(GANTrainer(cfg, data, callbacks=callbacks))
    for t in trainers:
        t.begin()
        for _ in range(args.warmup):
            t.advance()
    times: list[list[float]] = [[] for _ in trainers]
    faults, system = [0] * len(trainers), [0.0] * len(trainers)  # over each config's rounds
    for _ in range(args.rounds):
        for i, (t, seen) in enumerate(zip(trainers, times, strict=True)):
            sync(device)
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            for _ in range(args.steps):
                t.advance()
            sync(device)
            seen.append((time.perf_counter() - start) / args.steps * 1000)
            after = resource.getrusage(resource.RUSAGE_SELF)
            faults[i] += after.ru_minflt - before.ru_minflt
            system[i] += after.ru_stime - before.ru_stime
    first = statistics.median(times[0])
    steps = args.rounds * args.steps
    print("| config | ms a step (median) | rounds | against the first | round by round | "
          "page faults a step | system ms a step |")
    print("|---|---|---|---|---|---|---|")
    for i, (config, seen) in enumerate(zip(args.configs, times, strict=True)):
        ms = statistics.median(seen)
        # each round against the first config's same round (the configs take turns within one,
        # so a machine that slows for a while slows both sides of each ratio)
        paired = statistics.median(s / f for s, f in zip(seen, times[0], strict=True))
        print(f"| `{config}` | {ms:.1f} | {', '.join(f'{s:.1f}' for s in seen)} | {ms / first:.2f}x | "
              f"{paired:.2f}x | {faults[i] / steps:.0f} | {system[i] / steps * 1000:.1f} |")
    shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
