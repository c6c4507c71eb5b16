"""``subtomo-recon-demo DIR``: simulate the built-in sample data set and reconstruct it.

DIR becomes a small RELION project: the simulated tilt series, star files and
ground truth at its top, and the job in ``DIR/Reconstruct/job001/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .errors import InputError


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="subtomo-recon-demo", description=__doc__.splitlines()[0])
    ap.add_argument(
        "directory", nargs="?", default="demo", help="project directory to create [demo]"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--j", type=int, default=os.cpu_count() or 1, help="threads")
    args = ap.parse_args(argv)

    import mrcfile

    from .cli import main as cli_main
    from .core.fsc import fsc, resolution_at
    from .simulate import simulate

    root = Path(args.directory)
    root.mkdir(parents=True, exist_ok=True)
    print(f"simulating the sample data set in {root}/ ...", flush=True)
    ds = simulate(root, seed=args.seed)
    job = "Reconstruct/job001/"
    flags = ds.command(job)
    flags = [str(a) for a in flags] + ["--j", str(args.j)]
    print("subtomo-recon " + " ".join(flags), flush=True)
    try:
        with _cwd(root):
            code = cli_main(flags)
            if code != 0:
                return code
            merged = mrcfile.read(Path(job) / "merged.mrc")
            truth = mrcfile.read(Path(ds.ground_truth).name)
    except InputError as e:
        print(f"subtomo-recon-demo: error: {e}", file=sys.stderr)
        return 1
    voxel = ds.pixel_size * ds.binning
    res = resolution_at(fsc(merged, truth), 0.5, voxel)
    print(f"FSC(merged, ground truth) = 0.5 at {res:.2f} A (Nyquist {2 * voxel:.2f} A)")
    where = root / job
    print(f"maps: {where / 'merged.mrc'}, {where / 'half1.mrc'}, {where / 'half2.mrc'}")
    print(f"view: napari {where / 'merged.mrc'}   (with napari-subtomo-recon[qt] installed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
