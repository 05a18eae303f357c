import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from ganforge.errors import InvalidInput
from ganforge.spec import TrainConfig


def test_defaults_are_the_reference_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.family, cfg.conditional, cfg.loss, cfg.spectral_norm) == ("dcgan", True, "hinge", True)
    assert cfg.latent_dim == 100 and (cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2) == (6e-4, 6e-4, 0.0, 0.9)
    assert (cfg.d_extra_convs, cfg.batch_size, cfg.steps) == (1, 128, 3500)  # BENCHMARKS.md: 5 CPU minutes
    assert (cfg.lr_decay, cfg.lr_tail) == ("tail", 0.25)
    assert cfg.ema_decay == 0.995  # BENCHMARKS.md: "The projection head in one product"
    assert (cfg.r1_gamma, cfg.r1_every) == (0.5, 16)  # BENCHMARKS.md: "R1 in the defaults"
    assert cfg.ema_bn_batches == 50  # BENCHMARKS.md: "The EMA's own BatchNorm statistics"
    assert cfg.d_label_spread  # BENCHMARKS.md: "The label spread in the defaults"
    assert cfg.class_loss == 0.03  # BENCHMARKS.md: "The class loss in the defaults"
    assert cfg.model_name == "mnist-dcgan-cond"
    assert TrainConfig(family="mlp", conditional=False).model_name == "mnist-mlp"


@pytest.mark.parametrize("changes", [{"loss": "wgan-gp"}, {"compile": "on"},
                                     {"compile": "graph", "r1_every": 1}])
def test_r1_is_on_by_default_only_where_it_can_run(changes: dict) -> None:
    """wgan-gp has its own penalty; torch.compile, and a graph with R1 in every step, cannot
    differentiate D twice: left out, R1 is off there; asked for, it is refused as before."""
    assert TrainConfig(**changes).r1_gamma == 0.0
    assert TrainConfig(compile="graph").r1_gamma == TrainConfig(loss="bce").r1_gamma == 0.5
    if "compile" in changes:
        with pytest.raises(ValidationError, match="R1 penalty .* double backward"):
            TrainConfig(**changes, r1_gamma=0.5)


@pytest.mark.parametrize("changes", [{"family": "mlp"}, {"conditional": False},
                                     {"d_extra_convs": 0}, {"dataset": "fashion-mnist"}])
def test_label_spread_is_on_by_default_only_where_d_can_take_it(changes: dict) -> None:
    """The plane goes in before D's first extra conv of a conditional dcgan: left out elsewhere,
    the spread is off (Fashion-MNIST's recipe has no extra conv); asked for, it is refused."""
    assert not TrainConfig(**changes).d_label_spread
    assert TrainConfig(**changes, d_label_spread=False).d_label_spread is False
    with pytest.raises(ValidationError, match="d_label_spread[\\s\\S]*needs the dcgan family"):
        TrainConfig(**changes, d_label_spread=True)


def test_a_config_stored_before_the_label_spread_trained_without_it() -> None:
    """Whatever today's default, a stored config without the field resumes without the plane."""
    stored = {k: v for k, v in TrainConfig(d_label_spread=False).to_dict().items() if k != "d_label_spread"}
    assert TrainConfig.from_stored(stored).d_label_spread is False
    assert TrainConfig.model_validate(stored).d_label_spread is True


@pytest.mark.parametrize("changes", [{"conditional": False}, {"d_conditioning": "concat"},
                                     {"schedule": "threshold"}, {"family": "mlp", "conditional": False}])
def test_class_loss_needs_a_projection_d_and_the_fixed_schedule(changes: dict) -> None:
    """On by default where D has class scores; left out elsewhere, off; asked for, refused."""
    assert TrainConfig(**changes).class_loss == 0.0
    with pytest.raises(ValidationError, match="class_loss needs a conditional model with projection"):
        TrainConfig(**changes, class_loss=0.1)
    assert TrainConfig(family="mlp").class_loss == TrainConfig(loss="bce").class_loss == 0.03
    assert TrainConfig(family="mlp", class_loss=0.1).class_loss == 0.1
    assert TrainConfig(dataset="fashion-mnist").class_loss == 0.0  # its recipe, as measured
    with pytest.raises(ValidationError, match="class_loss[\\s\\S]*less than or equal to 10"):
        TrainConfig(class_loss=11)


def test_a_config_stored_before_the_class_loss_trained_without_it() -> None:
    stored = {k: v for k, v in TrainConfig(class_loss=0.1).to_dict().items() if k != "class_loss"}
    assert TrainConfig.from_stored(stored).class_loss == 0.0
    assert TrainConfig.model_validate(stored).class_loss == 0.03


@pytest.mark.parametrize(("changes", "field"), [
    ({"family": "stylegan"}, "family"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"steps": 0}, "steps"),
    ({"loss": "l2"}, "loss"),
    ({"device": "tpu"}, "device"),
    ({"batch_size": 1}, "batch_size"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_bn_batches": 1001}, "ema_bn_batches"),
    ({"mode_seeking": -1.0}, "mode_seeking"),
    ({"lr_tail": 0.0}, "lr_tail"),
    ({"lr_tail": 1.5}, "lr_tail"),
    ({"real_label": 0.0}, "real_label"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_fields_are_named(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**changes)
    assert field in {str(loc) for err in info.value.errors() for loc in err["loc"]}


def test_unknown_family_lists_allowed() -> None:
    with pytest.raises(ValidationError, match="'mlp' or 'dcgan'"):
        TrainConfig(family="big")


def test_spec_names_are_the_registries_names() -> None:
    """The spec spells the names out (no torch needed to validate one); they must stay equal."""
    import models
    from ganforge.spec import Family, Loss

    assert set(get_args(Family)) == set(models.FAMILIES)
    assert set(get_args(Loss)) == set(models.LOSSES)
    from models.augment import POLICIES

    assert set(get_args(TrainConfig.model_fields["augment"].annotation)) == set(POLICIES)


def test_validating_a_spec_needs_no_torch() -> None:
    """The service validates job specs: it must not pull in torch (its image has none)."""
    code = ("import sys; import services.service; from ganforge import jobs; "
            "jobs.validate_spec({'family': 'mlp', 'steps': 5}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


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


def test_the_resume_rule_lets_only_steps_and_device_change() -> None:
    saved = TrainConfig(steps=100, width=16).to_dict()
    cfg = TrainConfig.resumed(saved, {"steps": 300, "device": "cpu"})
    assert (cfg.steps, cfg.device, cfg.width) == (300, "cpu", 16)
    with pytest.raises(InvalidInput, match="only --steps and --device may change .*--width"):
        TrainConfig.resumed(saved, {"width": 32})
    TrainConfig(steps=999, width=16).check_resumes(TrainConfig(steps=100, width=16), "run")
    with pytest.raises(InvalidInput, match="run_dir: run holds a checkpoint of another config"):
        TrainConfig(width=32).check_resumes(TrainConfig(width=16), "run")


# --- datasets, image size and channels (issue 13) ----------------------------------------------
def test_dataset_shape_defaults_are_mnist() -> None:
    cfg = TrainConfig()
    assert (cfg.dataset, cfg.image_size, cfg.channels) == ("mnist", 28, 1)
    legacy = TrainConfig().to_dict()
    for key in ("dataset", "image_size", "channels", "schedule", "g_steps", "realness_grid"):
        del legacy[key]  # a checkpoint written before these fields existed
    assert TrainConfig.model_validate(legacy) == cfg


def test_a_sets_own_recipe_fills_what_the_spec_leaves_out() -> None:
    from ganforge import datasets

    own = datasets.recipe_for("fashion-mnist")
    assert own and set(own) <= set(TrainConfig.model_fields)
    fashion = TrainConfig(dataset="fashion-mnist")
    assert {k: getattr(fashion, k) for k in own} == own
    assert {k: getattr(TrainConfig(), k) for k in own} != own  # MNIST keeps the reference recipe
    given = TrainConfig.model_validate({"dataset": "fashion-mnist", "r1_gamma": 0.0, "lr_g": 1e-4})
    assert (given.r1_gamma, given.lr_g, given.lr_d) == (0.0, 1e-4, own["lr_d"])  # the spec wins
    assert TrainConfig.model_validate(fashion.to_dict()) == fashion  # stored and read back
    for name in ("emnist-letters", "imagefolder:pets", "no-such-set"):
        assert datasets.recipe_for(name) == {}
    # a checkpoint of the set written before r1_gamma existed trained without it
    old = {k: v for k, v in TrainConfig(dataset="fashion-mnist", r1_gamma=0.0).to_dict().items()
           if k != "r1_gamma"}
    assert TrainConfig.from_stored(old).r1_gamma == 0.0
    assert TrainConfig.model_validate(old).r1_gamma == own["r1_gamma"]  # what from_stored prevents


@pytest.mark.parametrize(("dataset", "conditional", "name"), [
    ("fashion-mnist", True, "fashion-mnist-dcgan-cond"),
    ("emnist-letters", False, "emnist-letters-dcgan"),
    ("imagefolder:/data/My Pets!/", True, "folder-my-pets-dcgan-cond"),
    ("imagefolder:flowers", False, "folder-flowers-dcgan"),
    ("imagefolder:/x/___", False, "folder-dcgan"),
    ("imagefolder:/x/" + "A" * 80, False, "folder-" + "a" * 40 + "-dcgan"),
])
def test_model_name_comes_from_the_dataset(dataset: str, conditional: bool, name: str) -> None:
    cfg = TrainConfig(dataset=dataset, conditional=conditional)
    assert cfg.model_name == name
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", name) and len(name) <= 63


def messages(info: pytest.ExceptionInfo) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"dataset": "cifar10"}, "dataset", "mnist, fashion-mnist, emnist-letters, imagefolder:PATH"),
    ({"dataset": "imagefolder:"}, "dataset", "imagefolder:PATH"),
    ({"channels": 2}, "channels", "1 (grey) or 3 (colour)"),
    ({"image_size": 64, "family": "mlp"}, "image_size", "28, 32 (the mlp family"),
    ({"image_size": 30}, "image_size", "28, 32, 64 (the dcgan family"),
    ({"g_steps": 3}, "g_steps", "threshold schedule"),
    ({"schedule": "threshold", "d_steps": 2}, "schedule", "leave d_steps at 0"),
    ({"schedule": "alternate"}, "schedule", "'fixed' or 'threshold'"),
    ({"g_threshold": 1.5}, "g_threshold", "less than or equal to 1"),
    ({"subset": 2_000_000}, "subset", "1000000"),
])
def test_dataset_fields_are_checked_and_named(changes: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainConfig(**changes)
    found = messages(info)
    assert list(found) == [field] and words in found[field]


def test_subset_covers_emnist_letters() -> None:
    assert TrainConfig(dataset="emnist-letters", subset=124_800).subset == 124_800


def test_family_sizes_are_the_models_sizes() -> None:
    """The spec checks sides without torch; its table must stay the families' own."""
    import models
    from ganforge.spec import FAMILY_SIZES

    assert {f: models.supported_sizes(f) for f in models.FAMILIES} == FAMILY_SIZES


def test_threshold_schedule_config() -> None:
    cfg = TrainConfig(schedule="threshold", g_steps=3, conditional=False, dataset="emnist-letters")
    assert (cfg.d_threshold, cfg.g_threshold, cfg.g_steps) == (0.5, 0.2, 3)
    assert TrainConfig.model_validate(cfg.to_dict()) == cfg
