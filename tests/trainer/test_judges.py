"""Judges per set: trained once, kept in the model store, used by the evaluator."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from ganforge import store
from ganforge.errors import ModelNotFound
from trainer import classifier, judges
from trainer.data import load_dataset
from trainer.evaluate import evaluate, real_images_sampler
from trainer.judges import JudgeKey, JudgeRecipe

from .sets import LETTERS, write_emnist_letters


def test_mnist_keeps_its_shipped_judge(data_dir: Path) -> None:
    judge = judges.find(JudgeKey("mnist"), data_dir)
    assert judge is not None and judge.source == "trainer/assets/mnist_cnn.pt"
    assert judge.class_names == tuple("0123456789") and judge.model.shape == (1, 28, 28)
    shipped = classifier.load()
    assert all(torch.equal(a, b) for a, b in zip(judge.model.state_dict().values(),
                                                 shipped.state_dict().values(), strict=True))


def test_judge_names(tmp_path: Path) -> None:
    assert JudgeKey("fashion-mnist", 1, 28).name(tmp_path) == "judge-fashion-mnist-1x28"
    (tmp_path / "a" / "pets").mkdir(parents=True)
    (tmp_path / "b" / "pets").mkdir(parents=True)
    one, two = (JudgeKey(f"imagefolder:{tmp_path}/{d}/pets", 3, 32).name(tmp_path) for d in "ab")
    assert one != two and one.startswith("judge-folder-pets-") and one.endswith("-3x32")
    long = JudgeKey("imagefolder:" + "x" * 200, 3, 64).name(tmp_path)
    assert len(long) <= 63


def test_a_set_without_a_judge_says_how_to_train_one(data_dir: Path) -> None:
    with pytest.raises(ModelNotFound, match="judge: no judge for emnist-letters at 1x64x64 .*"
                                            "ganforge classifier --dataset emnist-letters --channels 1 "
                                            "--image-size 64"):
        judges.get(JudgeKey("emnist-letters", 1, 64), data_dir)


def test_a_missing_judge_is_trained_once_registered_and_used(tmp_path: Path, monkeypatch) -> None:
    import bentoml

    data_dir = write_emnist_letters(tmp_path)
    key = JudgeKey("emnist-letters", 1, 32)  # a shape no other test trains a judge for
    assert judges.find(key, data_dir) is None
    calls: list[int] = []
    real_train = judges.train

    def counted(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # the second worker arrives while the first trains
        return real_train(*args, **kwargs)

    monkeypatch.setattr(judges, "train", counted)
    recipe = JudgeRecipe(epochs=2)
    with ThreadPoolExecutor(2) as pool:  # two workers starting on the same new set
        got = list(pool.map(lambda _: judges.ensure(key, data_dir, recipe), range(2)))
    assert len(calls) == 1 and got[0].source == got[1].source
    tag = got[0].source
    assert tag.startswith("judge-emnist-letters-1x32:")
    stored = bentoml.models.get(tag)
    assert stored.info.labels["ganforge"] == "judge"
    assert tuple(stored.info.metadata["class_names"]) == LETTERS and stored.info.metadata["image_size"] == 32
    assert stored.info.metadata["test_accuracy"] > 0.5  # chance: 1/26
    assert judges.ensure(key, data_dir, recipe).source == tag and len(calls) == 1  # found, not retrained
    assert all(not m.name.startswith("judge-") for m in store.list_models())  # not a generator

    test = load_dataset("emnist-letters", data_dir, train=False, image_size=32)
    report = evaluate(real_images_sampler(test), latent_dim=4, conditional=True, data_dir=data_dir,
                      n=260, dataset="emnist-letters", image_size=32)
    assert report.judge == tag and len(report.per_class_accuracy or []) == 26
    assert report.label_accuracy is not None and report.label_accuracy > 0.5
    assert report.fcd_baseline > 0
