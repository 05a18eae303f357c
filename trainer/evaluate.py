"""Judge a generator with the project's classifier for its set (``trainer/judges.py``: MNIST's
shipped one, or the set's judge from the model store).

On ``n`` samples (default 10,000; a conditional model gets ``n/K`` per class) it reports:
- label accuracy, overall and per class (conditional models): does G draw the class asked for;
- the histogram of predicted classes and its KL divergence to uniform (mode coverage);
- the Frechet classifier distance (FCD): Frechet distance between the classifier's penultimate
  features of generated and test images, next to the same distance between real train and test
  images (the baseline: what a perfect generator would score). For a conditional model the real
  train images are drawn with the generated labels' class counts (n/K each): a perfect
  conditional generator asked for every class equally is compared with real images in those
  proportions, not the set's own (on MNIST, 10,000 images: 4.01 instead of 3.55).
"""

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.generator import latents
from trainer import classifier, judges
from trainer.data import Split, load_dataset
from trainer.feature_cache import FeatureCache
from trainer.judges import Judge, JudgeKey

log = logging.getLogger(__name__)
FEATURES_FORMAT = 1  # in the cache files' digest: bump when what a feature is changes
# (z, labels | None) -> images in [-1, 1], (N, C, H, W)
SampleFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class EvalReport:
    samples: int
    label_accuracy: float | None
    per_class_accuracy: list[float] | None
    class_histogram: list[int]
    class_kl: float
    fcd: float
    fcd_baseline: float
    seconds: float
    judge: str = ""  # the judge's store tag (or the shipped file)
    judge_accuracy: float | None = None  # the judge's own accuracy on the real test split

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        acc = "n/a" if self.label_accuracy is None else f"{self.label_accuracy:.4f}"
        return (f"label accuracy {acc} | class KL {self.class_kl:.4f} | FCD {self.fcd:.3f} "
                f"(real train vs test: {self.fcd_baseline:.3f}) | {self.samples} samples")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr sqrt(s1 s2) = Tr sqrt(sqrt(s1) s2 sqrt(s1)), the latter symmetric PSD
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_covmean = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kl_to_uniform(hist: np.ndarray) -> float:
    p = hist / max(hist.sum(), 1)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] * len(p))).sum())


def torch_sampler(generator: torch.nn.Module, device: torch.device) -> SampleFn:
    """A SampleFn over a PyTorch generator (e.g. the EMA generator while it trains)."""

    @torch.no_grad()
    def sample(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        y = None if labels is None else torch.from_numpy(labels).to(device)
        return generator(torch.from_numpy(z).to(device), y).cpu().numpy()  # type: ignore[no-any-return]

    return sample


def real_features(judge: Judge, split: Split, index: torch.Tensor | None = None,
                  cache: FeatureCache | None = None) -> np.ndarray:
    """The judge's features of ``split``'s rows ``index`` (all: None), float64.

    With a ``cache`` they are kept there in a file named by a digest of all they are a
    function of (the judge's weights and buffers, the images' bytes and shape, torch's version,
    ``FEATURES_FORMAT``), so a later process reads them back rather than running the judge over
    a whole test split again (each ``ganforge train``, each worker process)."""
    rows = torch.arange(len(split)) if index is None else index
    if cache is None:
        return _judged(judge, split, rows)
    key = hashlib.sha256(f"{FEATURES_FORMAT} {torch.__version__}".encode())
    for name, tensor in judge.model.state_dict().items():
        key.update(name.encode())
        key.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    images = split.images[rows].contiguous()
    key.update(f"{tuple(images.shape)}".encode())
    key.update(images.numpy().tobytes())
    digest = key.hexdigest()[:40]
    feats = cache.load(digest, (len(rows), classifier.FEATURES))
    if feats is None:
        feats = _judged(judge, split, rows)
        cache.store(digest, feats)
    return feats


def _judged(judge: Judge, split: Split, rows: torch.Tensor) -> np.ndarray:
    _, feats = classifier.predict_split(judge.model, split, rows)
    return feats.numpy().astype(np.float64)  # type: ignore[no-any-return]


@lru_cache(maxsize=4)
def _splits(judge: Judge, dataset: str, data_dir: Path,
            cache: FeatureCache | None) -> tuple[Split, np.ndarray]:
    """The training split at the judge's shape and the test split's features, once per
    process and judge."""
    channels, size, _ = judge.model.shape
    test = load_dataset(dataset, data_dir, train=False, image_size=size, channels=channels)
    train = load_dataset(dataset, data_dir, train=True, image_size=size, channels=channels)
    return train, real_features(judge, test, cache=cache)


@lru_cache(maxsize=8)
def _reference(judge: Judge, dataset: str, data_dir: Path, n: int,
               counts: tuple[int, ...] | None = None,
               cache: FeatureCache | None = None) -> tuple[np.ndarray, float]:
    """Test-set features and the real train-vs-test FCD baseline, computed once per process,
    judge and count: ``n`` seeded train images, or ``counts[c]`` of class c (at most what the
    set has) where the generated images come in those class counts."""
    train, test_np = _splits(judge, dataset, data_dir, cache)
    train_np = real_features(judge, train, reference_index(train, n, counts), cache)
    return test_np, frechet_distance(train_np, test_np)


def reference_index(train: Split, n: int, counts: tuple[int, ...] | None = None) -> torch.Tensor:
    """The baseline's real train images: the first ``n`` of a seeded order, or the first
    ``counts[c]`` of class c in that order (class by class)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    if counts is None:
        return order[:n]
    shuffled = train.labels[order]
    return torch.cat([order[shuffled == c][:m] for c, m in enumerate(counts)])


def evaluate(sample: SampleFn, *, latent_dim: int, conditional: bool, data_dir: Path,
             n: int = 10_000, seed: int = 0, batch: int = 1000, dataset: str = "mnist",
             image_size: int = 28, channels: int = 1, judge: Judge | None = None,
             cache: FeatureCache | None = None) -> EvalReport:
    """Draw ``n`` samples through ``sample`` and judge them with ``judge`` (default: the set's
    judge at this shape, which must exist: ``judges.ensure`` trains a missing one). ``cache``
    keeps the real images' features between processes (``real_features``)."""
    start = time.perf_counter()
    data_dir = Path(data_dir).resolve()
    judge = judge or judges.get(JudgeKey(dataset, channels, image_size), data_dir)
    k = judge.num_classes
    z = latents(seed, n, latent_dim)
    labels = np.arange(n) % k if conditional else None
    preds, feats = [], []
    for i in range(0, n, batch):
        y = None if labels is None else labels[i : i + batch]
        images = torch.from_numpy(sample(z[i : i + batch], y))
        logits, f = classifier.predict(judge.model, images)
        preds.append(logits.argmax(1).numpy())
        feats.append(f.numpy())
    pred = np.concatenate(preds)
    hist = np.bincount(pred, minlength=k)
    acc = per_class = None
    if labels is not None:
        hit = pred == labels
        acc = float(hit.mean())
        per_class = [round(float(hit[labels == c].mean()), 4) if (labels == c).any() else 0.0
                     for c in range(k)]
    m = min(n, 10_000)  # the baseline's image count (and the conditional labels' mix at that count)
    counts = None if labels is None else tuple(np.bincount(labels[:m], minlength=k).tolist())
    test_feats, baseline = _reference(judge, dataset, data_dir, m, counts, cache)
    fcd = frechet_distance(np.concatenate(feats).astype(np.float64), test_feats)
    return EvalReport(samples=n, label_accuracy=acc, per_class_accuracy=per_class,
                      class_histogram=hist.tolist(), class_kl=round(kl_to_uniform(hist), 5),
                      fcd=round(fcd, 4), fcd_baseline=round(baseline, 4),
                      seconds=round(time.perf_counter() - start, 2), judge=judge.source,
                      judge_accuracy=_judge_accuracy(judge))


def _judge_accuracy(judge: Judge) -> float | None:
    acc = judge.info.get("test_accuracy")
    return round(float(acc), 4) if acc is not None else None


def real_images_sampler(split: Split) -> SampleFn:
    """A 'generator' that returns real images of the requested classes: the evaluator's ceiling."""
    k = split.num_classes or int(split.labels.max()) + 1
    by_class = [split.normalized(split.labels == c) for c in range(k)]
    counters = [0] * k

    def sample(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        ys = labels if labels is not None else np.arange(len(z)) % k
        out = []
        for y in ys:
            pool = by_class[int(y)]
            out.append(pool[counters[y] % len(pool)])
            counters[y] += 1
        return torch.stack(out).numpy()

    return sample
