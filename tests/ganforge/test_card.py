import json
from dataclasses import replace

import pytest

from ganforge.card import MNIST_CLASSES, ModelCard
from ganforge.errors import CorruptModel
from services.registry import DEFAULT_MODEL_DIR

SHIPPED = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())


def test_the_shipped_card_reads_as_an_mnist_digit_model() -> None:
    card = ModelCard.from_metadata(SHIPPED)
    assert (card.family, card.conditional, card.num_classes, card.latent_dim) == ("dcgan", True, 10, 100)
    assert card.image_shape == (1, 28, 28) and card.dataset == "mnist"
    assert card.class_names == MNIST_CLASSES
    assert card.onnx_opset == 17 and card.label_accuracy == SHIPPED["metrics"]["label_accuracy"]
    assert card.spec.latent_dim == 100 and card.spec.conditional


def test_round_trip_through_metadata() -> None:
    card = ModelCard.from_metadata(SHIPPED)
    again = ModelCard.from_metadata(json.loads(json.dumps(card.to_metadata())))
    assert again == card


def test_none_is_left_out_of_metadata() -> None:
    card = replace(ModelCard.from_metadata(SHIPPED), metrics={"fcd": 1.0, "label_accuracy": None})
    assert card.to_metadata()["metrics"] == {"fcd": 1.0}
    assert ModelCard.from_metadata(card.to_metadata()).label_accuracy is None


@pytest.mark.parametrize("key", ["latent_dim", "family", "image_shape", "onnx_opset"])
def test_a_missing_field_is_named(key: str) -> None:
    meta = {k: v for k, v in SHIPPED.items() if k != key}
    with pytest.raises(CorruptModel, match=key):
        ModelCard.from_metadata(meta)


@pytest.mark.parametrize(("changes", "match"), [
    ({"latent_dim": "many"}, "invalid literal"),
    ({"metrics": [1, 2]}, "metrics"),
    ({"num_classes": 0}, "conditional=True but num_classes=0"),
    ({"class_names": ["a", "b"]}, "2 class names for 10 classes"),
])
def test_malformed_cards_are_corrupt(changes: dict, match: str) -> None:
    with pytest.raises(CorruptModel, match=match):
        ModelCard.from_metadata({**SHIPPED, **changes})

