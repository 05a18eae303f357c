import pytest

from ganforge.spec import TrainConfig


@pytest.fixture
def tiny_cfg() -> dict:
    """A config that trains in well under a second per step on 2 CPU cores."""
    return dict(family="dcgan", conditional=True, width=8, batch_size=16, subset=256, steps=6,
                sample_every=3, checkpoint_every=3, device="cpu", seed=3)


@pytest.fixture
def make_cfg(tiny_cfg: dict):
    def make(**changes) -> TrainConfig:
        return TrainConfig(**{**tiny_cfg, **changes})

    return make
