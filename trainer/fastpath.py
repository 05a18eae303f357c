"""The fast step path: what makes a training step cheap on a GPU without changing what it trains.

A GAN step at MNIST size spends most of its ~15 ms on a GPU in Python, kernel launches and host
round trips, not arithmetic (BENCHMARKS.md, "Training speed and time to quality"). The
parts here remove the round trips and the launches (the data set already sits on the device,
``GANTrainer.__init__``), each behind a ``TrainConfig`` field whose ``auto`` turns it on for
CUDA and leaves the CPU path as it was (same numbers, same bit-exact resume):

- :class:`EpochOrder`: each epoch's permutation is built once and kept on the device, so a
  step's batch indices are a slice there, not a fresh CPU ``randperm`` and a host-to-device copy.
  The sequence is ``trainer.data.batch_indices``' own, so runs and resumes are unchanged.
- :func:`make_adam`: fused (one kernel for all parameters) or foreach Adam.
- :class:`LossWindow`: the step's losses stay on the device and are read every ``log_every``
  steps in one transfer, instead of four ``.item()`` host syncs a step.
- :func:`compile_module`: ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs on CUDA.
  A compiled step that fails while the graphs are recorded is undone and taken again without
  compile (``GANTrainer.train_step``): a compiler fault costs speed, never a job.
- ``amp`` (bf16 autocast) and ``channels_last`` are resolved here and applied by the loop.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ganforge.errors import InvalidInput, TrainingDiverged
from ganforge.spec import TrainConfig
from trainer.data import batch_indices

CUDA_LOG_EVERY = 50  # log_every's auto on CUDA: one host sync per 50 steps
LOSS_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


@dataclass(frozen=True)
class FastOptions:
    """The fast-path fields of a spec, resolved for one device (``auto`` decided)."""

    log_every: int
    adam: str  # "torch", "foreach" or "fused"
    compile: bool
    amp: bool  # bf16 autocast
    channels_last: bool

    @property
    def foreach_ema(self) -> bool:
        """EMA update with one foreach kernel per tensor list instead of one per parameter."""
        return self.adam != "torch"


def resolve(cfg: TrainConfig, device: torch.device, gradient_penalty: bool) -> FastOptions:
    """Decide each ``auto`` for ``device``: on for CUDA, the plain path on the CPU (whose numbers
    and speed stay those of the loop before the fast path). ``gradient_penalty``: the loss
    differentiates D twice, which ``torch.compile`` cannot; asking for both is an input error."""
    cuda = device.type == "cuda"
    if cfg.compile == "on" and gradient_penalty:
        raise InvalidInput("compile", f"the {cfg.loss} loss needs a double backward through D, "
                                      "which torch.compile does not support (allowed: off, auto)")
    return FastOptions(
        log_every=cfg.log_every or (CUDA_LOG_EVERY if cuda else 1),
        adam=("fused" if cuda else "torch") if cfg.adam == "auto" else cfg.adam,
        compile=cfg.compile == "on" or (cfg.compile == "auto" and cuda and not gradient_penalty),
        amp=cfg.amp == "bf16",  # auto: off until the GPU report shows bf16 keeps the quality figures
        channels_last=cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda),
    )


class EpochOrder:
    """``batch_indices(n, batch_size, index, seed)``, with each epoch's permutation built once and
    kept on ``device``: a step costs a slice on the device instead of a CPU ``randperm`` of the
    whole set and a copy. The permutation is drawn by ``batch_indices`` itself (a batch of the
    whole set), so the index sequence cannot drift from it."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.per_epoch = max(n // batch_size, 1)
        self.epoch = -1
        self.perm = torch.empty(0, dtype=torch.long, device=device)

    def __call__(self, index: int) -> torch.Tensor:
        epoch, pos = divmod(index, self.per_epoch)
        if epoch != self.epoch:
            self.perm = batch_indices(self.n, self.n, epoch, self.seed).to(self.device)
            self.epoch = epoch
        return self.perm[pos * self.batch_size : (pos + 1) * self.batch_size]


def make_adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
              kind: str) -> torch.optim.Adam:
    """Adam as ``kind`` says: ``torch`` lets PyTorch pick (a loop over parameters on the CPU,
    foreach on CUDA: the loop before the fast path), ``foreach`` or ``fused``."""
    impl: dict[str, Any] = {"fused": {"fused": True}, "foreach": {"foreach": True}}.get(kind, {})
    return torch.optim.Adam(params, lr=lr, betas=betas, **impl)


def keep_adam_kind(opt: torch.optim.Optimizer, kind: str) -> None:
    """After ``load_state_dict``: the checkpoint's param groups carry the implementation flags of
    the machine that wrote it (fused on a GPU); put back this run's choice, and the ``step``
    counters where it keeps them (fused: a float32 tensor on the parameter's device)."""
    for group in opt.param_groups:
        group["fused"] = True if kind == "fused" else None
        group["foreach"] = True if kind == "foreach" else None
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "step" in state:
                device = p.device if kind == "fused" else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def compile_module(module: torch.nn.Module) -> Callable[..., Any]:
    """CUDA graphs through ``torch.compile(mode="reduce-overhead")`` (on the CPU: inductor's
    kernels, no graphs). The module itself stays what checkpoints and exports see."""
    return torch.compile(module, mode="reduce-overhead")


class LossWindow:
    """Each step's losses stay on the device; every ``every`` steps (and on the first and the
    last step) all of them come to the host in one transfer.

    Between reads, :meth:`logs` repeats the last values read and says from which step they are
    (``losses_at``), so callbacks that print or store losses keep working, honestly labelled. A
    non-finite loss anywhere in the window raises ``TrainingDiverged`` naming its step.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.pending: list[torch.Tensor] = []
        self.last: dict[str, float] = {}
        self.read_at = 0

    def push(self, *values: torch.Tensor) -> None:
        """Keep one step's values (0-d tensors, in ``LOSS_KEYS`` order: the losses and D's mean
        logit on real and on fake images)."""
        self.pending.append(torch.stack([v.detach().float() for v in values]))

    def due(self, step: int, last_step: int) -> bool:
        return not self.last or step % self.every == 0 or step >= last_step

    def read(self, step: int) -> None:
        """Bring the window to the host (one sync); ``step`` is the step just taken."""
        rows = torch.stack(self.pending).tolist()
        first = step - len(rows) + 1
        self.pending.clear()
        for i, row in enumerate(rows):
            if not (math.isfinite(row[0]) and math.isfinite(row[1])):
                raise TrainingDiverged(f"training diverged at step {first + i}: d_loss={row[0]}, "
                                       f"g_loss={row[1]}")
        self.last = dict(zip(LOSS_KEYS, rows[-1], strict=True))
        self.read_at = step

    def logs(self, step: int) -> dict[str, float]:
        logs = {"step": float(step), **self.last}
        if self.read_at != step:
            logs["losses_at"] = float(self.read_at)
        return logs


class RngSnapshot:
    """The process-wide RNG state (CPU, and CUDA's on a CUDA device) one trainer owns.

    Dropout masks and the gradient penalty's interpolation draw from the global generators; a
    trainer that takes turns with others (``trainer.multi``) swaps its own state in for its step
    and out after it, so each job draws the numbers it would have drawn alone."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.capture()

    def capture(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
