"""MRC reading (lazy, memory-mapped) and map writing (atomic, float32)."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from .atomic import atomic_path

if TYPE_CHECKING:
    from mrcfile.mrcmemmap import MrcMemmap

    from ._typing import StrPath


def parse_image_ref(ref: str) -> tuple[str, int | None]:
    """Split a RELION image reference ``N@stack.mrcs`` into (path, 0-based index).

    The number before ``@`` is 1-based.  A plain path has index ``None`` (the
    whole file, a single 2D image).  RELION's ``:mrc`` / ``:mrcs`` type suffix
    is dropped.
    """
    ref = str(ref).strip()
    index = None
    if "@" in ref:
        head, path = ref.split("@", 1)
        try:
            n = int(head)
        except ValueError:
            raise InputError(f"'{ref}': the part before '@' is not an image number") from None
        if n < 1:
            raise InputError(f"'{ref}': image numbers before '@' start at 1")
        index = n - 1
        ref = path
    for suffix in (":mrcs", ":mrc", ":st"):
        if ref.endswith(suffix):
            ref = ref[: -len(suffix)]
    return ref, index


def _open(path: str, what: str) -> MrcMemmap:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: {what} not found")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: {what} is not readable")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mrcfile.mmap(p, mode="r", permissive=False)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: not a readable MRC file ({msg})") from None


@dataclass(frozen=True)
class _Layout:
    """Where the pixels of an MRC file are: enough to read one image without the rest."""

    offset: int  # bytes before the first pixel (header and extended header)
    dtype: np.dtype[Any]  # pixel type as stored (byte order included); uint8 for mode 101
    shape: tuple[int, int, int]  # (n_images, ny, nx)
    packed4: bool = False  # mode 101: two 4-bit pixels per byte

    @property
    def image_bytes(self) -> int:
        _, ny, nx = self.shape
        return ny * nx // 2 if self.packed4 else ny * nx * self.dtype.itemsize


#: MRC mode 101 (SerialEM's 4-bit extension), which mrcfile does not read.
MODE_4BIT = 101


def _mode_101_layout(path: str, p: Path) -> _Layout | None:
    """The layout of a mode-101 file, or None for any other mode (left to mrcfile).

    As RELION's ``rwMRC.h`` / ``image.h`` (``UHalf``): pixels are unsigned 0..15, two per
    byte, the low nibble first, with no padding at the end of rows; RELION refuses a
    mode-101 file whose nx and ny are both odd.
    """
    with p.open("rb") as fh:
        head = fh.read(1024)
    if len(head) < 1024:
        return None
    le = np.frombuffer(head, dtype="<i4", count=24)
    order = "<" if le[3] == MODE_4BIT else ">" if le[3].byteswap() == MODE_4BIT else None
    if order is None:
        return None
    h = np.frombuffer(head, dtype=f"{order}i4", count=24)
    nx, ny, nz, nsymbt = (int(v) for v in (h[0], h[1], h[2], h[23]))
    if min(nx, ny, nz) < 1 or nsymbt < 0:
        raise InputError(f"{path}: not a readable MRC file (mode 101 with size {nx}x{ny}x{nz})")
    if nx % 2 and ny % 2:
        raise InputError(
            f"{path}: MRC mode 101 (4-bit) image of odd size {nx}x{ny}: RELION reads 4-bit "
            "images only when nx * ny is even"
        )
    if nx % 2:
        warnings.warn(
            f"{path}: 4-bit (mode 101) images of odd width {nx}: read as RELION does, "
            "without row padding (IMOD pads each row to whole bytes)",
            stacklevel=4,
        )
    return _Layout(1024 + nsymbt, np.dtype(np.uint8), (nz, ny, nx), packed4=True)


def unpack_4bit(packed: NDArray[np.uint8], ny: int, nx: int) -> NDArray[np.float32]:
    """One mode-101 image (ny*nx/2 bytes) as float32 (ny, nx): pixel 2i is the low
    nibble of byte i, pixel 2i+1 its high nibble (RELION's ``castPage2T``, ``UHalf``)."""
    out = np.empty(2 * packed.size, dtype=np.uint8)
    np.bitwise_and(packed, 15, out=out[0::2])
    np.right_shift(packed, 4, out=out[1::2])
    return out.reshape(ny, nx).astype(np.float32)


def _layout(path: str, what: str) -> _Layout:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: {what} not found")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: {what} is not readable")
    try:
        lay4 = _mode_101_layout(path, p)
    except OSError as exc:
        raise InputError(f"{path}: {what} is not readable ({exc.strerror})") from None
    if lay4 is not None:
        return _check_size(path, p, lay4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(p, mode="r", header_only=True, permissive=False) as m:
                header = m.header
                dtype = mrcfile.utils.data_dtype_from_header(header)
                shape = mrcfile.utils.data_shape_from_header(header)
                offset = header.nbytes + int(header.nsymbt)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{path}: not a readable MRC file ({msg})") from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"{path}: expected 2D images or a stack, found data of shape {shape}")
    n, ny, nx = (int(v) for v in shape)
    return _check_size(path, p, _Layout(offset, dtype, (n, ny, nx)))


def _check_size(path: str, p: Path, lay: _Layout) -> _Layout:
    need = lay.offset + lay.shape[0] * lay.image_bytes  # Python ints: no overflow
    size = p.stat().st_size
    if size < need:
        raise InputError(f"{path}: not a readable MRC file (truncated: {size} of {need} bytes)")
    return lay


def image_shape(path: str, what: str = "image file") -> tuple[int, int, int]:
    """(n_images, ny, nx) from the header only."""
    return _layout(path, what).shape


class FrameReader:
    """Reads tilt images one 2D float32 frame at a time from MRC files and stacks.

    Only the requested image is read (a seek and a read; no memory map), so memory
    holds one tilt at a time and does not grow with the size or number of tilt series.
    """

    def __init__(self) -> None:
        self._layouts: dict[str, _Layout] = {}

    def _frame(self, path: str, index: int | None, what: str) -> tuple[_Layout, int, int]:
        """(layout, image number, byte offset) of one image; a clear error if it is not there."""
        lay = self._layouts.get(path)
        if lay is None:
            lay = self._layouts[path] = _layout(path, what)
        n, ny, nx = lay.shape
        i = 0 if index is None else index
        if i >= n:
            raise InputError(
                f"{path}: image {i + 1} requested but the file holds {n} image{'s' * (n > 1)}"
            )
        return lay, i, lay.offset + i * lay.image_bytes

    def read(self, path: str, index: int | None, what: str = "tilt image") -> NDArray[np.float32]:
        """Image ``index`` (0-based; None: the file's only image) as float32 (ny, nx)."""
        lay, i, offset = self._frame(path, index, what)
        _, ny, nx = lay.shape
        count = ny * nx // 2 if lay.packed4 else ny * nx
        frame = np.fromfile(path, dtype=lay.dtype, count=count, offset=offset)
        if frame.size != count:
            raise InputError(f"{path}: image {i + 1} is truncated")
        if lay.packed4:
            return unpack_4bit(frame, ny, nx)
        return frame.reshape(ny, nx).astype(np.float32, copy=False)

    def first_non_finite(
        self, path: str, index: int | None, what: str = "tilt image"
    ) -> tuple[int, int] | None:
        """(x, y) of the first NaN or infinite pixel of one image, or None.

        Reads the page cache through a memory map, without copying the image: a sum
        is non-finite whenever a pixel is (a float32 overflow only costs the exact
        scan that follows).  Integer images are always finite.  Raises like ``read``
        for a missing file or image.
        """
        lay, _, offset = self._frame(path, index, what)
        if lay.dtype.kind != "f":  # (the layout check has already proved the file complete)
            return None
        frame = np.memmap(path, dtype=lay.dtype, mode="r", offset=offset, shape=lay.shape[1:])
        if np.isfinite(np.add.reduce(frame, axis=None)):
            return None
        bad = np.argwhere(~np.isfinite(frame))
        return None if bad.size == 0 else (int(bad[0][1]), int(bad[0][0]))

    def close(self) -> None:
        self._layouts.clear()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# float32 bytes converted, written and summed at a time by write_map
_SLAB_BYTES = 4 << 20


class PlaneSource(Protocol):
    """A volume (z, y, x) that fills its planes z0..z1-1 into ``out`` on demand, for a
    map that would otherwise exist only to be written."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def fill(self, z0: int, z1: int, out: NDArray[np.float32]) -> None: ...


def write_map(
    path: StrPath, data: ArrayLike | PlaneSource, voxel_size: float, atomic: bool = True
) -> None:
    """Write a float32 MRC (x fastest, origin 0) with the voxel size in the header.

    ``data`` is a map (z, y, x) (or an image (y, x)), or a :class:`PlaneSource`; it is
    converted to float32.  ``atomic``: through a temporary name (False: ``path`` is one
    already).

    The header (mrcfile's, with min, max, mean and rms of the float32 values) is
    written last; the data go out a slab of planes (~4 MB) at a time, converted into
    one small buffer and summed as they go.  ``mrcfile``'s ``set_data`` made a float32
    copy of the map and its rms a second one: at box 512, 1 GB of new memory per map,
    which took most of the time of writing it.
    """
    src: NDArray[Any] | PlaneSource
    if not isinstance(data, np.ndarray) and hasattr(data, "fill"):
        src = cast("PlaneSource", data)
    else:
        src = np.asarray(data)
    if not atomic:
        _write_map(Path(path), src, float(voxel_size))
        return
    with atomic_path(path) as tmp:
        _write_map(tmp, src, float(voxel_size))


def _write_map(path: Path, src: NDArray[Any] | PlaneSource, voxel_size: float) -> None:
    shape = tuple(src.shape)
    size = math.prod(shape)
    if isinstance(src, np.ndarray) and (src.ndim not in (2, 3) or src.size == 0):
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(src, dtype=np.float32))
            m.voxel_size = voxel_size
        return
    # mrcfile makes the header for this shape; its data are not written (a sparse file)
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as m:
        m.voxel_size = voxel_size
        header = m.header.copy()
        offset = int(m.header.nbytes + m.extended_header.nbytes)
    n = math.prod(shape[:-2])
    per = max(1, _SLAB_BYTES // (4 * shape[-1] * shape[-2]))
    buf = np.empty((min(per, n), *shape[-2:]), np.float32)
    if isinstance(src, np.ndarray):
        planes = src.reshape((-1, *shape[-2:]))

        def fill(z0: int, z1: int, out: NDArray[np.float32]) -> None:
            np.copyto(out, planes[z0:z1], casting="unsafe")

    else:
        fill = src.fill
    lo, hi, s1, s2, k = np.inf, -np.inf, 0.0, 0.0, 0.0
    with open(path, "r+b") as f:
        f.seek(offset)
        for z in range(0, n, per):
            b = buf[: min(per, n - z)]
            fill(z, z + len(b), b)
            f.write(b.data)
            if z == 0:  # sums about the first value: no cancellation for maps far from 0
                k = float(b.flat[0])
            d = b.reshape(-1).astype(np.float64)
            d -= k
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
            s1 += float(d.sum())
            d *= d  # (not np.dot: BLAS threads would spin for it)
            s2 += float(d.sum())
        mean = s1 / size
        header.dmin, header.dmax = lo, hi
        header.dmean = k + mean
        header.rms = math.sqrt(max(s2 / size - mean * mean, 0.0))
        f.seek(0)
        f.write(header.tobytes())


def read_map(path: StrPath) -> tuple[NDArray[np.float32], float]:
    """Read a map fully; returns (data [z,y,x] float32, voxel size in Å)."""
    with _open(str(path), "map") as m:
        data = np.array(m.data, dtype=np.float32)
        vs = float(m.voxel_size.x)
    return data, vs
