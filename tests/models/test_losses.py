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
