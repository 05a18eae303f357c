"""DiffAugment (models/augment.py): what each augmentation does to a batch, and that gradients
pass through it to G."""

import pytest
import torch

from models.augment import POLICIES, cutout, diff_augment, translation


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (C, H, W) moved ``dy`` rows up and ``dx`` columns left (content at (i, j) comes
    from (i + dy, j + dx)), zeros where nothing comes in."""
    _, h, w = x.shape
    out = torch.zeros_like(x)
    src = x[:, max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)]
    out[:, max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)] = src
    return out


def test_translation_shifts_each_image_within_the_ratio_and_fills_zeros() -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 2, 16, 16) + 0.5  # no zeros of its own
    out = translation(x, ratio=0.125)  # up to 2 pixels each way
    assert out.shape == x.shape
    seen = set()
    for img, src in zip(out, x, strict=True):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(img, shifted(src, dy, dx))]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 5  # the shifts vary across the batch


def test_cutout_zeroes_one_square_and_keeps_the_rest() -> None:
    torch.manual_seed(1)
    x = torch.rand(64, 1, 28, 28) + 0.5
    out = cutout(x, ratio=0.5)
    for img, src in zip(out, x, strict=True):
        zero = img[0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 14 and 1 <= len(cols) <= 14  # a 14 x 14 square, clipped at edges
        box = zero[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
        assert box.all() and zero.sum() == box.numel()  # one solid rectangle
        assert torch.equal(img[~zero.unsqueeze(0)], src[~zero.unsqueeze(0)])


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_policies_are_seeded_and_pass_gradients(policy: str) -> None:
    x = torch.randn(8, 3, 32, 32, requires_grad=True)
    torch.manual_seed(5)
    a = diff_augment(x, policy)
    torch.manual_seed(5)
    b = diff_augment(x, policy)
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if policy == "none":
        assert a is x
