"""Extraction primitives against straightforward NumPy references and analytic cases."""

import numpy as np
import pytest
import scipy.fft as sfft

from napari_subtomo_recon.core.ctf import ctf_constants, ctf_image, tilt_ctf_terms
from napari_subtomo_recon.core.dose import dose_weights, dose_x_ranges
from napari_subtomo_recon.core.extraction import (
    FourierCrop,
    SliceTerms,
    TiltFilters,
    WindowCentres,
    crop_rows,
    extract_windows,
    finish_slices,
    fourier_crop,
    rotation_table,
    shift_factors,
    shift_phase,
)
from napari_subtomo_recon.core.insertion import LANES


def reference_window(img, cx, cy, w, circle_crop):
    """RELION's window + circle crop + ifftshift, written with plain NumPy indexing."""
    H, W = img.shape
    half = w // 2
    ox = int(np.floor(cx + 0.5)) - half if cx >= 0 else -int(np.floor(-cx + 0.5)) - half
    oy = int(np.floor(cy + 0.5)) - half if cy >= 0 else -int(np.floor(-cy + 0.5)) - half
    ys = np.clip(oy + np.arange(w), 0, H - 1)
    xs = np.clip(ox + np.arange(w), 0, W - 1)
    box = img[np.ix_(ys, xs)].astype(np.float64)
    if circle_crop:
        j, k = np.meshgrid(np.arange(w) - half, np.arange(w) - half, indexing="ij")
        r = np.hypot(j, k)
        R = float(half)
        mean_out = box[r > R].mean()
        c = np.where(r < R - 5, 1.0, np.where(r < R, 0.5 - 0.5 * np.cos(np.pi * (R - r) / 5), 0.0))
        box = c * (box - mean_out)
    return np.fft.ifftshift(box).astype(np.float32)


@pytest.mark.parametrize("w", [32, 33])
@pytest.mark.parametrize("circle", [True, False])
def test_extract_windows_matches_reference_including_edges(w, circle):
    rng = np.random.default_rng(3)
    img = rng.normal(size=(70, 90)).astype(np.float32)
    cx = np.array([45.3, 2.5, 88.6, -3.5, 44.5])
    cy = np.array([35.7, 1.2, 68.9, 30.0, -0.5])
    out = np.empty((5, w, w), np.float32)
    centres = WindowCentres(x=cx, y=cy, circle_dx=np.zeros(5), circle_dy=np.zeros(5))
    extract_windows(img, centres, out=out, circle_crop=circle, falloff=5.0)
    for i in range(5):
        assert np.allclose(out[i], reference_window(img, cx[i], cy[i], w, circle), atol=1e-5)


def test_fourier_crop_keeps_the_low_signed_frequencies():
    rng = np.random.default_rng(4)
    for h0, factor in ((48, 1.5), (64, 2.0), (51, 1.5), (74, 2.3)):
        a = rng.normal(size=(h0, h0))
        F = np.fft.rfft2(a)
        C = fourier_crop(F, factor)
        w1 = int(2 * (h0 // 2) / factor + 0.5)
        h1 = int(h0 / factor + 0.5)
        assert C.shape == (h1, w1 // 2 + 1)
        fy = np.rint(np.fft.fftfreq(h0) * h0)
        for y in range(h1):
            want = y if y < h1 // 2 else y - h1
            assert fy[crop_rows(h0, h1)[y]] == want


def test_fourier_crop_divided_by_bin_keeps_grey_levels():
    # a band-limited image, binned in Fourier space, has the same values at the coarse samples
    n, b = 64, 2
    x = np.arange(n)
    img = np.cos(2 * np.pi * 3 * x / n)[None, :] * np.sin(2 * np.pi * 5 * x / n)[:, None] + 0.7
    F = sfft.rfft2(img, norm="ortho")
    small = sfft.irfft2(fourier_crop(F, b) / b, s=(n // b, n // b), norm="ortho")
    assert np.allclose(small, img[::b, ::b], atol=1e-12)


def test_shift_phase_moves_a_blob_to_the_origin():
    s = 32
    yy, xx = np.mgrid[0:s, 0:s]
    px, py = 17.3, 14.6  # blob position within the box
    blob = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / 4.0)
    F = np.fft.rfft2(np.fft.ifftshift(blob))  # pixel s/2 at the phase origin
    t = (px - s // 2, py - s // 2)
    shifted = np.fft.irfft2(F * shift_phase(s, *t), s=(s, s))
    centred = np.fft.fftshift(shifted)
    m = centred / centred.sum()
    assert abs((m * xx).sum() - s // 2) < 1e-3  # a wrong sign or centre is off by ~0.6 px
    assert abs((m * yy).sum() - s // 2) < 1e-3


@pytest.mark.parametrize("zernike", [False, True])
def test_finish_slices_equals_numpy_composition(zernike):
    rng = np.random.default_rng(5)
    s, binning, w = 24, 1.5, 36
    sh = s // 2 + 1
    n = 4
    F = (rng.normal(size=(n, w, w // 2 + 1)) + 1j * rng.normal(size=(n, w, w // 2 + 1))).astype(
        np.complex64
    )
    tx, ty = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    px = 1.7 * binning
    # depths up to ±3000 Å turn γ by several radians at Nyquist: the rotation tables must follow
    U0, V0, dz = 25000.0, 24600.0, rng.uniform(-3000, 3000, n)
    const = ctf_constants(300, 2.7, 0.1, 10.0, 0.9, 0.0)
    dose = dose_weights([30.0], s, px)[0]
    xr = dose_x_ranges(dose[None], 0.2)[0]
    empty = np.zeros((0, 1, 1))
    # two optics groups with their own even (γ offset) and odd (phase) aberrations
    group = np.array([0, 1, 1, 0]) if zernike else np.zeros(n, np.int64)
    even = rng.uniform(-1, 1, (2, s, sh)) if zernike else empty
    odd_phase = rng.uniform(-1, 1, (2, s, sh)) if zernike else empty
    ctf = tilt_ctf_terms(s, px, U0, V0, 33.0, const, even)
    odd = np.exp(-1j * odd_phase) if zernike else empty.astype(complex)
    ex, ey = shift_factors(s, s, tx, ty)
    packed = np.empty((n, s + 1, sh + 1, LANES), np.float32)

    def run(do_ctf):
        finish_slices(
            F,
            crop=FourierCrop(rows=crop_rows(w, s), ncols=sh, inv_bin=1 / binning),
            slices=SliceTerms(ex=ex, ey=ey, beta=const.k1 * dz, group=group),
            ctf=ctf,
            filters=TiltFilters(
                dose=dose, x_ranges=xr, odd=odd, noise=np.zeros((0, 1), np.float32)
            ),
            do_ctf=do_ctf,
            sign=-1.0,
            out=packed,
        )
        # the layout repeats row 0 after the last row and column sh-2 after the last column
        assert np.array_equal(packed[:, s], packed[:, 0])
        assert np.array_equal(packed[:, :, sh], packed[:, :, sh - 2])
        return packed[:, :s, :sh, 0] + 1j * packed[:, :s, :sh, 1], packed[:, :s, :sh, 2]

    data, weight = run(True)
    x = np.arange(sh)[None, :]
    keep = x < xr[:, None]
    for i in range(n):
        ref = (
            fourier_crop(F[i].astype(np.complex128), binning)
            / binning
            * shift_phase(s, tx[i], ty[i])
        )
        g = group[i]
        offset = even[g] if zernike else None
        c = ctf_image(s, px, U0 + dz[i], V0 + dz[i], 33.0, const, offset).astype(np.float64)
        c = -c * dose
        if zernike:
            ref = ref * np.exp(-1j * odd_phase[g])
        assert np.allclose(data[i], np.where(keep, c * ref, 0), atol=2e-5)
        assert np.allclose(weight[i], np.where(keep, c * c, 0), atol=2e-6)
    if zernike:
        return
    # without CTF: only the contrast flip, no zeroing, unit weights
    data, weight = run(False)
    ref = fourier_crop(F[0].astype(np.complex128), binning) / binning * shift_phase(s, tx[0], ty[0])
    assert np.allclose(data[0], -ref, atol=2e-5)
    assert np.all(weight == 1.0)


def test_rotation_table_matches_direct_cos_sin():
    M, theta = 20000, 0.37  # m·θ up to 7400 rad
    out = np.empty((M + 1, 2))
    rotation_table(theta, M, out)
    m = np.arange(M + 1)
    # the direct values' own argument rounding is ~ulp(7400) = 9e-13
    assert np.abs(out[:, 0] - np.cos(m * theta)).max() < 1e-11
    assert np.abs(out[:, 1] - np.sin(m * theta)).max() < 1e-11


@pytest.mark.parametrize("box", [24, 28, 32, 42, 48, 64, 96, 128, 192, 256])
@pytest.mark.parametrize("binning", [1.0, 1.5, 2.0, 2.3, 3.7, 4.0, 6.0, 7.3])
def test_fast_window_gives_a_ratio_the_tilt_can_be_binned_by(box, binning):
    """bin 2.3, box 42: RELION's window is 97 px, a prime; a ratio 97/63 would need a
    padded tilt whose size is a multiple of 97 and quick to transform, which does not
    exist (the search ended in a ValueError).  Every ratio offered must be usable."""
    import math

    from napari_subtomo_recon.core.extraction import bin_image, fast_window

    s02d = int(binning * box + 0.5)
    num, den, win = fast_window(box, binning)
    if (num, den) == (1, 1):
        assert win == s02d
        return
    assert num * win == den * s02d and math.gcd(num, den) == 1  # the same physical window
    assert win % 2 == 0 and round(1.5 * box) <= win < s02d
    n = num
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    assert n == 1, (num, den)
    img = np.random.default_rng(0).normal(size=(150, 170)).astype(np.float32)
    source, pad = bin_image(img, num, den, s02d // 2 + 2)
    assert source.dtype == np.float32 and np.all(np.isfinite(source))


@pytest.mark.parametrize(("num", "den"), [(4, 3), (4, 1), (8, 5)])
def test_bin_image_keeps_a_band_limited_image_and_reuses_its_arrays(num, den):
    """A cosine below the binned Nyquist, periodic on an image of a quick-to-transform
    size (so nothing is padded), is the same cosine on the binned grid: bin_image is a
    Fourier crop that keeps grey levels.  With margin, the result equals binning the
    image padded by np.pad (mode "edge") to the same size.  Arrays kept in a BinWork:
    two slots stay valid side by side, and reusing them gives the fresh result."""
    from napari_subtomo_recon.core.extraction import BinWork, _fast_size, bin_image

    H, W = 120, 160  # 2^3·3·5 and 2^5·5: quick sizes and multiples of num
    assert _fast_size(H, num) == H and _fast_size(W, num) == W
    hb, wb = H * den // num, W * den // num
    y, x = np.mgrid[0:H, 0:W]
    a, b = hb // 2 - 3, wb // 2 - 2  # below the binned Nyquist in both directions

    def wave(y: np.ndarray, x: np.ndarray, ny: int, nx: int) -> np.ndarray:
        return 1.5 + np.cos(2 * np.pi * (a * y / ny + b * x / nx) + 0.3)

    img = wave(y, x, H, W).astype(np.float32)
    yb, xb = np.mgrid[0:hb, 0:wb]
    work = BinWork()
    out0, pad = bin_image(img, num, den, 0, work, 0)
    assert pad == 0 and out0.shape == (hb, wb) and out0.dtype == np.float32
    np.testing.assert_allclose(out0, wave(yb, xb, hb, wb), atol=2e-5)

    # an edge-padded image of the same padded size in slot 1 (so that the arrays are
    # reused) leaves slot 0's result as it was
    margin = 9
    p = -(-margin // num) * num
    rng = np.random.default_rng(1)
    noisy = rng.normal(size=(H - 2 * p, W - 2 * p)).astype(np.float32)
    out1, pad1 = bin_image(noisy, num, den, margin, work, 1)
    assert pad1 == p and out1.shape == (hb, wb)
    np.testing.assert_allclose(out0, wave(yb, xb, hb, wb), atol=2e-5)
    padded = np.pad(noisy, p, mode="edge")
    expected, _ = bin_image(padded, num, den)
    np.testing.assert_allclose(out1, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # slot 0 again, on a new image: the same as with fresh arrays
    again, _ = bin_image(noisy, num, den, margin, work, 0)
    assert again is out0
    np.testing.assert_array_equal(again, bin_image(noisy, num, den, margin)[0])
