"""K jobs on one device (trainer/multi.py): together they train what each trains alone, and one
job's cancel or failure stops that job only."""

from typing import Any

import pytest
import torch

from ganforge.errors import TrainingCancelled
from trainer.callbacks import Checkpointer, History
from trainer.checkpoint import load_checkpoint
from trainer.loop import Callback, GANTrainer
from trainer.multi import MultiTrainer

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                     reason="needs a CUDA device"))
# unlike jobs: the reference recipe, and two whose dropout (and gradient penalty) draw from the
# process-wide RNG, which the jobs must not share: the last one built would own it otherwise
JOBS: list[dict[str, Any]] = [
    {"family": "mlp", "conditional": False, "loss": "wgan-gp", "d_steps": 2, "seed": 5},
    {"seed": 3},
    {"family": "mlp", "loss": "bce", "seed": 7},
]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread on two shared cores (see test_fastpath.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(t: GANTrainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.cpu() for name, net in (("G", t.G), ("D", t.D), ("E", t.G_ema))
            for k, v in net.state_dict().items()}


def assert_same(a: GANTrainer, b: GANTrainer, exact: bool) -> None:
    for (name, x), y in zip(weights(a).items(), weights(b).values(), strict=True):
        if exact:
            assert torch.equal(x, y), name
        else:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_jobs_together_train_what_each_trains_alone(make_cfg, mnist_train, tmp_path, device) -> None:
    alone = []
    for job in JOBS:
        alone.append(GANTrainer(make_cfg(steps=6, device=device, **job), mnist_train))
        alone[-1].fit()

    together = [GANTrainer(make_cfg(steps=6, device=device, **job), mnist_train,
                           callbacks=[History(tmp_path / str(i), every=3)]) for i, job in enumerate(JOBS)]
    outcomes = MultiTrainer(together).fit()

    assert [o.state for o in outcomes] == ["finished"] * len(JOBS)
    assert [o.trainer for o in outcomes] == together
    for a, b in zip(alone, together, strict=True):
        assert b.step == 6
        assert_same(a, b, exact=device == "cpu")
    for i in range(len(JOBS)):  # each job's own callbacks saw its own steps
        lines = (tmp_path / str(i) / "history.jsonl").read_text().splitlines()
        assert len(lines) == 6


def test_a_cancelled_job_stops_alone_with_its_checkpoint(make_cfg, mnist_train, tmp_path) -> None:
    calls = iter(range(100))
    cancelled = GANTrainer(make_cfg(steps=50, **JOBS[0]), mnist_train,
                           should_stop=lambda: next(calls) >= 3,
                           callbacks=[Checkpointer(tmp_path / "a", every=100)])
    other = GANTrainer(make_cfg(steps=8, **JOBS[1]), mnist_train,
                       callbacks=[Checkpointer(tmp_path / "b", every=100)])
    outcomes = MultiTrainer([cancelled, other]).fit()

    assert [o.state for o in outcomes] == ["cancelled", "finished"]
    assert isinstance(outcomes[0].error, TrainingCancelled)
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["step"] == 3
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 8
    alone = GANTrainer(make_cfg(steps=8, **JOBS[1]), mnist_train)
    alone.fit()
    assert_same(alone, other, exact=True)


def test_a_failing_job_does_not_stop_the_others(make_cfg, mnist_train) -> None:
    class Boom(Callback):
        def on_step_end(self, trainer: GANTrainer, logs: dict[str, float]) -> None:
            if trainer.step == 2:
                raise OSError("disk full")

    failing = GANTrainer(make_cfg(steps=6, **JOBS[0]), mnist_train, callbacks=[Boom()])
    other = GANTrainer(make_cfg(steps=6, **JOBS[1]), mnist_train)
    outcomes = MultiTrainer([failing, other]).fit()
    assert [o.state for o in outcomes] == ["failed", "finished"]
    assert "disk full" in str(outcomes[0].error) and failing.step == 2 and other.step == 6


def test_no_jobs_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MultiTrainer([])
