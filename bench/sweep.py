"""Recipe sweep: train configs one after another and judge the EMA generator as it learns.

    python bench/sweep.py --steps 5000 --eval-every 500 --samples 2000 --final-samples 10000 \
        '{}' '{"ema_decay": 0.9995}' '{"lr_decay": "linear"}' '{"seed": 1}'
    python bench/sweep.py --steps 3500 --eval-every 1000 --ema 0.99,0.995 --variant deep7 \
        '{"r1_gamma": 0.2, "lr_g": 6e-4, "lr_d": 6e-4}'

Each positional argument is a JSON object of TrainConfig changes from the defaults (the reference
recipe; ``steps`` and ``seed`` may be among them). Every ``--eval-every`` steps the EMA generator
is judged on ``--samples`` samples (label accuracy, class KL, FCD, as ``ganforge evaluate``) and
at the last step on ``--final-samples`` (the pipeline's 10,000: the figure the quality gate and
BENCHMARKS.md use, against the real train-vs-test baseline at the same count). Training seconds
exclude judging. Each config ends with a summary line: steps and seconds to label accuracy
``--acc`` and to FCD ``<= --fcd`` (from the periodic judgements; at a smaller sample count FCD
reads higher, so a step first seen there is an upper bound) and the final figures.
``--ema`` judges, beside the trainer's EMA generator, EMA copies of fixed decays updated every
step (one run, several averages); ``--variant`` builds an architecture variant of
``bench/variants.py`` instead of the reference DCGAN.
This is how the reference recipe was chosen (README, "The reference recipe").
"""

import argparse
import copy
import json
import platform
import time

import torch
import variants  # bench/variants.py, beside this script

from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from trainer import judges
from trainer.data import load_dataset
from trainer.evaluate import evaluate, torch_sampler
from trainer.fastpath import keep_freed_memory
from trainer.judges import JudgeKey
from trainer.loop import Callback, GANTrainer, lerp_ema, recalibrate_bn


class Judge(Callback):
    """Judges the trainer's EMA generator every ``--eval-every`` steps into ``rows``; with
    ``--ema``, also EMA generators of fixed decays kept beside it (no warm-up), into
    ``ema_rows`` (the summary stays the trainer's own)."""

    def __init__(self, args: argparse.Namespace, data_dir, rows: list, name: str) -> None:
        self.args, self.data_dir, self.rows, self.name = args, data_dir, rows, name
        self.start = time.perf_counter()
        self.eval_seconds = 0.0
        self.emas: dict[float, torch.nn.Module] = {}
        self.ema_rows: list = []

    @torch.no_grad()
    def update_emas(self, trainer: GANTrainer) -> None:
        if not self.emas:
            self.emas = {d: copy.deepcopy(trainer.G).eval().requires_grad_(False) for d in self.args.ema}
        for decay, g in self.emas.items():
            lerp_ema(g, trainer.G, decay)

    def recalibrated(self, g: torch.nn.Module, trainer: GANTrainer) -> torch.nn.Module:
        g = copy.deepcopy(g)
        recalibrate_bn(g, latent_dim=trainer.arch.latent_dim, num_classes=trainer.arch.num_classes,
                       device=trainer.device, batches=self.args.bn_recal)
        return g

    def on_step_end(self, trainer: GANTrainer, logs: dict) -> None:
        if self.args.ema:
            self.update_emas(trainer)
        last = trainer.step == trainer.cfg.steps
        if trainer.step % self.args.eval_every and not last:
            return
        t0 = time.perf_counter()
        cfg = trainer.cfg
        n = self.args.final_samples if last else self.args.samples
        train_s = t0 - self.start - self.eval_seconds
        judged = [("trainer", trainer.G_ema, self.rows),
                  *((d, g, self.ema_rows) for d, g in self.emas.items())]
        if self.args.bn_recal:  # the same generators, BatchNorm statistics re-estimated
            judged += [(f"{ema}+bn", self.recalibrated(g, trainer), self.ema_rows)
                       for ema, g, _ in judged]
        for ema, g, rows in judged:
            r = evaluate(torch_sampler(g, trainer.device), latent_dim=cfg.latent_dim,
                         conditional=cfg.conditional, data_dir=self.data_dir, n=n,
                         dataset=cfg.dataset, image_size=cfg.image_size, channels=cfg.channels)
            row = {"config": self.name, "ema": ema, "step": trainer.step, "samples": n,
                   "acc": r.label_accuracy, "kl": r.class_kl, "fcd": r.fcd,
                   "baseline": r.fcd_baseline, "train_s": round(train_s, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        self.eval_seconds += time.perf_counter() - t0


def first(rows: list, ok) -> tuple[int | None, float | None]:
    hit = next((r for r in rows if ok(r)), None)
    return (hit["step"], hit["train_s"]) if hit else (None, None)


def summary(rows: list, args: argparse.Namespace) -> dict:
    final = rows[-1]
    acc_step, acc_s = first(rows, lambda r: (r["acc"] or 0) >= args.acc)
    fcd_step, fcd_s = first(rows, lambda r: r["fcd"] <= args.fcd)
    return {"config": final["config"], "final_step": final["step"], "final_s": final["train_s"],
            "acc": final["acc"], "kl": final["kl"], "fcd": final["fcd"],
            "baseline": final["baseline"], f"step_to_acc_{args.acc}": acc_step,
            f"s_to_acc_{args.acc}": acc_s, f"step_to_fcd_{args.fcd}": fcd_step,
            f"s_to_fcd_{args.fcd}": fcd_s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+", help="JSON objects of TrainConfig changes")
    p.add_argument("--steps", type=int, default=TrainConfig.model_fields["steps"].default)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--samples", type=int, default=2000, help="samples per periodic judgement")
    p.add_argument("--final-samples", type=int, default=10_000, help="samples at the last step")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--acc", type=float, default=0.99, help="label accuracy to time")
    p.add_argument("--fcd", type=float, default=7.1, help="FCD to time")
    p.add_argument("--json", help="also write every row and summary here")
    p.add_argument("--ema", type=lambda s: [float(d) for d in s.split(",")], default=[],
                   help="also judge EMA generators of these fixed decays, comma-separated (no warm-up)")
    p.add_argument("--bn-recal", type=int, default=0, metavar="BATCHES",
                   help="also judge each generator with its BatchNorm statistics re-estimated "
                        "over this many batches of 256 (trainer.loop.recalibrate_bn)")
    p.add_argument("--variant", default="none", choices=variants.VARIANTS,
                   help="an architecture variant (bench/variants.py) for every config")
    args = p.parse_args()
    settings = get_settings()
    if settings.malloc_keep:  # as a training process has it (trainer.pipeline.train)
        keep_freed_memory()
    variants.patch(args.variant)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# {platform.node()} {device} torch {torch.__version__} threads {torch.get_num_threads()} "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    out: list = []
    data_cache: dict = {}
    for spec in args.configs:
        changes = variants.config(args.variant, json.loads(spec))
        cfg = TrainConfig(**{"steps": args.steps, "device": device, "dataset": args.dataset,
                             **changes})
        key = (cfg.dataset, cfg.image_size, cfg.channels)
        if key not in data_cache:
            data_cache[key] = load_dataset(cfg.dataset, settings.data_dir, train=True,
                                           image_size=cfg.image_size, channels=cfg.channels)
            judges.ensure(JudgeKey(cfg.dataset, cfg.channels, cfg.image_size), settings.data_dir)
        rows: list = []
        judge = Judge(args, settings.data_dir, rows, spec)
        GANTrainer(cfg, data_cache[key], callbacks=[judge]).fit()
        line = {**summary(rows, args), "variant": args.variant}
        out.append({"rows": rows, "ema_rows": judge.ema_rows, "summary": line})
        print("# summary " + json.dumps(line), flush=True)
    print("# final")
    for run in out:
        print(json.dumps(run["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
