"""Image size and channels as settings: every family at every size it builds, and the MNIST
1x28x28 networks exactly as they were before sizes became settings."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import models
from models import FAMILIES, IMAGE_SIZES, ModelConfig, UnsupportedImageSize, dcgan, mlp

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "services" / "assets" / "default"

SIZE_CASES = [(f, s) for f in sorted(FAMILIES) for s in models.supported_sizes(f)]
FORMS: list[tuple[int, Any]] = [(0, "projection"), (10, "projection"), (10, "concat")]


def test_sizes_per_family() -> None:
    assert models.supported_sizes("mlp") == (28, 32)
    assert models.supported_sizes("dcgan") == (28, 32, 64)
    assert sorted({s for f in FAMILIES.values() for s in f.sizes}) == list(IMAGE_SIZES)
    with pytest.raises(KeyError, match="dcgan.*mlp"):
        models.supported_sizes("stylegan9")


@pytest.mark.parametrize(("family", "size"), SIZE_CASES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("num_classes", "conditioning"), FORMS)
def test_every_size_and_channel_count(family: str, size: int, channels: int, num_classes: int,
                                      conditioning: Any) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=num_classes, d_conditioning=conditioning, image_size=size,
                      channels=channels, width=8, spectral_norm=True)
    G, D = models.build(family, cfg)
    y = torch.tensor([0, 4, 9]) if num_classes else None
    x = G(torch.randn(3, cfg.latent_dim), y)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    logits = D(x, y)
    assert logits.shape == (3,)
    logits.sum().backward()  # D's gradient reaches G through every layer
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)


@pytest.mark.parametrize(("size", "blocks", "start", "top"), [(28, 2, 7, 16), (32, 3, 4, 32), (64, 4, 4, 64)])
def test_dcgan_layer_plan(size: int, blocks: int, start: int, top: int) -> None:
    """28: 7->14->28 with 2w channels on top; 32: 4->8->16->32 (4w); 64: 4->...->64 (8w)."""
    cfg = ModelConfig(image_size=size, channels=3, width=8, num_classes=10, d_conditioning="concat")
    G: Any
    D: Any
    G, D = models.build("dcgan", cfg)
    ups = [m for m in G.up if isinstance(m, nn.ConvTranspose2d)]
    downs = [m for m in D.body if isinstance(m, nn.Conv2d)]
    assert len(ups) == len(downs) == blocks
    assert G.project[0].out_features == top * start * start
    assert ups[-1].out_channels == 3 and ups[0].in_channels == top
    assert downs[0].in_channels == 3 + 1  # colour planes plus the concat label plane
    assert downs[-1].out_channels == top
    assert D.concat_embed.weight.shape == (10, size * size)  # one plane of the image's size
    h = G.project(torch.cat([torch.randn(2, 100), G.embed(torch.tensor([1, 2]))], 1))
    assert G.up(h.view(2, top, start, start)).shape == (2, 3, size, size)


@pytest.mark.parametrize(("family", "size"), [("mlp", 64)])
def test_a_size_the_family_does_not_build(family: str, size: int) -> None:
    cfg = ModelConfig(image_size=size)  # valid for some family, so the config accepts it
    with pytest.raises(ValueError, match=r"^image_size: the mlp family builds 28, 32 pixel images, got 64$"):
        models.build(family, cfg)
    with pytest.raises(UnsupportedImageSize) as err:
        models.build_generator(family, cfg)
    assert err.value.field == "image_size"
    with pytest.raises(UnsupportedImageSize, match="image_size"):
        mlp.Discriminator(cfg)  # the family classes check too, not only build()


def test_a_size_no_family_builds() -> None:
    with pytest.raises(ValueError, match="image_size must be one of 28, 32, 64"):
        ModelConfig(image_size=16)
    with pytest.raises(UnsupportedImageSize, match="image_size: the dcgan family builds 28, 32, 64"):
        models.check_image_size("dcgan", 16)
    assert dcgan.SIZES == (28, 32, 64)


# --- MNIST 1x28x28: unchanged ---------------------------------------------------------------
# Regression pins. These numbers were computed by running the models package as it was BEFORE
# image_size/channels became settings (commit 8ccf5ac, torch 2.14.1, CPU), with the same steps
# as the test below: torch.manual_seed(0), build at the default width 64 with spectral norm, eval
# mode, z = randn(4, 100) from a Generator seeded 1, labels [0, 3, 7, 9]. The generalised code
# must give the same parameter counts, the same state_dict keys in the same order and the same
# outputs (same modules built in the same order consume the RNG identically).
PINS = {  # (family, num_classes, conditioning): (G params, D params, G out sum, G[0,0,14,14], D logits)
    ("dcgan", 0, "projection"): (771969, 138561, 710.90787465, 0.23173290,
                                 [0.004453, 0.005141, -0.0495, 0.006145]),
    ("dcgan", 10, "projection"): (1086069, 201281, -837.48941308, -0.56605196,
                                  [1.24953, 0.213154, 3.343767, -1.181364]),
    ("dcgan", 10, "concat"): (1086069, 147425, -837.48941308, -0.56605196,
                              [0.049737, -0.039782, -0.105079, -0.105029]),
    ("mlp", 0, "projection"): (1489424, 1460225, -8.41946347, -0.01317190,
                               [0.031487, 0.035517, 0.032365, 0.032563]),
    ("mlp", 10, "projection"): (1502724, 1462785, -9.09372990, -0.04780520,
                                [-0.131047, 0.024317, 0.164576, 0.004863]),
    ("mlp", 10, "concat"): (1502724, 1470565, -9.09372990, -0.04780520,
                            [0.028403, 0.013107, 0.036607, 0.025083]),
}
REFERENCE_KEYS = (  # the reference recipe (conditional dcgan, SN projection D), as before
    ["embed.weight", "project.0.weight", "project.1.weight", "project.1.bias",
     "project.1.running_mean", "project.1.running_var", "project.1.num_batches_tracked",
     "up.0.weight", "up.1.weight", "up.1.bias", "up.1.running_mean", "up.1.running_var",
     "up.1.num_batches_tracked", "up.3.weight", "up.3.bias"],
    ["body.0.bias", "body.0.parametrizations.weight.original", "body.0.parametrizations.weight.0._u",
     "body.0.parametrizations.weight.0._v", "body.2.bias", "body.2.parametrizations.weight.original",
     "body.2.parametrizations.weight.0._u", "body.2.parametrizations.weight.0._v", "head.linear.bias",
     "head.linear.parametrizations.weight.original", "head.linear.parametrizations.weight.0._u",
     "head.linear.parametrizations.weight.0._v", "head.embed.weight"],
)


@pytest.mark.parametrize("key", sorted(PINS))
def test_mnist_networks_are_unchanged(key: tuple[str, int, Any]) -> None:
    family, num_classes, conditioning = key
    g_params, d_params, out_sum, pixel, logits = PINS[key]
    torch.manual_seed(0)
    G, D = models.build(family, ModelConfig(num_classes=num_classes, d_conditioning=conditioning,
                                            spectral_norm=True))
    G.eval()
    D.eval()
    assert sum(p.numel() for p in G.parameters()) == g_params
    assert sum(p.numel() for p in D.parameters()) == d_params
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 7, 9]) if num_classes else None
    with torch.no_grad():
        x = G(z, y)
        d = D(x, y)
    assert x.shape == (4, 1, 28, 28)
    assert x.double().sum().item() == pytest.approx(out_sum, abs=1e-3)
    assert x[0, 0, 14, 14].item() == pytest.approx(pixel, abs=1e-6)
    assert d.tolist() == pytest.approx(logits, abs=1e-5)
    if key == ("dcgan", 10, "projection"):
        assert (list(G.state_dict()), list(D.state_dict())) == REFERENCE_KEYS


def test_the_shipped_generator_still_loads_and_matches_its_onnx() -> None:
    """services/assets/default/generator.pt loads strictly into today's dcgan and gives what the
    ONNX graph exported beside it gives."""
    import onnxruntime as ort

    from trainer.export import load_torch_generator

    G = load_torch_generator(SHIPPED / "generator.pt")  # load_state_dict is strict
    arch = json.loads((SHIPPED / "metadata.json").read_text()).get("architecture") or {}
    assert arch.get("image_size", 28) == 28 and arch.get("channels", 1) == 1
    rng = np.random.default_rng(5)
    z = rng.standard_normal((10, 100)).astype(np.float32)
    y = np.arange(10, dtype=np.int64)
    session = ort.InferenceSession(str(SHIPPED / "generator.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"z": z, "label": y})
    with torch.no_grad():
        got = G(torch.from_numpy(z), torch.from_numpy(y)).numpy()
    assert got.shape == (10, 1, 28, 28)
    assert np.abs(got - expected).max() <= 1e-4
