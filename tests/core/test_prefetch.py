"""The prefetch hint: it reaches the machine code, and the fast insertion computes the same
sums with it as without it."""

import platform
import types
import warnings

import numpy as np
from numba import njit

from napari_subtomo_recon.core import insertion
from napari_subtomo_recon.core.geometry import euler_matrix
from napari_subtomo_recon.core.insertion import packed_slices, slice_matrices
from napari_subtomo_recon.core.prefetch import prefetch


def test_prefetch_emits_an_instruction_and_changes_nothing():
    @njit(cache=False)
    def summed(a):
        t = 0.0
        for i in range(a.size):
            prefetch(a, min(i + 16, a.size - 1))
            t += a[i]
        return t

    a = np.arange(1000, dtype=np.float32)
    assert summed(a) == a.sum(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asm = "".join(summed.inspect_asm().values()).lower()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert "prefetcht0" in asm
    elif machine in ("aarch64", "arm64"):
        assert "prfm" in asm


def test_the_fast_walk_prefetches_and_adds_the_same_sums_as_without():
    fast = insertion._insert_slice_planes_fast.py_func.__globals__
    exact = insertion.insert_slice_planes.py_func.__globals__
    assert fast["_PREFETCH"] is True and exact["_PREFETCH"] is False
    # the fast build's body with the prefetches compiled out
    g = dict(fast, _PREFETCH=False)
    body = insertion._slice_planes
    plain = njit(cache=False, fastmath=True)(types.FunctionType(body.__code__, g, "plain"))

    rng = np.random.default_rng(3)
    s, n = 32, 12
    sh = s // 2 + 1
    data = (rng.normal(size=(n, s, sh)) + 1j * rng.normal(size=(n, s, sh))).astype(np.complex64)
    S = packed_slices(data, rng.uniform(size=(n, s, sh)).astype(np.float32))
    # both walks (x and y runs), tilted and untilted normals
    B = [euler_matrix(*rng.uniform(-180, 180, 3)) for _ in range(n - 2)]
    B += [np.eye(3), euler_matrix(90.0, 90.0, 0.0)]
    Q = slice_matrices(np.stack(B))
    sums = []
    for kernel in (insertion._insert_slice_planes_fast, plain):
        D = np.zeros((s, s, sh), np.complex64)
        W = np.zeros((s, s, sh), np.float32)
        for i in range(n):
            kernel(S[i].reshape(-1), Q[i], s // 2, D, W, -(s // 2), s // 2 - 1, 0)
        sums.append((D, W))
    assert np.count_nonzero(sums[0][1]) > 0.3 * sums[0][1].size
    assert np.array_equal(sums[0][0], sums[1][0]) and np.array_equal(sums[0][1], sums[1][1])
