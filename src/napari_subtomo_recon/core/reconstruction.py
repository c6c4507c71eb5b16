"""From accumulated Fourier data and weights to maps (spec §7).

Per output: checkerboard centring, unitary inverse FFT, sinc² gridding correction
(the ``data_*.mrc`` map), weight division (Wiener with 1/SNR, or RELION's
heuristic), inverse FFT, optional centre crop, taper.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft


def signed_freq(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.where(i < n // 2, i, i - n).astype(np.float64)


def half_radius(s: int) -> np.ndarray:
    """|k| on the (s, s, s//2+1) half-complex grid [z, y, x]."""
    sh = s // 2 + 1
    f = signed_freq(s)
    x = np.arange(sh, dtype=np.float64)
    return np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + x[None, None, :] ** 2)


def gridding_correct(D: np.ndarray, workers: int = 1) -> np.ndarray:
    """Centre (checkerboard), inverse FFT and divide by sinc²(r/s): the ``data_*`` map.

    ``D`` (s, s, sh) complex is not modified.
    """
    s = D.shape[0]
    sh = D.shape[2]
    w = 2 * (sh - 1)
    i = np.arange(s)
    ix = np.arange(sh)
    chk = (
        (1 - 2 * (i[:, None, None] % 2))
        * (1 - 2 * (i[None, :, None] % 2))
        * (1 - 2 * (ix[None, None, :] % 2))
    )
    img = sfft.irfftn(D * chk, s=(s, s, w), norm="ortho", workers=workers)
    c = np.arange(s, dtype=np.float64) - s // 2
    cw = np.arange(w, dtype=np.float64) - w // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + cw[None, None, :] ** 2)
    d = r / w
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc2 = (np.sin(np.pi * d) / (np.pi * d)) ** 2
    sinc2 = np.where((sinc2 < 1e-2) | (d > 1.0), 1e-2, sinc2)
    sinc2[r == 0] = 1.0
    return img / sinc2


def radial_average_half(Wt: np.ndarray) -> np.ndarray:
    """Linearly binned radial average over the stored half volume (RELION ``fftwHalf_3D_lin``)."""
    s, _, sh = Wt.shape
    r = half_radius(s)
    r0 = r.astype(np.int64)
    f = r - r0
    avg = np.zeros(sh)
    wgh = np.zeros(sh)
    m0 = r0 < sh
    np.add.at(avg, r0[m0], ((1 - f) * Wt)[m0])
    np.add.at(wgh, r0[m0], (1 - f)[m0])
    m1 = r0 + 1 < sh
    np.add.at(avg, r0[m1] + 1, (f * Wt)[m1])
    np.add.at(wgh, r0[m1] + 1, f[m1])
    return np.where(wgh > 0, avg / np.where(wgh > 0, wgh, 1), 0.0)


def divide_weights(img: np.ndarray, Wt: np.ndarray, snr: float, workers: int = 1) -> np.ndarray:
    """Fourier-divide a gridding-corrected map by its weights.

    ``snr > 0``: Wiener, G / (W + 1/snr).  Otherwise RELION's heuristic: zero |k| >= s/2
    and divide by max(W, 0.001 × radial mean of W).
    """
    G = sfft.rfftn(img, norm="ortho", workers=workers)
    if snr > 0:
        G /= Wt + 1.0 / snr
    else:
        s, _, sh = Wt.shape
        rad = radial_average_half(Wt)
        r = half_radius(s)
        r0 = r.astype(np.int64)
        f = r - r0
        outside = r0 + 1 >= sh
        r0c = np.minimum(r0, sh - 1)
        r1c = np.minimum(r0 + 1, sh - 1)
        avg = f * rad[r1c] + (1.0 - f) * rad[r0c]
        wg = np.maximum(Wt, avg * 0.001)
        safe = np.where(wg > 0, wg, 1.0)
        G = np.where(wg > 0, G / safe, G)
        G[outside] = 0
    return sfft.irfftn(G, s=img.shape, norm="ortho", workers=workers)


def expand_weights(Wt: np.ndarray) -> np.ndarray:
    """Half-complex weights (s, s, sh) -> full (s, s, s) volume with DC at the centre.

    RELION's ``fftwHalfToHumanFull``: one loop (z, then y, then x) that writes the
    stored value and, for x > 0, its mirror at (-z, -y, s-x); then fftshift.  Only the
    Nyquist column x = s/2 is written twice; there the later write in (z, y) order wins.
    """
    s, _, sh = Wt.shape
    full = np.zeros((s, s, s), dtype=Wt.dtype)
    full[:, :, :sh] = Wt
    zi = (-np.arange(s)) % s
    mirrored = Wt[zi][:, zi]  # mirrored[z, y] = Wt[-z, -y]
    full[:, :, sh:] = mirrored[:, :, 1 : s - sh + 1][:, :, ::-1]
    if 2 * (sh - 1) == s:
        ny = sh - 1
        lex = np.arange(s)[:, None] * s + np.arange(s)[None, :]
        lex_m = zi[:, None] * s + zi[None, :]
        full[:, :, ny] = np.where(lex >= lex_m, Wt[:, :, ny], mirrored[:, :, ny])
    return np.fft.fftshift(full)


def crop_centre(vol: np.ndarray, crop: int) -> np.ndarray:
    """Centre crop with RELION's offset b = (s - crop) // 2 (size s - 2b)."""
    s = vol.shape[0]
    b = (s - crop) // 2
    return vol[b : s - b, b : s - b, b : s - b]


def taper(vol: np.ndarray, dist: float) -> np.ndarray:
    """Raised-cosine taper to the inscribed sphere and subtraction of the weighted inner mean."""
    n = vol.shape[0]
    m = n / 2.0
    c = np.arange(n, dtype=np.float64) - m
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    inside = r < m
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = np.where(r < m - dist, 1.0, 0.5 - 0.5 * np.cos(np.pi * (m - r) / dist))
    mask = np.where(inside, mask, 0.0)
    wsum = mask[inside].sum()
    avg = (mask * vol)[inside].sum() / wsum if wsum > 0 else 0.0
    return np.where(inside, mask * (vol - avg), 0.0)
