"""Classes by name: ``label`` on the sampling routes, resolved through the model's card."""

import base64

import pytest

FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


@pytest.fixture(scope="module")
def fashion_tag(server) -> str:
    """The shipped generator registered again under Fashion-MNIST's class names: the service must
    resolve names from the card, whatever the weights draw."""
    return server.in_store(f"""
import dataclasses, json, uuid
from ganforge import store
from ganforge.card import ModelCard
from services.registry import DEFAULT_MODEL_DIR
card = ModelCard.from_metadata(json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text()))
card = dataclasses.replace(card, dataset="fashion-mnist", class_names={FASHION!r})
m, _ = store.register(name="fashion-mnist-dcgan-cond", run_id=uuid.uuid4().hex,
                      onnx_path=DEFAULT_MODEL_DIR / "generator.onnx", card=card, stage="candidate")
print(m.tag)
""")


def test_label_by_name_or_index_is_the_digit(server) -> None:
    with server.client() as c:
        by_digit = c.get("/generate", params={"digit": 7, "seed": 11, "n": 4})
        for label in ("7", 7):
            by_label = c.get("/generate", params={"label": label, "seed": 11, "n": 4})
            assert by_label.status_code == 200 and by_label.content == by_digit.content
        strip = c.get("/interpolate", params={"label": "7", "seed_a": 1, "seed_b": 2})
        assert strip.content == c.get("/interpolate", params={"digit": 7, "seed_a": 1,
                                                              "seed_b": 2}).content
        post = c.post("/generate", json={"labels": ["7", 3], "seed": 5}).json()
        ref = c.post("/generate", json={"digits": [7, 3], "seed": 5}).json()
        assert post["images"] == ref["images"] and len(post["images"]) == 2


def test_class_names_from_the_card(server, fashion_tag: str) -> None:
    with server.client() as c:
        sneaker = c.get("/generate", params={"label": "Sneaker", "model": fashion_tag, "seed": 4})
        assert sneaker.status_code == 200, sneaker.text
        assert sneaker.headers["x-model"] == fashion_tag
        assert sneaker.content == c.get("/generate", params={"digit": 7, "model": fashion_tag,
                                                             "seed": 4}).content
        assert c.get("/generate", params={"label": "ankle BOOT", "model": fashion_tag,
                                          "seed": 4}).status_code == 200
        body = c.post("/generate", json={"labels": ["Bag", "Trouser"], "model": fashion_tag})
        assert body.status_code == 200 and len(body.json()["images"]) == 2
        png = base64.b64decode(body.json()["images"][0])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("params", "needles"), [
    ({"label": "nosuch"}, ["label", "unknown label 'nosuch'", "T-shirt/top", "Ankle boot"]),
    ({"label": "10"}, ["label", "index 0-9"]),
    ({"label": "Bag", "digit": 8}, ["label", "not both"]),
    ({"label": "x" * 65}, ["label"]),
])
def test_unknown_labels_are_422_listing_the_classes(server, fashion_tag, params, needles) -> None:
    with server.client() as c:
        r = c.get("/generate", params={**params, "model": fashion_tag})
    assert r.status_code == 422, r.text
    assert all(n in r.text for n in needles), r.text


def test_models_show_dataset_shape_and_classes(server, fashion_tag: str) -> None:
    with server.client() as c:
        served = {m["name"]: m for m in c.get("/models").json()["models"]}
    digits = served["mnist-dcgan-cond"]
    assert digits["dataset"] == "mnist" and digits["image_shape"] == [1, 28, 28]
    assert digits["class_names"] == [str(d) for d in range(10)]
