"""resolve_label: a class name or index of a model's card -> the index the generator takes."""

from dataclasses import replace

import pytest

from ganforge.card import MNIST_CLASSES, ModelCard, resolve_label
from ganforge.errors import InvalidInput

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
MNIST = ModelCard(family="dcgan", conditional=True, num_classes=10, latent_dim=100,
                  image_shape=(1, 28, 28), config={}, architecture={}, steps=1, train_seconds=0.0,
                  metrics={}, parity_max_abs_diff=0.0, onnx_opset=17, ganforge_version="test",
                  class_names=MNIST_CLASSES)


def card(names: tuple[str, ...], dataset: str = "x") -> ModelCard:
    return replace(MNIST, num_classes=len(names), class_names=names, dataset=dataset)


def test_digits_by_name_or_index() -> None:
    assert [resolve_label(MNIST, str(d)) for d in range(10)] == list(range(10))
    assert resolve_label(MNIST, 7) == 7 and resolve_label(MNIST, " 3 ") == 3


def test_names_exact_then_ignoring_case_then_index() -> None:
    fashion = card(FASHION, "fashion-mnist")
    assert resolve_label(fashion, "Sneaker") == 7
    assert resolve_label(fashion, "ankle BOOT") == 9
    assert resolve_label(fashion, "T-shirt/top") == 0
    assert resolve_label(fashion, "8") == 8
    letters = card(tuple("abcdefghijklmnopqrstuvwxyz"))
    assert resolve_label(letters, "q") == 16 and resolve_label(letters, "Q") == 16
    assert resolve_label(letters, "25") == 25


def test_a_name_wins_over_an_index() -> None:
    numbered = card(("10", "20", "0"))
    assert resolve_label(numbered, "0") == 2  # the class named "0", not index 0
    assert resolve_label(numbered, "1") == 1
    assert resolve_label(numbered, "20") == 1


def test_two_names_equal_ignoring_case_need_the_exact_one() -> None:
    both = card(("Cat", "cat"))
    assert (resolve_label(both, "Cat"), resolve_label(both, "cat")) == (0, 1)
    with pytest.raises(InvalidInput, match="unknown label 'CAT'"):
        resolve_label(both, "CAT")


@pytest.mark.parametrize("value", ["nosuch", "10", "-1", "", "7.0"])
def test_unknown_labels_list_the_classes(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_label(card(FASHION), value)
    assert info.value.field == "label"
    assert "allowed: a class name (T-shirt/top, Trouser," in str(info.value)
    assert "Ankle boot) or an index 0-9" in str(info.value)


def test_the_field_name_is_the_callers() -> None:
    with pytest.raises(InvalidInput, match="^digit: unknown digit '12'"):
        resolve_label(MNIST, "12", field="digit")


def test_long_class_lists_are_cut() -> None:
    many = card(tuple(f"c{i}" for i in range(100)))
    with pytest.raises(InvalidInput, match=r"c29, \.\.\.\) or an index 0-99"):
        resolve_label(many, "zzz")


def test_an_unconditional_model_takes_no_label() -> None:
    plain = replace(MNIST, conditional=False, num_classes=0, class_names=())
    with pytest.raises(InvalidInput, match="^label: this model is unconditional"):
        resolve_label(plain, "3")
