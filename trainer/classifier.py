"""The evaluator's judge: a small CNN trained by the project itself, one per labelled set.

MNIST's weights ship in ``trainer/assets/mnist_cnn.pt``; ``ganforge classifier`` reproduces them
(3 epochs, seed 0, about 5 minutes on 2 CPU cores). Other sets (and other shapes) get the same
network for C channels, side S and K classes, trained by ``ganforge classifier --dataset NAME``
and kept in the model store (``trainer/judges.py``). Its 128-d penultimate layer is the feature
space of the Frechet classifier distance (FCD).
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.files import atomic_write
from trainer.data import Split

WEIGHTS = Path(__file__).parent / "assets" / "mnist_cnn.pt"
FEATURES = 128
WIDEST = 32  # channels of the first block, whose maps are at the full side
# The judge's widest activation (WIDEST channels at full side, float32) per forward, at most:
# ~10 MiB (104 MNIST images) stays on the heap from batch to batch, where 1000 images (100 MB a
# layer, past malloc's mmap threshold) were faulted in afresh every layer, half the CPU time in
# the kernel (BENCHMARKS.md, "The judge in small batches").
ACTIVATION_BYTES = 10 * 2**20


def judge_batch(image_size: int) -> int:
    """Images a judge forward takes at once at this side."""
    return max(1, ACTIVATION_BYTES // (WIDEST * image_size * image_size * 4))


class JudgeCNN(nn.Module):
    """Two conv blocks (each halving the side) and a 128-d feature layer; MNIST's is 1x28x28
    with 10 classes, and its parameter names are those of the shipped weights."""

    def __init__(self, channels: int = 1, image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.shape = (channels, image_size, image_size)
        self.num_classes = num_classes

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(channels, WIDEST),  # (N, 32, S/2, S/2): 14 for MNIST
            block(WIDEST, 64),  # (N, 64, S/4, S/4): 7
            nn.Flatten(),
            nn.Linear(64 * (image_size // 4) ** 2, FEATURES),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.classify = nn.Linear(FEATURES, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [-1, 1], shape (N, C, S, S)."""
        return self.classify(self.dropout(self.features(x)))

    def arch(self) -> dict[str, int]:
        c, s, _ = self.shape
        return {"channels": c, "image_size": s, "num_classes": self.num_classes}


MnistCNN = JudgeCNN  # the name before sets had channels


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding is -1, the background)."""
    n = x.shape[0]
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    side = x.shape[-1]
    rows = (dy[:, None] + torch.arange(side))[:, :, None]  # (N, S, 1)
    cols = (dx[:, None] + torch.arange(side))[:, None, :]  # (N, 1, S)
    # advanced indices around a slice put their dims first: (N, S, S, C) -> (N, C, S, S)
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def predict(model: JudgeCNN, images: torch.Tensor,
            batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits, penultimate features)`` for images in [-1, 1], ``batch`` images a
    forward (default: ``judge_batch``; an image's outputs do not depend on it)."""
    model.eval()
    batch = batch or judge_batch(model.shape[1])
    logits, feats = [], []
    for i in range(0, images.shape[0], batch):
        f = model.features(images[i : i + batch])
        feats.append(f)
        logits.append(model.classify(f))
    return torch.cat(logits), torch.cat(feats)


def predict_split(model: JudgeCNN, split: Split, index: torch.Tensor | None = None,
                  batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`predict` over a uint8 split (or the ``index`` rows of it), normalised a batch at a
    time: a colour 64x64 test split as floats would take gigabytes at once."""
    rows = torch.arange(len(split)) if index is None else index
    parts = [predict(model, split.normalized(rows[i : i + batch])) for i in range(0, len(rows), batch)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def accuracy(model: JudgeCNN, split: Split) -> float:
    logits, _ = predict_split(model, split)
    return float((logits.argmax(1) == split.labels).float().mean())


def train_classifier(train: Split, test: Split, epochs: int = 3, seed: int = 0, batch_size: int = 128,
                     log: Callable[[str], Any] = print) -> tuple[JudgeCNN, dict[str, Any]]:
    """Train a judge for ``train``'s shape and classes (MNIST: the shipped recipe)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = JudgeCNN(train.channels, train.image_size, train.num_classes or 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch_size = min(batch_size, len(train))
    steps_per_epoch = max(len(train) // batch_size, 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = random_shift(train.normalized(idx), 2, gen)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy(model, test):.4f}")
    info = {"test_accuracy": round(accuracy(model, test), 5), "epochs": epochs, "seed": seed,
            "train_images": len(train), "seconds": round(time.perf_counter() - start, 1)}
    return model, info


def save(model: JudgeCNN, info: dict[str, Any], path: Path = WEIGHTS) -> None:
    with atomic_write(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "info": info, "arch": model.arch()}, tmp)


def load(path: Path = WEIGHTS) -> JudgeCNN:
    """A saved judge; files without ``arch`` (the shipped MNIST weights) are 1x28x28, 10 classes."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # no random initialisation: it would draw from the global RNG,
        model = JudgeCNN(**ckpt.get("arch", {}))  # which training jobs beside this one use
    model.load_state_dict(ckpt["state_dict"], assign=True)
    return model.eval()


def main(data_dir: Path, epochs: int = 3, seed: int = 0, out: Path = WEIGHTS) -> dict[str, Any]:
    """Train the judge on the train split, report test accuracy, write the weights atomically."""
    from trainer.data import load_mnist

    train, test = load_mnist(data_dir, train=True), load_mnist(data_dir, train=False)
    model, info = train_classifier(train, test, epochs=epochs, seed=seed)
    save(model, info, out)
    return info
