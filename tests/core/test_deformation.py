"""2D image deformations (core/deformation.py) against independent computations."""

import itertools

import numpy as np
import pytest

from napari_subtomo_recon.core.deformation import (
    ImageDeformation,
    coefficient_count,
    fourier_frequencies,
)
from napari_subtomo_recon.io.tomograms import deformation_coefficient_count

W, H = 200, 150


def test_linear_field_is_the_affine_map_about_the_real_image_centre():
    rng = np.random.default_rng(1)
    axx, axy, ayy = 0.03, -0.02, 0.05
    d = ImageDeformation("linear", (1, 1), (W, H), np.array([[axx, axy, ayy]]))
    p = rng.uniform(-20, 220, (7, 1, 2))
    x, y = p[..., 0] - 100.0, p[..., 1] - 75.0
    want = np.stack([p[..., 0] + axx * x, p[..., 1] + axy * x + ayy * y], -1)
    np.testing.assert_allclose(d.apply(p), want, rtol=0, atol=1e-12)
    # odd sizes: the centre is W/2.0, not floor(W/2)
    odd = ImageDeformation("linear", (1, 1), (101, 51), np.array([[1.0, 0.0, 1.0]]))
    np.testing.assert_allclose(odd.shifts(np.array([[50.5, 25.5]])), [[0.0, 0.0]], atol=1e-12)


def _bicubic(a, u, v):
    """Σ a[i, j] u^i v^j and its derivatives (f, f_u, f_v, f_uv), u and v of one shape."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    up = np.stack([u**i for i in range(4)])
    vp = np.stack([v**j for j in range(4)])
    dup = np.stack([i * u ** max(i - 1, 0) for i in range(4)])
    dvp = np.stack([j * v ** max(j - 1, 0) for j in range(4)])
    return tuple(
        np.einsum("ij,i...,j...->...", a, x, y)
        for x, y in ((up, vp), (dup, vp), (up, dvp), (dup, dvp))
    )


@pytest.mark.parametrize("grid", [(4, 3), (2, 2), (5, 6)])
def test_spline_reproduces_a_bicubic_field_from_its_node_derivatives(grid):
    """Bicubic Hermite patches are exact for bicubic polynomials: nodes carry the value,
    the slopes and the twist in grid units, written as [direction][y][x][v, sx, sy, tw]."""
    gx, gy = grid
    rng = np.random.default_rng(gx * 10 + gy)
    polys = rng.normal(0, 1, (2, 4, 4)) / (np.max(grid) ** np.add.outer(np.arange(4), np.arange(4)))
    coeffs = np.zeros((2, gy, gx, 4))
    for dim, x, y in itertools.product(range(2), range(gx), range(gy)):
        coeffs[dim, y, x] = _bicubic(polys[dim], float(x), float(y))
    d = ImageDeformation("spline", grid, (W, H), coeffs.reshape(1, -1))
    p = rng.uniform(0, 1, (50, 1, 2)) * [W, H]
    u, v = p[..., 0] / (W / (gx - 1)), p[..., 1] / (H / (gy - 1))
    want = np.stack([_bicubic(polys[k], u, v)[0] for k in range(2)], -1)
    np.testing.assert_allclose(d.shifts(p), want, rtol=0, atol=1e-9)
    # outside the image the point is clamped to the grid's edge
    out = np.array([[[-30.0, 40.0]], [[W + 9.0, H + 50.0]]])
    edge = np.clip(out, 0, [W * (1 - 1e-11), H * (1 - 1e-11)])
    np.testing.assert_allclose(d.shifts(out), d.shifts(edge), atol=1e-6)


def _fourier_by_hand(p, c, grid, size):
    """RELION's list of frequencies, enumerated over the half-complex (gx/2+1, gy) grid."""
    gx, gy = grid
    freqs = []
    for y in range(gy):
        for x in range(gx // 2 + 1):
            low = y < gy // 2
            if (low and (x, y) != (0, 0)) or (not low and x >= 1):
                freqs.append((x, y if low else y - gy))
    n = len(freqs)
    out = np.zeros(2)
    for dim in range(2):
        for i, (kx, ky) in enumerate(freqs):
            t = np.pi * (kx * p[0] / size[0] + ky * p[1] / size[1])
            re, im = c[2 * (dim * n + i)], c[2 * (dim * n + i) + 1]
            out[dim] += re * np.cos(t) + im * np.sin(t)
    return out


@pytest.mark.parametrize("grid", [(4, 4), (4, 3), (5, 2), (1, 3), (3, 1)])
def test_fourier_field_matches_the_sum_written_out(grid):
    rng = np.random.default_rng(sum(grid))
    n = coefficient_count("Fourier", grid)
    c = rng.normal(0, 1, (2, n))
    d = ImageDeformation("Fourier", grid, (W, H), c)
    p = rng.uniform(-10, 210, (6, 2, 2))
    got = d.shifts(p)
    for i, f in itertools.product(range(6), range(2)):
        want = _fourier_by_hand(p[i, f], c[f], grid, (W, H))
        np.testing.assert_allclose(got[i, f], want, rtol=0, atol=1e-10)


def test_fourier_frequencies_are_half_periods_over_the_image():
    k = fourier_frequencies((4, 4), (W, H))
    assert k.shape == (9, 2)
    np.testing.assert_allclose(k[0], [np.pi / W, 0.0])  # no constant term
    np.testing.assert_allclose(k[-1], [2 * np.pi / W, -np.pi / H])


def test_each_frame_uses_its_own_coefficients():
    c = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    d = ImageDeformation("linear", (1, 1), (W, H), c)
    p = np.tile([[[150.0, 75.0]]], (3, 2, 1))  # (particles, frames, 2)
    np.testing.assert_allclose(d.shifts(p)[:, 0], 0.0)
    np.testing.assert_allclose(d.shifts(p)[:, 1], [[5.0, 0.0]] * 3)


def test_reader_and_model_agree_on_the_number_of_coefficients():
    for kind, gx, gy in itertools.product(
        ("spline", "Fourier", "linear"), range(1, 7), range(1, 7)
    ):
        if kind == "spline" and (gx < 2 or gy < 2):
            continue
        assert deformation_coefficient_count(kind, gx, gy) == coefficient_count(kind, (gx, gy))
    with pytest.raises(ValueError, match="needs"):
        ImageDeformation("spline", (3, 3), (W, H), np.zeros((2, 71)))
