"""DCGAN (Radford et al., 2016) at 28x28 (MNIST), 32x32 or 64x64, grey or colour.

G: z [+ label embedding] -> linear to (w * 2^(k-1)) x s x s -> k transposed convs, each doubling
the side and halving the channels (BatchNorm and ReLU between them) -> channels x S x S, tanh.
D mirrors it: k strided convs from channels x S x S down to (w * 2^(k-1)) x s x s, LeakyReLU(0.2),
no BatchNorm (so WGAN-GP's per-sample gradient penalty and spectral norm both apply), then
``d_extra_convs`` 3x3 convs at stride 1 on that last feature map (capacity where the map is
smallest: at 28, one doubles D's work; the reference recipe has one), then a linear or
projection head. With ``d_label_spread`` (the reference recipe has it), the first of those
convs also sees one more plane: each image's label's feature spread over the batch
(``LabelSpread``).

    image_size  s  k  G's sides              top channels (w = width)
    28          7  2  7 -> 14 -> 28          2w   (the MNIST layout, unchanged)
    32          4  3  4 -> 8 -> 16 -> 32     4w
    64          4  4  4 -> ... -> 64         8w
"""

from typing import cast

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import LabelSpread, ProjectionHead, check_labels, check_size, maybe_sn

# image_size -> (start side s, up/down-sampling blocks k)
PLANS: dict[int, tuple[int, int]] = {28: (7, 2), 32: (4, 3), 64: (4, 4)}
SIZES: tuple[int, ...] = tuple(PLANS)


def plan(cfg: ModelConfig) -> tuple[int, int, int]:
    """``(start side, blocks, top channels)`` for ``cfg``; refuses a size with no plan."""
    check_size("dcgan", SIZES, cfg.image_size)
    side, blocks = PLANS[cfg.image_size]
    return side, blocks, cfg.width * 2 ** (blocks - 1)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        side, blocks, top = plan(cfg)
        self.start = (top, side)
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.conditional else None
        self.project = nn.Sequential(
            nn.Linear(cfg.g_input, top * side * side, bias=False),
            nn.BatchNorm1d(top * side * side),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c = top
        for _ in range(blocks - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c // 2),
                       nn.ReLU()]
            c, side = c // 2, side * 2
            # (N, c, side, side): at 28, (N, w, 14, 14)
        layers += [nn.ConvTranspose2d(c, cfg.channels, kernel_size=4, stride=2, padding=1),
                   # (N, channels, image_size, image_size)
                   nn.Tanh()]
        self.up = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.cfg.num_classes, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        top, side = self.start
        h = self.project(z).view(-1, top, side, side)  # (N, top, s, s): at 28, (N, 2w, 7, 7)
        return self.up(h)  # (N, channels, image_size, image_size)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sn, w = cfg.spectral_norm, cfg.width
        start, blocks, top = plan(cfg)
        concat = cfg.conditional and cfg.d_conditioning == "concat"
        # concat conditioning: the label becomes one extra image_size x image_size input plane
        side = cfg.image_size
        self.concat_embed = nn.Embedding(cfg.num_classes, side * side) if concat else None
        layers: list[nn.Module] = []
        c_in, c = cfg.channels + int(concat), w
        for _ in range(blocks):
            layers += [maybe_sn(nn.Conv2d(c_in, c, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2)]
            c_in, c, side = c, 2 * c, side // 2
            # (N, c_in, side, side): at 28, (N, w, 14, 14) then (N, 2w, 7, 7)
        self.spread = LabelSpread(cfg.num_classes) if cfg.d_label_spread else None
        if self.spread is not None:
            layers.append(self.spread)  # (N, top + 1, s, s)
        for i in range(cfg.d_extra_convs):
            c_in = top + int(i == 0 and self.spread is not None)
            layers += [maybe_sn(nn.Conv2d(c_in, top, 3, stride=1, padding=1), sn), nn.LeakyReLU(0.2)]
            # (N, top, s, s): the same side
        self.body = nn.Sequential(*layers)
        projection = cfg.num_classes if cfg.conditional and not concat else 0
        self.head = ProjectionHead(top * start * start, projection, sn)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                classes: bool = False, batches: int = 1) -> torch.Tensor:
        """(N,) logits; ``classes``: (N, 1 + classes), every class's score after them.
        ``batches``: ``x`` holds that many batches of equal size, one after the other (a D
        step's real and fake ones); only the label spread, which looks across a batch, cares."""
        check_labels(labels, self.cfg.num_classes, x.shape[0])
        if self.concat_embed is not None:
            side = self.cfg.image_size
            x = torch.cat([x, self.concat_embed(labels).view(-1, 1, side, side)], dim=1)
        if self.spread is None:
            phi = self.body(x)  # (N, top, s, s): at 28, (N, 2w, 7, 7)
        else:  # the spread plane needs the labels mid-body
            assert labels is not None  # check_labels: a D with the spread is conditional
            phi, layers = x, iter(self.body)
            for layer in layers:
                if layer is self.spread:  # the plane and the conv after it, in one
                    conv = cast(nn.Conv2d, next(layers))
                    phi = self.spread.conv(conv, phi, self.spread.values(phi, labels, batches))
                    # (N, top, s, s)
                else:
                    phi = layer(phi)
        return self.head(phi, None if self.concat_embed is not None else labels, classes)
