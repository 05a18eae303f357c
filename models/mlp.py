"""The MLP GAN of the classic tutorials (Goodfellow et al., 2014; PyTorch-GAN's ``gan.py``).

G: z [+ label embedding] -> 256 -> 512 -> 1024 -> P, LeakyReLU(0.2), tanh output.
D: image [+ label embedding] -> 1024 -> 512 -> 256 -> logit, LeakyReLU(0.2) and dropout.
P = channels x image_size x image_size pixels (784 for MNIST). Any shape fits the layers; the
family stops at 32x32 because the first and last layers grow with P (64x64x3 would put 12.6M
weights in each) and a pixel MLP does not use them well at that size.
"""

import math

import torch
from torch import nn

from models.config import ModelConfig
from models.layers import ProjectionHead, check_labels, check_size, maybe_sn

SIZES: tuple[int, ...] = (28, 32)


class Generator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_size("mlp", SIZES, cfg.image_size)
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.num_classes, cfg.embed_dim) if cfg.conditional else None
        w = cfg.width * 4  # 256 at the default width of 64
        self.net = nn.Sequential(
            nn.Linear(cfg.g_input, w),
            nn.LeakyReLU(0.2),
            nn.Linear(w, 2 * w),
            nn.BatchNorm1d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * w, 4 * w),
            nn.BatchNorm1d(4 * w),
            nn.LeakyReLU(0.2),
            nn.Linear(4 * w, math.prod(cfg.image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(labels, self.cfg.num_classes, z.shape[0])
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z).view(-1, *self.cfg.image_shape)  # (N, channels, image_size, image_size)


class Discriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_size("mlp", SIZES, cfg.image_size)
        self.cfg = cfg
        sn, w = cfg.spectral_norm, cfg.width * 4
        concat = cfg.conditional and cfg.d_conditioning == "concat"
        self.concat_embed = nn.Embedding(cfg.num_classes, cfg.num_classes) if concat else None
        in_features = math.prod(cfg.image_shape) + (cfg.num_classes if concat else 0)
        self.body = nn.Sequential(
            maybe_sn(nn.Linear(in_features, 4 * w), sn),
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.d_dropout),
            maybe_sn(nn.Linear(4 * w, 2 * w), sn),
            nn.LeakyReLU(0.2),
            nn.Dropout(cfg.d_dropout),
            maybe_sn(nn.Linear(2 * w, w), sn),
            nn.LeakyReLU(0.2),
        )
        projection = cfg.num_classes if cfg.conditional and not concat else 0
        self.head = ProjectionHead(w, projection, sn)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                classes: bool = False, batches: int = 1) -> torch.Tensor:
        """(N,) logits; ``classes``: (N, 1 + classes), every class's score after them.
        ``batches`` (stacked batches) changes nothing here: no layer looks across images."""
        check_labels(labels, self.cfg.num_classes, x.shape[0])
        h = x.flatten(1)  # (N, P): 784 for MNIST
        if self.concat_embed is not None:
            h = torch.cat([h, self.concat_embed(labels)], dim=1)
        phi = self.body(h)  # (N, 4 * width): 256 at width 64
        return self.head(phi, None if self.concat_embed is not None else labels, classes)
