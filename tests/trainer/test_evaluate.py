import math

import numpy as np
import pytest

from trainer.evaluate import evaluate, frechet_distance, kl_to_uniform, real_images_sampler
from trainer.feature_cache import FeatureCache


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


def test_real_features_are_kept_between_processes_and_damage_is_recomputed(
        data_dir, mnist_test, tmp_path, monkeypatch, caplog) -> None:
    import torch

    from trainer import evaluate as ev
    from trainer import judges
    from trainer.judges import JudgeKey

    judge = judges.get(JudgeKey("mnist", 1, 28), data_dir)
    part = mnist_test.head(300)
    index = torch.arange(0, 300, 3)
    plain = ev.real_features(judge, part, index)  # no cache: the judge itself
    cache = FeatureCache(tmp_path)
    kept = ev.real_features(judge, part, index, cache)
    np.testing.assert_array_equal(kept, plain)
    assert kept.dtype == np.float64 and kept.shape == (100, 128)
    (path,) = tmp_path.glob("judge-features-*.npy")
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, then renamed

    def no_judge(*_):
        raise AssertionError("the judge ran: the cache was not read")

    with monkeypatch.context() as m:  # a later process: read back, the judge not run
        m.setattr(ev, "_judged", no_judge)
        np.testing.assert_array_equal(ev.real_features(judge, part, index, cache), plain)

    # other images, another judge (one weight changed): files of their own
    ev.real_features(judge, part, index + 1, cache)
    other = judges.Judge(ev.classifier.load(), judge.class_names, "changed", {})
    with torch.no_grad():
        other.model.classify.bias[0] += 1.0
    ev.real_features(other, part, index, cache)
    assert len(list(tmp_path.glob("judge-features-*.npy"))) == 3

    # a half-written file, garbage, a header claiming 1 TB, an array of another shape, a
    # non-finite one: computed again, replaced
    good = path.read_bytes()
    huge = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1)))
    huge["shape"] = (10**9, 128)  # a header that claims 1 TB, and no data
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, huge)
    for damaged in (good[: len(good) // 2], b"not an array", (tmp_path / "huge.npy").read_bytes(),
                    None, np.nan):
        if isinstance(damaged, bytes):
            path.write_bytes(damaged)
        else:
            np.save(path, np.zeros((3, 3)) if damaged is None else np.full((100, 128), damaged))
        caplog.clear()
        np.testing.assert_array_equal(ev.real_features(judge, part, index, cache), plain)
        assert "computing" in caplog.text and str(path) in caplog.text
        assert path.read_bytes() == good

    # a cache that cannot be written (a file where the folder should be): the features still come
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    caplog.clear()
    np.testing.assert_array_equal(ev.real_features(judge, part, index, FeatureCache(blocked)), plain)
    assert "could not keep" in caplog.text
