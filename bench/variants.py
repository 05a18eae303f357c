"""Architecture variants the recipe sweep tried (``bench/sweep.py --variant``), none shipped.

Each wraps what ``models.build`` returns for the conditional DCGAN at 28x28 (D: two strided
convs, ``d_extra_convs`` 3x3 ones, then the projection head; G: linear, BatchNorm, one transposed
conv, BatchNorm, one transposed conv). A variant a sweep measures well earns a model field and a
test of its own, not this file: ``deep7`` did (``d_extra_convs``, on by default since the sweep;
the sweep's variant rows ran with none, so pass ``"d_extra_convs": 0`` to reproduce them).

- ``deep7``: one more D conv, 3x3 at stride 1 on the 7x7 features (D's work about doubles).
- ``mbstd``: ProGAN's minibatch standard deviation as one more 7x7 feature plane, then that conv.
- ``mbstd_class``: the same plane, but per label (``models.layers.LabelSpread``), then a conv in
  place of the default extra one (run with ``"d_extra_convs": 0``). It earned a field:
  ``d_label_spread`` builds the same D (its conv is created in another order, so the weights
  start elsewhere); this variant stays to reproduce the sweep's rows.
- ``cbn``: conditional BatchNorm in G (BigGAN): each BatchNorm's gain and bias looked up by
  label, the label embedding still concatenated to z.
- ``gdeep7``: G's counterpart of D's extra conv: a 3x3 stride-1 conv, BatchNorm and ReLU on G's
  7x7 map before the first transposed conv; ``gdeep7x2`` two of them; ``gdeep14`` that one
  and another (w channels) on the 14x14 map before the last transposed conv.
- ``wideg``: G 1.5x as wide as D (``width`` * 3 / 2), D as it is.
- ``upconv``: G's transposed convolutions replaced by nearest-neighbour upsampling and a 3x3
  convolution (Odena et al., 2016: no checkerboard pattern), same channels; ``upconv28``
  only the last one (to 28x28, where the pattern would be in the pixels; the cheap one).
- ``sng``: spectral norm on G's linear and convolutions too (SAGAN, Zhang et al., 2019).
- ``flathead``: D's projection head as it was until 2026-11-29's seventh session: the 7x7
  features copied into (C, H, W) order, then ``w.phi + b`` and an elementwise product with the
  label's embedding, in float32 beside the bf16 features. The same function as today's head
  (one matrix product on the features in their memory order); ``bench/step_time.py`` times the
  two. (D's body then ended in ``nn.Flatten``; the rows of the sweeps before that day ran so.)
- ``spreadcat``: with ``"d_label_spread": true``, the spread plane as it was until 2026-11-30:
  appended to the 7x7 map (a copy of it, 129 channels), then the conv over it. The same function
  as today's ``LabelSpread.conv`` (the conv of the map plus each image's spread times the conv of
  a plane of ones); ``bench/step_time.py`` times the two.
- ``autogradspread``: the spread's values and plane term as they were until 2026-11-30's seventh
  session: autograd's chain through the statistics (the map copied into (C, H, W) order and to
  float32, whose products autocast then ran in bf16) and through ``out + spread * plane``. The
  same function as today's ``SpreadValues`` and ``SpreadPlane`` but for the bf16 products'
  rounding; ``bench/step_time.py`` times the two.
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

import models
from models.layers import LabelSpread, maybe_sn

VARIANTS = ("none", "deep7", "mbstd", "mbstd_class", "cbn", "gdeep7", "gdeep7x2", "gdeep14",
            "wideg", "upconv", "upconv28", "sng", "flathead", "spreadcat", "autogradspread")


class MinibatchStd(nn.Module):
    """Appends the mean standard deviation over groups of ``group`` images as one plane."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group, n)
        std = x.view(g, -1, c, h, w).var(0, unbiased=False).add(1e-8).sqrt().mean([1, 2, 3])  # (n/g,)
        return torch.cat([x, std.view(-1, 1, 1, 1).repeat(g, 1, h, w)], 1)  # (n, c + 1, h, w)


class ClassMbstdDiscriminator(nn.Module):
    """D's strided convs, the per-label spread plane, one 3x3 conv, D's own head."""

    def __init__(self, d: nn.Module, convs: list[nn.Module], conv: nn.Module) -> None:
        super().__init__()
        self.cfg, self.head = d.cfg, d.head
        self.pre = nn.Sequential(*convs)
        self.std = LabelSpread(d.cfg.num_classes)
        self.post = nn.Sequential(conv, nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = self.post(self.std(self.pre(x), labels))  # (N, 2w, 7, 7)
        return self.head(phi, labels)


class FlatHead(nn.Module):
    """The old projection head around today's one (its parameters): flatten, then two terms."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, phi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = phi.flatten(1)  # (N, 2w*7*7) in (C, H, W) order: a copy of channels_last features
        out = self.head.linear(phi).squeeze(1)
        return out + (self.head.embed(labels) * phi).sum(dim=1)


class CatSpreadDiscriminator(nn.Module):
    """D (built with ``d_label_spread``) with its spread plane appended, then convolved."""

    def __init__(self, d: nn.Module) -> None:
        super().__init__()
        self.d, self.cfg, self.spread = d, d.cfg, d.spread

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = x
        for layer in self.d.body:
            phi = layer(phi, labels) if layer is self.spread else layer(phi)  # (N, 2w, 7, 7)
        return self.d.head(phi, labels)


class AutogradSpread(LabelSpread):
    """``LabelSpread`` with its values and plane term in autograd's ops, as they were."""

    def values(self, x: torch.Tensor, labels: torch.Tensor, batches: int = 1) -> torch.Tensor:
        if batches != 1:
            raise SystemExit("autogradspread takes one batch a call: leave d_joint off")
        flat = x.float().flatten(1)  # (n, c*h*w): a copy of a channels_last map
        onehot = nn.functional.one_hot(labels, self.num_classes).to(flat.dtype)  # (n, K)
        counts = onehot.sum(0).clamp(min=1).unsqueeze(1)  # (K, 1)
        mean = onehot.T @ flat / counts  # (K, c*h*w); bf16 under autocast
        var = (onehot.T @ flat.square() / counts - mean.square()).clamp(min=0)
        return var.add(1e-8).sqrt().mean(1)[labels]  # (n,)

    @staticmethod
    def add_plane(out: torch.Tensor, spread: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
        return out + spread.to(out.dtype).view(-1, 1, 1, 1) * plane


class ConditionalBatchNorm(nn.Module):
    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, num_classes: int) -> None:
        super().__init__()
        self.bn = type(bn)(bn.num_features, affine=False)
        self.gain = nn.Embedding(num_classes, bn.num_features)
        self.bias = nn.Embedding(num_classes, bn.num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
        return self.bn(x) * self.gain(y).view(shape) + self.bias(y).view(shape)


class CBNGenerator(nn.Module):
    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        k = g.cfg.num_classes
        self.g, self.start = g, g.start
        self.bn1, self.bn2 = ConditionalBatchNorm(g.project[1], k), ConditionalBatchNorm(g.up[1], k)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = self.g
        top, side = self.start
        h = g.project[0](torch.cat([z, g.embed(y)], 1))
        h = torch.relu(self.bn1(h, y)).view(-1, top, side, side)  # (N, 2w, 7, 7)
        h = torch.relu(self.bn2(g.up[0](h), y))  # (N, w, 14, 14)
        return torch.tanh(g.up[3](h))  # (N, 1, 28, 28)


def config(variant: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` for a run of ``variant``: its D takes one batch a call (the variants' forward
    knows no ``batches``, and their own cross-image planes would mix stacked batches), so
    ``d_joint`` is off unless the changes say."""
    return changes if variant == "none" else {"d_joint": False, **changes}


def patch(variant: str) -> None:
    """Make ``models.build`` (as the trainer calls it) build ``variant``."""
    if variant not in VARIANTS:
        raise SystemExit(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    build = models.build

    def patched(family: str, arch: models.ModelConfig) -> tuple[nn.Module, nn.Module]:
        G, D = build(family, arch)
        if family != "dcgan" or arch.image_size != 28 or not arch.conditional:
            raise SystemExit("the variants are of the conditional 28x28 DCGAN only")
        top, sn = arch.width * 2, arch.spectral_norm
        convs = list(D.body)
        if variant == "cbn":
            G = CBNGenerator(G)
        elif variant in ("gdeep7", "gdeep7x2", "gdeep14"):
            def block(c: int) -> list[nn.Module]:
                return [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            up = list(G.up)  # convT, BN, ReLU (N, w, 14, 14), convT (N, 1, 28, 28), tanh
            at7 = block(top) + (block(top) if variant == "gdeep7x2" else [])
            at14 = block(top // 2) if variant == "gdeep14" else []
            G.up = nn.Sequential(*at7, *up[:3], *at14, *up[3:])
        elif variant == "upconv":
            def up2(c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
                return [nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)]
            G.up = nn.Sequential(*up2(top, top // 2, False), nn.BatchNorm2d(top // 2), nn.ReLU(),
                                 # (N, w, 14, 14)
                                 *up2(top // 2, arch.channels, True), nn.Tanh())  # (N, 1, 28, 28)
        elif variant == "upconv28":
            up = list(G.up)  # convT, BN, ReLU (N, w, 14, 14), convT (N, 1, 28, 28), tanh
            G.up = nn.Sequential(*up[:3], nn.Upsample(scale_factor=2),
                                 nn.Conv2d(top // 2, arch.channels, 3, padding=1), nn.Tanh())
        elif variant == "sng":
            G.project[0] = maybe_sn(G.project[0], True)
            G.up[0], G.up[3] = maybe_sn(G.up[0], True), maybe_sn(G.up[3], True)
        elif variant == "wideg":
            G, _ = build(family, dataclasses.replace(arch, width=arch.width * 3 // 2))
        elif variant == "mbstd_class":
            D = ClassMbstdDiscriminator(D, convs, maybe_sn(nn.Conv2d(top + 1, top, 3, padding=1), sn))
        elif variant in ("deep7", "mbstd"):
            extra = [MinibatchStd()] if variant == "mbstd" else []
            conv = maybe_sn(nn.Conv2d(top + len(extra), top, 3, padding=1), sn)
            D.body = nn.Sequential(*convs, *extra, conv, nn.LeakyReLU(0.2))  # (N, 2w, 7, 7)
        elif variant == "flathead":
            D.head = FlatHead(D.head)
        elif variant == "spreadcat":
            if D.spread is None:
                raise SystemExit('--variant spreadcat needs "d_label_spread": true')
            D = CatSpreadDiscriminator(D)
        elif variant == "autogradspread":
            if D.spread is None:
                raise SystemExit('--variant autogradspread needs the label spread (the default)')
            D.spread.__class__ = AutogradSpread  # the same module, its two functions as they were
        return G, D

    models.build = patched  # type: ignore[assignment]


@contextlib.contextmanager
def building(variant: str) -> Iterator[None]:
    """``patch`` for what is built inside the block only (``models.build`` restored after);
    ``none`` leaves every family and size as it is."""
    build = models.build
    if variant != "none":
        patch(variant)
    try:
        yield
    finally:
        models.build = build  # type: ignore[assignment]
