import pytest
from pydantic import ValidationError

from trainer.config import TrainConfig


def test_defaults_are_the_reference_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.family, cfg.conditional, cfg.loss, cfg.spectral_norm) == ("dcgan", True, "hinge", True)
    assert cfg.latent_dim == 100 and (cfg.lr_g, cfg.beta1, cfg.beta2) == (4e-4, 0.0, 0.9)
    assert cfg.model_name == "mnist-dcgan-cond"
    assert TrainConfig(family="mlp", conditional=False).model_name == "mnist-mlp"


@pytest.mark.parametrize(("changes", "field"), [
    ({"family": "stylegan"}, "family"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"steps": 0}, "steps"),
    ({"loss": "l2"}, "loss"),
    ({"device": "tpu"}, "device"),
    ({"batch_size": 1}, "batch_size"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"real_label": 0.0}, "real_label"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_fields_are_named(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**changes)
    assert field in {str(loc) for err in info.value.errors() for loc in err["loc"]}


def test_unknown_family_lists_allowed() -> None:
    with pytest.raises(ValidationError, match="allowed: dcgan, mlp"):
        TrainConfig(family="big")


def test_subset_must_hold_a_batch() -> None:
    with pytest.raises(ValidationError, match="subset"):
        TrainConfig(subset=10, batch_size=64)


def test_critic_steps_default_by_loss() -> None:
    assert TrainConfig(loss="hinge").critic_steps == 1
    assert TrainConfig(loss="wgan-gp").critic_steps == 5
    assert TrainConfig(loss="wgan-gp", d_steps=2).critic_steps == 2


def test_round_trips_through_json() -> None:
    cfg = TrainConfig(family="mlp", loss="bce", real_label=0.9)
    assert TrainConfig.model_validate(cfg.to_dict()) == cfg
