"""Small building blocks shared by the families."""

from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``layer`` in spectral normalisation when ``enabled``."""
    return spectral_norm(layer) if enabled else layer


class ProjectionHead(nn.Module):
    """D's output from its features: ``w.phi + b`` plus ``<embed(y), phi>`` when conditional.

    The inner product with a class embedding is the projection discriminator's way to say
    "is this a real image *of this class*" without concatenating labels to the input. The
    embedding is left out of spectral norm: bounding it slowed label learning (README, "The
    reference recipe").

    Both products are one matrix product, ``phi`` against ``w`` and every class's embedding
    (N x (1 + classes)), from which each row's own class is picked: no (N, features) gather of
    embeddings, no elementwise product in float32 beside bf16 features. ``phi`` may be a
    (N, C, H, W) map, flattened in its own memory order (channels_last: H, W, C) with the
    weights' columns permuted to match, so the map is never copied into (C, H, W) order; the
    parameters keep the (C, H, W) order of ``nn.Flatten``, and old checkpoints load as they are.
    """

    def __init__(self, features: int, num_classes: int, sn: bool) -> None:
        super().__init__()
        self.linear = maybe_sn(nn.Linear(features, 1), sn)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, phi: torch.Tensor, labels: torch.Tensor | None,
                classes: bool = False) -> torch.Tensor:
        """(N,) logits; with ``classes`` (conditional only), (N, 1 + classes): the logits, then
        every class's score ``<embed(c), phi>`` (an auxiliary classifier's logits, free: the
        product computes them all anyway)."""
        if self.embed is not None and labels is None:
            raise ValueError("a conditional discriminator needs labels")
        # (1, F); spectral norm's power step runs here, once (maybe_sn types it as a Module)
        rows: torch.Tensor = self.linear.weight  # type: ignore[assignment]
        bias: torch.Tensor = self.linear.bias  # type: ignore[assignment]
        if self.embed is not None:
            rows = torch.cat([rows, self.embed.weight])  # (1 + classes, F)
        if channels_last_only(phi):
            rows = rows.view(-1, *phi.shape[1:]).permute(0, 2, 3, 1).reshape(rows.shape[0], -1)
            phi = phi.permute(0, 2, 3, 1)  # (N, H, W, C): a view of channels_last memory
        scores = nn.functional.linear(phi.reshape(phi.shape[0], -1), rows)  # (N, 1 + classes)
        out = scores[:, 0] + bias
        if self.embed is not None and labels is not None:
            out = out + scores[:, 1:].gather(1, labels[:, None]).squeeze(1)
        if classes:
            if self.embed is None:
                raise ValueError("class scores need a projection discriminator")
            return torch.cat([out[:, None], scores[:, 1:]], 1)  # (N, 1 + classes)
        return out


class LabelSpread(nn.Module):
    """ProGAN's minibatch standard deviation, per label: appends one plane holding, for each
    image, the standard deviation of the features over the batch's images of its own label
    (averaged over channels and pixels; ~0 for a label seen once). A conditional batch mixes
    labels, so the plain form mostly measures how different the labels are; this one lets D tell
    a batch whose 3s are all alike from real 3s. Computed in float32 (under autocast too).

    ``forward`` appends the plane; D uses ``conv`` instead: the conv that follows, over the map
    and the plane, without building the (c + 1)-channel map."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"LabelSpread needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes

    def values(self, x: torch.Tensor, labels: torch.Tensor, batches: int = 1) -> torch.Tensor:
        """(n,) float32: each image's label's spread. ``batches``: ``x`` is that many batches of
        equal size one after the other (D's real and fake batches in one call), each with its
        own spread. The features are read in ``x``'s memory order (a channels_last map is not
        copied into (C, H, W) order: the mean over them does not care), and the statistics are
        float32 under autocast too (``SpreadValues``)."""
        n = x.shape[0]
        if n % batches:
            raise ValueError(f"{n} images do not split into {batches} batches of equal size")
        # batch b's label k is group b * K + k
        group = labels + self.num_classes * (torch.arange(n, device=labels.device) // (n // batches))
        onehot = nn.functional.one_hot(group, self.num_classes * batches).float()  # (n, bK)
        per_group = cast(torch.Tensor, SpreadValues.apply(flat_in_memory_order(x), onehot))  # (bK,)
        return per_group[group]  # (n,)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, batches: int = 1) -> torch.Tensor:
        n, _, h, w = x.shape
        spread = self.values(x, labels, batches).to(x.dtype).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, spread], 1)  # (n, c+1, h, w)

    @classmethod
    def conv(cls, conv: nn.Conv2d, x: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        """``conv(forward(x))`` for the plane's values ``spread``, the same to float rounding: a
        conv is linear, so over the map and a plane it is the conv of the map with the weights'
        first channels plus, per image, ``spread`` times the conv of a plane of ones with the
        last channel's (one (out, h, w) map for the batch; zero padding shapes its border)."""
        if conv.padding_mode != "zeros":
            raise ValueError(f"LabelSpread.conv needs zero padding, got {conv.padding_mode!r}")
        weight = conv.weight  # (out, c + 1, kh, kw): spectral norm's, where it has one
        out = nn.functional.conv2d(x, weight[:, :-1], conv.bias, conv.stride, conv.padding,
                                   conv.dilation)  # (n, out, h, w)
        ones = x.new_ones((1, 1, *x.shape[2:]))
        plane = nn.functional.conv2d(ones, weight[:, -1:], None, conv.stride, conv.padding,
                                     conv.dilation)  # (1, out, h, w)
        return cls.add_plane(out, spread, plane)

    @staticmethod
    def add_plane(out: torch.Tensor, spread: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
        """``out + spread_i * plane``: ``conv``'s plane term (``SpreadPlane``)."""
        return cast(torch.Tensor, SpreadPlane.apply(out, spread, plane))


def channels_last_only(x: torch.Tensor) -> bool:
    """Whether ``x`` is a channels_last map and not also contiguous (one channel is both)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def flat_in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """(n, features) of ``x``: a channels_last map in its own (h, w, c) order, a view where a
    (c, h, w) flatten would copy; for sums and means over the features the order does not count."""
    return (x.permute(0, 2, 3, 1) if channels_last_only(x) else x).reshape(x.shape[0], -1)


class SpreadPlane(torch.autograd.Function):
    """``out + spread_i * plane`` (``LabelSpread.conv``'s plane term) for a (n, o, h, w) ``out``,
    (n,) ``spread`` and (1, o, h, w) ``plane``, in one pass; its gradient takes two
    matrix-vector products over the incoming one, where autograd's chain makes four passes
    (two products, two sums). The backward is ordinary ops on the inputs, so a gradient of it
    (R1's penalty) is autograd's."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, spread: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(spread, plane)
        return torch.addcmul(out, spread.to(out.dtype).view(-1, 1, 1, 1), plane)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        spread, plane = ctx.saved_tensors
        order = channels_last_only(grad)
        g = flat_in_memory_order(grad)  # (n, F)
        ordered = plane.permute(0, 2, 3, 1) if order else plane  # the same order as g's
        grad_spread = (g @ ordered.reshape(-1).to(g.dtype)).to(spread.dtype)  # (n,)
        grad_plane = (spread.to(g.dtype) @ g).view(ordered.shape)  # (1, h, w, o) or (1, o, h, w)
        grad_plane = grad_plane.permute(0, 3, 1, 2) if order else grad_plane
        return grad, grad_spread, grad_plane.to(plane.dtype)


def spread_stats(flat: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per label, over the rows of ``flat`` (n, F) that ``onehot`` (n, K) gives it, in float32
    (float64 for float64): ``(counts (K, 1), mean (K, F), variance before its clamp at 0 (K, F),
    spread (K,))``. The variance is E[x^2] - E[x]^2, which cancels where the
    mean is large against the spread: autocast would run the products in bf16, so it is off."""
    with torch.autocast(flat.device.type, enabled=False):
        x = flat.to(torch.promote_types(flat.dtype, torch.float32))
        onehot = onehot.to(x.dtype)
        counts = onehot.sum(0).clamp(min=1).unsqueeze(1)
        mean = onehot.T @ x / counts
        raw = onehot.T @ x.square() / counts - mean.square()
        spread = raw.clamp(min=0).add(1e-8).sqrt().mean(1)
    return counts, mean, raw, spread


class SpreadValues(torch.autograd.Function):
    """``LabelSpread``'s per-label spread (K,) from ``flat`` (n, F), with the gradient written
    out: for an image x_i of label k, d spread_k / d x_i = (x_i - mean_k) / (n_k F std_k) (per
    feature, where the variance is above 0), two row gathers and one multiply-add over the map
    in its own dtype, where autograd's chain through the statistics makes about ten passes in
    float32. Under ``create_graph`` (R1's penalty differentiates the gradient again) the backward
    is autograd's over the same statistics, so that it has a gradient itself."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        counts, mean, raw, spread = spread_stats(flat, onehot)
        ctx.save_for_backward(flat, onehot, counts, mean, raw)
        return spread

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        flat, onehot, counts, mean, raw = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the gradient is asked for: autograd's own
            again = spread_stats(flat, onehot)[-1]
            return torch.autograd.grad(again, flat, grad, create_graph=True)[0], None
        with torch.autocast(flat.device.type, enabled=False):
            std = raw.clamp(min=0).add(1e-8).sqrt()  # (K, F)
            a = (grad.to(raw.dtype)[:, None] / (counts * raw.shape[1])) * (raw >= 0) / std  # (K, F)
            label = onehot.argmax(1)  # (n,)
            # x_i a_k - mean_k a_k in the map's own dtype (bf16 under autocast: its gradient's)
            scale, shift = a.to(flat.dtype)[label], (-a * mean).to(flat.dtype)[label]  # (n, F)
            return torch.addcmul(shift, flat, scale), None


def check_labels(labels: torch.Tensor | None, num_classes: int, batch: int) -> None:
    if torch.jit.is_tracing():  # shapes are symbolic while exporting
        return
    if num_classes and (labels is None or labels.shape != (batch,)):
        raise ValueError(f"a conditional model needs labels of shape ({batch},)")
    if not num_classes and labels is not None:
        raise ValueError("an unconditional model takes no labels")


class UnsupportedImageSize(ValueError):
    """An image side the family has no layer plan for.

    A plain ``ValueError`` (models import nothing of ours); ``field`` lets a caller turn it into
    its own bad-input error, and the message starts with the field name as those do.
    """

    field = "image_size"


def check_size(family: str, sizes: tuple[int, ...], image_size: int) -> None:
    """Refuse a side the family cannot build, naming the field and the sizes it builds."""
    if image_size not in sizes:
        built = ", ".join(map(str, sizes))
        raise UnsupportedImageSize(f"image_size: the {family} family builds {built} pixel images, "
                                   f"got {image_size}")
