"""The typed configuration every GAN family is built from."""

from dataclasses import asdict, dataclass
from typing import Any, Literal

Conditioning = Literal["projection", "concat"]

# Every image side some family builds; which family builds which is each family module's
# ``SIZES`` (``models.supported_sizes``), checked by ``models.build``. Spelled out here because
# the families import this module; tests/models keeps it equal to the union of their SIZES.
IMAGE_SIZES: tuple[int, ...] = (28, 32, 64)
CHANNELS: tuple[int, ...] = (1, 3)  # grey or colour
MAX_EXTRA_CONVS = 4


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture arguments shared by all families.

    ``num_classes == 0`` builds the unconditional form; otherwise G embeds a label and D is
    conditioned by projection (Miyato & Koyama, 2018) or by concatenating a label embedding.
    Images are ``channels x image_size x image_size``; the defaults are MNIST's 1x28x28.
    """

    latent_dim: int = 100
    num_classes: int = 0
    image_size: int = 28
    channels: int = 1
    width: int = 64  # base channel count (dcgan) or first hidden width (mlp)
    embed_dim: int = 50  # length of G's label embedding, concatenated to z
    spectral_norm: bool = False  # on every D layer
    d_conditioning: Conditioning = "projection"
    d_dropout: float = 0.3  # the classic MLP D's dropout; dcgan ignores it
    d_extra_convs: int = 0  # dcgan: 3x3 stride-1 convs on D's last feature map; mlp ignores it
    # dcgan, conditional, with an extra conv: before the first extra conv, D appends one plane,
    # each image's label's feature spread over the batch (models.layers.LabelSpread)
    d_label_spread: bool = False

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be 0 (unconditional) or more, got {self.num_classes}")
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))} "
                             f"(see models.supported_sizes for each family), got {self.image_size}")
        if self.channels not in CHANNELS:
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {self.channels}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be at least 1, got {self.embed_dim}")
        if self.width < 8:
            raise ValueError(f"width must be at least 8, got {self.width}")
        if self.d_conditioning not in ("projection", "concat"):
            raise ValueError(f"d_conditioning must be projection or concat, got {self.d_conditioning!r}")
        if not 0 <= self.d_extra_convs <= MAX_EXTRA_CONVS:
            raise ValueError(f"d_extra_convs must be in [0, {MAX_EXTRA_CONVS}], got {self.d_extra_convs}")
        if self.d_label_spread and (not self.conditional or self.d_extra_convs < 1):
            raise ValueError("d_label_spread needs a conditional model and d_extra_convs >= 1 "
                             "(the plane goes in before the first extra conv)")
        if not 0.0 <= self.d_dropout < 1.0:
            raise ValueError(f"d_dropout must be in [0, 1), got {self.d_dropout}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def g_input(self) -> int:
        """Length of G's input: z, plus the label embedding when conditional."""
        return self.latent_dim + (self.embed_dim if self.conditional else 0)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
