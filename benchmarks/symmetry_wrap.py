"""RELION's Fourier symmetrisation against ``--fix_symmetry_wrap`` (docs/conventions.md).

    python benchmarks/symmetry_wrap.py

1. For every point group RELION knows: the relative change the correction makes to the
   symmetrised transform of a smooth real volume, and the non-Hermitian part of the
   kx = 0 plane with and without it.
2. For Oh: a volume that already has the symmetry (every signed axis permutation about
   voxel 0) must come back unchanged; how many frequencies RELION's code gets wrong and
   the relative error, at boxes 24, 32 and 64.
3. A job: a simulated particle (box 32, bin 2) reconstructed with ``--sym Oh`` with and
   without the correction; their difference and FSC against the Oh-symmetrised truth.
Not part of the test suite.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import mrcfile
import numpy as np

GROUPS = (
    "C2 C3 C4 C5 C6 C2v C3v C4v C2h C3h C4h Ci Cs S4 S6 D2 D3 D4 D6 D2h D3h D4h D6h "
    "T Td Th O Oh I I1 I2 I3 I4 Ih I1h I2h I3h I4h"
).split()


def oh_symmetric(v: np.ndarray) -> np.ndarray:
    """The average of ``v`` over the 48 signed permutations of its axes about voxel 0
    (periodic), or about voxel s/2 for a map centred there (the same index map)."""
    s = v.shape[0]
    flip = (-np.arange(s)) % s
    out = np.zeros_like(v)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            w = np.transpose(v, perm)
            for ax, sg in enumerate(signs):
                if sg < 0:
                    w = np.take(w, flip, axis=ax)
            out += w
    return out / 48


def kx0_defect(F: np.ndarray) -> float:
    s = F.shape[0]
    plane = F[:, :, 0]
    mirror = np.conj(plane[(-np.arange(s)) % s][:, (-np.arange(s)) % s])
    return float(np.linalg.norm(plane - mirror) / np.linalg.norm(plane))


def main() -> None:
    from napari_subtomo_recon.cli import parse_args
    from napari_subtomo_recon.core.fsc import fsc
    from napari_subtomo_recon.core.symmetrise import symmetrise_fourier
    from napari_subtomo_recon.core.symmetry import symmetry_operators
    from napari_subtomo_recon.job import run_to_completion
    from napari_subtomo_recon.simulate import simulate

    s = 24
    x = np.fft.fftfreq(s) * s
    Z, Y, X = np.meshgrid(x, x, x, indexing="ij")
    rng = np.random.default_rng(0)
    v = np.zeros((s, s, s))
    for _ in range(6):
        p = rng.uniform(-5, 5, 3)
        v += np.exp(-((X - p[2]) ** 2 + (Y - p[1]) ** 2 + (Z - p[0]) ** 2) / (2 * 1.5**2))
    D, W = np.fft.rfftn(v), np.ones((s, s, s // 2 + 1))
    print("group  change  kx=0 defect RELION  corrected")
    for g in GROUPS:
        ops = symmetry_operators(g)
        a, _ = symmetrise_fourier(D, W, ops)
        b, _ = symmetrise_fourier(D, W, ops, wrap=True)
        change = np.linalg.norm(a - b) / np.linalg.norm(a)
        print(f"{g:5s} {change:8.1e} {kx0_defect(a):12.1e} {kx0_defect(b):10.1e}")

    print("\nOh, a volume that has the symmetry: frequencies wrong, relative error")
    for n in (24, 32, 64):
        truth = np.fft.rfftn(oh_symmetric(np.random.default_rng(4).normal(size=(n, n, n))))
        ops, Wn = symmetry_operators("Oh"), np.ones(truth.shape)
        a, _ = symmetrise_fourier(truth, Wn, ops)
        b, _ = symmetrise_fourier(truth, Wn, ops, wrap=True)
        wrong = int((np.abs(a - truth) > 1e-9 * np.abs(truth).max()).sum())
        err = [np.linalg.norm(F - truth) / np.linalg.norm(truth) for F in (a, b)]
        print(f"box {n}: RELION {wrong} of {truth.size} wrong, error {err[0]:.2e}; "
              f"corrected {err[1]:.1e}")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        ds = simulate(
            tmp, seed=31, n_tomograms=2, particles_per_tomogram=16, n_tilts=21, tilt_max=60.0,
            pixel_size=2.0, image_size=(160, 160), tomo_size=(160, 160, 60), box=32,
            binning=2.0, snr=3.0,
        )  # fmt: skip
        os.chdir(ds.root)
        maps = []
        for out, extra in (("relion", []), ("fixed", ["--fix_symmetry_wrap"])):
            params, _ = parse_args(["--i", "optimisation_set.star", "--o", out, "--j", "2",
                                    "--b", "32", "--bin", "2", "--sym", "Oh", *extra])  # fmt: skip
            run_to_completion(params)
            maps.append(mrcfile.read(f"{out}/merged.mrc").astype(np.float64))
        truth = oh_symmetric(mrcfile.read(ds.ground_truth).astype(np.float64))
        diff = np.linalg.norm(maps[0] - maps[1]) / np.linalg.norm(maps[0])
        mean = [fsc(m, truth)[1:13].mean() for m in maps]
        print(
            f"\njob, --sym Oh: maps differ by {100 * diff:.2f} %; mean FSC against the "
            f"symmetrised truth (shells 1-12) RELION {mean[0]:.5f}, corrected {mean[1]:.5f}"
        )


if __name__ == "__main__":
    main()
