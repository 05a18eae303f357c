"""GAN families, by name.

``FAMILIES`` maps the name a job spec uses (``"mlp"``, ``"dcgan"``) to its generator and
discriminator classes and the image sides it builds; :func:`build` returns both networks from one
:class:`ModelConfig`. Every generator follows one interface: ``G(z, labels | None) -> images in
[-1, 1]`` of shape (N, channels, image_size, image_size), (N, 1, 28, 28) for MNIST.
"""

from typing import NamedTuple

from torch import nn

from models import dcgan, mlp
from models.config import CHANNELS, IMAGE_SIZES, ModelConfig
from models.layers import UnsupportedImageSize, check_size
from models.losses import LOSSES, GANLoss


class Family(NamedTuple):
    generator: type[nn.Module]
    discriminator: type[nn.Module]
    sizes: tuple[int, ...]  # the image sides it has a layer plan for


FAMILIES: dict[str, Family] = {
    "mlp": Family(mlp.Generator, mlp.Discriminator, mlp.SIZES),
    "dcgan": Family(dcgan.Generator, dcgan.Discriminator, dcgan.SIZES),
}


def _family(family: str) -> Family:
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def supported_sizes(family: str) -> tuple[int, ...]:
    """The image sides ``family`` builds (``KeyError`` listing the families when unknown)."""
    return _family(family).sizes


def check_image_size(family: str, image_size: int) -> None:
    """Raise ``UnsupportedImageSize`` (a ``ValueError``, ``.field == "image_size"``) when
    ``family`` has no layer plan for ``image_size``; the message lists the sizes it builds."""
    check_size(family, supported_sizes(family), image_size)


def build(family: str, cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of the named family; an unknown name raises ``KeyError`` listing them,
    an image size the family does not build raises ``UnsupportedImageSize``."""
    fam = _family(family)
    check_image_size(family, cfg.image_size)
    return fam.generator(cfg), fam.discriminator(cfg)


def build_generator(family: str, cfg: ModelConfig) -> nn.Module:
    fam = _family(family)
    check_image_size(family, cfg.image_size)
    return fam.generator(cfg)


__all__ = ["CHANNELS", "FAMILIES", "IMAGE_SIZES", "LOSSES", "Family", "GANLoss", "ModelConfig",
           "UnsupportedImageSize", "build", "build_generator", "check_image_size", "supported_sizes"]
