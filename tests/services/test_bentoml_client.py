"""BentoML's own clients reach ganforge through its native API (``/sample``, ``/sample_png``) and
get the images the HTTP routes give for the same seed or latents."""

import asyncio
import base64
import io

import bentoml
import httpx
import numpy as np
import pytest
from bentoml.exceptions import BentoMLException


def post_generate(server, **body) -> httpx.Response:
    r = httpx.post(f"{server.url}/generate", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r


def npy(r: httpx.Response) -> np.ndarray:
    return np.load(io.BytesIO(r.content))


def test_schema_lists_the_native_api(server) -> None:
    routes = {r["name"]: r for r in httpx.get(f"{server.url}/schema.json").json()["routes"]}
    assert set(routes) == {"sample", "sample_png"}
    assert routes["sample"]["output"]["type"] == "tensor"
    assert routes["sample_png"]["output"]["format"] == "binary"


def test_sync_client_by_label_gives_post_generates_images(server) -> None:
    with bentoml.SyncHTTPClient(server.url) as client:
        arrays = client.sample(labels=[7, "3", 0], seed=5)
        png = client.sample_png(labels=[7], seed=5)
    assert isinstance(arrays, np.ndarray) and arrays.dtype == np.float32
    assert arrays.shape == (3, 1, 28, 28)
    same = npy(post_generate(server, labels=[7, "3", 0], seed=5, format="npy"))
    assert np.array_equal(arrays, same)
    posted = post_generate(server, labels=[7, "3", 0], seed=5).json()["images"]
    assert png == base64.b64decode(posted[0])  # one image: the same PNG bytes
    got = httpx.get(f"{server.url}/generate", params={"label": 7, "seed": 5}).content
    assert png == got


def test_sync_client_by_latent_gives_post_generates_images(server) -> None:
    z = np.random.default_rng(3).standard_normal((4, 100)).round(4).tolist()
    with bentoml.SyncHTTPClient(server.url) as client:
        arrays = client.sample(latents=z, labels=[1, 2, 3, 4])
        png = client.sample_png(latents=z[:1], labels=[1])
    same = npy(post_generate(server, latents=z, labels=[1, 2, 3, 4], format="npy"))
    assert np.array_equal(arrays, same)
    posted = post_generate(server, latents=z[:1], labels=[1]).json()["images"][0]
    assert png == base64.b64decode(posted)


def test_async_client_and_grids(server) -> None:
    async def call() -> tuple[np.ndarray, bytes]:
        async with bentoml.AsyncHTTPClient(server.url) as client:
            return (await client.sample(labels=["8"], seed=11),
                    await client.sample_png(labels=[8] * 16, seed=11))

    arrays, grid = asyncio.run(call())
    assert np.array_equal(arrays, npy(post_generate(server, labels=[8], seed=11, format="npy")))
    # sixteen images of one class from one seed: GET /generate's grid, byte for byte
    got = httpx.get(f"{server.url}/generate", params={"digit": 8, "n": 16, "seed": 11}).content
    assert grid == got


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"labels": ["Sneaker"]}, "label"),
    ({"labels": [7], "n": 0}, "n"),
    ({"latents": [[0.1] * 99], "labels": [1]}, "latents"),
    ({"labels": [1], "model": "mnist-nothing"}, "model"),
    ({"labels": [1], "seed": -1}, "seed"),
])
def test_bad_input_is_an_error_naming_the_field(server, kwargs, field) -> None:
    with bentoml.SyncHTTPClient(server.url) as client, pytest.raises(BentoMLException) as err:
        client.sample(**kwargs)
    assert field in str(err.value)
    assert 400 <= err.value.error_code.value < 500


def test_native_calls_are_counted_and_set_headers(server) -> None:
    before = server.metric("ganforge_generate_requests_total", route="POST /sample_png", code="200")
    images = server.metric("ganforge_images_generated_total")
    r = httpx.post(f"{server.url}/sample_png", json={"labels": [2, 4], "seed": 9}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "9" and r.headers["x-model"].startswith("mnist-dcgan-cond:")
    assert server.metric("ganforge_generate_requests_total", route="POST /sample_png",
                         code="200") == before + 1
    assert server.metric("ganforge_images_generated_total") == images + 2


def test_native_api_has_the_body_limit(server) -> None:
    body = b'{"labels": [1], "pad": "' + b"a" * (9 * 2**20) + b'"}'
    r = httpx.post(f"{server.url}/sample", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "GANFORGE_MAX_BODY_BYTES" in r.text
