"""Issue 13's first figure: a Fashion-MNIST generator's served images, asked for by class name,
read by an independent classifier.

    GANFORGE_DATA_DIR=../shared/data .venv/bin/python bench/fashion_check.py
    .venv/bin/python bench/fashion_check.py --model fashion-mnist-dcgan-cond:TAG  # BENTOML_HOME's

1. Trains the issue's run in a throwaway model store, timed (unless ``--model`` names one in
   ``BENTOML_HOME``): ``ganforge train --dataset fashion-mnist --family dcgan --conditional
   --steps 3000 --device cpu --seed 0``. Its judge is trained first if the store has none.
2. Trains the independent classifier: not the project's judge (``trainer/classifier.py``'s
   JudgeCNN, 3 epochs, no augmentation), but a wider CNN (three conv blocks with BatchNorm,
   dropout), trained with random flips and shifts, another seed and more epochs; prints its
   accuracy on the real test split, the ceiling of what it can read.
3. Starts ``ganforge serve`` on that store and asks ``GET /generate?label=<class name>&model=TAG
   &seed=i`` for ``--per-class`` seeds per class; classifies each PNG it gets back.
4. Prints, per class and overall, the share read as the class asked for, next to the model
   card's own-judge label accuracy, FCD and real baseline. Exits 1 below ``--target`` (0.90).
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from serve import free_port, start, stop
from torch import nn

from ganforge.settings import get_settings
from trainer.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]


class Reader(nn.Module):
    """The independent classifier: 3 x (conv, BN, ReLU, conv, BN, ReLU, pool), dropout, linear."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, 32), block(32, 64), block(64, 128))  # 28 -> 14 -> 7 -> 3
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 3 * 3, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 2 pixels (per batch)."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
    return torch.roll(F.pad(x, (2, 2, 2, 2), value=-1.0), (dy, dx), (2, 3))[..., 2:30, 2:30]


def train_reader(data_dir: Path, epochs: int, seed: int) -> tuple[Reader, float, float]:
    """(the classifier, its real test accuracy, seconds)."""
    start_t = time.perf_counter()
    train = load_dataset("fashion-mnist", data_dir, train=True)
    test = load_dataset("fashion-mnist", data_dir, train=False)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Reader(len(train.class_names))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (len(train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    x_all, y_all = to_input(train.images), train.labels
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(len(train) // 128):
            idx = order[i * 128 : (i + 1) * 128]
            loss = F.cross_entropy(model(augment(x_all[idx], g)), y_all[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, test.images, test.labels)
        print(f"reader epoch {epoch + 1}/{epochs}: real test accuracy {acc:.4f} "
              f"({time.perf_counter() - start_t:.0f} s)", flush=True)
    return model, acc, time.perf_counter() - start_t


@torch.no_grad()
def predict(model: Reader, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(to_input(images[i : i + 1000])).argmax(1)
                      for i in range(0, len(images), 1000)])


def accuracy(model: Reader, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, images) == labels).float().mean())


def train_generator(env: dict[str, str], steps: int, seed: int) -> tuple[str, float, dict]:
    """The issue's command; (tag, wall seconds, the CLI's JSON result)."""
    cmd = [str(Path(sys.executable).with_name("ganforge")), "train", "--dataset", "fashion-mnist",
           "--family", "dcgan", "--conditional", "--steps", str(steps), "--device", "cpu",
           "--seed", str(seed), "--json", "--no-progress"]
    print("$", " ".join(cmd[1:]), flush=True)
    began = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if out.returncode:
        raise SystemExit(f"training failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    return result["tag"], wall, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model in BENTOML_HOME (default: train one, throwaway store)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", type=int, default=100, help="served images per class")
    p.add_argument("--reader-epochs", type=int, default=6)
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--reader", type=Path, help="keep the trained reader here, or reuse it")
    args = p.parse_args()
    data_dir = get_settings().data_dir
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "GANFORGE_DATA_DIR": str(data_dir)}
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="ganforge-fashion-"))
    if args.model:
        tag, trained = args.model, None
    else:
        env["BENTOML_HOME"] = str(tmp / "bentoml")
        tag, wall, trained = train_generator(env, args.steps, args.seed)
        print(f"trained and registered {tag} (stage {trained['stage']}) in {wall:.0f} s wall, "
              f"{trained['train_seconds']:.0f} s of training", flush=True)
    if "BENTOML_HOME" in env:  # this process reads the same store (before bentoml is imported)
        os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]
    from ganforge import store

    card = store.get_model(tag).card
    names, metrics = list(card.class_names), dict(card.metrics)
    if args.reader and args.reader.exists():  # a reader trained before (same recipe): reuse it
        saved = torch.load(args.reader, weights_only=True)
        reader = Reader(len(names))
        reader.load_state_dict(saved["state_dict"])
        real_acc = saved["test_accuracy"]
        print(f"independent reader from {args.reader}: real test accuracy {real_acc:.4f} "
              f"({saved['epochs']} epochs)", flush=True)
    else:
        reader, real_acc, secs = train_reader(data_dir, args.reader_epochs, seed=1234)
        print(f"independent reader: real test accuracy {real_acc:.4f} after {secs:.0f} s", flush=True)
        if args.reader:
            torch.save({"state_dict": reader.state_dict(), "test_accuracy": real_acc,
                        "epochs": args.reader_epochs}, args.reader)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start([str(Path(sys.executable).with_name("ganforge")), "serve", "--port", str(port),
                    "--host", "127.0.0.1"], env, url + "/readyz", tmp / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            asked, images = [], []
            for c, name in enumerate(names):
                for s in range(args.per_class):
                    r = client.get("/generate", params={"label": name, "model": tag, "seed": s})
                    r.raise_for_status()
                    images.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("L")))
                    asked.append(c)
    finally:
        stop(server)
    read = predict(reader, torch.from_numpy(np.stack(images))[:, None])
    asked_t = torch.tensor(asked)
    hits = (read == asked_t).float()
    overall = float(hits.mean())
    print(f"\n{len(asked)} served images ({args.per_class} a class, GET /generate?label=NAME&model="
          f"{tag}&seed=0..{args.per_class - 1}), read by the independent classifier:\n")
    print("| class | read as asked |")
    print("|---|---|")
    for c, name in enumerate(names):
        print(f"| {name} | {float(hits[asked_t == c].mean()):.3f} |")
    print(f"| **all** | **{overall:.4f}** |")
    print(f"\nthe project's own judge (model card): label accuracy {metrics.get('label_accuracy')}, "
          f"class KL {metrics.get('class_kl')}, FCD {metrics.get('fcd')} against a real baseline "
          f"of {metrics.get('fcd_baseline')} (judge's own real test accuracy "
          f"{metrics.get('judge_accuracy')})")
    ok = overall >= args.target
    print(f"target: >= {args.target:.2f} read as asked: {'met' if ok else 'missed'} ({overall:.4f})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
