"""CTF and dose weights against the spec's worked numbers (§10.3) and direct formulas."""

import numpy as np

from napari_subtomo_recon.core.ctf import ctf_constants, ctf_image, wavelength
from napari_subtomo_recon.core.dose import dose_weights, dose_x_ranges


def test_wavelength_300kv():
    assert abs(wavelength(300.0) - 0.0196876) < 1e-7


def test_ctf_values_of_spec_example():
    # 300 kV, Cs 2.7, Q0 0.1, U = 39000+32.5523, V = 38700+32.5523, angle 55°, box 128, 1.35 Å
    const = ctf_constants(300.0, 2.7, 0.1)
    img = ctf_image(128, 1.35, 39032.5523, 38732.5523, 55.0, const)
    assert abs(img[0, 0] - 0.1) < 1e-6
    assert abs(img[5, 10] - (-0.687770)) < 2e-6  # [y, x]
    assert abs(img[123, 10] - (-0.644233)) < 2e-6  # yy = -5


def test_ctf_matches_polar_form_with_bfactor_scale_and_phase_shift():
    s, px = 64, 2.1
    u, v, ang = 21000.0, 19500.0, -30.0
    const = ctf_constants(200.0, 2.0, 0.07, bfactor=50.0, scale=0.8, phase_shift_deg=40.0)
    img = ctf_image(s, px, u, v, ang, const)
    lam = wavelength(200.0)
    y, x = np.meshgrid(np.fft.fftfreq(s) * s, np.arange(s // 2 + 1), indexing="ij")
    X, Y = x / (s * px), y / (s * px)
    k2 = X**2 + Y**2
    theta = np.arctan2(Y, X)
    df = (u * np.cos(theta - np.deg2rad(ang)) ** 2 + v * np.sin(theta - np.deg2rad(ang)) ** 2) * k2
    gamma = (
        -np.pi * lam * df
        + np.pi / 2 * 2.0e7 * lam**3 * k2**2
        - np.deg2rad(40)
        - np.arctan(0.07 / np.sqrt(1 - 0.07**2))
    )
    ref = -np.sin(gamma) * np.exp(-50 * k2 / 4) * 0.8
    assert np.allclose(img, ref, atol=2e-6)


def test_dose_weights_of_spec_example():
    # N = 60 e/Å², grid (10, 5), box 128, 1.35 Å -> 0.318188
    w = dose_weights([0.0, 60.0], 128, 1.35)
    assert abs(w[1, 5, 10] - 0.318188) < 1e-6
    assert w[1, 0, 0] == 1.0 and np.all(w[0] == 1.0)
    # k = 0.1 /Å: Ne = 14.13834 -> 0.119805 (box 100 at 0.1 Å/px: x = 1 is 0.1 /Å)
    assert abs(dose_weights([60.0], 100, 0.1)[0, 0, 1] - 0.119805) < 1e-6


def test_dose_weights_bfactor_model():
    w = dose_weights([10.0], 32, 2.0, bfactor_per_dose=4.0)
    k2 = (3 / 64.0) ** 2 + (2 / 64.0) ** 2
    assert abs(w[0, 2, 3] - np.exp(-4.0 * 10.0 * k2 / 4)) < 1e-7


def test_dose_x_ranges_brute_force():
    rng = np.random.default_rng(1)
    for s in (16, 32, 34):
        w = dose_weights(rng.uniform(0, 150, 5), s, 1.7)
        xr = dose_x_ranges(w, 0.3)
        sh = s // 2 + 1
        for f in range(5):
            for y in range(s):
                yy = y if y < s // 2 else y - s
                rad = (s * s) // 4 - yy * yy
                expect = 0
                for x in range(sh):
                    if rad >= 0 and x <= np.sqrt(rad) and w[f, y, x] > 0.3:
                        expect = x + 1
                assert xr[f, y] == expect
