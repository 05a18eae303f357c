import numpy as np
import onnx
import pytest
import torch

import models
from ganforge.errors import ExportParityError
from ganforge.generator import GeneratorSpec, OnnxGenerator
from models import FAMILIES, ModelConfig
from trainer.export import export_onnx


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("num_classes", [0, 10])
def test_export_parity_and_batch_sizes(family: str, num_classes: int, tmp_path) -> None:
    torch.manual_seed(0)
    arch = ModelConfig(num_classes=num_classes, width=16, latent_dim=32)
    G, _ = models.build(family, arch)
    G.train()
    G(torch.randn(64, 32), torch.arange(64) % 10 if num_classes else None)  # move BN stats
    path = tmp_path / "generator.onnx"
    error = export_onnx(G, arch, path)
    assert error <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["generator.onnx"]  # one file, no data files

    graph = onnx.load(str(path)).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert set(inputs) == ({"z", "label"} if num_classes else {"z"})
    assert inputs["z"].elem_type == onnx.TensorProto.FLOAT
    if num_classes:
        assert inputs["label"].elem_type == onnx.TensorProto.INT64
    assert [o.name for o in graph.output] == ["image"]

    session = OnnxGenerator(path, GeneratorSpec(32, num_classes))
    G.eval()
    for n in (1, 257):
        z = np.random.default_rng(n).standard_normal((n, 32), dtype=np.float32)
        y = (np.arange(n) % 10) if num_classes else None
        out = session(z, y)
        assert out.shape == (n, 1, 28, 28)
        with torch.no_grad():
            ref = G(torch.from_numpy(z), None if y is None else torch.from_numpy(y)).numpy()
        assert np.abs(out - ref).max() <= 1e-4


def test_parity_failure_leaves_no_file(tmp_path) -> None:
    arch = ModelConfig(num_classes=0, width=16)
    G, _ = models.build("dcgan", arch)
    with pytest.raises(ExportParityError, match="tolerance"):
        export_onnx(G, arch, tmp_path / "g.onnx", tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


def test_torch_generator_round_trip(tmp_path) -> None:
    from trainer.export import load_torch_generator, save_torch_generator

    torch.manual_seed(0)
    arch = ModelConfig(num_classes=10, width=16, embed_dim=7)
    G, _ = models.build("mlp", arch)
    G.eval()
    save_torch_generator(G, "mlp", arch, tmp_path / "generator.pt")
    again = load_torch_generator(tmp_path / "generator.pt")
    z, y = torch.randn(4, 100), torch.arange(4)
    with torch.no_grad():
        assert torch.equal(G(z, y), again(z, y))


@pytest.mark.parametrize(("family", "size", "channels"), [("dcgan", 32, 3), ("mlp", 32, 1), ("dcgan", 64, 3)])
def test_export_follows_the_model_shape(family: str, size: int, channels: int, tmp_path) -> None:
    torch.manual_seed(0)
    arch = ModelConfig(num_classes=26, width=8, latent_dim=16, image_size=size, channels=channels)
    G, _ = models.build(family, arch)
    G.eval()
    path = tmp_path / "generator.onnx"
    assert export_onnx(G, arch, path) <= 1e-4
    shape = onnx.load(str(path)).graph.output[0].type.tensor_type.shape
    dims = [d.dim_value or d.dim_param for d in shape.dim]
    assert dims[0] == "batch" and len(dims) == 4  # C, H, W may be symbolic: ORT gives them below
    out = OnnxGenerator(path, GeneratorSpec(16, 26)).sample(3, seed=1, digit=25)
    assert out.shape == (3, channels, size, size)
