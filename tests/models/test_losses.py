import math

import pytest
import torch

from models import losses


def test_bce_label_smoothing_penalises_overconfidence() -> None:
    real, fake = torch.full((8,), 10.0), torch.full((8,), -10.0)
    assert losses.bce_d_loss(real, fake) < 1e-3
    # with real target 0.9, a logit of 10 costs about 0.1 * 10 = 1 nat
    assert losses.bce_d_loss(real, fake, real_label=0.9).item() == pytest.approx(1.0, abs=0.05)


def test_nonsaturating_keeps_gradient_where_minimax_vanishes() -> None:
    fake = torch.full((4,), -8.0, requires_grad=True)  # D is sure these are fake
    (g_ns,) = torch.autograd.grad(losses.nonsaturating_g_loss(fake), fake)
    (g_mm,) = torch.autograd.grad(losses.minimax_g_loss(fake), fake)
    assert g_ns.abs().sum() > 100 * g_mm.abs().sum()


def test_hinge_is_zero_beyond_the_margin() -> None:
    assert losses.hinge_d_loss(torch.tensor([1.5, 2.0]), torch.tensor([-1.0, -3.0])) == 0
    assert losses.hinge_d_loss(torch.tensor([0.0]), torch.tensor([0.0])) == 2
    assert losses.hinge_g_loss(torch.tensor([2.0, 4.0])) == -3


def test_wasserstein_losses() -> None:
    real, fake = torch.tensor([3.0, 5.0]), torch.tensor([1.0, 1.0])
    assert losses.wasserstein_d_loss(real, fake) == -3
    assert losses.wasserstein_g_loss(fake) == -1


@pytest.mark.parametrize(("norm", "expected"), [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(norm: float, expected: float) -> None:
    w = torch.randn(1, 1, 28, 28)
    w = w / w.norm() * norm

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1)

    gp = losses.gradient_penalty(critic, torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28))
    assert gp.item() == pytest.approx(expected, abs=1e-4)


def test_every_loss_is_registered() -> None:
    assert set(losses.LOSSES) == {"bce", "minimax", "hinge", "wgan-gp"}
    assert losses.LOSSES["wgan-gp"].gradient_penalty
    for loss in losses.LOSSES.values():
        d = loss.d_loss(torch.zeros(3), torch.zeros(3))
        assert math.isfinite(d.item())


@pytest.mark.parametrize("norm", [0.5, 2.0])
def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm(norm: float) -> None:
    w = torch.randn(1, 1, 28, 28)
    w = (w / w.norm() * norm).requires_grad_(True)
    real = torch.randn(5, 1, 28, 28, requires_grad=True)
    r1 = losses.r1_penalty((real * w).flatten(1).sum(1), real)
    assert r1.item() == pytest.approx(norm**2, rel=1e-5)
    (g,) = torch.autograd.grad(r1, w)  # create_graph: D's weights are trained on it
    torch.testing.assert_close(g, 2 * w.detach())


def test_mode_seeking_pairs_images_of_one_label_and_falls_as_they_differ() -> None:
    z = torch.tensor([[0.0, 0.0], [9.0, 9.0], [2.0, 0.0], [9.0, 9.0], [0.0, 1.0]])
    labels = torch.tensor([3, 7, 3, 5, 3])  # sorted by label: pairs (0, 2) and (4, 3); 1 left over
    fake = torch.zeros(5, 1, 2, 2)
    fake[2] = 0.5
    # |G(z0) - G(z2)| = 0.5 per pixel, |z0 - z2| = 1 per coordinate: ratio 0.5
    assert float(losses.mode_seeking(fake, z, labels, eps=0.0)) == pytest.approx(2.0)
    fake[2] = 1.0  # twice as different for the same latents: half the penalty
    assert float(losses.mode_seeking(fake, z, labels, eps=0.0)) == pytest.approx(1.0)
    fake[1], fake[3] = 5.0, -5.0  # (4, 3) crosses two labels: left out, as is 1
    assert float(losses.mode_seeking(fake, z, labels, eps=0.0)) == pytest.approx(1.0)
    fake.requires_grad_(True)
    losses.mode_seeking(fake, z, labels).backward()
    assert fake.grad[2].sum() < 0 < fake.grad[0].sum()  # pushes the pair apart
    assert all(fake.grad[i].abs().sum() == 0 for i in (1, 3, 4))  # not in a same-label pair


def test_class_loss_is_cross_entropy_on_the_class_scores() -> None:
    scores = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    labels = torch.tensor([0, 2])
    loss = losses.class_loss(scores, labels)
    assert loss.dtype == torch.float32  # bf16 scores under autocast, the loss in float32
    right = math.log(1 + 2 * math.exp(-4.0))
    assert loss.item() == pytest.approx((right + math.log(3)) / 2, rel=1e-6)
    assert losses.class_loss(torch.tensor([[0.0, 9.0, 0.0]]), torch.tensor([1])).item() < 1e-3
