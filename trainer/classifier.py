"""The evaluator's judge: a small MNIST CNN trained by the project itself.

Its weights ship in ``trainer/assets/mnist_cnn.pt``; ``ganforge classifier`` reproduces them
(3 epochs, seed 0, about 5 minutes on 2 CPU cores). Its 128-d penultimate layer is the feature
space of the Frechet classifier distance (FCD).
"""

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.files import atomic_write
from trainer.data import Split

WEIGHTS = Path(__file__).parent / "assets" / "mnist_cnn.pt"
FEATURES = 128


class MnistCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            block(1, 32),  # (N, 32, 14, 14)
            block(32, 64),  # (N, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, FEATURES),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.classify = nn.Linear(FEATURES, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [-1, 1], shape (N, 1, 28, 28)."""
        return self.classify(self.dropout(self.features(x)))


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero padding is -1, the background)."""
    n = x.shape[0]
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    side = x.shape[-1]
    rows = (dy[:, None] + torch.arange(side))[:, :, None]  # (N, 28, 1)
    cols = (dx[:, None] + torch.arange(side))[:, None, :]  # (N, 1, 28)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def predict(model: MnistCNN, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logits, penultimate features)`` for images in [-1, 1]."""
    model.eval()
    logits, feats = [], []
    for i in range(0, images.shape[0], batch):
        f = model.features(images[i : i + batch])
        feats.append(f)
        logits.append(model.classify(f))
    return torch.cat(logits), torch.cat(feats)


def accuracy(model: MnistCNN, split: Split) -> float:
    logits, _ = predict(model, split.normalized())
    return float((logits.argmax(1) == split.labels).float().mean())


def train_classifier(train: Split, test: Split, epochs: int = 3, seed: int = 0,
                     batch_size: int = 128, log=print) -> tuple[MnistCNN, dict[str, Any]]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = len(train) // batch_size
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
    info = {"test_accuracy": accuracy(model, test), "epochs": epochs, "seed": seed,
            "seconds": round(time.perf_counter() - start, 1)}
    return model, info


def save(model: MnistCNN, info: dict[str, Any], path: Path = WEIGHTS) -> None:
    with atomic_write(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "info": info}, tmp)


def load(path: Path = WEIGHTS) -> MnistCNN:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = MnistCNN()
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def main(data_dir: Path, epochs: int = 3, seed: int = 0, out: Path = WEIGHTS) -> dict[str, Any]:
    """Train the judge on the train split, report test accuracy, write the weights atomically."""
    from trainer.data import load_mnist

    train, test = load_mnist(data_dir, train=True), load_mnist(data_dir, train=False)
    model, info = train_classifier(train, test, epochs=epochs, seed=seed)
    save(model, info, out)
    return info
