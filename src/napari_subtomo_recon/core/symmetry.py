"""Point-group and helical symmetry, and Fourier-space symmetrisation (spec §6).

Re-implements RELION 5's ``SymList::read_sym_file`` (generators of the named groups,
symmetry files, closure of the group), ``Symmetry::getPointGroupMatrices``,
``Symmetry::getHelicalSymmetryMatrices``.  Applying them to Fourier volumes is
:mod:`.symmetrise` (Numba); this module imports no Numba, so that the GUI can check a
symmetry name while the user types.

The point-group matrices are RELION's to the last bit: every floating-point operation
RELION performs to build them (number parsing, ``alignWithZ``, the SVD-based 4x4
``Matrix2D::inv``, ``Matrix2D`` products, the closure and its zeroing) is repeated in
the same order.  RELION is built without FMA contraction or fast-math, and Python /
numpy float64 operations are IEEE-754, so the same sequence gives the same bits.  This
matters: mirror generators keep ~1e-16 residues of the SVD, and a coordinate of -1e-16
instead of 0 makes the Fourier interpolation read a different frequency.

Matrices act on column vectors ``(x, y, z)``.  Fourier arrays are ``[z, y, x]`` in
the FFTW half-complex layout.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from fractions import Fraction
from functools import lru_cache

import numpy as np

from ..errors import InputError
from .arraytypes import BoolArray, Float64Array, Int64Array

__all__ = [
    "helical_matrices",
    "point_group_matrices",
    "symmetry_operators",
    "validate_symmetry",
]

_EPS = 1e-6  # XMIPP_EQUAL_ACCURACY (double build): zeroing, equality and identity tests
_PI = 3.14159265358979323846
_LINE = 78  # fgets(line, 79, fp): RELION reads symmetry files in pieces of 78 characters

# --------------------------------------------------------------------------------------
# RELION's 4x4 (homogeneous) matrix arithmetic: Matrix2D, transformations.cpp,
# numerical_recipes.cpp.  Matrices are (4, 4) float64 arrays, or stacks (..., 4, 4).


def _matmul(a: Float64Array, b: Float64Array) -> Float64Array:
    """``Matrix2D::operator*``: r(i,j) starts at 0 and adds a(i,k)·b(k,j) for k = 0..3.

    Element-wise numpy operations round exactly like the scalar C++ loop, so each
    element gets RELION's bits (including the k = 3 terms and the sign of zeros).
    """
    r: Float64Array = 0.0 + a[..., :, 0, None] * b[..., None, 0, :]
    for k in range(1, a.shape[-1]):
        r = r + a[..., :, k, None] * b[..., None, k, :]
    return r


def _zero_small(m: Float64Array) -> Float64Array:
    """``Matrix2D::setSmallValuesToZero``: |v| < 1e-6 becomes +0."""
    m = m.copy()
    m[np.abs(m) < _EPS] = 0.0
    return m


def _rot_z4(ang_deg: float) -> Float64Array:
    """``rotation3DMatrix(ang, 'Z', R)`` (homogeneous); libm cos/sin as RELION."""
    a = ang_deg * _PI / 180  # DEG2RAD
    c, s = math.cos(a), math.sin(a)
    r = np.zeros((4, 4))
    r[0, 0], r[0, 1], r[1, 0], r[1, 1] = c, -s, s, c
    r[2, 2] = r[3, 3] = 1.0
    return r


def _align_with_z(axis: tuple[float, float, float]) -> Float64Array:
    """``alignWithZ`` (homogeneous): the rotation A with A·axis ∥ z."""
    x, y, z = axis
    m = math.sqrt(((0.0 + x * x) + y * y) + z * z)  # Matrix1D::selfNormalize
    if abs(m) > _EPS:
        im = 1.0 / m
        x, y, z = x * im, y * im, z * im
    else:
        x = y = z = 0.0
    a = np.zeros((4, 4))
    a[3, 3] = 1.0
    pm = math.sqrt(y * y + z * z)
    if pm > _EPS:
        a[0] = pm, -x * y / pm, -x * z / pm, 0.0
        a[1] = 0.0, z / pm, -y / pm, 0.0
        a[2] = x, y, z, 0.0
    else:  # the axis is ±x
        a[0, 2] = -1.0 if x > 0 else 1.0
        a[1, 1] = 1.0
        a[2, 0] = 1.0 if x > 0 else -1.0
    return a


def _pythag(a: float, b: float) -> float:
    absa, absb = abs(a), abs(b)
    if absb < absa:
        return absa * math.sqrt(1.0 + absb * absb / (absa * absa))
    return 0.0 if absb == 0.0 else absb * math.sqrt(1.0 + absa * absa / (absb * absb))


def _svdcmp(a: Float64Array) -> tuple[list[float], list[float], list[float]]:
    """RELION's ``svdcmp`` (Bilib's one-sided Householder + QR), row-major U, W, V.

    A statement-by-statement port on Python floats: same operations, same order.
    """
    rows, cols = a.shape
    u = [float(v) for v in a.ravel()]
    w = [0.0] * cols
    v = [0.0] * (cols * cols)
    rv1 = [0.0] * (cols * cols)
    g = scale = norm = 0.0
    l = 0  # noqa: E741 (the names of the original)
    # Householder reduction to bidiagonal form
    for i in range(cols):
        l = i + 1  # noqa: E741
        rv1[i] = scale * g
        g = s = scale = 0.0
        if i < rows:
            for k in range(i, rows):
                scale += abs(u[k * cols + i])
            if scale != 0.0:
                for k in range(i, rows):
                    u[k * cols + i] /= scale
                    s += u[k * cols + i] * u[k * cols + i]
                f = u[i * cols + i]
                g = -math.sqrt(s) if 0.0 <= f else math.sqrt(s)
                h = f * g - s
                u[i * cols + i] = f - g
                for j in range(l, cols):
                    s = 0.0
                    for k in range(i, rows):
                        s += u[k * cols + i] * u[k * cols + j]
                    f = s / h
                    for k in range(i, rows):
                        u[k * cols + j] += f * u[k * cols + i]
                for k in range(i, rows):
                    u[k * cols + i] *= scale
        w[i] = scale * g
        g = s = scale = 0.0
        if i < rows and i != cols - 1:
            for k in range(l, cols):
                scale += abs(u[i * cols + k])
            if scale != 0.0:
                for k in range(l, cols):
                    u[i * cols + k] /= scale
                    s += u[i * cols + k] * u[i * cols + k]
                f = u[i * cols + l]
                g = -math.sqrt(s) if 0.0 <= f else math.sqrt(s)
                h = f * g - s
                u[i * cols + l] = f - g
                for k in range(l, cols):
                    rv1[k] = u[i * cols + k] / h
                for j in range(l, rows):
                    s = 0.0
                    for k in range(l, cols):
                        s += u[j * cols + k] * u[i * cols + k]
                    for k in range(l, cols):
                        u[j * cols + k] += s * rv1[k]
                for k in range(l, cols):
                    u[i * cols + k] *= scale
        t = abs(w[i]) + abs(rv1[i])
        norm = norm if t < norm else t
    # accumulation of right-hand transformations
    for i in range(cols - 1, -1, -1):
        if i < cols - 1:
            if g != 0.0:
                for j in range(l, cols):
                    v[j * cols + i] = u[i * cols + j] / (u[i * cols + l] * g)
                for j in range(l, cols):
                    s = 0.0
                    for k in range(l, cols):
                        s += u[i * cols + k] * v[k * cols + j]
                    for k in range(l, cols):
                        if s != 0.0:
                            v[k * cols + j] += s * v[k * cols + i]
            for j in range(l, cols):
                v[i * cols + j] = v[j * cols + i] = 0.0
        v[i * cols + i] = 1.0
        g = rv1[i]
        l = i  # noqa: E741
    # accumulation of left-hand transformations
    for i in range(min(rows, cols) - 1, -1, -1):
        l = i + 1  # noqa: E741
        g = w[i]
        for j in range(l, cols):
            u[i * cols + j] = 0.0
        if g != 0.0:
            g = 1.0 / g
            for j in range(l, cols):
                s = 0.0
                for k in range(l, rows):
                    s += u[k * cols + i] * u[k * cols + j]
                f = s * g / u[i * cols + i]
                for k in range(i, rows):
                    if f != 0.0:
                        u[k * cols + j] += f * u[k * cols + i]
            for j in range(i, rows):
                u[j * cols + i] *= g
        else:
            for j in range(i, rows):
                u[j * cols + i] = 0.0
        u[i * cols + i] += 1.0
    # diagonalisation of the bidiagonal form
    nm = 0
    for k in range(cols - 1, -1, -1):
        for its in range(1, 1000001):  # SVDMAXITER
            flag = True
            l = k  # noqa: E741
            while l >= 0:
                nm = l - 1
                if abs(rv1[l]) + norm == norm:
                    flag = False
                    break
                if abs(w[nm]) + norm == norm:
                    break
                l -= 1  # noqa: E741
            if flag:
                c, s = 0.0, 1.0
                for i in range(l, k + 1):
                    f = s * rv1[i]
                    rv1[i] *= c
                    if abs(f) + norm == norm:
                        break
                    g = w[i]
                    h = _pythag(f, g)
                    w[i] = h
                    h = 1.0 / h
                    c = g * h
                    s = -f * h
                    for j in range(rows):
                        y = u[j * cols + nm]
                        z = u[j * cols + i]
                        u[j * cols + nm] = y * c + z * s
                        u[j * cols + i] = z * c - y * s
            z = w[k]
            if l == k:
                if z < 0.0:
                    w[k] = -z
                    for j in range(cols):
                        v[j * cols + k] = -v[j * cols + k]
                break
            if its == 1000000:
                return u, w, v
            x = w[l]
            nm = k - 1
            y = w[nm]
            g = rv1[nm]
            h = rv1[k]
            f = ((y - z) * (y + z) + (g - h) * (g + h)) / (2.0 * h * y)
            g = _pythag(f, 1.0)
            f = ((x - z) * (x + z) + h * ((y / (f + (abs(g) if 0.0 <= f else -abs(g)))) - h)) / x
            c = s = 1.0
            for j in range(l, nm + 1):
                i = j + 1
                g = rv1[i]
                y = w[i]
                h = s * g
                g = c * g
                z = _pythag(f, h)
                rv1[j] = z
                c = f / z
                s = h / z
                f = x * c + g * s
                g = g * c - x * s
                h = y * s
                y *= c
                for jj in range(cols):
                    x = v[jj * cols + j]
                    z = v[jj * cols + i]
                    v[jj * cols + j] = x * c + z * s
                    v[jj * cols + i] = z * c - x * s
                z = _pythag(f, h)
                w[j] = z
                if z != 0.0:
                    z = 1.0 / z
                    c = f * z
                    s = h * z
                f = c * g + s * y
                x = c * y - s * g
                for jj in range(rows):
                    y = u[jj * cols + j]
                    z = u[jj * cols + i]
                    u[jj * cols + j] = y * c + z * s
                    u[jj * cols + i] = z * c - y * s
            rv1[l] = 0.0
            rv1[k] = f
            w[k] = x
    return u, w, v


def _inv4(a: Float64Array) -> Float64Array:
    """``Matrix2D::inv`` of a 4x4 matrix: the SVD pseudo-inverse V·W⁻¹·Uᵀ."""
    n = a.shape[0]
    u, w, v = _svdcmp(a)
    tol = float(a.max()) * n * 1e-14  # computeMax() * XMIPP_MAX(xdim, ydim) * 1e-14
    invertible = False
    for i in range(n):
        if abs(w[i]) > tol:
            w[i] = 1.0 / w[i]
            invertible = True
        else:
            w[i] = 0.0
    out = np.zeros((n, n))
    if not invertible:
        return out
    for i in range(n):
        for j in range(n):
            v[i * n + j] *= w[j]
    for i in range(n):
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += v[i * n + k] * u[j * n + k]
            out[i, j] = acc
    return out


def _rot_axis_gens(fold: int, axis: tuple[float, float, float]) -> list[Float64Array]:
    """``rot_axis``: Aᵀ·Rz(ang)·A for ang = 360/fold, 2·360/fold, ... (angle accumulated),
    zeroed, stored transposed."""
    a = _align_with_z(axis)
    at = a.T.copy()
    incr = 360.0 / fold
    ang = incr
    out = []
    for _ in range(1, fold):
        r = _zero_small(_matmul(_matmul(at, _rot_z4(ang)), a))
        out.append(r.T.copy())
        ang += incr
    return out


def _mirror_gen(normal: tuple[float, float, float]) -> Float64Array:
    """``mirror_plane``: A·diag(1,1,-1,1)·A⁻¹ with A = alignWithZ(normal)ᵀ and the
    SVD-based inverse; not zeroed, so the SVD's ~1e-16 residues stay, as in RELION."""
    a = _align_with_z(normal).T.copy()
    lm = np.diag([1.0, 1.0, -1.0, 1.0])
    return _matmul(_matmul(a, lm), _inv4(a))


# --------------------------------------------------------------------------------------
# Numbers as RELION's sscanf reads them (textToInteger, textToDouble, textToFloat)

_INT_RE = re.compile(r"[+-]?\d+")
_DEC_RE = re.compile(r"([+-]?)(?:\d+\.?\d*|\.\d+)(?:[eE]([+-]?\d+))?")
_HEX_RE = re.compile(r"([+-]?)0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP]([+-]?\d+))?")


def _scan_int(tok: str | None, where: str) -> int:
    """``textToInteger``: sscanf("%d") reads the numeric prefix ("3.5" is 3)."""
    m = _INT_RE.match(tok) if tok is not None else None
    if m is None:
        raise InputError(f"{where}: expected an integer, got {tok!r}")
    return int(m.group(0))


def _nearest_float32(val: Fraction, d: float) -> float:
    """The float32 nearest to ``val`` != 0 (ties to even), given its nearest double ``d``.

    glibc's strtof rounds the decimal once; rounding the double again could differ in
    rare halfway cases, so the neighbours of float32(d) are compared exactly."""
    with np.errstate(over="ignore"):
        f = np.float32(d)
        if not np.isfinite(f):
            return float(f)
        cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    cands = [c for c in cands if np.isfinite(c)]
    key = [(abs(Fraction(float(c)) - val), int(np.array(c).view(np.int32)) & 1) for c in cands]
    best = float(cands[key.index(min(key))])
    return best if best != 0 else math.copysign(0.0, val)


def _scan_real(tok: str | None, where: str) -> tuple[float, float]:
    """The numeric prefix of a token as sscanf reads it with "%lf" (``textToDouble``) and
    with "%f" (``textToFloat``, single precision): both correctly rounded, -0 kept."""
    m = _HEX_RE.match(tok) if tok is not None else None
    if m is not None:
        sign, digits, exp = m.groups()
        whole, _, frac = digits.partition(".")
        e2 = int(exp or 0) - 4 * len(frac)
        if abs(e2) > 2000:
            val = None
        else:
            val = Fraction(int(whole + frac or "0", 16)) * Fraction(2) ** e2
            val = -val if sign == "-" else val
    else:
        m = _DEC_RE.match(tok) if tok is not None else None
        if m is None:
            raise InputError(f"{where}: expected a number, got {tok!r}")
        sign, exp = m.group(1), m.group(2)
        val = None if exp is not None and abs(int(exp)) > 2000 else Fraction(m.group(0))
    if val is None:  # beyond any float: 0 or overflow
        raise InputError(f"{where}: number {m.group(0)!r} out of range")
    if val == 0:
        z = -0.0 if sign == "-" else 0.0
        return z, z
    try:
        d = float(val)  # int / int in CPython: correctly rounded, as glibc's strtod
    except OverflowError:
        d = math.inf
    f = _nearest_float32(val, d) if math.isfinite(d) else d
    if not (math.isfinite(d) and math.isfinite(f)):
        raise InputError(f"{where}: number {m.group(0)!r} out of range")
    return d, f


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


def _tokens(line: str) -> list[str]:
    # strtok(line, " \t\n"): other white space (\r, \f, \v) is part of a token
    return [t for t in re.split(r"[ \t\n]+", line) if t]


def _file_lines(data: bytes, source: str) -> list[tuple[int, str]]:
    """``read_sym_file``'s ``fgets(line, 79, fp)`` loop: (line number, piece) pairs.

    A line longer than 78 characters is read in pieces, each handled as a line of its
    own (a number cut at the boundary is read cut); pieces starting with ';', '#' or
    NUL are skipped, and a NUL ends a piece.
    """
    out = []
    pos, lineno, n = 0, 1, len(data)
    while pos < n:
        nl = data.find(b"\n", pos, pos + _LINE)
        stop = nl + 1 if nl >= 0 else min(pos + _LINE, n)
        piece = data[pos:stop]
        if nl < 0 and stop < n:
            msg = (
                f"{source}, line {lineno}: longer than {_LINE} characters; RELION reads "
                "it in pieces, each as a line of its own"
            )
            warnings.warn(msg, stacklevel=4)
        if piece[:1] not in (b";", b"#", b"\0"):
            out.append((lineno, piece.split(b"\0", 1)[0].decode("latin-1")))
        lineno += piece.count(b"\n")
        pos = stop
    return out


def _generators(lines: list[tuple[int, str]], source: str) -> list[tuple[int, Float64Array]]:
    """(L sign, R) per generator, in the order RELION stores them; R is 4x4.

    RELION keeps a second matrix L per element; only the inversion sets L = diag(1,1,-1).
    It takes part in the identity and equality tests of the closure, so it is tracked as a sign.
    """
    gens: list[tuple[int, Float64Array]] = []
    for n, line in lines:
        if line[:1] in (";", "#"):
            continue
        toks = _tokens(line)
        if not toks:
            continue  # RELION would crash on a blank line; skipping is the intent
        where = f"{source}, line {n}"
        key = toks[0]
        nxt = [*toks[1:], None, None, None, None]
        if key == "rot_axis":
            fold = _scan_int(nxt[0], where)
            ax, ay, az = (_scan_real(t, where)[0] for t in nxt[1:4])  # textToDouble
            axis = (ax, ay, az)
            if fold < 1:
                raise InputError(f"{where}: rot_axis fold must be at least 1, got {fold}")
            if math.sqrt(sum(v * v for v in axis)) <= _EPS:
                raise InputError(f"{where}: rot_axis has a zero axis")
            gens += [(1, r) for r in _rot_axis_gens(fold, axis)]
        elif key == "inversion":
            r = np.eye(4)
            r[0, 0] = r[1, 1] = r[2, 2] = -1.0
            gens.append((-1, r))
        elif key == "mirror_plane":
            nx, ny, nz = (_scan_real(t, where)[1] for t in nxt[0:3])  # textToFloat
            normal = (nx, ny, nz)
            if math.sqrt(sum(v * v for v in normal)) <= _EPS:
                raise InputError(f"{where}: mirror_plane has a zero normal")
            gens.append((1, _mirror_gen(normal)))
        else:
            msg = f"{where}: unknown keyword {key!r} ignored (as RELION does)"
            warnings.warn(msg, stacklevel=3)
    return gens


def _known(p: Float64Array, lp: Int64Array, r: Float64Array, lr: Int64Array) -> BoolArray:
    """For each product p[a]: is there an element b with lp[a] == lr[b] and all 16 entries
    |p[a] - r[b]| <= 1e-6 (``Matrix2D::equal``)?

    Candidates come from squared distances through one matrix product: a pair equal
    within 1e-6 per entry is within 1.6e-11 squared, far below the 1e-9 cut even with
    rounding, so no equal pair is missed; the candidates are then tested exactly.
    """
    if len(r) == 0:
        return np.zeros(len(p), dtype=bool)
    pf, rf = p.reshape(len(p), 16), r.reshape(len(r), 16)
    d2 = (pf * pf).sum(1)[:, None] + (rf * rf).sum(1)[None, :] - 2.0 * (pf @ rf.T)
    a, b = np.nonzero((d2 < 1e-9) & (lp[:, None] == lr[None, :]))
    same = np.abs(pf[a] - rf[b]).max(axis=1) <= _EPS
    known = np.zeros(len(p), dtype=bool)
    known[a[same]] = True
    return known


def _close(gens: list[tuple[int, Float64Array]]) -> Float64Array:
    """``SymList::compute_subgroup``: add products until closed, in RELION's visiting order.

    RELION always resumes at the first untried pair (i, j) in the order: shell n =
    max(i, j) ascending; in a shell, (0..n, n) then (n, n-1..0).  A new element only
    adds pairs to later shells, so one walk over the shells visits pairs in that order,
    and a shell's products (of elements <= n) can be computed at once.  Products are
    4x4 ``Matrix2D`` products; an element is "found" if L and all 16 entries of R agree
    within 1e-6; new elements are zeroed below 1e-6 (the generators of mirror planes are
    not, as in RELION).
    """
    cap = max(2 * len(gens), 8)
    Rs: Float64Array = np.zeros((cap, 4, 4))
    Ls: Int64Array = np.zeros(cap, dtype=np.int64)
    for k, (lsign, r) in enumerate(gens):
        Rs[k], Ls[k] = r, lsign
    size = len(gens)
    # Far above any finite group of these generators (a polyhedral group, or Dnh with
    # n <= fold, twice over for the L tags); an infinite one would never close in RELION.
    max_order = max(480, 8 * (size + 1))
    eye3 = np.eye(3)
    n = 0
    while n < size:
        ii = np.array([*range(n + 1), *([n] * n)])
        jj = np.array([*([n] * (n + 1)), *range(n - 1, -1, -1)])
        prods = _matmul(Rs[ii], Rs[jj])
        lprod = Ls[ii] * Ls[jj]
        ident = (lprod == 1) & np.all(np.abs(prods[:, :3, :3] - eye3) <= _EPS, axis=(1, 2))
        start = size
        known = _known(prods, lprod, Rs[:start], Ls[:start])
        for p in np.flatnonzero(~ident & ~known):
            new_r, new_l = prods[p], lprod[p]
            if size > start:  # elements added earlier in this shell
                d = np.abs(Rs[start:size] - new_r).max(axis=(1, 2))
                if np.any((d <= _EPS) & (Ls[start:size] == new_l)):
                    continue
            if size == max_order:
                raise InputError(
                    "the symmetry operators do not generate a finite point group "
                    f"(more than {max_order} elements; RELION would never finish)"
                )
            if size == cap:
                cap *= 2
                Rs = np.concatenate([Rs, np.zeros_like(Rs)])
                Ls = np.concatenate([Ls, np.zeros_like(Ls)])
            Rs[size], Ls[size] = _zero_small(new_r), new_l
            size += 1
        n += 1
    closed: Float64Array = Rs[:size].copy()
    return closed


def _point_group(lines: list[tuple[int, str]], source: str) -> Float64Array:
    """``Symmetry::getPointGroupMatrices``: the 3x3 blocks of the closed list."""
    try:
        full = _close(_generators(lines, source))
    except InputError as e:
        if str(e).startswith(source):
            raise
        raise InputError(f"{source}: {e}") from None
    return np.ascontiguousarray(full[:, :3, :3])


@lru_cache(maxsize=64)
def _builtin_group(upper_name: str) -> Float64Array:
    lines = list(enumerate(_group_lines(upper_name), 1))
    return _point_group(lines, f"symmetry '{upper_name}'")


def point_group_matrices(name: str) -> Float64Array:
    """The non-identity elements (n, 3, 3) of a point group or a RELION symmetry file.

    Same matrices, in the same order and to the last bit, as RELION's
    ``Symmetry::getPointGroupMatrices``.  An existing file takes precedence over a group
    name, as in RELION.
    """
    if not isinstance(name, str):
        raise InputError(f"symmetry {name!r}: expected a group name or a file name")
    if os.path.isfile(name):
        try:
            with open(name, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise InputError(f"symmetry file {name}: cannot read ({e.strerror})") from None
        source = f"symmetry file {name}"
        return _point_group(_file_lines(data, source), source)
    key = name.strip()
    if os.sep in key or "/" in key:
        # RELION would strip the directories and try the base name as a group; a path is
        # far more likely a missing file.
        raise InputError(f"symmetry file {name}: no such file")
    if not key:
        raise InputError("empty symmetry name (use C1 for no symmetry)")
    _group_lines(key)  # validates, with the name as typed in the message
    matrices: Float64Array = _builtin_group(key.upper()).copy()
    return matrices


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


def helical_matrices(n_asu: int, twist_deg: float, rise_px: float) -> Float64Array:
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
        m[:3, :3] = _rot_z4(hh * (-float(twist_deg)))[:3, :3]
        m[2, 3] = -hh * float(rise_px)
        out.append(m)
    return np.array(out)


def symmetry_operators(
    sym: str, n_asu: int = 1, twist_deg: float = 0.0, rise_px: float = 0.0
) -> Float64Array:
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
