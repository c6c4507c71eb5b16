"""The benchmark's own numerics (benchmarks/bench.py), against direct computations."""

import importlib.util
from pathlib import Path

import mrcfile
import numpy as np
import pytest


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n", [16, 17])
def test_lowest_fsc_is_the_full_transforms_shell_correlation(tmp_path, n):
    """bench.lowest_fsc (half transform, mirrored columns weighted twice) against the
    shell sums of the full 3D transform, shells 1 .. n/2 - 1 by rounded radius."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, n, n)).astype(np.float32)
    y = (x + 0.7 * rng.standard_normal((n, n, n))).astype(np.float32)
    mrcfile.write(tmp_path / "a.mrc", x)
    mrcfile.write(tmp_path / "b.mrc", y)
    A, B = np.fft.fftn(x.astype(np.float64)), np.fft.fftn(y.astype(np.float64))
    k = np.fft.fftfreq(n) * n
    r = np.rint(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2))
    direct = []
    for s in range(1, n // 2):
        m = r == s
        num = (A[m] * B[m].conj()).real.sum()
        direct.append(num / np.sqrt((abs(A[m]) ** 2).sum() * (abs(B[m]) ** 2).sum()))
    bench = _bench()
    assert bench.lowest_fsc(tmp_path / "a.mrc", tmp_path / "b.mrc") == pytest.approx(
        min(direct), rel=1e-12
    )
    assert bench.lowest_fsc(tmp_path / "a.mrc", tmp_path / "a.mrc") == pytest.approx(1.0)
