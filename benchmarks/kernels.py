"""Micro-benchmarks of the hot kernels, outside the test suite.

    python benchmarks/kernels.py insertion --box 192 --threads 1 --batches 128,1024
    python benchmarks/kernels.py windows --window 288 --cols 97 [--offsets 4]
    python benchmarks/kernels.py finish --box 256 --window 384
    python benchmarks/kernels.py maps --box 512 --crop 192
    python benchmarks/kernels.py binning --box 256 --bin 2

``insertion``: ms per slice for random orientations (full radius), inserted in batches of
each --batches size with double-precision sums (RELION's path) and single-precision ones
(the fast path), all variants taking turns; median of --reps; the voxels one slice
touches and the runs each walk sets up for them.  ``--same-slice`` adds the fast path
with every slice reading the same memory: the time left when the slices' reads hit the
caches.  On an empty Numba cache (``NUMBA_CACHE_DIR=$(mktemp -d)``) it also counts the
gather instructions in the fast kernel's assembly.  ``windows``: ms per window to cut
out (circle crop) and transform (pruned 2D FFT), for several window-batch sizes.
``finish``: ms per slice to crop, shift, CTF- and dose-weight and pack transformed
windows (one tilt, depths of ±1500 Å, 7 windows per call as in the job), on one thread.
``maps``: s per step of the job's reconstruction of its three maps
(``job.finalise.finalise_steps`` on random accumulators, every map written to a
temporary folder in the current one, and the half-map FSC as the job computes it),
after touching --touch GB of memory so that
first-touch page faults (slow in VMs) are not timed.  Run at another commit (e.g.
``PYTHONPATH=<worktree>/src``) to compare kernels.  ``binning``: per tilt image of the
benchmark data's size (random values), the fast path's binning (``bin_image``) with new
arrays each time and with one ``BinWork`` reused as the job does, taking turns: wall,
user and system time and minor page faults (``getrusage``, the whole process).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def _random_rotations(n: int, rng) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)


def _runs(Q: np.ndarray, R: int, long_runs: bool) -> int:
    """Runs one slice's walk sets up (core.insertion._slice_planes): in each plane, the
    rows (x-walk) or columns (y-walk) that meet the slab |q_z| < 1 inside the disc."""
    nx, ny, nz = Q[2]
    xrun = (abs(nx) < abs(ny)) == long_runs
    runs = 0
    for z in range(-R, R + 1):
        r = int(np.sqrt(R * R - z * z))
        y, x = np.mgrid[-r : r + 1, 0 : r + 1]
        band = (x * x + y * y <= R * R - z * z) & (np.abs(nx * x + ny * y + nz * z) < 1)
        runs += int(band.any(axis=1 if xrun else 0).sum())
    return runs


def insertion(box: int, n: int, threads: int, reps: int, batches: list[int],
              block: int = 1, same_slice: bool = False) -> None:  # fmt: skip
    import numba

    from napari_subtomo_recon.core.insertion import (
        Accumulators,
        SliceBatch,
        insert_slices,
        packed_slices,
        slice_matrices,
    )

    def batch(sl: slice, halves: np.ndarray | None = None, same: bool = False) -> SliceBatch:
        h = half[sl] if halves is None else halves
        return SliceBatch(packed=(S1 if same else S)[sl], Q=Q[sl], max_freq=mf[sl], half=h)

    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    sh = box // 2 + 1
    data = (rng.normal(size=(n, box, sh)) + 1j * rng.normal(size=(n, box, sh))).astype(np.complex64)
    S = packed_slices(data, rng.uniform(size=(n, box, sh)).astype(np.float32))
    del data
    # --same-slice: every slice reads slice 0's memory, which then stays in the caches
    S1 = np.lib.stride_tricks.as_strided(S[:1], shape=S.shape, strides=(0, *S.strides[1:]))
    Q = slice_matrices(_random_rotations(n, rng))
    mf = np.full(n, box // 2, np.int64)
    half = rng.integers(0, 2, n).astype(np.int64)
    D = np.zeros((2, box, box, sh), np.complex128)
    W = np.zeros((2, box, box, sh))
    acc = Accumulators(data=D, weight=W)
    for single in (False, True):  # compile / load the cache
        insert_slices(batch(slice(0, 2)), acc, single=single)
    times: dict[tuple[str, int], list[float]] = {}
    variants = [("double", False, False), ("single", True, False)]
    if same_slice:
        variants.append(("single, one slice's memory", True, True))
        insert_slices(batch(slice(0, 2), same=True), acc, single=True)  # its own compile
    # all variants take turns in every repetition, so a slow phase of the host hits each
    for _ in range(reps):
        for name, single, same in variants:
            for b in batches:
                t0 = time.perf_counter()
                for a in range(0, n, b):
                    sl = slice(a, a + b)
                    insert_slices(batch(sl, same=same), acc, single=single, block=block)
                times.setdefault((name, b), []).append((time.perf_counter() - t0) / n * 1e3)
    voxels = []
    for i in range(min(n, 20)):  # voxels touched: nonzero weights of one slice alone
        W[:] = 0
        insert_slices(batch(slice(i, i + 1), np.zeros(1, np.int64)), acc)
        voxels.append(np.count_nonzero(W[0]))
    runs = [(_runs(Q[i], box // 2, False), _runs(Q[i], box // 2, True)) for i in range(20)]
    short, long = np.mean(runs, axis=0)
    print(
        f"insertion box {box}, {n} slices, --j {threads}, {np.mean(voxels):.0f} voxels per slice"
        f" in {short:.0f} runs (RELION's walk) or {long:.0f} (the fast path's):"
    )
    for (name, b), v in sorted(times.items()):
        print(
            f"  {name} sums, batches of {b:5d}: "
            f"{np.median(v):.3f} ms per slice (median of {reps}; {min(v):.3f}-{max(v):.3f})"
        )
    from napari_subtomo_recon.core.insertion import _insert_blocks_single

    with warnings.catch_warnings():  # cached code: "inspection disabled"
        warnings.simplefilter("ignore")
        asm = "".join(_insert_blocks_single.inspect_asm().values())
    if "ret" in asm:  # code loaded from Numba's cache has no assembly to show
        wide = sum(asm.count(r) for r in ("%ymm", "%zmm"))
        gathers = sum(asm.count(g) for g in ("vgather", "vpgather"))
        print(f"  fast kernel's assembly: {gathers} gather instructions, {wide} ymm/zmm operands")


def windows(window: int, cols: int, n: int, reps: int, offsets: int = 1,
            image: tuple[int, int] = (4400, 4300), falloff: float = 5.0) -> None:  # fmt: skip
    import scipy.fft as sfft

    from napari_subtomo_recon.core.extraction import WindowCentres, extract_windows

    rng = np.random.default_rng(0)
    H, W = image
    img = rng.standard_normal((H, W)).astype(np.float32)
    # inside the image, as in the job (its binned tilts are padded by half a window)
    h = window // 2 + 1
    cx, cy = rng.uniform(h, W - h, n), rng.uniform(h, H - h, n)
    # the crop circle's offset from the window centre: 0 on RELION's path; after
    # pre-binning one of a few values (multiples of 1/4 px at bin 2 and 6)
    if offsets > 1:
        levels = (np.arange(offsets) - offsets // 2) / offsets
        dx, dy = rng.choice(levels, n), rng.choice(levels, n)
    else:
        dx = dy = np.zeros(n)
    for batch in (n, 32, 8, 4):
        best = (np.inf, np.inf)
        for _ in range(reps):
            te = tf = 0.0
            for a in range(0, n, batch):
                sl = slice(a, a + batch)
                k = cx[sl].size
                t0 = time.perf_counter()
                w = np.empty((k, window, window), np.float32)
                centres = WindowCentres(x=cx[sl], y=cy[sl], circle_dx=dx[sl], circle_dy=dy[sl])
                extract_windows(img, centres, out=w, circle_crop=True, falloff=falloff)
                t1 = time.perf_counter()
                F = sfft.rfft(w, axis=2, norm="ortho")[:, :, :cols]
                sfft.fft(F, axis=1, norm="ortho", overwrite_x=True)
                te += t1 - t0
                tf += time.perf_counter() - t1
            if te + tf < sum(best):
                best = (te, tf)
        print(
            f"windows {window} px, batch {batch}: cut {best[0] / n * 1e3:.3f} ms, "
            f"FFT {best[1] / n * 1e3:.3f} ms per window (best of {reps})"
        )


def finish(box: int, window: int, reps: int) -> None:
    import numba

    from napari_subtomo_recon.core.ctf import ctf_constants, tilt_ctf_terms
    from napari_subtomo_recon.core.dose import dose_weights, dose_x_ranges
    from napari_subtomo_recon.core.extraction import (
        FourierCrop,
        SliceTerms,
        TiltFilters,
        crop_rows,
        finish_slices,
        shift_factors,
    )
    from napari_subtomo_recon.core.insertion import LANES

    numba.set_num_threads(1)
    rng = np.random.default_rng(1)
    s, n, px = box, 7, 2.7
    sh = s // 2 + 1
    F = (rng.normal(size=(n, window, sh)) + 1j * rng.normal(size=(n, window, sh))).astype(
        np.complex64
    )
    const = ctf_constants(300, 2.7, 0.1, 10.0, 0.9, 0.0)
    dose = dose_weights([30.0], s, px)[0]
    xr = dose_x_ranges(dose[None], 0.01)[0]
    ctf = tilt_ctf_terms(s, px, 25000.0, 24600.0, 33.0, const)
    beta = const.k1 * rng.uniform(-1500, 1500, n)
    ex, ey = shift_factors(s, s, rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n))
    out = np.empty((n, s + 1, sh + 1, LANES), np.float32)
    kwargs = dict(
        crop=FourierCrop(rows=crop_rows(window, s), ncols=sh, inv_bin=s / window),
        slices=SliceTerms(ex=ex, ey=ey, beta=beta, group=np.zeros(n, np.int64)),
        ctf=ctf,
        filters=TiltFilters(
            dose=dose, x_ranges=xr, odd=np.zeros((0, 1, 1), complex),
            noise=np.zeros((0, 1), np.float32),
        ),
        do_ctf=True,
        sign=-1.0,
        out=out,
    )  # fmt: skip
    finish_slices(F, **kwargs)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(50):
            finish_slices(F, **kwargs)
        times.append((time.perf_counter() - t0) / (50 * n) * 1e3)
    print(
        f"finish_slices box {s}, window {window}: {np.median(times):.3f} ms per slice "
        f"(median of {reps}; {min(times):.3f}-{max(times):.3f})"
    )


def maps(box: int, crop: int, threads: int, reps: int, touch: float) -> None:
    import tempfile
    from pathlib import Path

    from napari_subtomo_recon.core import reconstruction as rc
    from napari_subtomo_recon.io.mrc import write_map
    from napari_subtomo_recon.job.finalise import finalise_steps
    from napari_subtomo_recon.params import ReconstructParams

    s, sh = box, box // 2 + 1
    rng = np.random.default_rng(0)
    D0 = rng.standard_normal((2, s, s, sh)) + 1j * rng.standard_normal((2, s, s, sh))
    W0 = rng.random((2, s, s, sh))
    junk = [np.ones(1 << 27) for _ in range(int(touch))]  # 1 GB each, touched
    del junk
    times: dict[str, list[float]] = {}

    def timed(name: str, f):  # noqa: ANN001, ANN202
        def run(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            r = f(*args, **kw)
            times.setdefault(name, []).append(time.perf_counter() - t0)
            return r

        return run

    # the job's own steps (job.finalise), each timed where the job calls it: they are
    # looked up in the module at call time
    steps = ("expand_weights", "gridding_correct", "forward_half", "_radial_mean",
             "divide_fourier", "inverse_half", "taper")  # fmt: skip
    for name in steps:
        setattr(rc, name, timed(name, getattr(rc, name)))
    params = ReconstructParams(box_size=box, crop_size=crop)
    with tempfile.TemporaryDirectory(dir=".") as d:
        kept: dict[str, np.ndarray] = {}

        def emit(tag: str, kind: str, vol: np.ndarray) -> None:
            # the half-map FSC as the job computes it (job.runner): from the spectra since
            # c3e3916; before, from the whole-box half maps, after the maps were written
            if kind == "spectrum":
                from napari_subtomo_recon.core.fsc import fsc_spectra

                if tag == "half1":
                    kept["spectrum"] = vol.astype(np.complex64)
                elif tag == "half2":
                    timed("fsc (spectra)", fsc_spectra)(kept.pop("spectrum"), vol)
                return
            if kind == "out" and tag != "merged" and not spectra:
                kept[tag] = vol.astype(np.float32)
            if kind != "out" or params.crops:  # as job.outputs writes them
                timed(f"write ({kind})", write_map)(Path(d) / f"{tag}_{kind}.mrc", vol, 1.0)

        spectra = hasattr(rc, "ExpandedWeights")  # (a commit that emits spectra)
        for _ in range(reps):
            D, W = np.array(D0), np.array(W0)
            for _msg in finalise_steps(D, W, params, 1.0, True, threads, emit):
                pass
            del D, W
            if not spectra:
                from napari_subtomo_recon.core.fsc import fsc

                timed("fsc (maps)", fsc)(kept.pop("half1"), kept.pop("half2"))
    print(f"maps box {box}, crop {crop}, --j {threads}: the job's three maps, {reps} times; "
          "s per call, median (range) of the calls")  # fmt: skip
    for name, v in times.items():
        print(f"  {name:16s} x{len(v) // reps}  {np.median(v):6.3f} ({min(v):.3f}-{max(v):.3f})")
    print("  (gridding_correct includes one inverse_half, divide_fourier one _radial_mean)")


def binning(box: int, binning: float, height: int, width: int, tilts: int, reps: int) -> None:
    import resource

    from napari_subtomo_recon.core.extraction import BinWork, bin_image, fast_window

    num, den, _ = fast_window(box, binning)
    if num == den:
        raise SystemExit(f"--box {box} --bin {binning:g}: the fast path does not bin the tilts")
    margin = int(binning * box + 0.5) // 2 + 2  # as the job: the window's half + 2
    img = np.random.default_rng(0).standard_normal((height, width)).astype(np.float32)
    work = BinWork()
    bin_image(img, num, den, margin)  # compile _edge_pad
    res: dict[str, list[np.ndarray]] = {"new arrays": [], "reused (BinWork)": []}
    for _ in range(reps):
        for name in res:
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for f in range(tilts):
                if name == "new arrays":
                    bin_image(img, num, den, margin)
                else:
                    bin_image(img, num, den, margin, work, f % 2)
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            used = [t1 - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
                    r1.ru_minflt - r0.ru_minflt]  # fmt: skip
            res[name].append(np.array(used) / tilts)
    print(f"binning {height}x{width} by {num}/{den} (--box {box} --bin {binning:g}), "
          f"{tilts} tilts x {reps}; per tilt, median of the rounds:")  # fmt: skip
    for name, v in res.items():
        w, u, sy, pf = np.median(v, axis=0)
        print(f"  {name:16s} wall {w:.3f} s, user {u:.3f} s, system {sy:.3f} s, {pf:.0f} faults")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("insertion")
    a.add_argument("--box", type=int, default=192)
    a.add_argument("--slices", type=int, default=1024)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--reps", type=int, default=3)
    a.add_argument("--batches", default="128,1024", help="slices per insertion pass, compared")
    a.add_argument("--block", type=int, default=1, help="z planes per slice pass [1]")
    a.add_argument(
        "--same-slice", action="store_true",
        help="also time single sums with every slice reading slice 0's memory (in cache)",
    )  # fmt: skip
    b = sub.add_parser("windows")
    b.add_argument("--window", type=int, default=288)
    b.add_argument("--cols", type=int, default=97)
    b.add_argument("--count", type=int, default=96)
    b.add_argument("--reps", type=int, default=3)
    b.add_argument(
        "--image", default="4400x4300",
        help="HxW of the tilt the windows are cut from (the job's after binning: bin 6 "
        "960x930, bin 2 2878x2782) [4400x4300]",
    )  # fmt: skip
    b.add_argument("--falloff", type=float, default=5.0, help="the mask's edge in px [5]")
    b.add_argument(
        "--offsets", type=int, default=1,
        help="distinct crop-circle offsets, in random order [1: centred, RELION's path]",
    )  # fmt: skip
    c = sub.add_parser("finish")
    c.add_argument("--box", type=int, default=256)
    c.add_argument("--window", type=int, default=384)
    c.add_argument("--reps", type=int, default=5)
    m = sub.add_parser("maps")
    m.add_argument("--box", type=int, default=512)
    m.add_argument("--crop", type=int, default=192)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--reps", type=int, default=2)
    m.add_argument("--touch", type=float, default=6, help="GB of memory touched first")
    g = sub.add_parser("binning")
    g.add_argument("--box", type=int, default=256)
    g.add_argument("--bin", type=float, default=2.0)
    g.add_argument("--height", type=int, default=3838)
    g.add_argument("--width", type=int, default=3710)
    g.add_argument("--tilts", type=int, default=10)
    g.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.cmd == "binning":
        binning(args.box, args.bin, args.height, args.width, args.tilts, args.reps)
    elif args.cmd == "insertion":
        batches = [int(b) for b in args.batches.split(",")]
        insertion(
            args.box, args.slices, args.threads, args.reps, batches, args.block, args.same_slice
        )
    elif args.cmd == "maps":
        maps(args.box, args.crop, args.threads, args.reps, args.touch)
    elif args.cmd == "finish":
        finish(args.box, args.window, args.reps)
    else:
        H, W = (int(v) for v in args.image.split("x"))
        windows(args.window, args.cols, args.count, args.reps, args.offsets, (H, W), args.falloff)


if __name__ == "__main__":
    main()
