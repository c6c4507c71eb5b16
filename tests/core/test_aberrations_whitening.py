"""Zernike aberrations and noise whitening against textbook formulas and white noise."""

import numpy as np
import scipy.fft as sfft

from napari_subtomo_recon.core.aberrations import (
    aberration_phase,
    even_index_to_mn,
    odd_index_to_mn,
    zernike,
)
from napari_subtomo_recon.core.whitening import periodogram_average, whitening_filter


def test_index_maps_follow_noll_like_relion_order():
    assert [even_index_to_mn(i) for i in range(6)] == [
        (0, 0),
        (-2, 2),
        (0, 2),
        (2, 2),
        (-4, 4),
        (-2, 4),
    ]
    assert [odd_index_to_mn(i) for i in range(6)] == [
        (-1, 1),
        (1, 1),
        (-3, 3),
        (-1, 3),
        (1, 3),
        (3, 3),
    ]


def test_zernike_polynomials_textbook():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 1, (2, 50))
    rho, phi = np.hypot(x, y), np.arctan2(y, x)
    assert np.allclose(zernike(0, 0, x, y), 1.0)
    assert np.allclose(zernike(0, 2, x, y), 2 * rho**2 - 1)
    assert np.allclose(zernike(2, 2, x, y), rho**2 * np.cos(2 * phi))
    assert np.allclose(zernike(-2, 2, x, y), rho**2 * np.sin(2 * phi))
    assert np.allclose(zernike(1, 3, x, y), (3 * rho**3 - 2 * rho) * np.cos(phi))
    assert np.allclose(zernike(-3, 3, x, y), rho**3 * np.sin(3 * phi))
    assert np.allclose(zernike(0, 4, x, y), 6 * rho**4 - 6 * rho**2 + 1)


def test_aberration_phase_uses_unnormalised_frequencies():
    s, px = 16, 2.5
    ph = aberration_phase([0.0, 0.0, 3.0], s, px, odd=False)  # 3 * Z(0,2)
    kx = 2 / (s * px)
    assert np.isclose(ph[0, 2], 3.0 * (2 * kx**2 - 1))
    ph_odd = aberration_phase([0.0, 5.0], s, px, odd=True)  # 5 * Z(1,1) = 5 x
    assert np.isclose(ph_odd[3, 1], 5.0 * 1 / (s * px))
    assert np.isclose(ph_odd[s - 1, 0], 0.0)


def test_periodogram_blocks_and_white_noise_whitening():
    rng = np.random.default_rng(1)
    img = rng.normal(scale=2.0, size=(130, 150)).astype(np.float32)
    ps = periodogram_average(img, 40)
    # blocks at steps of 20 px: (130-40)//20+1 = 5 rows, (150-40)//20+1 = 6 columns
    ref = np.mean(
        [np.abs(sfft.rfft2(img[y : y + 40, x : x + 40].astype(float), norm="ortho")) ** 2
         for y in range(0, 91, 20) for x in range(0, 111, 20)],
        axis=0,
    )  # fmt: skip
    assert np.allclose(ps, ref)
    wf = whitening_filter(img, 20, 2.0)
    assert wf.shape == (20, 11)
    assert np.isclose(np.median(wf), 0.5, rtol=0.03)  # 1 / noise sigma
    off_dc = np.ones(wf.shape, bool)
    off_dc[0, 0] = False  # few samples at DC: noisy
    assert np.allclose(wf[off_dc], 0.5, rtol=0.15)
