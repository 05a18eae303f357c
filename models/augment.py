"""DiffAugment (Zhao et al., 2020): differentiable augmentations applied to every image D sees,
real and fake alike, in the D step and the G step, so D cannot tell the sets apart by the
augmentation and G's gradients flow through it. Pure functions of a batch in [-1, 1]; their
randomness comes from torch's global generator (seeded per run, saved in checkpoints).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side in each direction; the uncovered border is 0."""
    n, _, h, w = x.shape
    dh, dw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_h = torch.randint(-dh, dh + 1, (n, 1, 1), device=x.device)
    shift_w = torch.randint(-dw, dw + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = (rows + shift_h + 1).clamp(0, h + 1)  # (n, h, 1): indices into the padded image
    cols = (cols + shift_w + 1).clamp(0, w + 1)  # (n, 1, w)
    padded = F.pad(x, [1, 1, 1, 1])  # (n, c, h + 2, w + 2): a zero frame to shift in
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (n, c, h, w)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the side per image, at a random place."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)  # (n, h, w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "none": (),
    "translation": (translation,),
    "translation+cutout": (translation, cutout),
}


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """``x`` through each augmentation of ``policy`` (a key of ``POLICIES``), in order."""
    for fn in POLICIES[policy]:
        x = fn(x)
    return x
