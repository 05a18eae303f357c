"""The fast step path: what makes a training step cheap on a GPU without changing what it trains.

A GAN step at MNIST size spends most of its ~15 ms on a GPU in Python, kernel launches and host
round trips, not arithmetic (BENCHMARKS.md, "Training speed and time to quality"). The
parts here remove the round trips and the launches (the data set already sits on the device,
``GANTrainer.__init__``), each behind a ``TrainConfig`` field whose ``auto`` turns it on for
CUDA; on the CPU ``auto`` is the loop as it was, in bf16 where the CPU multiplies bf16 in
hardware (``resolve``), with bit-exact resume either way:

- :class:`EpochOrder`: each epoch's permutation is built once and kept on the device, so a
  step's batch indices are a slice there, not a fresh CPU ``randperm`` and a host-to-device copy.
  The sequence is ``trainer.data.batch_indices``' own, so runs and resumes are unchanged.
- :func:`make_adam`: fused (one kernel for all parameters) or foreach Adam.
- :class:`LossWindow`: the step's losses stay on the device and are read every ``log_every``
  steps in one transfer, instead of four ``.item()`` host syncs a step.
- :func:`compile_module`: ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs on CUDA.
  A compiled step that fails while the graphs are recorded is undone and taken again without
  compile (``GANTrainer.train_step``): a compiler fault costs speed, never a job.
- :class:`StepGraph` (``compile: graph``): the whole step (D step, G step, both Adam updates and
  the EMA) captured by hand in one CUDA graph and replayed: four launches a step instead of a few
  hundred, and no compiler. Same undo-and-fall-back rule as compile.
- ``amp`` (bf16 autocast) and ``channels_last`` are resolved here and applied by the loop.
- :func:`keep_freed_memory`: the process's malloc keeps what a step frees for the next one, so
  a CPU step's tensors stop page faulting (a setting of the process, not of a spec).
"""

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ganforge.errors import InvalidInput, TrainingDiverged
from ganforge.spec import TrainConfig, double_backward, lazy_r1, refuse_compile
from trainer.data import batch_indices, normalize

if TYPE_CHECKING:
    from trainer.loop import GANTrainer

# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets: blocks up to 32 MiB
# (glibc's ceiling) come from the heap, not mmap; 1 GiB may sit free at the heap's top before it
# goes back to the kernel; the heap grows 64 MiB beyond each request.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
CUDA_LOG_EVERY = 50  # log_every's auto on CUDA: one host sync per 50 steps
LOSS_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


@dataclass(frozen=True)
class FastOptions:
    """The fast-path fields of a spec, resolved for one device (``auto`` decided)."""

    log_every: int
    adam: str  # "torch", "foreach" or "fused"
    compile: bool  # torch.compile(mode="reduce-overhead")
    graph: bool  # the whole step in one CUDA graph by hand (StepGraph)
    amp: bool  # bf16 autocast
    channels_last: bool

    @property
    def foreach_ema(self) -> bool:
        """EMA update with one foreach kernel per tensor list instead of one per parameter."""
        return self.adam != "torch"


def cpu_has_native_bf16() -> bool:
    """The CPU multiplies bf16 in hardware (AVX512_BF16: AMD Zen 4 on, Intel Cooper Lake; AMX
    on Sapphire Rapids on). Without it oneDNN emulates bf16, 12x the fp32 step on 2 AVX2 cores of
    an AMD EPYC Zen 3 (BENCHMARKS.md, "A CPU without AVX-512"): ``auto`` stays fp32."""
    caps: dict[str, Any] = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve(cfg: TrainConfig, device: torch.device, gradient_penalty: bool, *,
            auto_amp: bool | None = None) -> FastOptions:
    """Decide each ``auto`` for ``device``. CUDA: fused Adam, losses read every 50 steps, the
    step in one CUDA graph, channels_last. The CPU: Adam and the loss reads as before the fast
    path, and on a CPU with native bf16 (``cpu_has_native_bf16``) bf16 autocast with
    channels_last (1.39-1.47x the fp32 step on 2 AMD EPYC cores, channels_last alone adds
    little; the recipe's quality held over 3 seeds: BENCHMARKS.md, "bf16 on the CPU"); elsewhere
    fp32.
    Either way a run resumes bit-exact: ``auto_amp`` (a checkpoint's) decides ``amp: auto``
    instead of the machine. ``gradient_penalty``: the loss (or the R1 penalty)
    differentiates D twice, which ``torch.compile`` cannot; asking for both is an input error
    (``compile: graph`` with a lazy R1 penalty is not: those steps run outside the graph)."""
    cuda = device.type == "cuda"
    # auto on CUDA: off, bf16 measured slower there at this size (BENCHMARKS.md); on the CPU
    # channels_last pays only with bf16 (oneDNN's bf16 convolutions want it), so it follows amp
    if auto_amp is None:
        auto_amp = device.type == "cpu" and cpu_has_native_bf16()
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and auto_amp)
    if gradient_penalty:  # the spec refuses this already; a config built around it is refused here
        try:
            refuse_compile(cfg.compile, double_backward(cfg.loss, cfg.r1_gamma) or f"the {cfg.loss} loss",
                           lazy_r1=lazy_r1(cfg.loss, cfg.r1_gamma, cfg.r1_every))
        except ValueError as exc:
            raise InvalidInput("compile", str(exc)) from None
    return FastOptions(
        log_every=cfg.log_every or (CUDA_LOG_EVERY if cuda else 1),
        adam=("fused" if cuda else "torch") if cfg.adam == "auto" else cfg.adam,
        compile=cfg.compile == "on",
        # auto: the whole step in one CUDA graph, 4.1x torch.compile's graphs on an H200
        # (BENCHMARKS.md, "Training on a GPU"); with a lazy R1 penalty too (the default recipe's),
        # its steps eager between replays: not measured on a GPU yet, and a capture or replay
        # that fails in the trial window falls back to the plain step (GANTrainer.train_step)
        graph=cfg.compile == "graph" or (cfg.compile == "auto" and cuda and (
            not gradient_penalty or lazy_r1(cfg.loss, cfg.r1_gamma, cfg.r1_every))),
        amp=amp,
        channels_last=cfg.channels_last == "on" or (cfg.channels_last == "auto" and (cuda or amp)),
    )


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the process's next allocations (``KEEP_FREED``).

    A CPU step allocates its activations and gradients afresh, tens of MB of them in blocks of
    1.6-6.4 MB at the reference recipe. glibc's defaults give such blocks back to the kernel when
    they are freed (an mmap'd block, or the heap's top trimmed), so the next step's touch of the
    same sizes page faults again: 7,000-15,000 faults and 14-33 ms of system CPU time a step on
    2 cores of an AMD EPYC VM. Kept, they are reused: 50-170 faults, ~1 ms, and ~5% off the
    step's wall time (BENCHMARKS.md, "Page faults"). The process holds its peak heap instead,
    which a training worker reaches every step anyway.
    A setting of the process (``Settings.malloc_keep``): the worker's K jobs share one malloc.
    Returns whether glibc took all three values; False on another C library (nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):  # no C library by that name, or not glibc's
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in KEEP_FREED.items()])


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
              kind: str, capturable: bool = False) -> torch.optim.Adam:
    """Adam as ``kind`` says: ``torch`` lets PyTorch pick (a loop over parameters on the CPU,
    foreach on CUDA: the loop before the fast path), ``foreach`` or ``fused``. ``capturable``:
    its step counters live on the device, so that a CUDA graph can hold the update."""
    impl: dict[str, Any] = {"fused": {"fused": True}, "foreach": {"foreach": True}}.get(kind, {})
    return torch.optim.Adam(params, lr=lr, betas=betas, capturable=capturable, **impl)


def keep_adam_kind(opt: torch.optim.Optimizer, kind: str, capturable: bool = False) -> None:
    """After ``load_state_dict``: the checkpoint's param groups carry the implementation flags of
    the machine that wrote it (fused on a GPU, capturable under a CUDA graph); put back this
    run's choice, and the ``step`` counters where it keeps them (fused or capturable: a float32
    tensor on the parameter's device)."""
    for group in opt.param_groups:
        group["fused"] = True if kind == "fused" else None
        group["foreach"] = True if kind == "foreach" else None
        group["capturable"] = capturable
        if isinstance(group["lr"], torch.Tensor):  # a graph run's (tensor_lr): this run decides again
            group["lr"] = float(group["lr"])
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "step" in state:
                device = p.device if kind == "fused" or capturable else torch.device("cpu")
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def tensor_lr(*opts: torch.optim.Optimizer) -> None:
    """Each group's learning rate as a tensor on its parameters' device: a CUDA graph captures
    the tensor, so a schedule that changes it in place (``GANTrainer.schedule_lr``) reaches the
    replayed update (a float would be baked into the graph)."""
    for opt in opts:
        for group in opt.param_groups:
            lr = group["lr"]
            device = group["params"][0].device
            group["lr"] = torch.tensor(float(lr), device=device)


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

    def push(self, row: torch.Tensor) -> None:
        """Keep one step's values (a vector in ``LOSS_KEYS`` order: the losses and D's mean logit
        on real and on fake images; ``loss_row`` makes it)."""
        self.pending.append(row)

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


def loss_row(*values: torch.Tensor) -> torch.Tensor:
    """One step's values (0-d tensors in ``LOSS_KEYS`` order) as one float32 vector on the device."""
    return torch.stack([v.detach().float() for v in values])


class StepGraph:
    """``compile: graph``: the whole fixed-schedule step captured by hand in one CUDA graph.

    ``GANTrainer.step_body`` (the D step or steps, the G step, both Adam updates, the EMA) reads
    its inputs from static buffers: the batch indices, the noise, and the step number (for the
    EMA decay), which each step fills with three small kernels before the replay; its losses land
    in a static vector. On CUDA the first ``WARMUP_STEPS`` steps run eagerly on a side stream
    (as graph capture asks), the next one is captured and from then on every step is a replay:
    four launches and no Python in the step, where the eager step launches a few hundred
    kernels. Adam is then built ``capturable`` (its step counters on the device) and autocast
    runs without its cache (graphs cannot hold it).

    A lazy R1 penalty's steps (every ``r1_every``-th) stay out of the graph: a double backward
    cannot be captured, so those steps run the same body eagerly between replays (:meth:`plan`).

    On the CPU nothing is captured: the same body runs eagerly from the same buffers, which is
    what the CPU tests check against the plain loop. Whatever replaces the optimizers' state
    tensors (``load_state_dict``) must call :meth:`reset` so the next step captures afresh.
    """

    WARMUP_STEPS = 3

    def __init__(self, trainer: "GANTrainer") -> None:
        cfg, device = trainer.cfg, trainer.device
        k, b = cfg.critic_steps, cfg.batch_size
        self.capture = device.type == "cuda"
        self.idx = torch.zeros(k, b, dtype=torch.long, device=device)
        self.z = torch.zeros(k, b, cfg.latent_dim, device=device)
        self.step_t = torch.zeros((), device=device)
        self.row = torch.zeros(len(LOSS_KEYS), device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0

    def reset(self) -> None:
        self.graph, self.warm = None, 0

    def plan(self, t: "GANTrainer") -> str:
        """What this step of ``t`` does: ``warm-up`` (CUDA's first steps, eagerly on a side
        stream), ``capture`` (then a replay), ``replay``, or ``eager``: the CPU, and on CUDA a
        step with the lazy R1 penalty (``r1_every``-th D steps), whose double backward a graph
        cannot hold: the graph is captured at a step without it, and the R1 steps run the same
        body eagerly between replays."""
        if not self.capture:
            return "eager"
        if any(t.r1_due(i) for i in range(t.cfg.critic_steps)):
            return "warm-up" if self.graph is None else "eager"
        if self.graph is not None:
            return "replay"
        return "capture" if self.warm >= self.WARMUP_STEPS else "warm-up"

    def step(self, t: "GANTrainer") -> torch.Tensor:
        """One training step of ``t`` (its ``step`` not yet advanced); its ``loss_row``."""
        k = t.cfg.critic_steps
        for i in range(k):
            self.idx[i].copy_(t.order(t.step * k + i))
        self.z.normal_(generator=t.noise)
        self.step_t.fill_(t.step)
        plan = self.plan(t)
        if plan == "capture":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other jobs' threads go on
                self.body(t)
            self.graph = graph
        if plan in ("capture", "replay"):
            assert self.graph is not None
            self.graph.replay()
        elif plan == "warm-up":  # on a side stream, as capture asks
            here = torch.cuda.current_stream(t.device)
            side = torch.cuda.Stream(t.device)
            side.wait_stream(here)
            with torch.cuda.stream(side):
                self.body(t)
            here.wait_stream(side)
            self.warm += 1
        else:
            self.body(t)
        return self.row.clone()

    def body(self, t: "GANTrainer") -> None:
        def batch(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            idx = self.idx[i]
            return normalize(t.images[idx]), t.labels[idx], self.z[i]

        self.row.copy_(t.step_body(batch, t.ema_decay(self.step_t)))


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
