"""Train, export, evaluate and register recipes end to end; print quality and wall time.

    python bench/quality.py                       # the three recipes of BENCHMARKS.md
    python bench/quality.py --recipe reference --steps 3500

Each recipe runs the same pipeline as ``ganforge train`` (train, ONNX export with parity check,
evaluation on 10,000 samples, registration) in a throwaway model store and run directory, and
prints one markdown row: label accuracy, class KL, FCD next to the real-data baseline, training
seconds and total wall seconds (train + export + evaluation + registration).
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from ganforge.spec import TrainConfig  # imports no bentoml: BENTOML_HOME is set below first

RECIPES: dict[str, dict] = {
    # the defaults of TrainConfig: what `ganforge train` runs with no options
    "reference": {"family": "dcgan", "conditional": True},
    "mlp": {"family": "mlp", "conditional": False},
    "mlp-cond": {"family": "mlp", "conditional": True},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES))
    p.add_argument("--steps", type=int, default=TrainConfig.model_fields["steps"].default)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-samples", type=int, default=10_000)
    args = p.parse_args()

    home = tempfile.mkdtemp(prefix="ganforge-bench-")
    os.environ["BENTOML_HOME"] = os.path.join(home, "bentoml")  # before bentoml is imported
    import torch

    from ganforge.settings import get_settings
    from trainer import pipeline

    settings = get_settings()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| recipe | steps | seed | label acc | class KL | FCD (baseline) | train s | total s | stage |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.recipe or list(RECIPES):
        cfg = TrainConfig(**RECIPES[name], steps=args.steps, seed=args.seed, device=args.device)
        start = time.perf_counter()
        result = pipeline.run(cfg, Path(home) / "runs" / name, settings=settings,
                              eval_samples=args.eval_samples, progress_bar=False)
        total = time.perf_counter() - start
        r = result.report
        acc = "-" if r.label_accuracy is None else f"{r.label_accuracy:.4f}"
        print(f"| {name} | {cfg.steps} | {cfg.seed} | {acc} | {r.class_kl:.4f} | "
              f"{r.fcd:.2f} ({r.fcd_baseline:.2f}) | {result.train_seconds:.0f} | {total:.0f} | "
              f"{result.stage} |", flush=True)


if __name__ == "__main__":
    main()
