"""GAN losses as pure functions of D's logits (and, for WGAN-GP, of D itself).

Each family of loss is a pair ``(d_loss(real, fake), g_loss(fake))``; ``LOSSES`` maps the name a
job spec uses to that pair.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


# --- minimax / non-saturating BCE (Goodfellow et al., 2014) ---------------------------------
def bce_d_loss(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """``real_label < 1`` is one-sided label smoothing (Salimans et al., 2016): fakes stay at 0."""
    real_loss = F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_label))
    return real_loss + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))


def nonsaturating_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def minimax_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """The original ``min log(1 - D(G(z)))``; saturates early in training (kept for study)."""
    return -F.softplus(fake).mean()


# --- hinge (Lim & Ye, 2017; Miyato et al., 2018) --------------------------------------------
def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


# --- Wasserstein with gradient penalty (Gulrajani et al., 2017) -----------------------------
def wasserstein_d_loss(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """``E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random interpolates of real and fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): ``E[||grad_x D(x)||^2]`` on the real images ``real`` (which
    must require grad and be what produced ``real_logits``); the caller weighs it by gamma / 2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None,
                 eps: float = 1e-5) -> torch.Tensor:
    """MSGAN (Mao et al., 2019) within one batch: images of one label paired up (sorted by label,
    neighbours), ``1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps)``; G lowers it by drawing
    different images for different z. Pairs across two labels are left out."""
    labels = torch.zeros(len(z), dtype=torch.long, device=z.device) if labels is None else labels
    order = torch.argsort(labels, stable=True)
    a, b = order[0 : len(order) - 1 : 2], order[1::2]
    same = (labels[a] == labels[b]).float()
    ratio = (fake[a] - fake[b]).abs().flatten(1).mean(1) / (z[a] - z[b]).abs().mean(1)
    return 1.0 / ((same * ratio).sum() / same.sum().clamp(min=1.0) + eps)


def class_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN's auxiliary term (Odena et al., 2017) on a projection D's class scores (N, classes):
    cross-entropy against ``labels``. D takes it on real images only (naming real digits), G on
    its own (drawing digits D names as their label)."""
    return F.cross_entropy(scores.float(), labels)


class GANLoss(NamedTuple):
    d_loss: Callable[..., torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    gradient_penalty: bool = False


LOSSES: dict[str, GANLoss] = {
    "bce": GANLoss(bce_d_loss, nonsaturating_g_loss),
    "minimax": GANLoss(bce_d_loss, minimax_g_loss),
    "hinge": GANLoss(hinge_d_loss, hinge_g_loss),
    "wgan-gp": GANLoss(wasserstein_d_loss, wasserstein_g_loss, gradient_penalty=True),
}
