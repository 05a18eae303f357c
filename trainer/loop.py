"""The GAN training loop: D and G steps alternated, k critic steps, EMA of G, exact resume.

The loop builds its models by family name and knows nothing else about them; checkpoints,
sample grids, loss history and progress hang off it as callbacks (``trainer/callbacks.py``).
A checkpoint is a plain dict; :meth:`GANTrainer.from_checkpoint` rebuilds everything from the
checkpoint's own config, never from today's defaults.
"""

import contextlib
import copy
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch

import models
from ganforge import __version__
from ganforge.errors import InvalidInput, TrainingCancelled, TrainingDiverged
from ganforge.spec import TrainConfig
from models.augment import diff_augment
from models.losses import class_loss, gradient_penalty, mode_seeking, r1_penalty
from trainer.data import Split, normalize
from trainer.fastpath import (
    EpochOrder,
    LossWindow,
    RngSnapshot,
    StepGraph,
    compile_module,
    keep_adam_kind,
    loss_row,
    make_adam,
    resolve,
    tensor_lr,
)

CHECKPOINT_FORMAT = 1
COMPILE_TRIAL_STEPS = 5  # compiled steps taken undoably while CUDA graphs are recorded
log = logging.getLogger(__name__)
MAX_PHASE_UPDATES = 20  # threshold schedule: updates of one net per round at most


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


def architecture(cfg: TrainConfig, num_classes: int) -> models.ModelConfig:
    """The networks a job spec asks for on a set of ``num_classes`` classes (the data's count:
    the spec itself is torch-free, knows no models and cannot count an image folder's classes)."""
    if cfg.conditional and num_classes < 2:
        raise InvalidInput("conditional", f"{cfg.dataset} has {num_classes} class"
                           f"{'es' if num_classes != 1 else ''}: a conditional model needs at least "
                           "2; train it with --no-conditional")
    return models.ModelConfig(latent_dim=cfg.latent_dim, num_classes=num_classes if cfg.conditional else 0,
                              image_size=cfg.image_size, channels=cfg.channels,
                              width=cfg.width, embed_dim=cfg.embed_dim,
                              spectral_norm=cfg.spectral_norm, d_conditioning=cfg.d_conditioning,
                              d_extra_convs=cfg.d_extra_convs, d_label_spread=cfg.d_label_spread)


def check_shape(cfg: TrainConfig, data: Split) -> None:
    """The data must be what the spec says the networks are built for."""
    if (data.channels, data.image_size) != (cfg.channels, cfg.image_size):
        raise InvalidInput("image_size", f"the data is {data.channels}x{data.image_size}x"
                           f"{data.image_size} but the spec asks for {cfg.channels}x{cfg.image_size}x"
                           f"{cfg.image_size}; load it with the spec's image_size and channels")


def grid_labels(num_classes: int, per_class: int = 10) -> tuple[torch.Tensor | None, int]:
    """Labels of the fixed progress batch and its columns: a row per class (``per_class``
    images each) up to 10 classes; with more classes a column per class and 4 rows (26
    letters: 26 x 4); unconditional (``num_classes`` 0): 10 x 10 images."""
    if num_classes == 0:
        return None, 10
    if num_classes <= 10:
        return torch.arange(num_classes).repeat_interleave(per_class), per_class
    return torch.arange(num_classes).repeat(4), num_classes


# Jobs that share a process in threads (``ganforge worker --jobs K``) take turns at the global
# RNG: a trainer is built (seeded weights) and loads a checkpoint under one lock, and once
# ``share_process()`` is called every step runs under it too, with the job's own RNG state
# swapped in (as ``trainer.multi`` does for turns in one thread): a seeded job draws what it
# would draw alone. A step only queues its kernels on a GPU, so the turns cost little there.
_TURN = threading.RLock()
_SHARED = threading.Event()


def share_process() -> None:
    """From now on, steps of this process's trainers take turns (see ``_TURN``)."""
    _SHARED.set()


def exclusive() -> threading.RLock:
    """Hold this around other work that seeds or draws from the global RNG (training a judge),
    so that no job's step runs meanwhile. Loading models must not draw at all (build them on
    the meta device, as ``classifier.load`` does)."""
    return _TURN


@contextlib.contextmanager
def frozen(module: torch.nn.Module, freeze: bool = True) -> Iterator[None]:
    """``module``'s parameters without ``requires_grad`` inside the block (those that had it)."""
    params = [p for p in module.parameters() if p.requires_grad] if freeze else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def discriminate(D: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor | None,
                 classes: bool, batches: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D's (N,) logits on ``x`` and, with ``classes`` (the class loss), its (N, classes) class
    scores from the same forward; None without. ``batches``: ``x`` is that many batches stacked
    (the families' ``Discriminator.forward``)."""
    stacked: dict[str, int] = {"batches": batches} if batches > 1 else {}
    if not classes:
        return D(x, y, **stacked), None
    out = D(x, y, classes=True, **stacked)  # (N, 1 + classes)
    return out[:, 0], out[:, 1:]


def discriminate_both(D: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                      y: torch.Tensor | None, classes: bool, joint: bool
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A D step's logits on its real and its fake batch (both of labels ``y``), and with
    ``classes`` D's class scores on the real one: with ``joint`` (``d_joint``) in one call over
    both batches stacked, else in two."""
    if not joint:
        d_real, scores = discriminate(D, real, y, classes)
        return d_real, D(fake, y), scores
    n = real.shape[0]
    x = torch.cat([real, fake])  # (2N, C, H, W): the real batch, then the fake one
    both, scores = discriminate(D, x, None if y is None else torch.cat([y, y]), classes, batches=2)
    return both[:n], both[n:], None if scores is None else scores[:n]


@torch.no_grad()
def lerp_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every parameter (a few foreach kernels);
    buffers (BatchNorm's running statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))


@torch.no_grad()
def recalibrate_bn(generator: torch.nn.Module, *, latent_dim: int, num_classes: int,
                   device: torch.device, batches: int = 50, batch_size: int = 256,
                   seed: int = 0) -> int:
    """Re-estimate ``generator``'s BatchNorm running statistics for its own weights: the
    cumulative mean and variance over ``batches`` seeded batches of z (and uniform labels when
    conditional), in train mode; the module is left in eval mode. An EMA generator's copied
    statistics are the live G's, which its averaged weights do not produce. Returns how many
    BatchNorm layers it re-estimated (0: nothing to do)."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    gen = torch.Generator().manual_seed(seed)
    generator.train()
    try:
        for _ in range(batches):
            z = torch.randn(batch_size, latent_dim, generator=gen).to(device)
            y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device) \
                if num_classes else None
            generator(z, y)
    finally:
        generator.eval()
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    return len(norms)


class GANTrainer:
    def __init__(self, cfg: TrainConfig, data: Split, *, callbacks: Sequence[Callback] = (),
                 should_stop: Callable[[], bool] | None = None,
                 arch: models.ModelConfig | None = None, auto_amp: bool | None = None) -> None:
        """``arch`` and ``auto_amp`` (what ``amp: auto`` means) come from a checkpoint on
        resume: a run keeps the model and the precision it started with."""
        with _TURN:
            self._build(cfg, data, callbacks, should_stop, arch, auto_amp)

    def _build(self, cfg: TrainConfig, data: Split, callbacks: Sequence[Callback],
               should_stop: Callable[[], bool] | None, arch: models.ModelConfig | None,
               auto_amp: bool | None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        if cfg.subset:
            data = data.head(cfg.subset)
        check_shape(cfg, data)
        if cfg.schedule == "threshold":
            data = self.hold_out(data)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.class_names = data.class_names

        torch.manual_seed(cfg.seed)  # weights, dropout masks, GP interpolation
        self.arch = arch or architecture(cfg, data.num_classes)
        G, D = models.build(cfg.family, self.arch)
        self.G, self.D = G.to(self.device), D.to(self.device)
        # the fast path (trainer/fastpath.py): what each of the spec's speed fields means here
        self.fast = resolve(cfg, self.device, models.LOSSES[cfg.loss].gradient_penalty or cfg.r1_gamma > 0,
                            auto_amp=auto_amp)
        if self.fast.channels_last:
            self.G, self.D = (m.to(memory_format=torch.channels_last) for m in (self.G, self.D))
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        if self.fast.graph and len(self.labels) < cfg.batch_size:  # a batch must fill the buffers
            self.fast = dataclasses.replace(self.fast, graph=False)
        self.capturable = self.fast.graph and self.device.type == "cuda"
        self.opt_g = make_adam(self.G.parameters(), cfg.lr_g, betas, self.fast.adam, self.capturable)
        self.opt_d = make_adam(self.D.parameters(), cfg.lr_d, betas, self.fast.adam, self.capturable)
        self.lr_tensors = self.capturable and cfg.lr_decay != "none"  # a CUDA graph reads lr from one
        if self.lr_tensors:
            tensor_lr(self.opt_g, self.opt_d)
        # what the steps call: the modules themselves, or their CUDA-graphed compilations
        self.run_G, self.run_D = (compile_module(m) if self.fast.compile else m for m in (self.G, self.D))
        self.graph = StepGraph(self) if self.fast.graph else None  # compile: graph
        self.order = EpochOrder(len(self.labels), cfg.batch_size, cfg.seed, self.device)
        self.window = LossWindow(self.fast.log_every)
        self.rng = RngSnapshot(self.device)  # this run's global RNG state, for trainer.multi
        self._compiled_steps, self.compile_error = 0, ""  # see train_step
        self._tick, self._window_images = time.perf_counter(), 0.0  # the images/s clock
        self.loss = models.LOSSES[cfg.loss]
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.batches = 0  # real batches the threshold schedule has drawn (its rounds vary)
        self.images_per_s = 0.0
        # a fixed batch for progress grids: 10 x 10 (MNIST: one row per digit), see grid_labels
        fixed = torch.Generator().manual_seed(cfg.seed + 2)
        labels, self.grid_columns = grid_labels(self.arch.num_classes)
        count = 100 if labels is None else len(labels)
        self.fixed_z = torch.randn(count, cfg.latent_dim, generator=fixed).to(self.device)
        self.fixed_labels = None if labels is None else labels.to(self.device)

    # ------------------------------------------------------------------ data and noise
    def hold_out(self, data: Split) -> Split:
        """Keep the last batch of ``data`` aside: the held-out batch the threshold schedule
        measures accuracies on (never trained on); return the rest."""
        b = self.cfg.batch_size
        if len(data) < 2 * b:
            raise InvalidInput("subset", f"the threshold schedule holds back a batch: it needs at "
                               f"least {2 * b} images (2 x batch_size), got {len(data)}")
        self.held_out = normalize(data.images[-b:]).to(self.device), data.labels[-b:].to(self.device)
        return Split(data.images[:-b], data.labels[:-b], data.class_names)

    def real_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order(index)  # batch_indices' sequence, drawn on the device
        x = normalize(self.images[idx])  # (B, C, H, W) in [-1, 1]
        return x, self.labels[idx]

    def latents(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, generator=self.noise, device=self.device)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        """``critic_steps`` D steps, then one G step on the last fake batch, then the EMA.

        The losses stay on the device and are read every ``log_every`` steps (``LossWindow``):
        between reads the logs repeat the last values read, with ``losses_at`` their step.

        With ``compile`` on or ``graph``, the first ``COMPILE_TRIAL_STEPS`` steps (compilation and
        CUDA graph recording, where they fail if they fail) can be undone: a step that raises is
        rolled back and taken again on the plain path, which stays on for the run
        (``compile_error`` says why), so a compiler or capture fault costs speed, never a job.
        Under ``graph`` with a lazy R1 penalty the window also holds the first R1 step after the
        capture (``r1_every`` steps more): the first eager step between replays."""
        trial = COMPILE_TRIAL_STEPS + (self.cfg.r1_every if self.fast.graph and self.cfg.r1_gamma else 0)
        if not (self.fast.compile or self.fast.graph) or self._compiled_steps >= trial:
            return self._train_step()
        before = copy.deepcopy(self.state_dict())
        try:
            logs = self._train_step()
        except TrainingDiverged:
            raise
        except Exception as exc:
            self.compile_error = f"{type(exc).__name__}: {exc}"
            log.warning("compiled step %d failed, training on without compile: %s", self.step + 1,
                        self.compile_error)
            self.load_state_dict(before)
            self.fast = dataclasses.replace(self.fast, compile=False, graph=False)
            self.run_G, self.run_D, self.graph = self.G, self.D, None
            return self._train_step()
        self._compiled_steps += 1
        return logs

    def _train_step(self) -> dict[str, float]:
        if self.graph is not None:  # compile: graph, the body below from static buffers
            row = self.graph.step(self)
        else:
            k = self.cfg.critic_steps

            def batch(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                real, y = self.real_batch(self.step * k + i)
                return real, y, self.latents(real.shape[0])

            if self.fast.compile and self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are spent
            row = self.step_body(batch, self.ema_decay())
        self.step += 1
        self.window.push(row)
        if self.window.due(self.step, self.cfg.steps):
            self.window.read(self.step)  # raises TrainingDiverged at a non-finite loss
        return self.window.logs(self.step)

    def step_body(self, batch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                  decay: float | torch.Tensor) -> torch.Tensor:
        """The step's work on the device, with no host round trip (``StepGraph`` captures it):
        ``batch(i)`` gives the i-th D step's real images, labels and noise. Returns the
        ``loss_row``: D and G loss, D's mean logit on real and on fake images."""
        cfg, k = self.cfg, self.cfg.critic_steps
        cond = cfg.conditional
        G, D = self.run_G, self.run_D
        self.G.train()
        self.D.train()
        # ======================= D step(s): real up, fake down =======================
        for i in range(k):
            real, y, z = batch(i)
            if self.fast.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            y_in = y if cond else None
            last = i == k - 1
            with self.autocast():
                with torch.set_grad_enabled(last):  # the last fake is reused by the G step
                    fake = G(z, y_in)
                x_real = diff_augment(real, cfg.augment)
                r1_due = self.r1_due(i)
                if r1_due:
                    x_real = x_real.detach().requires_grad_(True)
                d_real, d_fake, classes = discriminate_both(
                    D, x_real, diff_augment(fake.detach(), cfg.augment), y_in, bool(cfg.class_loss),
                    cfg.d_joint)
                d_loss = self.loss.d_loss(d_real, d_fake, cfg.real_label)
                if classes is not None:  # AC: D names the real images' labels
                    d_loss = d_loss + cfg.class_loss * class_loss(classes, y)
                if self.loss.gradient_penalty:
                    gp = gradient_penalty(partial(D, labels=y_in), real, fake.detach())
                    d_loss = d_loss + cfg.gp_weight * gp
                if r1_due:  # lazy R1 (StyleGAN2): every r1_every-th D step, weighed up to match
                    d_loss = d_loss + cfg.r1_gamma / 2 * cfg.r1_every * r1_penalty(d_real, x_real)
            real_mean, fake_mean = d_real.detach().float().mean(), d_fake.detach().float().mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        # ======================= G step: fool the updated D =========================
        # D's weights are constants here: frozen, backward skips their gradients (the next D step
        # clears them anyway), so G's gradients are the same to the bit and the step is cheaper.
        # torch.compile guards on requires_grad (a second graph), so compile: on leaves D as is.
        with self.autocast(), frozen(self.D, not self.fast.compile):
            d_gen, classes = discriminate(D, diff_augment(fake, cfg.augment), y_in, bool(cfg.class_loss))
            g_loss = self.loss.g_loss(d_gen)
            if classes is not None:  # AC: G draws what D names as the asked-for label
                g_loss = g_loss + cfg.class_loss * class_loss(classes, y)
            if cfg.mode_seeking:  # variety within a label: pairs of this batch's images
                g_loss = g_loss + cfg.mode_seeking * mode_seeking(fake.float(), z, y_in)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.update_ema(decay)
        return loss_row(d_loss, g_loss, real_mean, fake_mean)

    def r1_due(self, i: int) -> bool:
        """Whether this step's ``i``-th D step adds the lazy R1 penalty (every ``r1_every``-th)."""
        cfg = self.cfg
        return cfg.r1_gamma > 0 and (self.step * cfg.critic_steps + i) % cfg.r1_every == 0

    def autocast(self) -> torch.autocast:
        """bf16 autocast when the spec's ``amp`` asks for it; a no-op otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast.amp,
                              cache_enabled=not self.fast.graph)  # a CUDA graph cannot hold its cache

    # ------------------------------------------------------------------ the threshold schedule
    def train_step_threshold(self) -> dict[str, float]:
        """One round of the threshold schedule (the EMNIST-letters DCGAN tutorial's): D trains on
        fresh batches until its accuracy on the held-out batch reaches ``d_threshold``, then G
        trains (``g_steps`` updates at least) until D calls ``g_threshold`` of fresh fakes real.
        Each phase updates its net at least once and at most ``MAX_PHASE_UPDATES`` times, so
        a round always moves both nets and never spins. Separate from :meth:`train_step` on
        purpose: the fixed schedule's speed work does not touch it."""
        cfg = self.cfg
        self.G.train()
        self.D.train()
        d_updates = g_updates = 0
        while True:  # ---- D phase
            real, y = self.real_batch(self.batches)
            self.batches += 1
            y_in = y if cfg.conditional else None
            with torch.no_grad():
                fake = self.G(self.latents(real.shape[0]), y_in)
            d_real, d_fake = self.D(real, y_in), self.D(fake, y_in)
            d_loss = self.loss.d_loss(d_real, d_fake, cfg.real_label)
            if self.loss.gradient_penalty:
                d_loss = d_loss + cfg.gp_weight * gradient_penalty(partial(self.D, labels=y_in), real, fake)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            d_updates += 1
            d_acc, g_acc = self.held_out_accuracies()
            if d_acc >= cfg.d_threshold or d_updates >= MAX_PHASE_UPDATES:
                break
        while True:  # ---- G phase
            n = cfg.batch_size
            y_in = self.random_labels(n) if cfg.conditional else None
            g_loss = self.loss.g_loss(self.D(self.G(self.latents(n), y_in), y_in))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            g_updates += 1
            if g_updates >= cfg.g_steps:
                d_acc, g_acc = self.held_out_accuracies()
                if g_acc >= cfg.g_threshold or g_updates >= max(MAX_PHASE_UPDATES, cfg.g_steps):
                    break
        self.update_ema()
        self.step += 1
        logs = {"step": float(self.step), "d_loss": d_loss.item(), "g_loss": g_loss.item(),
                "d_real": d_real.detach().mean().item(), "d_fake": d_fake.detach().mean().item(),
                "d_acc": d_acc, "g_acc": g_acc, "d_updates": float(d_updates),
                "g_updates": float(g_updates), "images": float(cfg.batch_size * (2 * d_updates + g_updates))}
        if not (math.isfinite(logs["d_loss"]) and math.isfinite(logs["g_loss"])):
            raise TrainingDiverged(f"training diverged at step {self.step}: d_loss="
                                   f"{logs['d_loss']}, g_loss={logs['g_loss']}")
        return logs

    @torch.no_grad()
    def held_out_accuracies(self) -> tuple[float, float]:
        """(D's accuracy, G's accuracy) on the held-out batch: D's is the mean of its hit rates on
        those real images (logit > 0) and on as many fresh fakes (logit < 0); G's is the share of
        the fakes D calls real. D is read in eval mode (no dropout, no spectral-norm update)."""
        real, y = self.held_out
        y_in = y if self.cfg.conditional else None
        fake = self.G(self.latents(real.shape[0]), y_in)
        self.D.eval()
        try:
            d_real, d_fake = self.D(real, y_in), self.D(fake, y_in)
        finally:
            self.D.train()
        called_real = (d_fake > 0).float().mean().item()
        d_acc = ((d_real > 0).float().mean().item() + 1.0 - called_real) / 2
        return d_acc, called_real

    def random_labels(self, n: int) -> torch.Tensor:
        return torch.randint(self.arch.num_classes, (n,), generator=self.noise, device=self.device)

    def ema_decay(self, step: Any = None) -> Any:
        """The EMA's decay at ``step`` (default: this step; a tensor on the device under a CUDA
        graph, then the answer is one too): a warm-up so that early weights fade quickly."""
        s = self.step if step is None else step
        warm = (1 + s) / (10 + s)
        return torch.clamp(warm, max=self.cfg.ema_decay) if isinstance(warm, torch.Tensor) \
            else min(self.cfg.ema_decay, warm)

    @torch.no_grad()
    def update_ema(self, decay: float | torch.Tensor | None = None) -> None:
        """Exponential moving average of G (``decay``: ``ema_decay()``, or a tensor on the device
        under a CUDA graph)."""
        decay = self.ema_decay() if decay is None else decay
        if isinstance(decay, torch.Tensor):  # ema = decay * ema + (1 - decay) * G, on the device
            ema: list[torch.Tensor] = list(self.G_ema.parameters())
            now: list[torch.Tensor] = list(self.G.parameters())
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, list(torch._foreach_mul(now, 1 - decay)))
            torch._foreach_copy_(list(self.G_ema.buffers()), list(self.G.buffers()))
            return
        if self.fast.foreach_ema:  # a few kernels for all tensors instead of one per tensor
            lerp_ema(self.G_ema, self.G, decay)
            return
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)

    def schedule_lr(self) -> None:
        """Both learning rates for this step under ``lr_decay``: linear goes from the spec's
        rates at step 0 to 0 at ``steps``; tail holds them, then goes linearly to 0 over the last
        ``lr_tail`` of the steps (a function of the step, so a resume continues it)."""
        steps = self.cfg.steps
        start = 0 if self.cfg.lr_decay == "linear" else steps - max(int(steps * self.cfg.lr_tail), 1)
        scale = min(1.0, max(0.0, (steps - self.step) / (steps - start)))
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                if isinstance(group["lr"], torch.Tensor):  # read by a CUDA graph: change in place
                    group["lr"].fill_(lr * scale)
                else:
                    group["lr"] = lr * scale

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train up to ``cfg.steps``; raises TrainingCancelled when ``should_stop`` says so."""
        self.begin()
        while self.advance():
            pass

    def begin(self) -> None:
        """Start (or resume) training: the ``on_train_start`` callbacks, and the clock."""
        for cb in self.callbacks:
            cb.on_train_start(self)
        self._tick, self._window_images = time.perf_counter(), 0.0

    def advance(self) -> bool:
        """One step and its callbacks; False, after ``on_train_end``, once ``cfg.steps`` are
        done. ``fit`` is ``begin`` and then ``advance`` until False; ``trainer.multi`` takes
        turns between jobs by it. Raises TrainingCancelled when ``should_stop`` says so."""
        if self.step >= self.cfg.steps:
            for cb in self.callbacks:
                cb.on_train_end(self, cancelled=False)
            return False
        if self.should_stop():
            for cb in self.callbacks:
                cb.on_train_end(self, cancelled=True)
            raise TrainingCancelled(f"cancelled at step {self.step} of {self.cfg.steps}")
        if _SHARED.is_set():
            with _TURN:
                self.rng.restore()
                try:
                    logs = self.one_step()
                finally:
                    self.rng.capture()
        else:
            logs = self.one_step()
        self.clock(logs)
        for cb in self.callbacks:
            cb.on_step_end(self, logs)
        return True

    def one_step(self) -> dict[str, float]:
        if self.cfg.lr_decay != "none":
            self.schedule_lr()
        logs = self.train_step_threshold() if self.cfg.schedule == "threshold" else self.train_step()
        if self.step == self.cfg.steps:
            self.settle_ema()
        return logs

    def settle_ema(self) -> None:
        """At the last step, before its callbacks (the last checkpoint, grid and judgement):
        the EMA generator's BatchNorm statistics re-estimated for its own weights
        (``ema_bn_batches``; seeded by the run's seed). Only buffers change, and the next EMA
        update copies G's over them, so a run trained on from here is the run that never
        stopped."""
        if self.cfg.ema_bn_batches:
            recalibrate_bn(self.G_ema, latent_dim=self.arch.latent_dim,
                           num_classes=self.arch.num_classes, device=self.device,
                           batches=self.cfg.ema_bn_batches, seed=self.cfg.seed)

    def clock(self, logs: dict[str, float]) -> None:
        """images/s, smoothed, into ``logs``. Measured over the steps between two loss reads:
        only a read waits for the device, so between reads a step's wall time is just the time
        it took to queue its kernels."""
        self._window_images += logs.get("images", self.cfg.batch_size * self.cfg.critic_steps)
        if "losses_at" not in logs:
            now = time.perf_counter()
            rate = self._window_images / max(now - self._tick, 1e-9)
            self._tick, self._window_images = now, 0.0
            self.images_per_s = rate if not self.images_per_s else 0.9 * self.images_per_s + 0.1 * rate
        logs["images_per_s"] = self.images_per_s

    @torch.no_grad()
    def sample_fixed(self) -> torch.Tensor:
        """The EMA generator on the fixed progress batch (``grid_labels``): (n, C, H, W) in [-1, 1]."""
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
            "batches": self.batches,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": rng,
            "amp": self.fast.amp,  # the precision trained in, whatever auto meant: resume keeps it
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        with _TURN:
            self._load_state_dict(ckpt)

    def _load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        for opt in (self.opt_g, self.opt_d):  # this machine's Adam kernels, not the writer's
            keep_adam_kind(opt, self.fast.adam, self.capturable)
        if self.lr_tensors:
            tensor_lr(self.opt_g, self.opt_d)
        if self.graph is not None:  # the optimizers' state tensors are new: capture afresh
            self.graph.reset()
        self.step = int(ckpt["step"])
        self.batches = int(ckpt.get("batches", 0))
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.noise.set_state(ckpt["rng"]["noise"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        self.rng.capture()

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], data: Split, *, steps: int | None = None,
                        device: str | None = None, **kwargs: Any) -> "GANTrainer":
        """Rebuild a trainer from a checkpoint's own config; only ``steps`` and ``device`` may
        change (train longer, or move a run between machines)."""
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise InvalidInput("checkpoint", f"unknown format {ckpt.get('format')!r}")
        cfg = TrainConfig.from_stored(ckpt["config"])
        changes = {k: v for k, v in (("steps", steps), ("device", device)) if v is not None}
        if changes:
            cfg = TrainConfig.model_validate({**cfg.model_dump(), **changes})
        arch = models.ModelConfig(**ckpt["architecture"])
        # amp: auto keeps the run's precision wherever it resumes; checkpoints without the key
        # predate bf16 on the CPU, when auto meant fp32 everywhere
        trainer = cls(cfg, data, arch=arch, auto_amp=bool(ckpt.get("amp", False)), **kwargs)
        trainer.load_state_dict(ckpt)
        return trainer
