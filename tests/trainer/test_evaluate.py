import math

import numpy as np
import pytest

from trainer.evaluate import evaluate, frechet_distance, kl_to_uniform, real_images_sampler


def test_frechet_distance_of_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # shifted mean, same covariance: distance is the squared shift
    assert frechet_distance(a, a + 2.0) == pytest.approx(16.0, rel=1e-6)
    # scaled: ||mu||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) = 4 * (1 + 4 - 4) with S2 = 4 I
    assert frechet_distance(a, 2 * a) == pytest.approx(4.0, rel=0.05)


def test_kl_to_uniform() -> None:
    assert kl_to_uniform(np.full(10, 7)) == pytest.approx(0.0)
    assert kl_to_uniform(np.eye(10)[3] * 50) == pytest.approx(math.log(10))


def test_real_images_score_like_real_data(data_dir, mnist_test) -> None:
    report = evaluate(real_images_sampler(mnist_test), latent_dim=4, conditional=True,
                      data_dir=data_dir, n=2000)
    assert report.label_accuracy is not None and report.label_accuracy >= 0.99
    assert min(report.per_class_accuracy or [0]) >= 0.97
    assert report.class_kl < 0.01
    assert report.fcd_baseline > 0
    assert report.fcd < 3 * report.fcd_baseline + 1.0


def test_a_collapsed_generator_is_caught(data_dir, mnist_test) -> None:
    one = mnist_test.normalized(mnist_test.labels == 1)[:1].numpy()

    def collapsed(z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        return np.repeat(one, len(z), axis=0)

    report = evaluate(collapsed, latent_dim=4, conditional=False, data_dir=data_dir, n=1000)
    assert report.label_accuracy is None
    assert report.class_histogram[1] == 1000
    assert report.class_kl == pytest.approx(math.log(10), abs=1e-3)
    assert report.fcd > 10 * report.fcd_baseline


def test_torch_sampler_matches_the_generator() -> None:
    import torch

    import models
    from trainer.evaluate import torch_sampler

    torch.manual_seed(0)
    G, _ = models.build("dcgan", models.ModelConfig(num_classes=10, width=8))
    G.eval()
    z, y = np.zeros((3, 100), np.float32), np.array([1, 2, 3])
    with torch.no_grad():
        expected = G(torch.from_numpy(z), torch.from_numpy(y)).numpy()
    np.testing.assert_array_equal(torch_sampler(G, torch.device("cpu"))(z, y), expected)


def test_the_baseline_draws_real_images_in_the_generated_class_mix(data_dir, mnist_test) -> None:
    from trainer import judges
    from trainer.evaluate import _reference
    from trainer.judges import JudgeKey

    judge = judges.get(JudgeKey("mnist", 1, 28), data_dir)
    _, natural = _reference(judge, "mnist", data_dir, 500)
    _, zeros_only = _reference(judge, "mnist", data_dir, 500, (500,) + (0,) * 9)
    _, balanced = _reference(judge, "mnist", data_dir, 500, (50,) * 10)
    # real zeros against the whole test set are far from it, like a generator of nothing else
    assert zeros_only > 10 * natural
    assert balanced != natural and balanced < 2 * natural
    # what evaluate reports: the conditional mix (n/K each) for a conditional model only
    cond = evaluate(real_images_sampler(mnist_test), latent_dim=4, conditional=True,
                    data_dir=data_dir, n=500)
    uncond = evaluate(real_images_sampler(mnist_test), latent_dim=4, conditional=False,
                      data_dir=data_dir, n=500)
    assert cond.fcd_baseline == pytest.approx(balanced, abs=1e-3)
    assert uncond.fcd_baseline == pytest.approx(natural, abs=1e-3)
