"""Where a generator's FCD comes from: its mean and covariance terms, the feature spectrum, and
FCD per class, each next to real train images judged the same way.

    python bench/fcd_parts.py                                  # the shipped default model
    python bench/fcd_parts.py var/runs/RUN/generator.pt --samples 10000

FCD (``trainer.evaluate``) is ``|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2))`` over the
judge's 128-d features of generated and real test images. This splits it in those two terms,
compares the covariances' traces (overall spread) and their eigenvalues beyond the top 10 (past
the directions that separate the classes: the variety within a class), reads the same images
through a 3x3 blur beside real train images so blurred (how much sharpness weighs in the judge's
features), snaps faint generated pixels to the background, and gives FCD class by class:
generated images of class c against test images of class c, with ``n/K`` real train images of
class c against the same test images as that class's baseline. A conditional MNIST
generator (``generator.pt``, as ``make pretrained`` and the pipeline save it) only.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from ganforge.generator import latents
from ganforge.settings import get_settings
from trainer import classifier, judges
from trainer.data import load_dataset
from trainer.evaluate import frechet_distance, reference_index
from trainer.export import load_torch_generator
from trainer.judges import JudgeKey

DEFAULT = Path(__file__).resolve().parents[1] / "services" / "assets" / "default" / "generator.pt"


def parts(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """FCD's (mean term, covariance term) for feature rows ``a`` against ``b``."""
    mean = float(((a.mean(0) - b.mean(0)) ** 2).sum())
    return mean, frechet_distance(a, b) - mean


def blur(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 binomial blur of images in [-1, 1], the frame padded with the background (-1)."""
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]).view(1, 1, 3, 3) / 16
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0), kernel)


def spectrum(f: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(np.cov(f, rowvar=False))[::-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("generator", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="latents' seed (the pipeline's is 0)")
    args = p.parse_args()
    data_dir = get_settings().data_dir.resolve()
    g = load_torch_generator(args.generator)
    k = g.cfg.num_classes
    if not k or g.cfg.image_shape != (1, 28, 28):
        raise SystemExit("a conditional 1x28x28 generator only")
    judge = judges.get(JudgeKey("mnist", 1, 28), data_dir)
    test = load_dataset("mnist", data_dir, train=False)
    train = load_dataset("mnist", data_dir, train=True)
    n = args.samples
    z = torch.from_numpy(latents(args.seed, n, g.cfg.latent_dim))
    y = torch.arange(n) % k
    with torch.no_grad():
        images = torch.cat([g(z[i:i + 1000], y[i:i + 1000]) for i in range(0, n, 1000)])
    f_gen = classifier.predict(judge.model, images)[1].numpy().astype(np.float64)
    f_test = classifier.predict_split(judge.model, test)[1].numpy().astype(np.float64)
    # real train images, n/K of each class: evaluate's class-matched baseline
    index = reference_index(train, n, (n // k,) * k)
    f_real = classifier.predict_split(judge.model, train, index)[1].numpy().astype(np.float64)
    y_real = train.labels[index].numpy()
    y_test = test.labels.numpy()

    print(f"# {args.generator} | {n} samples, latents seed {args.seed} | judge {judge.source}")
    print("| images | FCD | mean term | covariance term | trace of covariance | "
          "eigenvalues past the top 10 |")
    print("|---|---|---|---|---|---|")
    # what the judge is sensitive to: the same images through a 3x3 binomial blur (the frame
    # padded with the background, -1, so the blur adds no grey border), real ones alike; and the
    # generated ones with every faint pixel (under -0.8) snapped to the background, which most
    # real pixels are exactly (the share is printed below the table)
    real_images = train.normalized(index)
    snapped = torch.where(images < -0.8, torch.full_like(images, -1.0), images)
    features = {"generated": f_gen, "real train (the baseline)": f_real}
    for name, x in (("generated, blurred 3x3", blur(images)),
                    ("real train, blurred 3x3", blur(real_images)),
                    ("generated, faint pixels snapped to the background", snapped)):
        features[name] = classifier.predict(judge.model, x)[1].numpy().astype(np.float64)
    for name, f in features.items():
        m, c = parts(f, f_test)
        print(f"| {name} | {m + c:.2f} | {m:.2f} | {c:.2f} | {np.trace(np.cov(f, rowvar=False)):.0f} "
              f"| {spectrum(f)[10:].sum():.0f} |")
    t = np.cov(f_test, rowvar=False)
    print(f"| real test | - | - | - | {np.trace(t):.0f} | {spectrum(f_test)[10:].sum():.0f} |")
    share = [float((x <= -0.999).float().mean()) for x in (real_images, images)]
    print(f"\nshare of background pixels (within 1e-3 of -1): real train {share[0]:.3f}, "
          f"generated {share[1]:.3f}")
    print("\n| class | FCD generated | FCD real train | ratio |")
    print("|---|---|---|---|")
    for c in range(k):
        gen = frechet_distance(f_gen[y.numpy() == c], f_test[y_test == c])
        real = frechet_distance(f_real[y_real == c], f_test[y_test == c])
        print(f"| {c} | {gen:.2f} | {real:.2f} | {gen / real:.2f} |")


if __name__ == "__main__":
    main()
