"""Fourier insertion against a direct transcription of the gather formula and analytic cases."""

import numba
import numpy as np
import pytest

from napari_subtomo_recon.core.geometry import euler_matrix, rot_y
from napari_subtomo_recon.core.insertion import (
    Accumulators,
    SliceBatch,
    insert_slice,
    insert_slices,
    packed_slices,
    slice_matrices,
)


def reference_insert(data, weight, Q, max_freq, s):
    """Every voxel, every check written out plainly (no x-range shortcut)."""
    sh = s // 2 + 1
    D = np.zeros((s, s, sh), complex)
    W = np.zeros((s, s, sh))
    for z in range(s):
        kz = z if z < s // 2 else z - s
        for y in range(s):
            ky = y if y < s // 2 else y - s
            for x in range(sh):
                if x * x + ky * ky + kz * kz > max_freq * max_freq:
                    continue
                q = Q @ np.array([x, ky, kz], float)
                if not (abs(q[2]) < 1 and abs(q[0]) < sh and abs(q[1]) < s // 2 + 1):
                    continue
                c = 1 - abs(q[2])
                conj = q[0] < 0
                xd, yd = (-q[0], -q[1]) if conj else (q[0], q[1])
                if yd < 0:
                    yd += s
                x0, y0 = int(xd), int(yd)
                fx, fy = xd - x0, yd - y0
                x0 = min(x0, sh - 1)
                x1 = x0 + 1 if x0 + 1 < sh else sh - 2
                y0 = min(max(y0, 0), s - 1)
                y1 = (y0 + 1) % s

                def bil(a, x0=x0, x1=x1, y0=y0, y1=y1, fx=fx, fy=fy):
                    return (1 - fy) * ((1 - fx) * a[y0, x0] + fx * a[y0, x1]) + fy * (
                        (1 - fx) * a[y1, x0] + fx * a[y1, x1]
                    )

                v = bil(data)
                D[z, y, x] += c * (np.conj(v) if conj else v)
                W[z, y, x] += c * bil(weight)
    return D, W


def test_spec_example_mapping():
    # spec §10.4: B = M_B · A; voxel (3, 2, -4) -> q = (4.538641, 2.883467, 0.293870)
    B = np.array(
        [
            [0.05564, 0.255386, -0.965237],
            [0.911244, 0.382139, 0.153636],
            [0.408091, -0.888115, -0.211457],
        ]
    )
    Q = slice_matrices(B[None])[0]
    assert np.allclose(Q @ [3, 2, -4], [4.538641, 2.883467, 0.293870], atol=2e-5)
    assert np.allclose(Q @ [6, 2, 5], [-3.981569, 6.999922, -0.384970], atol=2e-5)


def assert_matches_reference(rng, B, max_freq, s=12, min_voxels=50, fast=False):
    """One random slice through the kernel and through ``reference_insert``; ``fast``:
    the fast path's build (fast math, runs walked the long way)."""
    from napari_subtomo_recon.core.insertion import _insert_slice_planes_fast

    sh = s // 2 + 1
    data = (rng.normal(size=(s, sh)) + 1j * rng.normal(size=(s, sh))).astype(np.complex64)
    weight = rng.uniform(0, 1, (s, sh)).astype(np.float32)
    Q = slice_matrices(np.asarray(B, float)[None])[0]
    D = np.zeros((s, s, sh), np.complex128)
    W = np.zeros((s, s, sh))
    if fast:
        S = packed_slices(data[None], weight[None])[0].reshape(-1)  # the kernels read it flat
        _insert_slice_planes_fast(S, Q, max_freq, D, W, -(s // 2), s // 2 - 1, 0)
    else:
        insert_slice(data, weight, Q, max_freq, D, W)
    Dr, Wr = reference_insert(data.astype(complex), weight.astype(float), Q, max_freq, s)
    assert np.allclose(D, Dr, atol=1e-6)
    assert np.allclose(W, Wr, atol=1e-6)
    assert np.count_nonzero(W) > min_voxels


def test_insert_slice_matches_reference():
    rng = np.random.default_rng(0)
    for trial in range(4):
        B = rot_y(rng.uniform(-60, 60)) @ euler_matrix(*rng.uniform(-180, 180, 3))
        if trial == 3:
            B = 1.07 * B  # a pixel-size ratio scales the slice
        assert_matches_reference(rng, B, 5)


def test_identity_orientation_fills_the_central_plane_exactly():
    s = 16
    sh = s // 2 + 1
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(s, sh)) + 1j * rng.normal(size=(s, sh))).astype(np.complex64)
    weight = np.ones((s, sh), np.float32)
    D = np.zeros((2, s, s, sh), np.complex128)
    W = np.zeros((2, s, s, sh))
    S = packed_slices(data[None], weight[None])
    batch = SliceBatch(packed=S, Q=np.eye(3)[None], max_freq=np.array([s // 2]), half=np.array([1]))
    insert_slices(batch, Accumulators(data=D, weight=W))
    assert np.all(D[0] == 0)
    plane = D[1, 0]
    y = np.arange(s)
    ky = np.where(y < s // 2, y, y - s)
    inside = (np.arange(sh)[None, :] ** 2 + ky[:, None] ** 2) <= (s // 2) ** 2
    assert np.allclose(plane[inside], data[inside])
    assert np.all(W[1, 1:] == 0)  # |q_z| = 1 gets no weight
    assert np.allclose(W[1, 0][inside], 1.0)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("block", [1, 2, 5])
def test_batch_equals_slice_by_slice_for_any_threads_and_blocks(block, single):
    rng = np.random.default_rng(2)
    s, n = 14, 9
    sh = s // 2 + 1
    data = (rng.normal(size=(n, s, sh)) + 1j * rng.normal(size=(n, s, sh))).astype(np.complex64)
    weight = rng.uniform(size=(n, s, sh)).astype(np.float32)
    B = np.stack(
        [rot_y(rng.uniform(-60, 60)) @ euler_matrix(*rng.uniform(-180, 180, 3)) for _ in range(n)]
    )
    B[::3] *= 0.97  # pixel-size ratios
    Q = slice_matrices(B)
    mf = rng.integers(4, s // 2 + 1, n)
    half = rng.integers(0, 2, n)
    ref_D = np.zeros((2, s, s, sh), complex)
    ref_W = np.zeros((2, s, s, sh))
    for i in range(n):
        Dr, Wr = reference_insert(data[i].astype(complex), weight[i].astype(float), Q[i], mf[i], s)
        ref_D[half[i]] += Dr
        ref_W[half[i]] += Wr
    # the batch is added to what the accumulators already hold
    D0 = rng.normal(size=ref_D.shape) + 1j * rng.normal(size=ref_D.shape)
    W0 = rng.uniform(size=ref_W.shape)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        D, W = D0.copy(), W0.copy()
        batch = SliceBatch(packed=packed_slices(data, weight), Q=Q, max_freq=mf, half=half)
        insert_slices(batch, Accumulators(data=D, weight=W), block=block, single=single)
        results.append((D - D0, W - W0))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    # double: the reference's own rounding; single: each voxel's batch sum rounded to float32
    tol = 1e-5 if single else 1e-6
    assert np.abs(results[0][0] - ref_D).max() < tol * np.abs(ref_D).max()
    assert np.abs(results[0][1] - ref_W).max() < tol * np.abs(ref_W).max()
    # from zero, the single kernel's sums are float32 numbers, the double kernel's are not
    D, W = np.zeros_like(D0), np.zeros_like(W0)
    batch = SliceBatch(packed=packed_slices(data, weight), Q=Q, max_freq=mf, half=half)
    insert_slices(batch, Accumulators(data=D, weight=W), block=block, single=single)
    assert np.array_equal(W, W.astype(np.float32)) == single
    # owner-computes: the same sums in the same order whatever the number of threads
    assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(
        results[0][1], results[1][1]
    )


@pytest.mark.parametrize(
    "B",
    [
        rot_y(90.0),  # normal along x
        euler_matrix(0.0, 90.0, 0.0),  # tilt about y by the Euler convention
        np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),  # normal along y
        np.array([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]]),  # n_x == 0, tilted about x
        euler_matrix(37.0, 0.0, 0.0),  # normal along z, in-plane rotation
        rot_y(45.0),  # |n_x| == |n_z|, n_y == 0
        np.array([[1.0, 0, 0], [0, 1.0, 1e-300], [0, -1e-300, 1.0]]),  # near-zero n_y
    ],
)
@pytest.mark.parametrize("fast", [False, True])
def test_axis_aligned_and_degenerate_normals_match_reference(B, fast):
    # zero and near-zero normal components take the kernel's special cases (the fast
    # build meets them in the other walk)
    assert_matches_reference(np.random.default_rng(3), B, 6, min_voxels=60, fast=fast)


def test_fast_build_matches_reference_for_random_orientations():
    rng = np.random.default_rng(4)
    for _ in range(6):
        B = rot_y(rng.uniform(-60, 60)) @ euler_matrix(*rng.uniform(-180, 180, 3))
        assert_matches_reference(rng, B, 6, min_voxels=50, fast=True)


def test_exact_and_fast_builds_are_kept_apart_in_numba_cache():
    """One body compiled twice (strict and fast math): if both builds shared a cache
    entry, the exact path could load the fast one from a warm cache."""
    from napari_subtomo_recon.core import insertion

    exact, fast = insertion.insert_slice_planes, insertion._insert_slice_planes_fast
    assert exact.py_func.__code__ is fast.py_func.__code__
    assert not exact.targetoptions.get("fastmath") and fast.targetoptions["fastmath"]
    assert exact._cache._cache_file._index_path != fast._cache._cache_file._index_path
    # both builds run and agree (fast math may round differently)
    rng = np.random.default_rng(3)
    s = 16
    data = rng.normal(size=(s, s // 2 + 1)) + 1j * rng.normal(size=(s, s // 2 + 1))
    weight = rng.uniform(0.5, 1, (s, s // 2 + 1))
    S = packed_slices(data[None], weight[None])[0].reshape(-1)  # the kernels read it flat
    Q = slice_matrices(euler_matrix(*rng.uniform(-180, 180, 3))[None])[0]
    out = {}
    for name, k in (("exact", exact), ("fast", fast)):
        D = np.zeros((s, s, s // 2 + 1), np.complex128)
        W = np.zeros((s, s, s // 2 + 1))
        k(S, Q, s // 2, D, W, -(s // 2), s // 2 - 1, 0)
        out[name] = D
    np.testing.assert_allclose(out["fast"], out["exact"], rtol=1e-5, atol=1e-5)
