"""The naive baseline: the tutorials' training loop on the reference recipe's model.

    .venv/bin/python bench/naive_train.py --steps 100            # images/s on the auto device

pytorch/examples' DCGAN (and most GAN tutorials) train like this: a torchvision dataset with a
``ToTensor``/``Normalize`` transform, a shuffling ``DataLoader`` with worker processes, one job
at a time, and ``.item()`` on the losses every step. This file does exactly that, with the same
networks, losses (with the lazy R1 penalty and the class loss), optimiser settings and EMA as
the reference recipe (``TrainConfig()``), so that ``bench/train.py`` can put the project's loop
and its fast path next to it as ratios measured in one run. It trains nothing anyone keeps.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from ganforge.settings import get_settings
from ganforge.spec import TrainConfig
from models.losses import class_loss, r1_penalty
from trainer.loop import architecture, discriminate

NUM_CLASSES = 10  # MNIST, the set the tutorials train on


@dataclass(frozen=True)
class Measured:
    steps: int
    seconds: float
    images: int
    cpu_seconds: float = 0.0  # this process's CPU time (user + system): steadier than wall
    # time on a machine others share; the DataLoader's worker processes are not in it

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def mnist_loader(data_dir: Path, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """The tutorials' input pipeline: PIL images through transforms, shuffled by a DataLoader."""
    import torchvision
    from torchvision import transforms

    dataset = torchvision.datasets.MNIST(
        root=str(data_dir), train=True, download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True)


def naive_train(cfg: TrainConfig, data_dir: Path, *, steps: int, warmup: int = 10,
                workers: int = 2, device: str | None = None, verbose: bool = False) -> Measured:
    """Train ``warmup + steps`` steps the tutorials' way; time the last ``steps``."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    G, D = (m.to(dev) for m in models.build(cfg.family, architecture(cfg, NUM_CLASSES)))
    G_ema = models.build(cfg.family, architecture(cfg, NUM_CLASSES))[0].to(dev)
    G_ema.load_state_dict(G.state_dict())
    loss = models.LOSSES[cfg.loss]
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    loader = mnist_loader(data_dir, cfg.batch_size, workers)
    step, start, cpu = 0, 0.0, 0.0
    while step < warmup + steps:
        for real, labels in loader:
            if step == warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start, cpu = time.perf_counter(), time.process_time()
            real, labels = real.to(dev), labels.to(dev)
            z = torch.randn(real.shape[0], cfg.latent_dim, device=dev)
            fake = G(z, labels)
            r1_due = cfg.r1_gamma > 0 and step % cfg.r1_every == 0  # the recipe's lazy R1
            real.requires_grad_(r1_due)
            d_real, classes = discriminate(D, real, labels, bool(cfg.class_loss))
            err_d = loss.d_loss(d_real, D(fake.detach(), labels), cfg.real_label)
            if classes is not None:  # the recipe's class loss
                err_d = err_d + cfg.class_loss * class_loss(classes, labels)
            if r1_due:
                err_d = err_d + cfg.r1_gamma / 2 * cfg.r1_every * r1_penalty(d_real, real)
            opt_d.zero_grad()
            err_d.backward()
            opt_d.step()
            d_gen, classes = discriminate(D, fake, labels, bool(cfg.class_loss))
            err_g = loss.g_loss(d_gen)
            if classes is not None:
                err_g = err_g + cfg.class_loss * class_loss(classes, labels)
            opt_g.zero_grad()
            err_g.backward()
            opt_g.step()
            with torch.no_grad():
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
            d, g = err_d.item(), err_g.item()  # the tutorials print these every step
            if verbose and step % 50 == 0:
                print(f"[{step}] Loss_D: {d:.4f} Loss_G: {g:.4f}", flush=True)
            step += 1
            if step == warmup + steps:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return Measured(steps, time.perf_counter() - start, steps * cfg.batch_size, time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (the examples' 2)")
    p.add_argument("--device", choices=("cpu", "cuda"))
    args = p.parse_args()
    m = naive_train(TrainConfig(), get_settings().data_dir, steps=args.steps, warmup=args.warmup,
                    workers=args.workers, device=args.device, verbose=True)
    print(f"naive loop: {m.images_per_s:.0f} images/s, {m.steps_per_s:.1f} steps/s over {m.steps} steps")


if __name__ == "__main__":
    main()
