import torch

from trainer import classifier


def test_shipped_classifier_reaches_99_percent(mnist_test) -> None:
    judge = classifier.load()
    assert classifier.accuracy(judge, mnist_test) >= 0.99


def test_features_are_the_penultimate_layer(mnist_test) -> None:
    judge = classifier.load()
    logits, feats = classifier.predict(judge, mnist_test.normalized(slice(0, 50)))
    assert logits.shape == (50, 10) and feats.shape == (50, classifier.FEATURES)
    assert torch.allclose(judge.classify(feats), logits, atol=1e-5)


def test_the_judge_batch_bounds_the_widest_activation_not_the_outputs(mnist_test) -> None:
    judge = classifier.load()
    for side in (28, 32, 64):
        b = classifier.judge_batch(side)
        assert b * classifier.WIDEST * side * side * 4 <= classifier.ACTIVATION_BYTES
        assert (b + 1) * classifier.WIDEST * side * side * 4 > classifier.ACTIVATION_BYTES
    images = mnist_test.normalized(slice(0, 250))  # 3 forwards of at most 104 images
    assert classifier.judge_batch(28) < 250
    logits, feats = classifier.predict(judge, images)
    whole_logits, whole_feats = classifier.predict(judge, images, batch=250)  # one forward
    assert torch.allclose(feats, whole_feats, atol=1e-5)
    assert torch.allclose(logits, whole_logits, atol=1e-5)


def test_random_shift_moves_pixels_within_bounds() -> None:
    x = -torch.ones(3, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = classifier.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for img in out[:, 0]:
        (r, c), = (img == 1.0).nonzero().tolist()
        assert abs(r - 14) <= 2 and abs(c - 14) <= 2
