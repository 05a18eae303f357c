"""The GAN training loop: D and G steps alternated, k critic steps, EMA of G, exact resume.

The loop builds its models by family name and knows nothing else about them; checkpoints,
sample grids, loss history and progress hang off it as callbacks (``trainer/callbacks.py``).
A checkpoint is a plain dict; :meth:`GANTrainer.from_checkpoint` rebuilds everything from the
checkpoint's own config, never from today's defaults.
"""

import copy
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

import models
from ganforge import __version__
from ganforge.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from ganforge.spec import TrainConfig
from models.losses import gradient_penalty
from trainer.data import Split, batch_indices

CHECKPOINT_FORMAT = 1


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an input error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device", "cuda was requested but no CUDA device is available "
                           "(allowed here: auto, cpu)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Callback:
    """Hooks the loop calls; override what you need."""

    def on_train_start(self, trainer: "GANTrainer") -> None: ...

    def on_step_end(self, trainer: "GANTrainer", logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "GANTrainer", cancelled: bool) -> None: ...


def architecture(cfg: TrainConfig) -> models.ModelConfig:
    """The networks a job spec asks for (the spec itself is torch-free and knows no models)."""
    return models.ModelConfig(latent_dim=cfg.latent_dim, num_classes=cfg.num_classes,
                              width=cfg.width, embed_dim=cfg.embed_dim,
                              spectral_norm=cfg.spectral_norm, d_conditioning=cfg.d_conditioning)


class GANTrainer:
    def __init__(self, cfg: TrainConfig, data: Split, *, callbacks: Sequence[Callback] = (),
                 should_stop: Callable[[], bool] | None = None,
                 arch: models.ModelConfig | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        if cfg.subset:
            data = Split(data.images[: cfg.subset], data.labels[: cfg.subset])
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)

        torch.manual_seed(cfg.seed)  # weights, dropout masks, GP interpolation
        self.arch = arch or architecture(cfg)
        G, D = models.build(cfg.family, self.arch)
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.loss = models.LOSSES[cfg.loss]
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.images_per_s = 0.0
        # a fixed batch for progress grids: 10 x 10, one row per digit when conditional
        fixed = torch.Generator().manual_seed(cfg.seed + 2)
        self.fixed_z = torch.randn(100, cfg.latent_dim, generator=fixed).to(self.device)
        self.fixed_labels = (torch.arange(10).repeat_interleave(10).to(self.device)
                             if cfg.conditional else None)

    # ------------------------------------------------------------------ data and noise
    def real_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch_indices(len(self.labels), self.cfg.batch_size, index, self.cfg.seed)
        idx = idx.to(self.device)
        x = self.images[idx].unsqueeze(1).float().div_(127.5).sub_(1.0)  # (B, 1, 28, 28)
        return x, self.labels[idx]

    def latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.noise, device=self.device)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg, k = self.cfg, self.cfg.critic_steps
        cond = cfg.conditional
        self.G.train()
        self.D.train()
        # ======================= D step(s): real up, fake down =======================
        for i in range(k):
            real, y = self.real_batch(self.step * k + i)
            y_in = y if cond else None
            z = self.latents(real.shape[0])
            last = i == k - 1
            with torch.set_grad_enabled(last):  # the last fake is reused by the G step
                fake = self.G(z, y_in)
            d_real, d_fake = self.D(real, y_in), self.D(fake.detach(), y_in)
            d_loss = self.loss.d_loss(d_real, d_fake, cfg.real_label)
            if self.loss.gradient_penalty:
                gp = gradient_penalty(partial(self.D, labels=y_in), real, fake.detach())
                d_loss = d_loss + cfg.gp_weight * gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        # ======================= G step: fool the updated D =========================
        g_loss = self.loss.g_loss(self.D(fake, y_in))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.update_ema()
        self.step += 1

        logs = {"step": float(self.step), "d_loss": d_loss.item(), "g_loss": g_loss.item(),
                "d_real": d_real.detach().mean().item(), "d_fake": d_fake.detach().mean().item()}
        if not (math.isfinite(logs["d_loss"]) and math.isfinite(logs["g_loss"])):
            raise TrainingDiverged(f"training diverged at step {self.step}: d_loss="
                                   f"{logs['d_loss']}, g_loss={logs['g_loss']}")
        return logs

    @torch.no_grad()
    def update_ema(self) -> None:
        """Exponential moving average of G, with a warm-up so early weights fade quickly."""
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train up to ``cfg.steps``; raises TrainingCancelled when ``should_stop`` says so."""
        for cb in self.callbacks:
            cb.on_train_start(self)
        images_per_step = self.cfg.batch_size * self.cfg.critic_steps
        tick = time.perf_counter()
        while self.step < self.cfg.steps:
            if self.should_stop():
                for cb in self.callbacks:
                    cb.on_train_end(self, cancelled=True)
                raise TrainingCancelled(f"cancelled at step {self.step} of {self.cfg.steps}")
            logs = self.train_step()
            now = time.perf_counter()
            rate = images_per_step / max(now - tick, 1e-9)
            tick = now
            self.images_per_s = rate if self.step == 1 else 0.9 * self.images_per_s + 0.1 * rate
            logs["images_per_s"] = self.images_per_s
            for cb in self.callbacks:
                cb.on_step_end(self, logs)
        for cb in self.callbacks:
            cb.on_train_end(self, cancelled=False)

    @torch.no_grad()
    def sample_fixed(self) -> torch.Tensor:
        """The EMA generator on the fixed progress batch: (100, 1, 28, 28) in [-1, 1]."""
        return self.G_ema(self.fixed_z, self.fixed_labels).cpu()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "noise": self.noise.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "ganforge_version": __version__,
            "config": self.cfg.to_dict(),
            "architecture": self.arch.to_dict(),
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.step = int(ckpt["step"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.noise.set_state(ckpt["rng"]["noise"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], data: Split, *, steps: int | None = None,
                        device: str | None = None, **kwargs: Any) -> "GANTrainer":
        """Rebuild a trainer from a checkpoint's own config; only ``steps`` and ``device`` may
        change (train longer, or move a run between machines)."""
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise InvalidInput("checkpoint", f"unknown format {ckpt.get('format')!r}")
        cfg = TrainConfig.model_validate(ckpt["config"])
        changes = {k: v for k, v in (("steps", steps), ("device", device)) if v is not None}
        if changes:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), **changes})
        arch = models.ModelConfig(**ckpt["architecture"])
        trainer = cls(cfg, data, arch=arch, **kwargs)
        trainer.load_state_dict(ckpt)
        return trainer
