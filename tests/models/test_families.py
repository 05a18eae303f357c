from typing import Any

import pytest
import torch

import models
from models import FAMILIES, ModelConfig

CASES = [(f, nc, cond) for f in FAMILIES for nc in (0, 10)
         for cond in (("projection", "concat") if nc else ("projection",))]


@pytest.mark.parametrize(("family", "num_classes", "conditioning"), CASES)
@pytest.mark.parametrize("sn", [False, True])
def test_shapes_and_range(family: str, num_classes: int, conditioning: Any, sn: bool) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=num_classes, spectral_norm=sn, d_conditioning=conditioning,
                      width=16)
    G, D = models.build(family, cfg)
    z = torch.randn(5, cfg.latent_dim)
    y = torch.arange(5) if num_classes else None
    x = G(z, y)
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x, y).shape == (5,)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_label_changes_the_image(family: str) -> None:
    torch.manual_seed(0)
    G, _ = models.build(family, ModelConfig(num_classes=10, width=16))
    G.eval()
    z = torch.randn(1, 100).repeat(2, 1)
    a, b = G(z, torch.tensor([3, 8]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_labels_must_match_the_form(family: str) -> None:
    G_cond, D_cond = models.build(family, ModelConfig(num_classes=10, width=16))
    G_plain, _ = models.build(family, ModelConfig(num_classes=0, width=16))
    z = torch.randn(2, 100)
    with pytest.raises(ValueError, match="needs labels"):
        G_cond(z, None)
    with pytest.raises(ValueError, match="takes no labels"):
        G_plain(z, torch.tensor([1, 2]))


def test_spectral_norm_bounds_d_layers() -> None:
    D: Any
    _, D = models.build("mlp", ModelConfig(spectral_norm=True, width=16))
    D.train()
    x = torch.randn(4, 1, 28, 28)
    for _ in range(30):  # power iterations converge while D runs in train mode
        D(x)
    first = D.body[0]
    sigma = torch.linalg.matrix_norm(first.weight.detach(), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="dcgan.*mlp"):
        models.build("stylegan9", ModelConfig())


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"latent_dim": 0}, "latent_dim"), ({"num_classes": -1}, "num_classes"),
    ({"width": 4}, "width"), ({"d_conditioning": "magic"}, "d_conditioning"),
    ({"image_size": 48}, "image_size must be one of 28, 32, 64"),
    ({"channels": 2}, "channels must be 1 .grey. or 3 .colour."),
])
def test_config_invariants(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)
