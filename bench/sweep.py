"""Recipe sweep: train several configs side by side and judge the EMA generator as it learns.

    python bench/sweep.py --steps 3000 --eval-every 1000 --samples 2000 \
        '{}' '{"loss": "bce"}' '{"beta1": 0.0, "beta2": 0.9}'

Each positional argument is a JSON object of TrainConfig changes from the defaults (the reference
recipe). Prints, per config and checkpoint step, label accuracy, class KL, FCD and wall time.
This is how the reference recipe was chosen (README, "The reference recipe").
"""

import argparse
import json
import platform
import time

import torch

from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from trainer.data import load_mnist
from trainer.evaluate import evaluate, torch_sampler
from trainer.loop import Callback, GANTrainer


class Judge(Callback):
    def __init__(self, every: int, samples: int, data_dir, rows: list, name: str) -> None:
        self.every, self.samples, self.data_dir, self.rows, self.name = every, samples, data_dir, rows, name
        self.start = time.perf_counter()
        self.eval_seconds = 0.0

    def on_step_end(self, trainer: GANTrainer, logs: dict) -> None:
        if trainer.step % self.every:
            return
        t0 = time.perf_counter()
        r = evaluate(torch_sampler(trainer.G_ema, trainer.device),
                     latent_dim=trainer.cfg.latent_dim, conditional=trainer.cfg.conditional,
                     data_dir=self.data_dir, n=self.samples)
        self.eval_seconds += time.perf_counter() - t0
        train_s = time.perf_counter() - self.start - self.eval_seconds
        row = {"config": self.name, "step": trainer.step, "acc": r.label_accuracy,
               "kl": r.class_kl, "fcd": r.fcd, "train_s": round(train_s, 1)}
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+", help="JSON objects of TrainConfig changes")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--samples", type=int, default=2000)
    args = p.parse_args()
    settings = get_settings()
    data = load_mnist(settings.data_dir, train=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# {platform.node()} {device} torch {torch.__version__} threads {torch.get_num_threads()}")
    rows: list = []
    for spec in args.configs:
        changes = json.loads(spec)
        cfg = TrainConfig(**{"steps": args.steps, "device": device, **changes})
        GANTrainer(cfg, data, callbacks=[Judge(args.eval_every, args.samples, settings.data_dir,
                                               rows, spec)]).fit()
    print("# final")
    for row in rows:
        if row["step"] == args.steps:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
