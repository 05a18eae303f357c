"""Checkpoints on disk: plain dicts written atomically (temp file, fsync, rename)."""

from pathlib import Path
from typing import Any

import torch

from ganforge.errors import CorruptModel
from ganforge.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise CorruptModel(f"checkpoint: cannot read {path}: {exc}") from exc
    return state
