"""Checkpoints on disk: plain dicts written atomically (temp file, fsync, rename)."""

import os
from pathlib import Path
from typing import Any

import torch

from ganforge.errors import CorruptModel

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise CorruptModel(f"checkpoint: cannot read {path}: {exc}") from exc
    return state
