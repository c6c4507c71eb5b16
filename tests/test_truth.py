"""Reconstructions of simulated data against the known ground truth."""

import mrcfile
import numpy as np
import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.core.fsc import fsc
from napari_subtomo_recon.job import run_to_completion
from napari_subtomo_recon.simulate import simulate


def reconstruct(root, monkeypatch, *flags, out="job", j="2"):
    monkeypatch.chdir(root)
    params, _ = parse_args(["--i", "optimisation_set.star", "--o", out, "--j", j, *flags])
    return run_to_completion(params)


@pytest.fixture(scope="module")
def c1_data(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("c1"), seed=3)


def test_merged_map_matches_truth_and_not_its_mirror(c1_data, monkeypatch):
    res = reconstruct(c1_data.root, monkeypatch, "--b", "48", "--bin", "2")
    merged = mrcfile.read(c1_data.root / "job" / "merged.mrc")
    truth = mrcfile.read(c1_data.ground_truth)
    right = fsc(merged, truth)
    # the other hand: mirror z about the particle centre (voxel box//2 stays put)
    mirrored = fsc(merged, np.roll(truth[::-1], 1, axis=0))
    # 24 shells to Nyquist (8 Å); the particles carry signal well past the middle
    assert right[1:13].min() > 0.9, np.round(right, 3)
    assert mirrored[4:13].mean() < 0.5, np.round(mirrored, 3)
    assert np.all(right[4:13] - mirrored[4:13] > 0.3), np.round(mirrored, 3)
    assert res.resolution_0143 is not None and res.resolution_0143 < 16.0


def test_symmetric_particle_with_symmetry(tmp_path, monkeypatch):
    ds = simulate(tmp_path, seed=5, symmetry="C6", particles_per_tomogram=20)
    reconstruct(ds.root, monkeypatch, "--b", "48", "--bin", "2", "--sym", "C6")
    merged = mrcfile.read(ds.root / "job" / "merged.mrc")
    curve = fsc(merged, mrcfile.read(ds.ground_truth))
    assert curve[1:11].min() > 0.9, np.round(curve, 3)


def test_fast_path_agrees_with_exact_path_and_truth(tmp_path, monkeypatch):
    """Issue 4: pre-binning each tilt must not change the map (bin 4: tilts binned by 2)."""
    ds = simulate(
        tmp_path, seed=7, pixel_size=1.0, binning=4.0, box=32, image_size=(640, 640),
        tomo_size=(640, 640, 240), particles_per_tomogram=30,
    )  # fmt: skip
    flags = ("--b", "32", "--bin", "4")
    reconstruct(ds.root, monkeypatch, *flags, "--exact", out="exact")
    reconstruct(ds.root, monkeypatch, *flags, "--prebin", "always", out="fast")
    truth = mrcfile.read(ds.ground_truth)
    for name in ("merged", "half1", "half2"):
        a = mrcfile.read(ds.root / "exact" / f"{name}.mrc")
        b = mrcfile.read(ds.root / "fast" / f"{name}.mrc")
        agree = fsc(a, b)
        assert agree[1:].min() >= 0.995, f"{name}: {np.round(agree, 4)}"
    exact_t = fsc(mrcfile.read(ds.root / "exact" / "merged.mrc"), truth)
    fast_t = fsc(mrcfile.read(ds.root / "fast" / "merged.mrc"), truth)
    assert np.all(fast_t[1:] >= exact_t[1:] - 0.01), (np.round(exact_t, 3), np.round(fast_t, 3))


def test_thread_count_does_not_change_the_map(c1_data, monkeypatch):
    """--j 2 makes the windows in a pool of threads, whole chunks each: the same numbers."""
    import threading

    import numba

    from napari_subtomo_recon.core import backprojection as bp

    make, prepare = bp._Mode.make.__func__, bp._prepare_chunk
    # a few windows per chunk, so that every batch is several tasks for the pool
    monkeypatch.setattr(bp._Mode, "make", classmethod(lambda cls, *a: make(cls, *a[:-1], 100_000)))
    seen = []

    def spy(*a):
        seen.append((threading.current_thread().name, numba.get_num_threads()))
        return prepare(*a)

    monkeypatch.setattr(bp, "_prepare_chunk", spy)
    main = threading.current_thread().name
    maps = {}
    for j in ("1", "2"):
        seen.clear()
        reconstruct(c1_data.root, monkeypatch, "--b", "48", "--bin", "2", "--prebin", "always",
                    out=f"j{j}", j=j)  # fmt: skip
        threads = {t for t, _ in seen}
        # --j 1: in the calling thread; --j 2: only in the window pool's threads (2 per tilt
        # series: windows_0, windows_1), each running Numba on one core (which of them
        # takes a chunk is up to the scheduler)
        pooled = j == "2"
        assert len(seen) > 2 and {k for _, k in seen} == {1}, (j, seen[:3])
        if pooled:
            assert {t.rsplit("_", 1)[-1] for t in threads} <= {"0", "1"}, threads
            assert all(t.startswith("windows_") for t in threads), threads
        else:
            assert threads == {main}, threads
        maps[j] = [mrcfile.read(c1_data.root / f"j{j}" / f"{n}.mrc") for n in ("half1", "half2")]
    assert all(np.array_equal(a, b) for a, b in zip(maps["1"], maps["2"], strict=True))


@pytest.mark.parametrize("path", [("--prebin", "always"), ("--exact",)])
def test_batches_and_chunks_of_any_size_give_the_same_map(c1_data, monkeypatch, path):
    """Insertion batches of 7 slices made in chunks of 3 windows (7 = 3 + 3 + 1, several
    batches per tilt), on both window paths and --j 1 / 2: the maps of the default sizes,
    up to the single-precision sums' order."""
    import dataclasses

    from napari_subtomo_recon.core import backprojection as bp

    reconstruct(c1_data.root, monkeypatch, "--b", "48", "--bin", "2", *path, out="whole")
    make = bp._Mode.make.__func__
    monkeypatch.setattr(
        bp._Mode, "make", classmethod(lambda cls, *a: dataclasses.replace(make(cls, *a), chunk=3))
    )
    monkeypatch.setattr(bp.Settings, "insertion_batch", lambda self: 7)
    seen = []
    prepare = bp._prepare_chunk
    monkeypatch.setattr(
        bp, "_prepare_chunk", lambda t, part, *a: (seen.append(part.size), prepare(t, part, *a))
    )
    for j in ("1", "2"):
        reconstruct(c1_data.root, monkeypatch, "--b", "48", "--bin", "2", *path, out=f"b{j}",
                    j=j)  # fmt: skip
    # the patched sizes were used: chunks of 3, a batch's last of 1 (and a tilt's last
    # batch's of 1 or 2)
    assert max(seen) == 3 and seen.count(1) > 0, sorted(set(seen))
    for name in ("half1", "half2"):
        a = mrcfile.read(c1_data.root / "whole" / f"{name}.mrc").astype(np.float64)
        for j in ("1", "2"):
            b = mrcfile.read(c1_data.root / f"b{j}" / f"{name}.mrc").astype(np.float64)
            assert np.sqrt(((a - b) ** 2).sum() / (a**2).sum()) < 1e-6, (name, j)
