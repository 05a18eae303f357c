"""GAN families, by name.

``FAMILIES`` maps the name a job spec uses (``"mlp"``, ``"dcgan"``) to its generator and
discriminator classes; :func:`build` returns both from one :class:`ModelConfig`. Every generator
follows one interface: ``G(z, labels | None) -> images in [-1, 1]`` of shape (N, 1, 28, 28).
"""

from typing import NamedTuple

from torch import nn

from models import dcgan, mlp
from models.config import ModelConfig
from models.losses import LOSSES, GANLoss


class Family(NamedTuple):
    generator: type[nn.Module]
    discriminator: type[nn.Module]


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.Generator, mlp.Discriminator),
    "dcgan": Family(dcgan.Generator, dcgan.Discriminator),
}


def build(family: str, cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of the named family; an unknown name raises ``KeyError`` listing them."""
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    return fam.generator(cfg), fam.discriminator(cfg)


def build_generator(family: str, cfg: ModelConfig) -> nn.Module:
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family].generator(cfg)


__all__ = ["FAMILIES", "LOSSES", "Family", "GANLoss", "ModelConfig", "build", "build_generator"]
