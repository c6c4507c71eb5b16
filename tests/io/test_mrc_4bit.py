"""MRC mode 101 (SerialEM's 4-bit extension) read as RELION reads it (rwMRC.h, image.h)."""

import struct

import numpy as np
import pytest

from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io.mrc import FrameReader, image_shape


def _mode101(path, nx, ny, nz, data: bytes, order="<", ext=b""):
    """A hand-made mode-101 file: 1024-byte header (+ extended header) and packed bytes."""
    head = bytearray(1024)
    struct.pack_into(f"{order}4i", head, 0, nx, ny, nz, 101)
    struct.pack_into(f"{order}3i", head, 28, nx, ny, nz)  # mx, my, mz
    struct.pack_into(f"{order}i", head, 92, len(ext))  # nsymbt
    head[208:212] = b"MAP "
    head[212:214] = b"\x44\x44" if order == "<" else b"\x11\x11"
    path.write_bytes(bytes(head) + ext + data)
    return str(path)


def test_two_pixels_per_byte_low_nibble_first(tmp_path):
    # 4x2 image, two images; bytes written out by hand: 0x21 holds pixel 0 = 1, pixel 1 = 2
    img1 = bytes([0x21, 0x43, 0x65, 0x87])  # rows [1 2 3 4], [5 6 7 8]
    img2 = bytes([0xF0, 0x0F, 0xA9, 0xCB])  # rows [0 15 15 0], [9 10 11 12]
    p = _mode101(tmp_path / "s.mrcs", 4, 2, 2, img1 + img2, ext=b"x" * 80)
    assert image_shape(p) == (2, 2, 4)
    with FrameReader() as r:
        a, b = r.read(p, 0), r.read(p, 1)
        assert r.first_non_finite(p, 1) is None
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(b, [[0, 15, 15, 0], [9, 10, 11, 12]])


def test_big_endian_header(tmp_path):
    p = _mode101(tmp_path / "be.mrc", 2, 2, 1, bytes([0x10, 0x32]), order=">")
    with FrameReader() as r:
        np.testing.assert_array_equal(r.read(p, None), [[0, 1], [2, 3]])


def test_odd_width_has_no_row_padding_as_in_relion(tmp_path):
    # 3x2: six nibbles in three bytes, row 2 starts in the high nibble of byte 1
    p = _mode101(tmp_path / "o.mrc", 3, 2, 1, bytes([0x21, 0x43, 0x65]))
    with pytest.warns(UserWarning, match="without row padding"), FrameReader() as r:
        np.testing.assert_array_equal(r.read(p, None), [[1, 2, 3], [4, 5, 6]])


def test_odd_by_odd_is_refused_like_relion(tmp_path):
    p = _mode101(tmp_path / "oo.mrc", 3, 3, 1, bytes(5))
    with pytest.raises(InputError, match="nx \\* ny is even"):
        image_shape(p)


def test_truncated_4bit_stack(tmp_path):
    p = _mode101(tmp_path / "t.mrcs", 4, 2, 3, bytes(8))  # 3 images need 12 bytes
    with pytest.raises(InputError, match="truncated: 1032 of 1036 bytes"):
        image_shape(p)
