"""ONNX export of a generator, with a parity check against PyTorch.

One self-contained file (no external data), opset 17, the TorchScript-based exporter
(``dynamo=False``), a dynamic batch axis. Inputs ``z`` float32 [N, latent_dim] and, for a
conditional model, ``label`` int64 [N]; output ``image`` float32 [N, C, H, W], the model's shape
(``arch.image_shape``: [N, 1, 28, 28] for MNIST, [N, 3, 32, 32] for a colour folder at 32).
"""

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganforge.errors import ExportParityError
from ganforge.files import atomic_write
from ganforge.generator import GeneratorSpec, OnnxGenerator
from models import ModelConfig

OPSET = 17
PARITY_TOLERANCE = 1e-4
TORCH_FILE = "generator.pt"


def save_torch_generator(generator: nn.Module, family: str, arch: ModelConfig, path: Path) -> None:
    """The same weights for PyTorch users: a plain dict that rebuilds from its own arguments."""
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    with atomic_write(path) as tmp:
        torch.save({"family": family, "architecture": arch.to_dict(), "state_dict": state}, tmp)


def load_torch_generator(path: Path) -> nn.Module:
    import models

    saved = torch.load(path, map_location="cpu", weights_only=True)
    g = models.build_generator(saved["family"], ModelConfig(**saved["architecture"]))
    g.load_state_dict(saved["state_dict"])
    return g.eval()


class _Conditional(nn.Module):
    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.g(z, label)


class _Unconditional(_Conditional):
    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.g(z, None)


def export_onnx(generator: nn.Module, arch: ModelConfig, path: Path,
                tolerance: float = PARITY_TOLERANCE) -> float:
    """Write ``generator`` (in eval mode, on the CPU) to ``path`` and return the parity error:
    the max abs difference between ONNX Runtime and PyTorch on 64 seeded inputs. Raises
    ExportParityError above ``tolerance`` and leaves no file behind then."""
    import copy

    g = copy.deepcopy(generator).cpu().eval()
    wrapper = (_Conditional(g) if arch.conditional else _Unconditional(g)).eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, arch.latent_dim, generator=gen)
    labels = torch.arange(64) % max(arch.num_classes, 1)
    args = (z, labels) if arch.conditional else (z,)
    names = ["z", "label"] if arch.conditional else ["z"]
    axes = {name: {0: "batch"} for name in [*names, "image"]}

    with atomic_write(path) as tmp:  # no file is left behind when parity fails
        _export(wrapper, args, names, axes, tmp)
        with torch.no_grad():
            expected = wrapper(*args).numpy()
        session = OnnxGenerator(tmp, GeneratorSpec(arch.latent_dim, arch.num_classes), threads=1)
        got = session(z.numpy(), labels.numpy() if arch.conditional else None)
        if got.shape[1:] != arch.image_shape:
            raise ExportParityError(f"export: ONNX draws {list(got.shape[1:])}, the model is "
                                    f"{list(arch.image_shape)}")
        error = float(np.abs(got - expected).max())
        if not error <= tolerance:
            raise ExportParityError(f"export: ONNX differs from PyTorch by {error:.3g} "
                                    f"(tolerance {tolerance:g})")
    return error


# torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export): two jobs of one worker
# (--jobs K) that finish together must export one after the other
_EXPORT_LOCK = threading.Lock()


def _export(wrapper: nn.Module, args: tuple[torch.Tensor, ...], names: list[str],
            axes: dict[str, dict[int, str]], tmp: Path) -> None:
    with _EXPORT_LOCK, warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, args, str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["image"], dynamic_axes=axes,
                          do_constant_folding=True, external_data=False)

