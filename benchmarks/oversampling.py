"""How finely the fast path must resample each tilt: FSC of its maps against ``--exact``.

    python benchmarks/oversampling.py /tmp/ovs --oversampling 1.5,1.25,1.125

Simulates the data set of ``tests/test_truth.py::test_fast_path_agrees_with_exact_path_and_truth``
(bin 4, box 32), reconstructs it once with ``--exact`` and then with the fast path
(``--prebin always``) at each oversampling factor of ``extraction.fast_window`` (the
package uses 1.5), and prints the lowest FSC over the shells against the exact maps
(the issue requires >= 0.995) and against the ground truth relative to the exact map's.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import mrcfile
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--oversampling", default="1.5,1.25,1.125")
    args = ap.parse_args()

    from napari_subtomo_recon.cli import parse_args
    from napari_subtomo_recon.core import backprojection, extraction
    from napari_subtomo_recon.core.fsc import fsc
    from napari_subtomo_recon.job import run_to_completion
    from napari_subtomo_recon.simulate import simulate

    root = args.dir.resolve()
    ds = simulate(
        root, seed=7, pixel_size=1.0, binning=4.0, box=32, image_size=(640, 640),
        tomo_size=(640, 640, 240), particles_per_tomogram=30,
    )  # fmt: skip
    os.chdir(root)

    def run(out: str, *flags: str) -> None:
        params, _ = parse_args(
            ["--i", "optimisation_set.star", "--o", out, "--j", "2", "--b", "32", "--bin", "4",
             *flags]
        )  # fmt: skip
        run_to_completion(params)

    run("exact", "--exact")
    truth = mrcfile.read(ds.ground_truth)
    exact_t = fsc(mrcfile.read(root / "exact" / "merged.mrc"), truth)
    for o in (float(v) for v in args.oversampling.split(",")):
        backprojection.fast_window = functools.partial(extraction.fast_window, oversampling=o)
        run(f"fast{o}", "--prebin", "always")
        mins = []
        for name in ("merged", "half1", "half2"):
            a = mrcfile.read(root / "exact" / f"{name}.mrc")
            b = mrcfile.read(root / f"fast{o}" / f"{name}.mrc")
            mins.append(f"{name} {fsc(a, b)[1:].min():.4f}")
        fast_t = fsc(mrcfile.read(root / f"fast{o}" / "merged.mrc"), truth)
        worse = np.min((fast_t - exact_t)[1:])
        print(
            f"oversampling {o} (window {extraction.fast_window(32, 4.0, o)[2]} px): min FSC vs "
            f"exact: {', '.join(mins)}; vs truth, fast - exact: {worse:+.4f}"
        )


if __name__ == "__main__":
    main()
