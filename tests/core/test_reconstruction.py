"""Finalisation steps against direct computations."""

import numpy as np
import pytest
import scipy.fft as sfft

from napari_subtomo_recon.core.fsc import fsc, fsc_spectra, resolution_at
from napari_subtomo_recon.core.reconstruction import (
    crop_centre,
    divide_weights,
    expand_weights,
    gridding_correct,
    radial_average_half,
    taper,
)


def test_gridding_correction_undoes_sinc2_about_the_centre():
    s = 16
    rng = np.random.default_rng(0)
    v = rng.normal(size=(s, s, s))
    D = sfft.rfftn(np.fft.ifftshift(v), norm="ortho")  # real-space centre at the phase origin
    out = gridding_correct(D)
    c = np.arange(s) - s // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    sinc2 = np.sinc(r / s) ** 2
    assert np.allclose(out * sinc2, v, atol=1e-12)
    assert np.isclose(
        out[s // 2, s // 2, s // 2], v[s // 2, s // 2, s // 2], rtol=1e-13
    )  # r = 0: unchanged


def test_wiener_division_with_constant_weights():
    s = 12
    rng = np.random.default_rng(1)
    img = rng.normal(size=(s, s, s))
    W = np.full((s, s, s // 2 + 1), 3.0)
    assert np.allclose(divide_weights(img, W, snr=2.0), img / 3.5)


def test_heuristic_divides_by_weight_and_drops_corners():
    s = 16
    x = np.arange(s)
    band = (
        np.cos(2 * np.pi * 2 * x / s)[:, None, None]
        * np.cos(2 * np.pi * 3 * x / s)[None, :, None]
        * np.ones(s)
    )
    W = np.full((s, s, s // 2 + 1), 4.0)
    assert np.allclose(divide_weights(band, W, snr=-1), band / 4.0, atol=1e-12)
    corner = (
        np.cos(np.pi * x)[:, None, None]
        * np.cos(np.pi * x)[None, :, None]
        * np.cos(np.pi * x)[None, None, :]
    )
    assert np.allclose(divide_weights(corner, W, snr=0), 0.0, atol=1e-12)  # |k| >= s/2 is zeroed


def test_heuristic_floors_small_weights_at_a_fraction_of_the_shell_mean():
    s = 8
    sh = s // 2 + 1
    W = np.ones((s, s, sh))
    W[0, 0, 1] = 1e-9  # one tiny weight at |k| = 1
    img = np.zeros((s, s, s))
    img[0, 0, 0] = 1.0
    G = sfft.rfftn(img, norm="ortho")
    out = sfft.rfftn(divide_weights(img, W, -1), norm="ortho")
    rad = radial_average_half(W)
    assert np.isclose(out[0, 0, 1], G[0, 0, 1] / (0.001 * rad[1]))
    assert np.isclose(out[0, 1, 1], G[0, 1, 1] / 1.0)


@pytest.mark.parametrize("s", [10, 11, 4])
def test_radial_average_brute_force(s):
    sh = s // 2 + 1
    rng = np.random.default_rng(2)
    W = rng.uniform(size=(s, s, sh))
    avg, wgh = np.zeros(sh), np.zeros(sh)
    for z in range(s):
        for y in range(s):
            for x in range(sh):
                kz, ky = (z if z < s // 2 else z - s), (y if y < s // 2 else y - s)
                r = np.sqrt(x * x + ky * ky + kz * kz)
                r0 = int(r)
                f = r - r0
                if r0 < sh:
                    avg[r0] += (1 - f) * W[z, y, x]
                    wgh[r0] += 1 - f
                if r0 + 1 < sh:
                    avg[r0 + 1] += f * W[z, y, x]
                    wgh[r0 + 1] += f
    assert np.allclose(radial_average_half(W), avg / wgh)


@pytest.mark.parametrize("s", [2, 3, 6, 7, 8, 9])
def test_expand_weights_follows_relion_loop_order(s):
    sh = s // 2 + 1
    rng = np.random.default_rng(s)
    W = rng.uniform(size=(s, s, sh))
    full = np.zeros((s, s, s))
    for z in range(s):
        for y in range(s):
            for x in range(sh):
                full[z, y, x] = W[z, y, x]
                if x > 0:
                    full[(s - z) % s, (s - y) % s, s - x] = W[z, y, x]
    assert np.array_equal(expand_weights(W), np.fft.fftshift(full))
    assert np.array_equal(expand_weights(W, np.float32), np.fft.fftshift(full).astype(np.float32))


def test_steps_that_overwrite_their_input_give_the_same_maps():
    """The lean forms the job uses (``consume``, ``inplace``) against the plain ones."""
    s = 12
    rng = np.random.default_rng(7)
    D = rng.normal(size=(s, s, s // 2 + 1)) + 1j * rng.normal(size=(s, s, s // 2 + 1))
    ref = gridding_correct(D)
    work = D.copy()
    assert np.array_equal(gridding_correct(work, consume=True), ref)
    assert not np.array_equal(work, D)  # used as the workspace
    v = rng.normal(size=(s, s, s))
    expect = taper(v, 2.0)
    assert np.array_equal(taper(v, 2.0, inplace=True), expect)
    assert np.array_equal(v, expect)


def test_taper_brute_force_and_constant_volume():
    n, dist = 10, 3.0
    rng = np.random.default_rng(4)
    v = rng.normal(size=(n, n, n))
    m = n / 2.0
    num = den = 0.0
    mask = np.zeros_like(v)
    for z in range(n):
        for y in range(n):
            for x in range(n):
                r = np.sqrt((x - m) ** 2 + (y - m) ** 2 + (z - m) ** 2)
                if r < m:
                    c = 1.0 if r < m - dist else 0.5 - 0.5 * np.cos(np.pi * (m - r) / dist)
                    mask[z, y, x] = c
                    num += c * v[z, y, x]
                    den += c
    ref = np.where(mask > 0, mask * (v - num / den), 0)
    ref[(mask == 0)] = 0
    assert np.allclose(taper(v, dist), ref)
    assert np.allclose(
        taper(np.full((n, n, n), 5.0), 0.0), 0.0
    )  # mean subtracted, even with --taper 0


def test_crop_centre_offset():
    v = np.arange(10**3, dtype=float).reshape(10, 10, 10)
    assert crop_centre(v, 6).shape == (6, 6, 6)
    assert crop_centre(v, 5).shape == (6, 6, 6)  # RELION: s - 2*((s - crop)//2)
    assert crop_centre(v, 6)[0, 0, 0] == v[2, 2, 2]


def test_fsc_identical_independent_and_resolution():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(24, 24, 24))
    assert np.allclose(fsc(a, a), 1.0)
    assert np.allclose(fsc(a, 2 * a), 1.0)
    b = rng.normal(size=(24, 24, 24))
    assert np.abs(fsc(a, b)[2:]).max() < 0.3
    curve = np.array([1.0, 0.9, 0.6, 0.4, 0.1])  # box 8
    assert np.isclose(resolution_at(curve, 0.5, 2.0), 8 * 2.0 / 2.5)
    assert np.isclose(resolution_at(np.ones(5), 0.143, 2.0), 4.0)


def test_fsc_brute_force():
    """Shell sums written out voxel by voxel over the full transform (shell round(|k|),
    shells 0..n/2): the half-complex sums count x = 1..n/2-1 once where the full
    transform has them twice, as RELION's and every FSC over an rfft does."""
    n = 8
    rng = np.random.default_rng(5)
    a = rng.normal(size=(n, n, n)).astype(np.float32)
    b = (a + rng.normal(size=(n, n, n))).astype(np.float32)
    A = np.fft.fftn(a.astype(np.float64))
    B = np.fft.fftn(b.astype(np.float64))
    num, da, db = np.zeros(n // 2 + 1), np.zeros(n // 2 + 1), np.zeros(n // 2 + 1)
    for z in range(n):
        for y in range(n):
            for x in range(n // 2 + 1):
                kz, ky = (z if z < n // 2 else z - n), (y if y < n // 2 else y - n)
                i = int(np.floor(np.sqrt(kz * kz + ky * ky + x * x) + 0.5))
                if i <= n // 2:
                    num[i] += (A[z, y, x] * np.conj(B[z, y, x])).real
                    da[i] += abs(A[z, y, x]) ** 2
                    db[i] += abs(B[z, y, x]) ** 2
    assert np.allclose(fsc(a, b), num / np.sqrt(da * db), rtol=1e-12, atol=0)


@pytest.mark.parametrize("n", [8, 9])
def test_fsc_of_half_transforms_is_the_fsc_of_their_maps(n):
    """fsc_spectra(A, B) is fsc(irfftn(A), irfftn(B)) for half transforms that are not
    Hermitian in the planes x = 0 and x = n/2, as a weight-divided accumulator need not
    be: there irfftn keeps only the Hermitian part, and so must the sums."""
    rng = np.random.default_rng(11)
    sh = n // 2 + 1
    A = rng.normal(size=(n, n, sh)) + 1j * rng.normal(size=(n, n, sh))
    B = A + 0.8 * (rng.normal(size=(n, n, sh)) + 1j * rng.normal(size=(n, n, sh)))
    maps = [sfft.irfftn(G, s=(n, n, n), axes=(0, 1, 2)) for G in (A, B)]
    expected = fsc(*maps)
    assert np.allclose(fsc_spectra(A, B), expected, rtol=0, atol=1e-12)
    assert np.allclose(fsc_spectra(A.astype(np.complex64), B), expected, rtol=0, atol=1e-6)
    # the edge planes matter: summed as given they would not agree
    plain = [(A * np.conj(B)).real, np.abs(A) ** 2, np.abs(B) ** 2]
    f = np.fft.fftfreq(n) * n
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + np.arange(sh)[None, None] ** 2)
    shell = np.floor(r + 0.5).astype(int).ravel()
    keep = shell <= n // 2
    s_num, s_a, s_b = (np.bincount(shell[keep], v.ravel()[keep]) for v in plain)
    assert np.abs(s_num / np.sqrt(s_a * s_b) - expected).max() > 1e-3


@pytest.mark.parametrize("s", [6, 7, 8])
def test_expanded_weights_slab_by_slab(s, tmp_path):
    """ExpandedWeights fills any run of planes as expand_weights has them, and write_map
    writes it as it writes the whole volume."""
    import mrcfile

    from napari_subtomo_recon.core.reconstruction import ExpandedWeights
    from napari_subtomo_recon.io.mrc import write_map

    W = np.random.default_rng(s).uniform(size=(s, s, s // 2 + 1))
    full = expand_weights(W, np.float32)
    src = ExpandedWeights(W)
    assert src.shape == full.shape
    for z0, z1 in [(0, s), (1, 3), (s - 1, s), (s // 2, s // 2 + 2)]:
        out = np.full((z1 - z0, s, s), np.nan, np.float32)
        src.fill(z0, z1, out)
        assert np.array_equal(out, full[z0:z1])
    write_map(tmp_path / "planes.mrc", src, 1.5)
    write_map(tmp_path / "array.mrc", full, 1.5)
    with mrcfile.open(tmp_path / "planes.mrc") as a, mrcfile.open(tmp_path / "array.mrc") as b:
        assert np.array_equal(a.data, full)
        assert a.header.tobytes()[:220] == b.header.tobytes()[:220]  # up to the labels
