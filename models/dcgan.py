"""DCGAN (Radford et al., 2016) sized for 28x28 MNIST.

G: z [+ label embedding] -> linear to 2w x 7 x 7 -> two transposed convs up to 1 x 28 x 28,
BatchNorm and ReLU between them, tanh output.
D: two strided convs down to 2w x 7 x 7, LeakyReLU(0.2), no BatchNorm (so WGAN-GP's per-sample
gradient penalty and spectral norm both apply), then a linear or projection head.
"""

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import ProjectionHead, check_labels, maybe_sn


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.conditional else None
        self.project = nn.Sequential(
            nn.Linear(cfg.g_input, 2 * w * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * w * 7 * 7),
            nn.ReLU(),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            # (N, w, 14, 14)
            nn.ConvTranspose2d(w, cfg.channels, kernel_size=4, stride=2, padding=1),
            # (N, 1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.cfg.num_classes, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = self.project(z).view(-1, 2 * self.cfg.width, 7, 7)  # (N, 2w, 7, 7)
        return self.up(h)  # (N, 1, 28, 28)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sn, w = cfg.spectral_norm, cfg.width
        concat = cfg.conditional and cfg.d_conditioning == "concat"
        # concat conditioning: the label becomes one extra 28x28 input plane
        side = cfg.image_size
        self.concat_embed = nn.Embedding(cfg.num_classes, side * side) if concat else None
        self.body = nn.Sequential(
            maybe_sn(nn.Conv2d(cfg.channels + int(concat), w, 4, stride=2, padding=1), sn),
            nn.LeakyReLU(0.2),
            # (N, w, 14, 14)
            maybe_sn(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), sn),
            nn.LeakyReLU(0.2),
            # (N, 2w, 7, 7)
            nn.Flatten(),
        )
        projection = cfg.num_classes if cfg.conditional and not concat else 0
        self.head = ProjectionHead(2 * w * 7 * 7, projection, sn)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.cfg.num_classes, x.shape[0])
        if self.concat_embed is not None:
            side = self.cfg.image_size
            x = torch.cat([x, self.concat_embed(labels).view(-1, 1, side, side)], dim=1)
        phi = self.body(x)  # (N, 2w*7*7)
        return self.head(phi, None if self.concat_embed is not None else labels)  # (N,) logits
