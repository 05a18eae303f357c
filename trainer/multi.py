"""Many training jobs on one device: K trainers take turns, step by step, each its own job.

One job at MNIST size leaves a GPU mostly idle: its kernels are small and launched one after
another. :class:`MultiTrainer` trains K :class:`~trainer.loop.GANTrainer` side by side in one
process: on CUDA each trainer queues its work on its own stream, so one job's kernels run while
the next job's are being queued; on the CPU the jobs simply alternate.

Each job keeps everything a lone job has: its callbacks (progress, checkpoints, sample grids),
its own ``should_stop`` (cancel), its own global RNG state (swapped in for its steps, so a job
draws the dropout masks and penalty points it would draw alone: K seeded jobs trained together
end with the weights each reaches alone). A job that is cancelled or fails stops alone; the
others go on. What happens after training (export, evaluation, registration) stays per job,
with the trainer each :class:`Outcome` holds.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from ganforge.errors import TrainingCancelled
from trainer.loop import GANTrainer

log = logging.getLogger(__name__)

State = Literal["finished", "cancelled", "failed"]


@dataclass
class Outcome:
    """How one job's training ended: ``error`` is None when it finished, the TrainingCancelled
    it raised when it was cancelled, or whatever else it raised when it failed."""

    trainer: GANTrainer
    error: BaseException | None = None

    @property
    def state(self) -> State:
        if self.error is None:
            return "finished"
        return "cancelled" if isinstance(self.error, TrainingCancelled) else "failed"


class MultiTrainer:
    """Trains ``trainers`` (all on one device) side by side; :meth:`fit` returns one
    :class:`Outcome` per trainer, in order, once every job has finished, been cancelled or
    failed. It raises nothing a job raises."""

    def __init__(self, trainers: Sequence[GANTrainer]) -> None:
        if not trainers:
            raise ValueError("MultiTrainer needs at least one trainer")
        devices = {t.device for t in trainers}
        if len(devices) > 1:
            raise ValueError(f"MultiTrainer trains on one device, got {sorted(map(str, devices))}")
        self.trainers = list(trainers)
        self.device = self.trainers[0].device
        if any(t.fast.compile for t in self.trainers):
            # torch.compile guards on each job's own modules, and D runs with and without grad:
            # room for every job's compilations, or the later jobs fall back to eager
            limit = 4 * len(self.trainers)
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, limit)
        cuda = self.device.type == "cuda"
        self.streams = [torch.cuda.Stream(self.device) if cuda else None for _ in self.trainers]

    def fit(self) -> list[Outcome]:
        outcomes = [Outcome(t) for t in self.trainers]
        if self.device.type == "cuda":  # the trainers were built on the default stream
            for stream in self.streams:
                assert stream is not None
                stream.wait_stream(torch.cuda.current_stream(self.device))
        active = [i for i in range(len(self.trainers)) if self._turn(i, outcomes[i], first=True)]
        while active:
            active = [i for i in active if self._turn(i, outcomes[i])]
        if self.device.type == "cuda":  # what follows (export, evaluation) reads the results
            for stream in self.streams:
                assert stream is not None
                torch.cuda.current_stream(self.device).wait_stream(stream)
        return outcomes

    def _turn(self, i: int, outcome: Outcome, first: bool = False) -> bool:
        """Job ``i``'s turn: its first call starts it, later ones take one step. False once the
        job is over (finished, cancelled or failed), with ``outcome`` saying which."""
        trainer = self.trainers[i]
        try:
            with self._own(i):
                if first:
                    trainer.begin()
                    return True
                return trainer.advance()
        except Exception as exc:  # TrainingCancelled, TrainingDiverged, a failing callback, ...
            outcome.error = exc
            if not isinstance(exc, TrainingCancelled):
                log.warning("job %d of %d failed at step %d: %s", i + 1, len(self.trainers),
                            trainer.step, exc)
            return False

    @contextmanager
    def _own(self, i: int) -> Iterator[None]:
        """Job ``i``'s stream and global RNG state for the duration of its turn."""
        trainer, stream = self.trainers[i], self.streams[i]
        trainer.rng.restore()
        try:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                yield
        finally:
            trainer.rng.capture()
