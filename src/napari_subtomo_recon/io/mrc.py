"""MRC reading (lazy, memory-mapped) and map writing (atomic, float32)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InputError
from .atomic import atomic_path


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


def _open(path: str, what: str):
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


def image_shape(path: str, what: str = "image file") -> tuple[int, int, int]:
    """(n_images, ny, nx) from the header only."""
    with _open(path, what) as m:
        shape = m.data.shape
    if len(shape) == 2:
        return 1, int(shape[0]), int(shape[1])
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    raise InputError(f"{path}: expected 2D images or a stack, found data of shape {shape}")


class FrameReader:
    """Reads tilt images (one 2D float32 frame at a time) from MRC files and stacks.

    Files are memory-mapped and kept open, so asking for frame f of a stack
    costs one page-in of that frame only: memory does not grow with the size
    or number of tilt series.
    """

    def __init__(self):
        self._files: dict[str, mrcfile.mrcmemmap.MrcMemmap] = {}

    def _get(self, path: str, what: str):
        m = self._files.get(path)
        if m is None:
            m = _open(path, what)
            self._files[path] = m
        return m

    def read(self, path: str, index: int | None, what: str = "tilt image") -> np.ndarray:
        data = self._get(path, what).data
        if data.ndim == 2:
            if index not in (None, 0):
                raise InputError(
                    f"{path}: image {index + 1} requested but the file holds one image"
                )
            frame = data
        else:
            i = 0 if index is None else index
            if i >= data.shape[0]:
                raise InputError(
                    f"{path}: image {i + 1} requested but the stack holds {data.shape[0]} images"
                )
            frame = data[i]
        return np.asarray(frame, dtype=np.float32)

    def close(self) -> None:
        for m in self._files.values():
            m.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_map(path: str | os.PathLike, data: np.ndarray, voxel_size: float) -> None:
    """Write a float32 MRC (x fastest, origin 0) with the voxel size in the header."""
    arr = np.ascontiguousarray(data, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(arr)
            m.voxel_size = float(voxel_size)
            m.update_header_stats()


def read_map(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a map fully; returns (data [z,y,x] float32, voxel size in Å)."""
    with _open(str(path), "map") as m:
        data = np.array(m.data, dtype=np.float32)
        vs = float(m.voxel_size.x)
    return data, vs
