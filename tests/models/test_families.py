from typing import Any

import pytest
import torch

import models
from models import FAMILIES, ModelConfig
from models.layers import LabelSpread

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
    ({"d_extra_convs": -1}, "d_extra_convs must be in .0, 4."), ({"d_extra_convs": 5}, "d_extra_convs"),
    ({"image_size": 48}, "image_size must be one of 28, 32, 64"),
    ({"channels": 2}, "channels must be 1 .grey. or 3 .colour."),
    ({"d_label_spread": True, "num_classes": 10}, "d_label_spread needs .* d_extra_convs >= 1"),
    ({"d_label_spread": True, "d_extra_convs": 1}, "d_label_spread needs a conditional model"),
])
def test_config_invariants(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_d_extra_convs_add_stride_one_convs_on_the_last_feature_map(size: int) -> None:
    """dcgan: each extra conv keeps D's last feature map's shape (the head is unchanged) and
    adds a 3x3 conv of top x top channels; the mlp family ignores the field."""
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, size, size), torch.tensor([0, 4, 9])
    plain = models.build("dcgan", ModelConfig(num_classes=10, width=8, image_size=size))[1]
    for extra in (1, 2):
        cfg = ModelConfig(num_classes=10, width=8, image_size=size, d_extra_convs=extra)
        D: Any = models.build("dcgan", cfg)[1]
        convs = [m for m in D.body if isinstance(m, torch.nn.Conv2d)]
        top = convs[-1].out_channels
        assert len(convs) == len([m for m in plain.body if isinstance(m, torch.nn.Conv2d)]) + extra
        assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.in_channels == top
                   for c in convs[-extra:])
        assert D.head.linear.in_features == plain.head.linear.in_features
        assert D(x, y).shape == (3,)
    mlp = [models.build("mlp", ModelConfig(num_classes=10, width=16, d_extra_convs=k))[1] for k in (0, 2)]
    assert [p.shape for p in mlp[0].parameters()] == [p.shape for p in mlp[1].parameters()]


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_d_label_spread_scores_an_image_with_the_batchs_images_of_its_label(conditioning: Any) -> None:
    """With the spread plane, an image's score depends on the other images of its label in the
    batch and on no image of another label; without it, on no other image at all."""
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=10, width=8, spectral_norm=True, d_extra_convs=1,
                      d_conditioning=conditioning)
    D: Any = models.build("dcgan", ModelConfig(**{**cfg.to_dict(), "d_label_spread": True}))[1]
    plain: Any = models.build("dcgan", cfg)[1]
    D.eval()
    plain.eval()  # spectral norm's power iteration would move between the calls otherwise
    first = next(m for m in D.body if isinstance(m, torch.nn.Conv2d) and m.stride == (1, 1))
    assert first.in_channels == D.head.linear.in_features // 49 + 1  # top channels + the plane
    top = first.out_channels  # the plane adds one input channel to that conv, nothing else
    assert sum(p.numel() for p in D.parameters()) == sum(p.numel() for p in plain.parameters()) + top * 9
    assert plain.spread is None and not any(isinstance(m, LabelSpread) for m in plain.modules())
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([3, 3, 3, 5, 5, 7])
    with torch.no_grad():
        base, base_plain = D(x, y), plain(x, y)
        other = x.clone()
        other[3:] = torch.randn(3, 1, 28, 28)  # the 5s and the 7 change, the 3s do not
        moved, moved_plain = D(other, y), plain(other, y)
        same = x.clone()
        same[1] = torch.randn(1, 28, 28)  # one of the 3s changes
        by_a_three = D(same, y)
    assert torch.equal(moved[:3], base[:3])  # other labels' images do not reach a 3's score
    assert not torch.allclose(by_a_three[[0, 2]], base[[0, 2]])  # its own label's do
    assert torch.equal(moved_plain[:3], base_plain[:3])
    assert torch.equal(plain(same, y)[[0, 2]], base_plain[[0, 2]])  # the plain D: no other image


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stacked_batches_score_as_each_batch_alone(family: str) -> None:
    """D on a D step's real and fake batches stacked (``batches=2``, the trainer's ``d_joint``)
    gives each batch's logits and class scores as two calls do: the label spread of a real 3
    sees the real 3s only. Stacked without saying so, the spread mixes the two batches."""
    torch.manual_seed(0)
    spread = family == "dcgan"
    cfg = ModelConfig(num_classes=10, width=8, spectral_norm=True, d_extra_convs=int(spread),
                      d_label_spread=spread, d_dropout=0.0)
    D: Any = models.build(family, cfg)[1].eval()  # eval: spectral norm's power step stays put
    real, fake = torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28)
    y = torch.tensor([3, 3, 3, 5, 5, 7])
    with torch.no_grad():
        apart = torch.cat([D(real, y, classes=True), D(fake, y, classes=True)])
        stacked = D(torch.cat([real, fake]), torch.cat([y, y]), classes=True, batches=2)
        mixed = D(torch.cat([real, fake]), torch.cat([y, y]), classes=True)
    torch.testing.assert_close(stacked, apart, rtol=1e-5, atol=1e-5)
    assert torch.allclose(mixed, apart, rtol=1e-5, atol=1e-5) == (not spread)
    if spread:
        with pytest.raises(ValueError, match="do not split into 2 batches"):
            D(torch.randn(5, 1, 28, 28), torch.tensor([3, 3, 3, 5, 5]), batches=2)


def test_label_spread_is_each_labels_feature_spread() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(7, 4, 3, 3), torch.tensor([0, 0, 0, 2, 2, 1, 0])
    out = LabelSpread(3)(x, y)
    assert out.shape == (7, 5, 3, 3) and torch.equal(out[:, :4], x)
    for label in (0, 2):
        rows = x[y == label]
        want = rows.var(0, unbiased=False).add(1e-8).sqrt().mean()
        assert torch.allclose(out[y == label, 4], want.expand(len(rows), 3, 3), atol=1e-6)
    assert out[5, 4].max() < 1e-3  # a label seen once has no spread
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert LabelSpread(3)(x.bfloat16(), y).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="at least 2 classes"):
        LabelSpread(1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("spread", [False, True])
def test_class_scores_are_the_projections_for_every_label(family: str, spread: bool) -> None:
    """``classes=True``: column 0 is D's logit, then every class's ``<embed(c), phi>``; so the
    logit under label c minus c's score is the same for every c (the label-free part)."""
    if spread and family != "dcgan":
        pytest.skip("the spread is the dcgan family's")
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=10, spectral_norm=True, width=16, d_extra_convs=int(spread),
                      d_label_spread=spread)
    _, D = models.build(family, cfg)
    D.eval()
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 3, 3, 7, 9, 1])
    out = D(x, y, classes=True)
    assert out.shape == (6, 11)
    torch.testing.assert_close(out[:, 0], D(x, y))
    free = out[:, 0] - out[:, 1:].gather(1, y[:, None]).squeeze(1)  # no label in it
    if not spread:  # the spread plane depends on the batch's labels, so only its own y checks
        other = (y + 4) % 10
        out_other = D(x, other, classes=True)
        torch.testing.assert_close(out_other[:, 1:], out[:, 1:])
        torch.testing.assert_close(out_other[:, 0] - out_other[:, 1:].gather(1, other[:, None]).squeeze(1),
                                   free)
    assert out[:, 1:].std() > 0


@pytest.mark.parametrize(("num_classes", "conditioning"), [(0, "projection"), (10, "concat")])
def test_class_scores_need_a_projection_discriminator(num_classes: int, conditioning: Any) -> None:
    cfg = ModelConfig(num_classes=num_classes, d_conditioning=conditioning, width=16)
    _, D = models.build("dcgan", cfg)
    y = torch.arange(2) if num_classes else None
    with pytest.raises(ValueError, match="projection discriminator"):
        D(torch.randn(2, 1, 28, 28), y, classes=True)
