"""Point-group and helical symmetry, and Fourier-space symmetrisation (spec §6).

Re-implements RELION 5's ``SymList::read_sym_file`` (generators of the named groups,
symmetry files, closure of the group), ``Symmetry::getPointGroupMatrices``,
``Symmetry::getHelicalSymmetryMatrices`` and ``Symmetry::symmetrise_FS_complex`` /
``symmetrise_FS_real`` with their trilinear half-complex interpolation.

Matrices act on column vectors ``(x, y, z)``.  Fourier arrays are ``[z, y, x]`` in
the FFTW half-complex layout.
"""

from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache

import numba
import numpy as np
from numba import njit, prange

from ..errors import InputError

__all__ = [
    "helical_matrices",
    "point_group_matrices",
    "symmetrise_fourier",
    "symmetry_operators",
    "validate_symmetry",
]

_EPS = 1e-6  # XMIPP_EQUAL_ACCURACY (double build): zeroing, equality and identity tests
_PI = 3.14159265358979323846

# --------------------------------------------------------------------------------------
# Generator matrices, with RELION's arithmetic (transformations.cpp)


def _mul3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Sequential k-sums like Matrix2D's operator*, so rounding follows RELION's.
    return a[:, 0, None] * b[0, :] + a[:, 1, None] * b[1, :] + a[:, 2, None] * b[2, :]


def _rot_z(ang_deg: float) -> np.ndarray:
    a = ang_deg * _PI / 180
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _align_with_z(axis: np.ndarray) -> np.ndarray:
    """RELION's ``alignWithZ``: the rotation A with A·axis = z (axis need not be unit)."""
    m = np.sqrt(axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2])
    x, y, z = axis * (1.0 / m)
    pm = np.sqrt(y * y + z * z)
    if pm > _EPS:
        return np.array(
            [[pm, -x * y / pm, -x * z / pm], [0.0, z / pm, -y / pm], [x, y, z]], dtype=np.float64
        )
    sx = -1.0 if x > 0 else 1.0  # axis is ±x
    return np.array([[0.0, 0.0, sx], [0.0, 1.0, 0.0], [-sx, 0.0, 0.0]])


def _zero_small(m: np.ndarray) -> np.ndarray:
    m = m.copy()
    m[np.abs(m) < _EPS] = 0.0
    return m


def _rot_axis_gens(fold: int, axis: np.ndarray) -> list[np.ndarray]:
    a = _align_with_z(axis)
    out = []
    incr = 360.0 / fold
    ang = incr
    for _ in range(1, fold):
        r = _mul3(_mul3(a.T, _rot_z(ang)), a)
        out.append(_zero_small(r).T.copy())  # RELION stores the transpose
        ang += incr  # accumulated, as RELION does
    return out


def _mirror_gen(normal: np.ndarray) -> np.ndarray:
    # RELION: Aᵀ·diag(1,1,-1)·(Aᵀ)⁻¹ with an SVD-based 4x4 inverse, not zeroed, so its
    # ~1e-16 residues are not reproducible.  They matter: a coordinate that should be 0 but
    # comes out as -1e-16 makes the interpolation read frequency -1 instead of 0.  A is
    # orthogonal, so use A itself and zero the residues like every other element.
    a = _align_with_z(normal)
    return _zero_small(_mul3(_mul3(a.T, np.diag([1.0, 1.0, -1.0])), a))


# --------------------------------------------------------------------------------------
# Names and files


_NAME_RE = re.compile(r"^(?:([CDS])(\d{1,2})([VH]?)|(CI|CS|T|TD|TH|O|OH|I|I[1-5]|IH|I[1-5]H))$")

_ICOS = {
    "I2": [
        "rot_axis 2  0 0 1",
        "rot_axis 5  0.525731114  0 0.850650807",
        "rot_axis 3  0 0.356822076 0.934172364",
    ],
    "I1": [
        "rot_axis 2  1  \t   0\t       0",
        "rot_axis 5 0.85065080702670 0 -0.5257311142635",
        "rot_axis 3 0.9341723640 0.3568220765 0",
    ],
    "I3": [
        "rot_axis 2  -0.5257311143 0 0.8506508070",
        "rot_axis 5  0. 0. 1.",
        "rot_axis 3  -0.4911234778630044, 0.3568220764705179, 0.7946544753759428",
    ],
    "I4": [
        "rot_axis 2  0.5257311143 0 0.8506508070",
        "rot_axis 5  0.8944271932547096 0 0.4472135909903704",
        "rot_axis 3  0.4911234778630044 0.3568220764705179 0.7946544753759428",
    ],
}
_ICOS_MIRROR = {
    "I2": "mirror_plane 1 0 0",
    "I1": "mirror_plane 0 0 -1",
    "I3": "mirror_plane 0.850650807 0  0.525731114",
    "I4": "mirror_plane 0.850650807 0 -0.525731114",
}
_T_GENS = ["rot_axis 3  0. 0. 1.", "rot_axis 2 0. 0.816496 0.577350"]
_O_GENS = ["rot_axis 3  .5773502  .5773502 .5773502", "rot_axis 4 0 0 1"]


def _group_lines(name: str) -> list[str]:
    """``isSymmetryGroup`` + ``fill_symmetry_class``: the symmetry-file lines of a group."""
    m = _NAME_RE.match(name.upper())
    if m is None:
        raise InputError(
            f"unknown symmetry '{name}': not a point group (C1, Cn, Ci, Cs, Cnv, Cnh, Sn, Dn, Dnv, "
            "Dnh, T, Td, Th, O, Oh, I, I1-I4, IH, I1H-I4H) and no such symmetry file"
        )
    if m.group(4):
        g = m.group(4)
        if g in ("I5", "I5H"):
            raise InputError(f"symmetry '{name}': {g} is not implemented in RELION")
        if g == "CI":
            return ["inversion "]
        if g == "CS":
            return ["mirror_plane 0 0 1"]
        if g == "T":
            return list(_T_GENS)
        if g == "TD":
            return [*_T_GENS, "mirror_plane 1.4142136 2.4494897 0.0000000"]
        if g == "TH":
            return ["rot_axis 3  0. 0. 1.", "rot_axis 2 0. -0.816496 -0.577350", "inversion"]
        if g == "O":
            return list(_O_GENS)
        if g == "OH":
            return [*_O_GENS, "mirror_plane 0 1 1"]
        key = {"I": "I2", "IH": "I2H"}.get(g, g)
        lines = list(_ICOS[key[:2]])
        if key.endswith("H"):
            lines.append(_ICOS_MIRROR[key[:2]])
        return lines
    kind, n, suffix = m.group(1), int(m.group(2)), m.group(3)
    if n < 1:
        # RELION would build a broken list (C0, S0) or silently treat D0 as D1.
        raise InputError(f"symmetry '{name}': the order must be at least 1")
    if kind == "S":
        if suffix:
            raise InputError(f"unknown symmetry '{name}'")
        if n % 2:
            raise InputError(f"symmetry '{name}': the order of an Sn group must be even")
        return [f"rot_axis {n // 2} 0 0 1", "inversion "]
    if kind == "C":
        lines = [f"rot_axis {n} 0 0 1"]
        if suffix == "V":
            lines.append("mirror_plane 0 1 0")
        elif suffix == "H":
            lines.append("mirror_plane 0 0 1")
        return lines
    lines = [f"rot_axis {n} 0 0 1"] if n > 1 else []
    lines.append("rot_axis 2 1 0 0")
    if suffix == "V":
        lines.append("mirror_plane 1 0 0")
    elif suffix == "H":
        lines.append("mirror_plane 0 0 1")
    return lines


_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _scan(tok: str | None, rx: re.Pattern, where: str) -> str:
    # sscanf("%d"/"%lf") semantics: a numeric prefix is enough ("0.5," reads 0.5).
    m = rx.match(tok) if tok is not None else None
    if m is None:
        raise InputError(f"{where}: expected a number, got {tok!r}")
    return m.group(0)


def _generators(lines: list[str], source: str) -> list[tuple[int, np.ndarray]]:
    """(L sign, R) per generator, in the order RELION stores them.

    RELION keeps a second matrix L per element; only the inversion sets L = diag(1,1,-1).
    It takes part in the identity and equality tests of the closure, so it is tracked as a sign.
    """
    gens: list[tuple[int, np.ndarray]] = []
    for n, line in enumerate(lines, 1):
        if line[:1] in (";", "#"):
            continue
        toks = line.split()
        if not toks:
            continue  # RELION would crash on a blank line; skipping is the intent
        where = f"{source}, line {n}"
        key = toks[0]
        nxt = [*toks[1:], None, None, None, None]
        if key == "rot_axis":
            fold = int(_scan(nxt[0], _INT_RE, where))
            axis = np.array([float(_scan(t, _FLOAT_RE, where)) for t in nxt[1:4]])
            if fold < 1:
                raise InputError(f"{where}: rot_axis fold must be at least 1, got {fold}")
            if np.sqrt(axis @ axis) <= _EPS:
                raise InputError(f"{where}: rot_axis has a zero axis")
            gens += [(1, r) for r in _rot_axis_gens(fold, axis)]
        elif key == "inversion":
            gens.append((-1, -np.eye(3)))
        elif key == "mirror_plane":
            # textToFloat: single precision, as RELION reads mirror normals
            normal = np.array([float(np.float32(_scan(t, _FLOAT_RE, where))) for t in nxt[0:3]])
            if np.sqrt(normal @ normal) <= _EPS:
                raise InputError(f"{where}: mirror_plane has a zero normal")
            gens.append((1, _mirror_gen(normal)))
        else:
            msg = f"{where}: unknown keyword '{key}' ignored (as RELION does)"
            warnings.warn(msg, stacklevel=3)
    return gens


def _close(gens: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """``SymList::compute_subgroup``: add products until closed, in RELION's visiting order.

    RELION always resumes at the first untried pair (i, j) in the order: shell n =
    max(i, j) ascending; in a shell, (0..n, n) then (n, n-1..0).  A new element only
    adds pairs to later shells, so one walk over the shells visits pairs in that order.
    """
    cap = max(len(gens), 1)
    Rs = np.zeros((cap, 3, 3))
    Ls = np.zeros(cap, dtype=np.int64)
    for k, (lsign, r) in enumerate(gens):
        Rs[k], Ls[k] = r, lsign
    size = len(gens)
    eye = np.eye(3)
    n = 0
    while n < size:
        pairs = [(i, n) for i in range(n + 1)] + [(n, j) for j in range(n - 1, -1, -1)]
        for i, j in pairs:
            new_l = Ls[i] * Ls[j]
            new_r = _mul3(Rs[i], Rs[j])
            if new_l == 1 and np.all(np.abs(new_r - eye) <= _EPS):
                continue
            diff = np.abs(Rs[:size] - new_r).max(axis=(1, 2))
            if np.any((diff <= _EPS) & (Ls[:size] == new_l)):
                continue
            if size == cap:
                cap *= 2
                Rs = np.concatenate([Rs, np.zeros_like(Rs)])
                Ls = np.concatenate([Ls, np.zeros_like(Ls)])
            Rs[size], Ls[size] = _zero_small(new_r), new_l
            size += 1
        n += 1
    return Rs[:size].copy()


@lru_cache(maxsize=64)
def _builtin_group(upper_name: str) -> np.ndarray:
    return _close(_generators(_group_lines(upper_name), f"symmetry '{upper_name}'"))


def point_group_matrices(name: str) -> np.ndarray:
    """The non-identity elements (n, 3, 3) of a point group or a RELION symmetry file.

    Same matrices, in the same order, as RELION's ``Symmetry::getPointGroupMatrices``.
    An existing file takes precedence over a group name, as in RELION.
    """
    if not isinstance(name, str):
        raise InputError(f"symmetry {name!r}: expected a group name or a file name")
    if os.path.isfile(name):
        try:
            with open(name, errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError as e:
            raise InputError(f"symmetry file {name}: cannot read ({e.strerror})") from None
        return _close(_generators(lines, f"symmetry file {name}"))
    key = name.strip()
    if os.sep in key or "/" in key:
        # RELION would strip the directories and try the base name as a group; a path is
        # far more likely a missing file.
        raise InputError(f"symmetry file {name}: no such file")
    if not key:
        raise InputError("empty symmetry name (use C1 for no symmetry)")
    _group_lines(key)  # validates, with the name as typed in the message
    return _builtin_group(key.upper()).copy()


def validate_symmetry(name: str) -> str | None:
    """None if ``name`` is a usable point group or symmetry file, else the error message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            point_group_matrices(name)
    except InputError as e:
        return str(e)
    return None


# --------------------------------------------------------------------------------------
# Operators


def helical_matrices(n_asu: int, twist_deg: float, rise_px: float) -> np.ndarray:
    """RELION's ``getHelicalSymmetryMatrices``: (n_asu-1, 4, 4), h ascending, 0 skipped.

    Operator h is Rz(-h·twist) with translation (0, 0, -h·rise_px).  The bottom row is
    (0, 0, 0, 1) (RELION leaves it (0, 0, 0, 0); it is never used).
    """
    n_asu = int(n_asu)
    if n_asu <= 1:
        return np.zeros((0, 4, 4))
    h_min = -(n_asu // 2)
    h_max = -h_min + n_asu % 2
    out = []
    for hh in range(h_min, h_max):
        if hh == 0:
            continue
        m = np.eye(4)
        m[:3, :3] = _rot_z(hh * (-float(twist_deg)))
        m[2, 3] = -hh * float(rise_px)
        out.append(m)
    return np.array(out)


def symmetry_operators(
    sym: str, n_asu: int = 1, twist_deg: float = 0.0, rise_px: float = 0.0
) -> np.ndarray:
    """All operators (m, 4, 4) that ``ReconstructParticleProgram::symmetrise`` applies.

    Point-group matrices (unless ``sym`` is C1/c1) followed by the helical ones (if
    ``n_asu > 1``): concatenated, not composed.  Empty means "do not symmetrise".
    """
    parts = [np.zeros((0, 4, 4))]
    if sym not in ("C1", "c1"):
        pg = point_group_matrices(sym)
        m = np.zeros((len(pg), 4, 4))
        m[:, :3, :3] = pg
        m[:, 3, 3] = 1.0
        parts.append(m)
    if n_asu > 1:
        parts.append(helical_matrices(n_asu, twist_deg, rise_px))
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------
# Fourier-space symmetrisation (jaz/image/symmetry.h, interpolation.h)


@njit(cache=True, nogil=True, inline="always")
def _corners(xs, ys, zs, xdim, ydim, zdim):
    """Shared index logic of ``linearXYZ_FftwHalf_*`` (quirks included)."""
    if xs > 0.0:
        xd, yd, zd = xs, ys, zs
        conj = False
    else:  # x == 0 also takes the conjugate branch
        xd, yd, zd = -xs, -ys, -zs
        conj = True
    if yd < 0.0:
        yd += ydim
    if zd < 0.0:
        zd += zdim
    x0 = int(xd)
    y0 = int(yd)
    z0 = int(zd)
    # fractions before clamping, as RELION
    xf = xd - x0
    yf = yd - y0
    zf = zd - z0
    if x0 >= xdim:
        x0 = xdim - 1
    x1 = x0 + 1
    if x1 >= xdim:
        x1 = xdim - 2  # RELION's "mirror" of the last column, not a wrap
    if y0 < 0:
        y0 = 0
    elif y0 >= ydim:
        y0 = ydim - 1
    y1 = (y0 + 1) % ydim
    if z0 < 0:
        z0 = 0
    elif z0 >= zdim:
        z0 = zdim - 1
    z1 = (z0 + 1) % zdim
    return x0, x1, y0, y1, z0, z1, xf, yf, zf, conj


@njit(cache=True, nogil=True, inline="always")
def _trilinear(img, x0, x1, y0, y1, z0, z1, xf, yf, zf):
    vx00 = (1 - xf) * img[z0, y0, x0] + xf * img[z0, y0, x1]
    vx10 = (1 - xf) * img[z0, y1, x0] + xf * img[z0, y1, x1]
    vx01 = (1 - xf) * img[z1, y0, x0] + xf * img[z1, y0, x1]
    vx11 = (1 - xf) * img[z1, y1, x0] + xf * img[z1, y1, x1]
    vxy0 = (1 - yf) * vx00 + yf * vx10
    vxy1 = (1 - yf) * vx01 + yf * vx11
    return (1 - zf) * vxy0 + zf * vxy1


@njit(parallel=True, nogil=True, cache=True)
def _symmetrise_kernel(d_re, d_im, wgt, mats, o_re, o_im, o_w):
    # Real and imaginary parts are interpolated separately: the same float operations
    # as RELION's tComplex (scalar × complex never mixes the parts).
    d, h, wh = d_re.shape
    w = 2 * (wh - 1)
    sc = mats.shape[0]
    norm = float(sc + 1)
    two_pi = 2 * 3.14159265358979323846
    for z in prange(d):
        zz = float(z) if z < d // 2 else float(z - d)
        for y in range(h):
            yy = float(y) if y < h // 2 else float(y - h)
            for x in range(wh):
                xx = float(x)
                a_re = d_re[z, y, x]
                a_im = d_im[z, y, x]
                a_w = wgt[z, y, x]
                for k in range(sc):
                    px = mats[k, 0, 0] * xx + mats[k, 0, 1] * yy + mats[k, 0, 2] * zz
                    py = mats[k, 1, 0] * xx + mats[k, 1, 1] * yy + mats[k, 1, 2] * zz
                    pz = mats[k, 2, 0] * xx + mats[k, 2, 1] * yy + mats[k, 2, 2] * zz
                    x0, x1, y0, y1, z0, z1, xf, yf, zf, conj = _corners(px, py, pz, wh, h, d)
                    v_re = _trilinear(d_re, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                    v_im = _trilinear(d_im, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                    if conj:
                        v_im = -v_im
                    dotp = two_pi * (
                        (xx / w) * mats[k, 0, 3]
                        + (yy / h) * mats[k, 1, 3]
                        + (zz / d) * mats[k, 2, 3]
                    )
                    c = np.cos(dotp)
                    s = np.sin(dotp)
                    a_re += v_re * c - v_im * s
                    a_im += v_re * s + v_im * c
                    a_w += _trilinear(wgt, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                o_re[z, y, x] = a_re / norm
                o_im[z, y, x] = a_im / norm
                o_w[z, y, x] = a_w / norm


def symmetrise_fourier(
    D: np.ndarray, W: np.ndarray, ops: np.ndarray, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """RELION's ``symmetrise_FS_complex`` (D) and ``symmetrise_FS_real`` (W).

    ``D`` complex and ``W`` real, both (d, h, w//2+1) [z, y, x] half-complex; ``ops``
    (m, 4, 4) from :func:`symmetry_operators`.  Returns new arrays (complex128, float64);
    the inputs are not modified.
    """
    D = np.asarray(D)
    W = np.asarray(W)
    ops = np.asarray(ops, dtype=np.float64)
    if D.ndim != 3 or D.shape != W.shape:
        raise ValueError(f"D {D.shape} and W {W.shape} must be equal 3-D half-complex shapes")
    if ops.ndim != 3 or ops.shape[1:] != (4, 4):
        raise ValueError(f"ops must be (m, 4, 4), got {ops.shape}")
    if len(ops) == 0:
        return D.astype(np.complex128, copy=True), W.astype(np.float64, copy=True)
    if D.shape[2] < 2:
        raise ValueError(f"half-complex x size must be at least 2, got {D.shape[2]}")
    d_re = np.ascontiguousarray(D.real, dtype=np.float64)
    d_im = np.ascontiguousarray(D.imag, dtype=np.float64)
    wgt = np.ascontiguousarray(W, dtype=np.float64)
    o_re = np.empty_like(d_re)
    o_im = np.empty_like(d_re)
    o_w = np.empty_like(d_re)
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        _symmetrise_kernel(d_re, d_im, wgt, np.ascontiguousarray(ops), o_re, o_im, o_w)
    finally:
        numba.set_num_threads(old)
    out = np.empty(D.shape, dtype=np.complex128)
    out.real = o_re
    out.imag = o_im
    return out, o_w
