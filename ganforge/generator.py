"""The ONNX generator: sampling from an exported generator with ONNX Runtime, the one code path
shared by the CLI, the evaluator and the HTTP service, with the one owner of the input rules
(latent length, finite values, labels in range, at most ``MAX_IMAGES`` a request). No torch here.

Latents come from NumPy's PCG64 seeded by the caller, so the same seed, digit and model give the
same pixels on every machine and in every process.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganforge.errors import CorruptModel, InvalidInput

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
MAX_IMAGES = 256  # images one request (HTTP or CLI) may ask for


def latents(seed: int, n: int, latent_dim: int) -> np.ndarray:
    """``n`` standard-normal latents of length ``latent_dim`` from ``seed``."""
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput("seed", f"must be between 0 and {MAX_SEED}, got {seed}")
    return np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)


def slerp(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` points on the great circle from ``a`` to ``b`` (both ends included), with the
    norm interpolated linearly: Gaussian latents live near a sphere, and a straight line between
    two of them passes through the low-norm middle that the generator never saw in training."""
    if steps < 2:
        raise InvalidInput("steps", f"must be at least 2, got {steps}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:  # (anti)parallel: any great circle would do; keep to the chord
        dirs = (1 - t) * a / na + t * b / nb
    else:
        dirs = (np.sin((1 - t) * omega) * a / na + np.sin(t * omega) * b / nb) / np.sin(omega)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return (dirs * ((1 - t) * na + t * nb)).astype(np.float32)


def gpu_present() -> bool:
    """An NVIDIA driver is loaded (checked without initialising CUDA)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


_announced = False


def available_providers() -> list[str]:
    """CUDA then CPU where a GPU and onnxruntime-gpu are present, else the CPU alone.

    onnxruntime-gpu lists the CUDA provider even with no GPU and then fails loudly while
    creating it; asking for it only when a driver is there keeps the log to one clear line.
    """
    import onnxruntime as ort

    global _announced
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda and gpu_present():
        if hasattr(ort, "preload_dlls"):
            try:  # the CUDA and cuDNN libraries the torch wheels bring (nvidia-* packages)
                ort.preload_dlls()
            except Exception as exc:  # pragma: no cover - depends on the GPU machine
                log.warning("onnxruntime.preload_dlls failed: %s", exc)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if not _announced:
        _announced = True
        log.info("ONNX Runtime runs on the CPU provider (%s)",
                 "no GPU driver found" if cuda else "onnxruntime without CUDA support")
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class GeneratorSpec:
    latent_dim: int
    num_classes: int  # 0: unconditional

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0


def check_labels(spec: GeneratorSpec, labels: np.ndarray | None, n: int) -> None:
    """The label rule: a conditional model takes one label per latent, each in
    ``0 .. num_classes - 1``; an unconditional one takes none."""
    top = spec.num_classes - 1
    if spec.conditional:
        if labels is None:
            raise InvalidInput("digit", f"this model is conditional: give a digit from 0 to {top}")
        if labels.shape != (n,):
            raise InvalidInput("digits", f"give one digit or one per latent ({n}), "
                                         f"got {labels.shape[0] if labels.ndim else 1}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) > top:
            raise InvalidInput("digit", f"must be between 0 and {top}")
    elif labels is not None:
        raise InvalidInput("digit", "this model is unconditional and takes no digit")


class OnnxGenerator:
    """An ONNX Runtime session over ``generator.onnx`` with checked inputs.

    Inputs: ``z`` float32 (N, latent_dim) and, when conditional, ``label`` int64 (N,).
    Output: ``image`` float32 (N, 1, 28, 28) in [-1, 1].
    """

    def __init__(self, path: Path, spec: GeneratorSpec, *, threads: int = 0,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path, self.spec = Path(path), spec
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
        opts.log_severity_level = 3
        # no busy-waiting between runs: with several workers on few cores, spinning ORT threads
        # take the CPU from the HTTP side
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = providers or available_providers()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=wanted)
        except Exception as exc:
            raise CorruptModel(f"model: cannot load {self.path}: {exc}") from exc
        names = {i.name: i for i in self.session.get_inputs()}
        expected = {"z", "label"} if spec.conditional else {"z"}
        if set(names) != expected:
            raise CorruptModel(f"model: {self.path} has inputs {sorted(names)}, "
                               f"expected {sorted(expected)}")
        z_dim = names["z"].shape[1]
        if isinstance(z_dim, int) and z_dim != spec.latent_dim:
            raise CorruptModel(f"model: {self.path} takes z of length {z_dim}, metadata says "
                               f"{spec.latent_dim}")
        self.provider = self.session.get_providers()[0]
        if self.provider != wanted[0]:
            log.warning("ONNX Runtime fell back from %s to %s for %s (see its log above)",
                        wanted[0], self.provider, self.path.name)

    def check(self, z: np.ndarray, labels: np.ndarray | None) -> None:
        if z.ndim != 2 or z.shape[1] != self.spec.latent_dim:
            raise InvalidInput("latents", f"each latent must have length {self.spec.latent_dim}, "
                                          f"got shape {list(z.shape)}")
        if not np.isfinite(z).all():
            raise InvalidInput("latents", "must be finite numbers (no NaN or infinity)")
        check_labels(self.spec, labels, z.shape[0])

    def __call__(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        if labels is not None:
            labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.check(z, labels)
        feed = {"z": z} if labels is None else {"z": z, "label": labels}
        (images,) = self.session.run(["image"], feed)
        return np.clip(images, -1.0, 1.0, out=images)  # tanh in float32 can overshoot by 1 ulp

    def sample(self, n: int, seed: int, digit: int | None = None) -> np.ndarray:
        """``n`` images from ``seed``; ``digit`` is required by a conditional model."""
        labels = None if digit is None else np.full(n, digit, dtype=np.int64)
        return self(latents(seed, n, self.spec.latent_dim), labels)
