"""The fast path against ``--exact`` where the binned windows are hardest to place.

    python benchmarks/fast_path_geometry.py /tmp/fpg

Simulates one data set (640² tilt images at 1 Å, 30 particles per tomogram, seed 7),
reconstructs it with ``--exact`` and with ``--prebin always`` for each configuration
(non-integer binning, a window whose size is prime, no circle crop, cropping) and
prints the lowest FSC of the merged maps over the shells, with the binning ratio the
fast path chose (``1/1``: it cuts RELION's windows).  Run it at an older commit to see
what a change did.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import mrcfile

CONFIGS = {
    "bin 2, box 48": ["--b", "48", "--bin", "2"],
    "bin 2, box 48, crop 32": ["--b", "48", "--bin", "2", "--crop", "32"],
    "bin 2, box 48, no circle crop": ["--b", "48", "--bin", "2", "--no_circle_crop"],
    "bin 2.3, box 28": ["--b", "28", "--bin", "2.3"],
    "bin 2.3, box 42 (window 97 px)": ["--b", "42", "--bin", "2.3"],
    "bin 2.5, box 32": ["--b", "32", "--bin", "2.5"],
    "bin 3, box 48": ["--b", "48", "--bin", "3"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    args = ap.parse_args()

    from napari_subtomo_recon.cli import parse_args
    from napari_subtomo_recon.core.extraction import fast_window
    from napari_subtomo_recon.core.fsc import fsc
    from napari_subtomo_recon.job import run_to_completion
    from napari_subtomo_recon.simulate import simulate

    root = args.dir.resolve()
    simulate(
        root, seed=7, pixel_size=1.0, binning=2.0, box=48, image_size=(640, 640),
        tomo_size=(640, 640, 240), particles_per_tomogram=30,
    )  # fmt: skip
    os.chdir(root)
    for k, (name, flags) in enumerate(CONFIGS.items()):
        maps = []
        for mode in ("--exact", "always"):
            extra = [mode] if mode == "--exact" else ["--prebin", mode]
            out = f"c{k}{mode.strip('-')}"
            params, _ = parse_args(["--i", "optimisation_set.star", "--o", out, "--j", "2",
                                    *flags, *extra])  # fmt: skip
            run_to_completion(params)
            maps.append(mrcfile.read(root / out / "merged.mrc"))
        curve = fsc(maps[1], maps[0])[1:]
        num, den, _ = fast_window(int(flags[1]), float(flags[3]))
        print(f"{name:34s} ratio {num}/{den}: lowest FSC {curve.min():.4f} "
              f"(shell {curve.argmin() + 1} of {curve.size})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
