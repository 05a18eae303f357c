"""What hangs off the training loop: checkpoints, sample grids, loss history, progress bar."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ganforge.files import atomic_write
from ganforge.images import make_grid, save_png, to_uint8
from trainer.checkpoint import CHECKPOINT_NAME, save_checkpoint
from trainer.loop import Callback, GANTrainer


class Checkpointer(Callback):
    """Writes ``run_dir/checkpoint.pt`` every ``every`` steps and when training ends."""

    def __init__(self, run_dir: Path, every: int) -> None:
        self.path, self.every = Path(run_dir) / CHECKPOINT_NAME, every
        self.last_step = -1

    def save(self, trainer: GANTrainer) -> None:
        if trainer.step != self.last_step:
            save_checkpoint(trainer.state_dict(), self.path)
            self.last_step = trainer.step

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        if trainer.step % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer: GANTrainer, cancelled: bool) -> None:
        self.save(trainer)


class SampleGrid(Callback):
    """Writes ``samples/step-XXXXXX.png``: the EMA generator on the fixed batch (MNIST: 10x10,
    a row per digit; ``loop.grid_labels``), grey or colour as the model draws.

    ``realness``: print D's realness score (the sigmoid of its logit, 0-1) in a strip above each
    image, as the EMNIST-letters tutorial's grids do: which fakes D still sees through.
    """

    def __init__(self, run_dir: Path, every: int, *, realness: bool = False) -> None:
        self.dir, self.every = Path(run_dir) / "samples", every
        self.realness = realness
        self.latest: Path | None = None

    def write(self, trainer: GANTrainer) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"step-{trainer.step:06d}.png"
        images = trainer.sample_fixed()
        pixels = to_uint8(images.numpy())
        if self.realness:
            pixels = with_scores(pixels, realness(trainer, images))
        save_png(make_grid(pixels, nrow=trainer.grid_columns), path)
        self.latest = path

    def on_train_start(self, trainer: GANTrainer) -> None:
        if trainer.step == 0:
            self.write(trainer)

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        if trainer.step % self.every == 0:
            self.write(trainer)

    def on_train_end(self, trainer: GANTrainer, cancelled: bool) -> None:
        if self.latest is None or self.latest.name != f"step-{trainer.step:06d}.png":
            self.write(trainer)


SCORE_STRIP = 11  # pixels above each image for its score: the default font is 10 px high


@torch.no_grad()
def realness(trainer: GANTrainer, images: torch.Tensor) -> np.ndarray:
    """D's probability that each image is real, in eval mode (no dropout, no spectral-norm
    power step, so the training run is not changed by drawing a grid)."""
    was_training = trainer.D.training
    trainer.D.eval()
    try:
        logits = trainer.D(images.to(trainer.device), trainer.fixed_labels)
    finally:
        trainer.D.train(was_training)
    return torch.sigmoid(logits).cpu().numpy()


def with_scores(pixels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each uint8 image (N, H, W) or (N, H, W, 3) with a black strip above it holding its score
    ("0.87") in white, in Pillow's default font, so the grid reads as score over image."""
    font = ImageFont.load_default()
    out = []
    for image, score in zip(pixels, scores, strict=True):
        strip = Image.new("L" if image.ndim == 2 else "RGB", (image.shape[1], SCORE_STRIP))
        ImageDraw.Draw(strip).text((1, 0), f"{score:.2f}", fill="white", font=font)
        out.append(np.concatenate([np.asarray(strip), image], axis=0))
    return np.stack(out)


class History(Callback):
    """Appends each step's losses to ``history.jsonl``; redraws ``losses.png`` every ``every``.

    On resume, records past the checkpoint's step (written before a crash) are dropped, so the
    file always describes the run that the checkpoint continues.
    """

    def __init__(self, run_dir: Path, every: int) -> None:
        self.path = Path(run_dir) / "history.jsonl"
        self.plot_path = Path(run_dir) / "losses.png"
        self.every = every
        self.buffer: list[str] = []

    def on_train_start(self, trainer: GANTrainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in self.read() if line["step"] <= trainer.step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def read(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def flush(self) -> None:
        with open(self.path, "a") as f:
            f.writelines(self.buffer)
        self.buffer.clear()

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        record = {k: (int(v) if k == "step" else round(v, 5)) for k, v in logs.items()}
        self.buffer.append(json.dumps(record) + "\n")
        if trainer.step % self.every == 0:
            self.flush()
            plot_losses(self.read(), self.plot_path)

    def on_train_end(self, trainer: GANTrainer, cancelled: bool) -> None:
        self.flush()
        plot_losses(self.read(), self.plot_path)


def plot_losses(records: list[dict[str, float]], path: Path) -> None:
    """D and G loss curves (raw and smoothed) against the step."""
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in records])
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for key, color in (("d_loss", "tab:blue"), ("g_loss", "tab:orange")):
        y = np.array([r[key] for r in records])
        ax.plot(steps, y, color=color, alpha=0.25, linewidth=0.8)
        win = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(win) / win, mode="valid")
        ax.plot(steps[win - 1 :], smooth, color=color, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, fsync=False) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


class ProgressBar(Callback):
    """A tqdm bar: step, D and G losses, images/s."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar = None

    def on_train_start(self, trainer: GANTrainer) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, desc="train",
                        unit="step", disable=self.disable, dynamic_ncols=True)

    def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
        assert self.bar is not None
        self.bar.update(1)
        if trainer.step % 10 == 0 or trainer.step == trainer.cfg.steps:
            self.bar.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_loss']:.3f}",
                                 img_s=f"{logs['images_per_s']:.0f}", refresh=False)

    def on_train_end(self, trainer: GANTrainer, cancelled: bool) -> None:
        if self.bar is not None:
            self.bar.close()
