import io

import numpy as np
import pytest
from PIL import Image

from ganforge.images import encode_png, make_grid, save_png, to_uint8


def test_grey_images_map_to_hw_bytes() -> None:
    x = np.array([[[[-1.0, 0.0], [1.0, 1.5]]]], dtype=np.float32)  # (1, 1, 2, 2)
    assert to_uint8(x).tolist() == [[[0, 128], [255, 255]]]


def test_colour_images_keep_their_channels_last() -> None:
    x = np.full((2, 3, 4, 5), -1.0, dtype=np.float32)
    x[:, 0] = 1.0  # red
    px = to_uint8(x)
    assert px.shape == (2, 4, 5, 3)
    assert (px[..., 0] == 255).all() and (px[..., 1:] == 0).all()


@pytest.mark.parametrize("shape", [(2, 2, 4, 4), (2, 4, 4), (1, 4, 4, 4, 1)])
def test_other_shapes_are_refused(shape) -> None:
    with pytest.raises(ValueError, match="1 or 3"):
        to_uint8(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("channels", [1, 3])
def test_grids_and_pngs_in_grey_and_colour(channels: int, tmp_path) -> None:
    rng = np.random.default_rng(0)
    px = to_uint8(rng.uniform(-1, 1, (5, channels, 8, 6)).astype(np.float32))
    grid = make_grid(px, nrow=3)
    assert grid.shape[:2] == (2 * 10 + 2, 3 * 8 + 2)
    assert (grid[2:10, 2:8] == px[0]).all() and (grid[12:20, 2:8] == px[3]).all()
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(grid))))
    assert decoded.shape == grid.shape and (decoded == grid).all()
    assert Image.open(io.BytesIO(encode_png(grid))).mode == ("L" if channels == 1 else "RGB")
    save_png(grid, tmp_path / "g.png")
    assert (np.asarray(Image.open(tmp_path / "g.png")) == grid).all()
