"""Latents and their interpolation (plain NumPy, no service)."""

import numpy as np
import pytest

from ganforge.errors import InvalidInput
from ganforge.generator import latents, slerp


def test_slerp_starts_and_ends_on_the_two_latents() -> None:
    a, b = latents(1, 1, 100)[0], latents(2, 1, 100)[0]
    path = slerp(a, b, 9)
    assert path.shape == (9, 100) and path.dtype == np.float32
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[-1], b, atol=1e-5)
    np.testing.assert_array_equal(path, slerp(a, b, 9))  # same inputs, same path


def test_slerp_keeps_to_the_sphere_and_moves_evenly() -> None:
    a, b = latents(3, 1, 100)[0], latents(4, 1, 100)[0]
    path = slerp(a, b, 11).astype(np.float64)
    norms = np.linalg.norm(path, axis=1)
    np.testing.assert_allclose(norms, np.linspace(np.linalg.norm(a), np.linalg.norm(b), 11),
                               rtol=1e-5)
    # a straight line would dip to ~0.7 of the norm halfway between two random latents
    assert norms.min() >= min(np.linalg.norm(a), np.linalg.norm(b)) - 1e-3
    unit = path / norms[:, None]
    angles = np.arccos(np.clip((unit[1:] * unit[:-1]).sum(1), -1, 1))
    np.testing.assert_allclose(angles, angles.mean(), rtol=1e-3)  # constant angular speed


def test_slerp_of_parallel_latents_and_bad_steps() -> None:
    a = latents(5, 1, 16)[0]
    path = slerp(a, 2 * a, 5)
    assert np.isfinite(path).all()
    np.testing.assert_allclose(path[2], 1.5 * a, rtol=1e-5)
    with pytest.raises(InvalidInput, match="steps"):
        slerp(a, a, 1)
