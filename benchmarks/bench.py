#!/usr/bin/env python
"""Benchmark ``subtomo-recon`` side by side with RELION 5's ``relion_tomo_reconstruct_particle``.

Not part of the unit tests (pytest collects only ``tests/``).  Three sub-commands:

``generate DIR [--particles N] [--tomograms T] [--seed S]``
    Write a RELION-5 data set with the geometry of the RELION tutorial: 41 tilts from −60° to
    +60° in 3° steps, acquired dose-symmetrically (star-file rows in acquisition order,
    ``rlnMicrographPreExposure`` cumulative, ~3 e/Å² per tilt), 3710×3838-pixel tilt images at
    1.35 Å, a 4000×4000×3000-pixel tomogram, defocus 2–4 µm with a little astigmatism, 300 kV,
    Cs 2.7 mm, Q0 0.1, tilt axis ~85°, small shifts; particles at random orientations inside the
    illuminated volume (z within ±150 nm of the centre), random half sets.  The images are
    Gaussian noise (timing only), one float32 MRC stack per tilt series (2.3 GB each), written
    one frame at a time.  Every path in the star files is relative to DIR.

``run DIR [--relion PATH] [--threads 1,2] [--configs bin6,bin2] [--particles-limit N] ...``
    For each config and thread count, run ``subtomo-recon`` (and RELION when ``--relion`` is
    given) in its own process from ``cwd = DIR`` with identical flags, and measure wall time,
    particle-tilts per second and the peak resident memory of the process (``ru_maxrss`` from
    ``wait4``; for ``mpirun`` the sampled sum over the process tree).  Prints a table and writes
    JSON.

``report RESULTS.json [MORE.json ...] [--docs docs/benchmarks.md]``
    Markdown tables (machine, versions, date, commands, ratios ours/RELION, the RELION
    tutorial's bin-6 job extrapolated) into the docs file, between marker comments so that
    text written around them is kept.

Run with any Python that has numpy, mrcfile and starfile (the package's own dependencies).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# The RELION tutorial's geometry (relion/src/tomography_python_programs/_tests/
# test_project_directory/tilt_series_metadata: 4000×4000×3000 px tomograms at 1.35 Å)
# ---------------------------------------------------------------------------------------------

PIXEL_SIZE = 1.35  # rlnTomoTiltSeriesPixelSize, Å
IMAGE_W, IMAGE_H = 3710, 3838  # tilt image x, y (px)
TOMO_SIZE = (4000, 4000, 3000)  # rlnTomoSizeX/Y/Z (px)
N_TILTS = 41
TILT_STEP = 3.0  # degrees: −60 … +60
DOSE_PER_TILT = 3.0  # e/Å²
VOLTAGE, CS, Q0 = 300.0, 2.7, 0.1
TILT_AXIS = 85.0  # rlnTomoZRot, degrees
Z_HALF_RANGE_A = 1500.0  # particles at |z| ≤ 150 nm from the tomogram centre
TUTORIAL_PARTICLE_TILTS = 1.25e6  # the tutorial's bin-6 reconstruct job

# the tutorial's three stages (bin6, bin2, bin1) and two smaller boxes where the fixed
# per-tilt work weighs most (issue #17's measurements)
CONFIGS = {
    "bin6": ["--b", "192", "--crop", "96", "--bin", "6", "--sym", "C6"],
    "bin2": ["--b", "256", "--crop", "128", "--bin", "2"],
    "bin1": ["--b", "512", "--crop", "192", "--bin", "1"],
    "bin6s": ["--b", "96", "--crop", "48", "--bin", "6", "--sym", "C6"],
    "bin2s": ["--b", "128", "--bin", "2"],
}
CONFIG_BOX = {"bin6": 192, "bin2": 256, "bin1": 512, "bin6s": 96, "bin2s": 128}
CONFIG_ORDER = {c: i for i, c in enumerate(CONFIGS)}


# ---------------------------------------------------------------------------------------------
# Geometry (spec §2: active rotations, P_f = T(shift+image centre)·Rz·Ry·Rx·T(−floor(size/2)))
# ---------------------------------------------------------------------------------------------


# the simulator's forward model (independent of core/geometry.py, which the counts check)
from napari_subtomo_recon.simulate import _rx, _ry, _rz, _star_text  # noqa: E402


def projection_matrices(xt, yt, zr, xs, ys, px, tomo_size, image_size) -> np.ndarray:
    """(nf, 3, 4): rows 0, 1 map homogeneous tomogram pixels to tilt-image pixels, row 2 depth."""
    out = []
    c_int = np.array([t // 2 for t in tomo_size], dtype=np.float64)
    for f in range(len(yt)):
        m = _rz(zr[f]) @ _ry(yt[f]) @ _rx(xt[f])
        t = -m @ c_int + np.array(
            [xs[f] / px + image_size[0] // 2, ys[f] / px + image_size[1] // 2, 0]
        )
        out.append(np.concatenate([m, t[:, None]], axis=1))
    return np.array(out)


def visible(P: np.ndarray, pos: np.ndarray, box: int, image_size) -> np.ndarray:
    """(n, nf) bool: RELION's visibility (spec §3.2: s/2 < x < W − s/2, same in y, strict)."""
    W, H = image_size
    c2 = np.einsum("fij,nj->nfi", P[:, :2, :3], pos) + P[None, :, :2, 3]
    h = box / 2.0
    return (c2[..., 0] > h) & (c2[..., 0] < W - h) & (c2[..., 1] > h) & (c2[..., 1] < H - h)


def dose_symmetric_order(n: int) -> list[int]:
    """Tilt indices k (angle = k·step) in acquisition order: 0, +1, −1, −2, +2, +3, −3, …"""
    seq = [0]
    k = 1
    while len(seq) < n:
        seq += [k, -k] if k % 2 == 1 else [-k, k]
        k += 1
    return seq[:n]


# ---------------------------------------------------------------------------------------------
# STAR writing / reading
# ---------------------------------------------------------------------------------------------


def write_star(path: Path, blocks: list[tuple[str, dict, bool]]) -> None:
    """Blocks as (name, {label: value or list}, is_loop), in the simulator's format; atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_star_text(blocks))
    os.replace(tmp, path)


def _read_star(path: Path) -> dict:
    import starfile

    d = starfile.read(path, always_dict=True)
    return d


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------


def _write_noise_stack(path: Path, n: int, h: int, w: int, rng, px: float) -> dict:
    """A float32 MRC image stack of Gaussian noise, one frame at a time (memory ~ one frame)."""
    import mrcfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    # The header: mrcfile sizes the (sparse) file; the data are then written sequentially.
    with mrcfile.new_mmap(tmp, shape=(n, h, w), mrc_mode=2, overwrite=True) as m:
        m.set_image_stack()
        m.voxel_size = px
        offset = m.header.nbytes + m.extended_header.nbytes
    dmin, dmax, s1, s2 = np.inf, -np.inf, 0.0, 0.0
    with open(tmp, "r+b") as fh:
        fh.seek(offset)
        for _ in range(n):
            frame = rng.standard_normal((h, w), dtype=np.float32)
            dmin, dmax = min(dmin, float(frame.min())), max(dmax, float(frame.max()))
            s1 += float(frame.sum(dtype=np.float64))
            s2 += float(np.square(frame, dtype=np.float64).sum())
            fh.write(memoryview(frame).cast("B"))
            del frame
    # Statistics into the header in place (mrcfile's header-only r+ mode would truncate the file).
    from mrcfile.dtypes import HEADER_DTYPE

    with open(tmp, "r+b") as fh:
        hdr = np.frombuffer(fh.read(HEADER_DTYPE.itemsize), dtype=HEADER_DTYPE).copy()
        npx = n * h * w
        mean = s1 / npx
        hdr["dmin"], hdr["dmax"], hdr["dmean"] = dmin, dmax, mean
        hdr["rms"] = math.sqrt(max(s2 / npx - mean * mean, 0.0))
        hdr["label"][0][0] = b"napari-subtomo-recon benchmarks: Gaussian noise"
        hdr["nlabl"] = 1
        fh.seek(0)
        fh.write(hdr.tobytes())
    os.replace(tmp, path)
    return {"path": str(path), "bytes": path.stat().st_size}


def _random_angles(rng, n: int) -> np.ndarray:
    rot = rng.uniform(-180.0, 180.0, n)
    psi = rng.uniform(-180.0, 180.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    return np.stack([rot, tilt, psi], axis=1)


def _positions(rng, n: int, P0: np.ndarray, margin: float) -> np.ndarray:
    """Tomogram-pixel positions inside the volume illuminated at 0° (projection inside the
    zero-tilt image with ``margin`` px to spare) and within ±150 nm of the centre in z."""
    X, Y, Z = TOMO_SIZE
    centre = np.array(TOMO_SIZE, dtype=np.float64) / 2.0
    zh = Z_HALF_RANGE_A / PIXEL_SIZE
    out = np.zeros((0, 3))
    while len(out) < n:
        m = 4 * (n - len(out)) + 16
        p = np.stack(
            [rng.uniform(0, X, m), rng.uniform(0, Y, m), centre[2] + rng.uniform(-zh, zh, m)],
            axis=1,
        )
        c2 = p @ P0[:2, :3].T + P0[:2, 3]
        ok = (
            (c2[:, 0] > margin)
            & (c2[:, 0] < IMAGE_W - margin)
            & (c2[:, 1] > margin)
            & (c2[:, 1] < IMAGE_H - margin)
        )
        out = np.concatenate([out, p[ok]])
    return out[:n]


def cmd_generate(a) -> int:
    root = Path(a.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    need = a.tomograms * N_TILTS * IMAGE_W * IMAGE_H * 4
    free = shutil.disk_usage(root).free
    print(f"data set in {root}: needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    if free < need * 1.05 + 2**30:
        print("error: not enough free disk space", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    px = PIXEL_SIZE
    centre = np.array(TOMO_SIZE, dtype=np.float64) / 2.0
    counts = [
        a.particles // a.tomograms + (t < a.particles % a.tomograms) for t in range(a.tomograms)
    ]
    names = [f"TS_{t + 1:02d}" for t in range(a.tomograms)]
    prow: dict[str, list] = {}
    stacks = []
    n_pt = {192: 0, 256: 0}
    for t, name in enumerate(names):
        ks = dose_symmetric_order(N_TILTS)
        nominal = np.array(ks, dtype=np.float64) * TILT_STEP
        nf = N_TILTS
        yt = np.round(nominal + rng.normal(0.0, 0.3) + rng.normal(0.0, 0.02, nf), 6)
        xt = np.zeros(nf)
        zr = np.round(
            TILT_AXIS + rng.normal(0.0, 0.3) + 0.005 * nominal + rng.normal(0, 0.02, nf), 6
        )
        drift = np.cumsum(rng.normal(0.0, 8.0, (nf, 2)), axis=0)  # Å, over acquisition order
        xs = np.round(drift[:, 0] + rng.normal(0.0, 20.0, nf), 6)
        ys = np.round(drift[:, 1] + rng.normal(0.0, 20.0, nf), 6)
        mean_def = rng.uniform(25000.0, 35000.0)
        dmean = np.clip(mean_def + rng.normal(0.0, 1500.0, nf), 20000.0, 40000.0)
        ast = rng.uniform(100.0, 800.0, nf)
        defu = np.round(dmean + 0.5 * ast, 6)
        defv = np.round(dmean - 0.5 * ast, 6)
        dang = np.round(rng.uniform(-90.0, 90.0, nf), 6)
        dose = DOSE_PER_TILT * (1.0 + rng.normal(0.0, 0.02, nf))
        pre = np.round(np.concatenate([[0.0], np.cumsum(dose)[:-1]]), 6)
        # The stack is sorted by tilt angle (as RELION 5's tilt-series stacks), rows reference it.
        by_angle = np.argsort(nominal, kind="stable")
        stack_idx = np.empty(nf, dtype=int)
        stack_idx[by_angle] = np.arange(nf)
        stack_rel = f"tilt_series/{name}.mrcs"
        rows = {
            "rlnMicrographName": [f"{int(si) + 1}@{stack_rel}" for si in stack_idx],
            "rlnTomoNominalStageTiltAngle": list(nominal),
            "rlnTomoNominalTiltAxisAngle": [TILT_AXIS] * nf,
            "rlnMicrographPreExposure": list(pre),
            "rlnTomoNominalDefocus": [-mean_def / 1e4] * nf,
            "rlnDefocusU": list(defu),
            "rlnDefocusV": list(defv),
            "rlnCtfAstigmatism": list(defu - defv),
            "rlnDefocusAngle": list(dang),
            "rlnTomoXTilt": list(xt),
            "rlnTomoYTilt": list(yt),
            "rlnTomoZRot": list(zr),
            "rlnTomoXShiftAngst": list(xs),
            "rlnTomoYShiftAngst": list(ys),
        }
        write_star(root / "tilt_series" / f"{name}.star", [(name, rows, True)])
        P = projection_matrices(xt, yt, zr, xs, ys, px, TOMO_SIZE, (IMAGE_W, IMAGE_H))
        n = counts[t]
        pos = _positions(rng, n, P[0], margin=200.0)
        coord = np.round((pos - centre) * px, 6)
        pos = coord / px + centre
        ang = np.round(_random_angles(rng, n), 6)
        subset = rng.permutation(np.array([1, 2] * ((n + 1) // 2))[:n])
        vis_written = visible(P, pos, 192, (IMAGE_W, IMAGE_H))
        for b in n_pt:
            n_pt[b] += int(visible(P, pos, b, (IMAGE_W, IMAGE_H)).sum())
        for k in range(n):
            for lab, v in (
                ("rlnTomoName", name),
                ("rlnTomoParticleName", f"{name}/{k + 1}"),
                ("rlnCenteredCoordinateXAngst", coord[k, 0]),
                ("rlnCenteredCoordinateYAngst", coord[k, 1]),
                ("rlnCenteredCoordinateZAngst", coord[k, 2]),
                ("rlnAngleRot", ang[k, 0]),
                ("rlnAngleTilt", ang[k, 1]),
                ("rlnAnglePsi", ang[k, 2]),
                ("rlnOriginXAngst", 0.0),
                ("rlnOriginYAngst", 0.0),
                ("rlnOriginZAngst", 0.0),
                ("rlnOpticsGroup", 1),
                ("rlnRandomSubset", int(subset[k])),
                ("rlnClassNumber", 1),
                ("rlnTomoVisibleFrames", "[" + ",".join(str(int(v)) for v in vis_written[k]) + "]"),
            ):
                prow.setdefault(lab, []).append(v)
        stacks.append((root / stack_rel, nf))

    nt = a.tomograms
    glob = {
        "rlnTomoName": names,
        "rlnVoltage": [VOLTAGE] * nt,
        "rlnSphericalAberration": [CS] * nt,
        "rlnAmplitudeContrast": [Q0] * nt,
        "rlnMicrographOriginalPixelSize": [px / 2.0] * nt,
        "rlnTomoHand": [1.0] * nt,
        "rlnTomoTiltSeriesPixelSize": [px] * nt,
        "rlnTomoTiltSeriesStarFile": [f"tilt_series/{nm}.star" for nm in names],
        "rlnTomoSizeX": [TOMO_SIZE[0]] * nt,
        "rlnTomoSizeY": [TOMO_SIZE[1]] * nt,
        "rlnTomoSizeZ": [TOMO_SIZE[2]] * nt,
        "rlnOpticsGroupName": ["optics1"] * nt,
        "rlnTomoImportFractionalDose": [DOSE_PER_TILT] * nt,
    }
    write_star(root / "tomograms.star", [("global", glob, True)])
    optics = {
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["optics1"],
        "rlnSphericalAberration": [CS],
        "rlnVoltage": [VOLTAGE],
        "rlnAmplitudeContrast": [Q0],
        "rlnTomoTiltSeriesPixelSize": [px],
        "rlnImagePixelSize": [px * 6],
        "rlnImageSize": [192],
        "rlnImageDimensionality": [2],
        "rlnTomoSubtomogramBinning": [6.0],
        "rlnCtfDataAreCtfPremultiplied": [1],
    }
    write_star(
        root / "particles.star",
        [
            ("general", {"rlnTomoSubTomosAre2DStacks": 1}, False),
            ("optics", optics, True),
            ("particles", prow, True),
        ],
    )
    write_star(
        root / "optimisation_set.star",
        [
            (
                "",
                {
                    "rlnTomoParticlesFile": "particles.star",
                    "rlnTomoTomogramsFile": "tomograms.star",
                },
                False,
            )
        ],
    )
    t_star = time.perf_counter() - t0
    print(f"star files written ({a.particles} particles, {t_star:.1f} s); writing noise stacks ...")
    files = []
    for k, (path, nf) in enumerate(stacks):
        t1 = time.perf_counter()
        files.append(
            _write_noise_stack(path, nf, IMAGE_H, IMAGE_W, np.random.default_rng([a.seed, k]), px)
        )
        print(
            f"  {path.relative_to(root)}: {files[-1]['bytes'] / 2**30:.2f} GiB "
            f"in {time.perf_counter() - t1:.1f} s"
        )
    elapsed = time.perf_counter() - t0
    total = sum(_du(p) for p in root.rglob("*") if p.is_file() and "runs" not in p.parts)
    meta = {
        "command": shlex.join(["python", "benchmarks/bench.py", "generate", *sys.argv[2:]]),
        "generated": _now(),
        "seconds": round(elapsed, 1),
        "bytes": total,
        "particles": a.particles,
        "tomograms": a.tomograms,
        "seed": a.seed,
        "tilts": N_TILTS,
        "image_size": [IMAGE_W, IMAGE_H],
        "tomo_size": list(TOMO_SIZE),
        "pixel_size": px,
        "visible_particle_tilts": {f"box{b}": v for b, v in n_pt.items()},
    }
    (root / "bench_dataset.json").write_text(json.dumps(meta, indent=1))
    print(
        f"done in {elapsed:.1f} s; {total / 2**30:.2f} GiB on disk; visible particle-tilts: "
        f"{n_pt[192]} (box 192), {n_pt[256]} (box 256)"
    )
    return 0


def _du(p: Path) -> int:
    try:
        return p.stat().st_blocks * 512
    except OSError:
        return 0


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Counting visible particle-tilts from the star files (for RELION, which does not print it)
# ---------------------------------------------------------------------------------------------


def _opt_entries(root: Path, opt_rel: str) -> tuple[str, str]:
    d = _read_star(root / opt_rel)
    blk = next(iter(d.values()))
    if hasattr(blk, "to_dict") and not isinstance(blk, dict):
        blk = {k: blk[k].iloc[0] for k in blk.columns}
    return str(blk["rlnTomoParticlesFile"]), str(blk["rlnTomoTomogramsFile"])


def count_particle_tilts(root: Path, opt_rel: str, box: int) -> tuple[int, int]:
    """(particles, visible particle-tilts) for a data set made by ``generate`` (R5 angles, no
    motion, no subtomogram angles), with RELION's visibility rule for box ``box``."""
    import mrcfile

    parts_rel, tomos_rel = _opt_entries(root, opt_rel)
    glob = _read_star(root / tomos_rel)["global"]
    parts = _read_star(root / parts_rel)["particles"]
    n_part, n_pt = 0, 0
    for _, g in glob.iterrows():
        name = str(g["rlnTomoName"])
        sel = parts[parts["rlnTomoName"].astype(str) == name]
        if len(sel) == 0:
            continue
        ts = _read_star(root / str(g["rlnTomoTiltSeriesStarFile"]))
        rows = ts[name] if name in ts else next(iter(ts.values()))
        ref = str(rows["rlnMicrographName"].iloc[0])
        with mrcfile.open(root / ref.split("@", 1)[-1], header_only=True, permissive=True) as m:
            W, H = int(m.header.nx), int(m.header.ny)
        px = float(g["rlnTomoTiltSeriesPixelSize"])
        size = (int(g["rlnTomoSizeX"]), int(g["rlnTomoSizeY"]), int(g["rlnTomoSizeZ"]))
        xt = rows["rlnTomoXTilt"].to_numpy(float) if "rlnTomoXTilt" in rows else np.zeros(len(rows))
        P = projection_matrices(
            xt,
            rows["rlnTomoYTilt"].to_numpy(float),
            rows["rlnTomoZRot"].to_numpy(float),
            rows["rlnTomoXShiftAngst"].to_numpy(float),
            rows["rlnTomoYShiftAngst"].to_numpy(float),
            px,
            size,
            (W, H),
        )
        centre = np.array(size, dtype=np.float64) / 2.0
        c = sel[[f"rlnCenteredCoordinate{x}Angst" for x in "XYZ"]].to_numpy(float) / px + centre
        if "rlnOriginXAngst" in sel:
            c = c - sel[[f"rlnOrigin{x}Angst" for x in "XYZ"]].to_numpy(float) / px
        n_part += len(sel)
        n_pt += int(visible(P, c, box, (W, H)).sum())
    return n_part, n_pt


def make_subset(root: Path, n: int, tomograms: int = 0) -> str:
    """Write ``subsets/particles_first<n>.star`` (the first ⌈n/T⌉ particles of each tomogram, in
    file order) and a matching optimisation set; return the optimisation set path (rel. root).

    ``tomograms`` > 0: all particles of the first that many tomograms instead (``n`` ignored),
    i.e. fewer tilt series at the data set's full particle density.
    """
    full = _read_star(root / "particles.star")
    parts = full["particles"]
    names = list(dict.fromkeys(parts["rlnTomoName"].astype(str)))
    if tomograms:
        names = names[:tomograms]
        per = [len(parts)] * len(names)
        n_tag = f"tomo{len(names)}"
    else:
        per = [n // len(names) + (k < n % len(names)) for k in range(len(names))]
        n_tag = f"first{n}"
    keep = []
    for name, m in zip(names, per, strict=True):
        idx = np.flatnonzero(parts["rlnTomoName"].astype(str).to_numpy() == name)[:m]
        keep.extend(idx.tolist())
    sub = parts.iloc[sorted(keep)]
    blocks = []
    for bname, blk in full.items():
        if bname == "particles":
            blocks.append(("particles", {c: list(sub[c]) for c in sub.columns}, True))
        elif isinstance(blk, dict):
            blocks.append((bname, blk, False))
        else:
            blocks.append((bname, {c: list(blk[c]) for c in blk.columns}, True))
    prel = f"subsets/particles_{n_tag}.star"
    write_star(root / prel, blocks)
    orel = f"subsets/optimisation_set_{n_tag}.star"
    write_star(
        root / orel,
        [("", {"rlnTomoParticlesFile": prel, "rlnTomoTomogramsFile": "tomograms.star"}, False)],
    )
    return orel


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


class TreeSampler(threading.Thread):
    """Samples the summed VmRSS / RssAnon / RssFile of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self.peak_procs = 1
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()
        self.join()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as fh:
                    s = fh.read()
                ppid = int(s[s.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def sample(self):
        tot = {"rss": 0, "anon": 0, "file": 0}
        pids = self._tree()
        for p in pids:
            try:
                with open(f"/proc/{p}/status") as fh:
                    for line in fh:
                        if line.startswith("VmRSS:"):
                            tot["rss"] += int(line.split()[1]) * 1024
                        elif line.startswith("RssAnon:"):
                            tot["anon"] += int(line.split()[1]) * 1024
                        elif line.startswith("RssFile:"):
                            tot["file"] += int(line.split()[1]) * 1024
            except OSError:
                pass
        for k in tot:
            self.peak[k] = max(self.peak[k], tot[k])
        self.peak_procs = max(self.peak_procs, len(pids))

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)


def _warm(paths: list[Path]) -> float:
    """Read the tilt stacks once so that every run starts with them in the page cache."""
    t0 = time.perf_counter()
    buf = bytearray(64 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    return time.perf_counter() - t0


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + sum(v[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold: float = 0.25, window: float = 5.0) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` cores over a
    ``window``; return the load seen in the last window (cores)."""
    t_end = time.monotonic() + max_wait
    while True:
        b0 = _cpu_busy_s()
        time.sleep(window)
        load = (_cpu_busy_s() - b0) / window
        if load < threshold or time.monotonic() >= t_end:
            return load


def measure(cmd: list[str], cwd: Path, env: dict, log: Path, timeout: float | None) -> dict:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        busy0 = _cpu_busy_s()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        sampler = TreeSampler(proc.pid)
        sampler.start()
        timer = None
        timed_out = threading.Event()
        if timeout:

            def _kill():
                timed_out.set()
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, _kill)
            timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = _cpu_busy_s() - busy0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timer:
            timer.cancel()
        sampler.stop()
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out.is_set(),
        "wall_s": wall,
        "maxrss_wait4": ru.ru_maxrss * 1024,
        "peak_rss_tree_sampled": sampler.peak["rss"],
        "peak_anon_tree_sampled": sampler.peak["anon"],
        "peak_file_tree_sampled": sampler.peak["file"],
        "processes": sampler.peak_procs,
        "cpu_user_s": ru.ru_utime,
        "cpu_sys_s": ru.ru_stime,
        # CPU used by everything else on the machine during the run (other users' jobs):
        "other_cores": max(0.0, busy - ru.ru_utime - ru.ru_stime) / wall,
    }


_OURS_RE = re.compile(r"(\d+) particles, (\d+) particle-tilts in ([\d.]+) s")


def _tail(path: Path, n: int = 15) -> list[str]:
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return []
    return [ln[:300] for ln in lines if ln.strip()][-n:]


def _versions(relion: str | None, ours_cmd: list[str], env: dict, mpi: int) -> dict:
    v = {
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import numba

        v["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        r = subprocess.run(
            [*ours_cmd, "--version"], env=env, capture_output=True, text=True, timeout=120
        )
        v["subtomo-recon"] = (r.stdout.strip() or r.stderr.strip()).splitlines()[-1]
    except Exception as e:  # noqa: BLE001
        v["subtomo-recon"] = f"? ({e})"
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import napari_subtomo_recon as m; print(m.__file__)"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        v["module"] = r.stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        status = ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
        v["git"] = head + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        pass
    if relion:
        try:
            r = subprocess.run([relion, "--version"], capture_output=True, text=True, timeout=60)
            v["relion"] = " ".join((r.stdout + r.stderr).split())
        except OSError as e:
            v["relion"] = f"? ({e})"
    if mpi:
        try:
            r = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=60)
            v["mpirun"] = (r.stdout + r.stderr).strip().splitlines()[0]
        except OSError:
            pass
    return v


def _tree_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and ".egg-info" not in str(f):
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _machine() -> dict:
    m = {"cores": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                m["mem_gib"] = round(int(line.split()[1]) / 2**20, 1)
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return m


def compare_maps(ref: Path, new: Path) -> dict[str, float]:
    """Relative RMS difference of every map the two job folders share."""
    import mrcfile

    out = {}
    for f in sorted(ref.glob("*.mrc")):
        if (new / f.name).exists():
            a = mrcfile.read(f).astype(np.float64)
            b = mrcfile.read(new / f.name).astype(np.float64)
            out[f.stem] = float(np.sqrt(((a - b) ** 2).sum() / max((a**2).sum(), 1e-300)))
    return out


FSC_MAPS = ("merged", "half1", "half2")


def lowest_fsc(a_path: Path, b_path: Path) -> float:
    """The lowest Fourier shell correlation of two maps over the shells 1 .. n/2 - 1 (1-px
    integer shells, computed here with numpy alone, independently of the package)."""
    import mrcfile

    va = mrcfile.read(a_path).astype(np.float64)
    vb = mrcfile.read(b_path).astype(np.float64)
    n, nx = va.shape[0], va.shape[2]
    fa, fb = np.fft.rfftn(va), np.fft.rfftn(vb)
    kz, ky = (np.fft.fftfreq(m) * m for m in va.shape[:2])
    kx = np.arange(nx // 2 + 1)
    r = np.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    shell = np.rint(r).astype(np.int64).ravel()
    # the half transform: columns 0 < x < nx/2 stand for their Hermitian mirrors too
    w = np.broadcast_to(np.where((kx > 0) & (2 * kx != nx), 2.0, 1.0), fa.shape).ravel()
    num = np.bincount(shell, w * (fa * fb.conj()).real.ravel())
    pa = np.bincount(shell, w * (abs(fa) ** 2).ravel())
    pb = np.bincount(shell, w * (abs(fb) ** 2).ravel())
    k = slice(1, n // 2)
    return float((num[k] / np.sqrt(np.maximum(pa[k] * pb[k], 1e-300))).min())


def cold_start(root: Path, env: dict, repeat: int) -> list[dict]:
    """The README's demo (``subtomo-recon-demo``) on an empty Numba cache, then again on
    the cache it filled; compilation = the difference.  Rounds alternate cold and warm."""
    rounds = []
    for k in range(repeat):
        cache = root / "runs" / f"numba_cache_cold{k}"
        shutil.rmtree(cache, ignore_errors=True)
        e = dict(env, NUMBA_CACHE_DIR=str(cache))
        rec = {}
        for phase in ("cold", "warm"):
            demo = root / "runs" / f"demo_{phase}{k}"
            shutil.rmtree(demo, ignore_errors=True)
            wait_quiet(300)
            cmd = [sys.executable, "-m", "napari_subtomo_recon.demo", str(demo)]
            m = measure(cmd, root, e, root / "runs" / "logs" / f"demo_{phase}{k}.log", None)
            rec[f"{phase}_s"] = round(m["wall_s"], 2)
            rec[f"{phase}_rc"] = m["returncode"]
            rec[f"{phase}_other_cores"] = round(m["other_cores"], 2)
            shutil.rmtree(demo, ignore_errors=True)
        rec["compile_s"] = round(rec["cold_s"] - rec["warm_s"], 2)
        shutil.rmtree(cache, ignore_errors=True)
        print(f"demo: cold {rec['cold_s']} s, warm {rec['warm_s']} s -> compiling "
              f"{rec['compile_s']} s", flush=True)  # fmt: skip
        rounds.append(rec)
    return rounds


def cmd_run(a) -> int:
    root = Path(a.dir).resolve()
    if not (root / "optimisation_set.star").exists():
        print(
            f"error: {root}/optimisation_set.star not found (run 'generate' first)", file=sys.stderr
        )
        return 1
    threads = [int(t) for t in str(a.threads).split(",") if t]
    configs = [c for c in a.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            print(f"error: unknown config {c} (known: {', '.join(CONFIGS)})", file=sys.stderr)
            return 1
    default = (
        ["ours"] + (["ours-mem"] if a.mem_check else []) + (["ours-exact"] if a.exact else [])
        + (["relion"] if a.relion else [])
    )  # fmt: skip
    programs = [p for p in a.programs.split(",") if p] if a.programs else default
    if "ours-mem" in programs and not a.mem_check:
        print("error: --programs ours-mem needs --mem-check GB", file=sys.stderr)
        return 1
    if "relion" in programs and not a.relion:
        print("error: --programs relion needs --relion PATH", file=sys.stderr)
        return 1
    if a.repeat < 1 or (a.relion_repeat is not None and a.relion_repeat < 1):
        print("error: --repeat and --relion-repeat must be at least 1", file=sys.stderr)
        return 1
    relion_repeat = a.repeat if a.relion_repeat is None else min(a.relion_repeat, a.repeat)
    src, src_note = REPO / "src", f"working tree {REPO / 'src'}"
    if not a.ours and not a.no_snapshot:
        # Others may edit the working tree while a long benchmark runs: run a frozen copy.
        digest = _tree_digest(REPO / "src")
        src = root / "runs" / f"src_{digest[:12]}"
        if not src.exists():
            shutil.copytree(
                REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        src_note = (
            f"copy of the working tree {REPO / 'src'} (sha256 of *.py {digest[:12]}) in {src}"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SUBTOMO_PROGRESS", None)
    if a.mpi and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    ours = shlex.split(a.ours) if a.ours else [sys.executable, "-m", "napari_subtomo_recon"]
    relion = a.relion
    if relion and a.mpi and not relion.endswith("_mpi"):
        relion = relion + "_mpi"

    opt = "optimisation_set.star"
    subset_note = "all particles"
    subset_tag = ""
    if a.tomograms_limit:
        opt = make_subset(root, 0, a.tomograms_limit)
        subset_note = f"all particles of the first {a.tomograms_limit} tomogram(s): {opt}"
        subset_tag = f"_tomo{a.tomograms_limit}"
    elif a.particles_limit:
        opt = make_subset(root, a.particles_limit)
        subset_note = f"first {a.particles_limit} particles (balanced over tomograms): {opt}"
        subset_tag = f"_first{a.particles_limit}"
    meta_path = root / "bench_dataset.json"
    dataset = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    stacks = sorted((root / "tilt_series").glob("*.mrcs"))

    results = {
        "schema": 1,
        "date": _now(),
        "command": shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]]),
        "machine": _machine(),
        "versions": {**_versions(relion, ours, env, a.mpi), "source": src_note},
        "dataset": {**dataset, "dir": str(root)},
        "subset": {
            "optimisation_set": opt,
            "note": subset_note,
            "particles_limit": a.particles_limit,
            "tomograms_limit": a.tomograms_limit,
        },
        "runs": [],
    }
    out_path = Path(a.out).resolve()
    counts: dict[int, tuple[int, int]] = {}
    print(f"data: {root}  ({subset_note})")
    print(f"machine: {results['machine']}")
    print(f"versions: {results['versions']}")
    ours_progs = [p for p in programs if p not in ("relion", "ours-mem")]
    if ours_progs and not a.no_warmup:
        # Unmeasured runs with two particles fill Numba's compile cache (a one-off cost per
        # installation, not per job).  Two particles are too few for binning a whole tilt to
        # pay off, so the fast path also gets a run with --prebin always: otherwise its
        # kernels would compile inside the first measured run.
        wopt = make_subset(root, 2)
        results["warmup_s"] = {}
        variants = {"ours": [[], ["--prebin", "always"]], "ours-exact": [["--exact"]]}
        for cfg in configs:
            for prog in ours_progs:
                for extra in variants[prog]:
                    wout = f"runs/warmup_{cfg}_{prog}/"
                    shutil.rmtree(root / wout, ignore_errors=True)
                    flags = ["--i", wopt, "--o", wout, *CONFIGS[cfg], "--j", str(max(threads))]
                    log = root / "runs" / "logs" / "warmup.log"
                    m = measure([*ours, *flags, *extra], root, env, log, None)
                    shutil.rmtree(root / wout, ignore_errors=True)
                    name = " ".join([cfg, prog, *extra])
                    results["warmup_s"][name] = round(m["wall_s"], 1)
                    print(f"warm-up {name}: {m['wall_s']:.1f} s (rc {m['returncode']})", flush=True)
    for cfg in configs:
        box = CONFIG_BOX[cfg]
        if box not in counts:
            counts[box] = count_particle_tilts(root, opt, box)
        n_part, n_pt = counts[box]
        # Rounds interleave the programs (ours, RELION, ours, ...) so that a slow phase of
        # the shared host hits both; the report compares medians.
        schedule = [
            (rnd, prog)
            for rnd in range(a.repeat)
            for prog in programs
            if prog != "relion" or rnd < relion_repeat
        ]
        for j in threads:
            kept: list[tuple[dict, Path]] = []  # (record, copies of its final maps)
            for rnd, prog in schedule:
                tag = f"{cfg}_{prog}_j{j}" + (f"_mpi{a.mpi}" if a.mpi else "") + subset_tag + (
                    f"_r{rnd + 1}" if a.repeat > 1 else "")  # fmt: skip
                out_rel = f"runs/{tag}/"
                shutil.rmtree(root / out_rel, ignore_errors=True)
                (root / out_rel).mkdir(parents=True)
                flags = [
                    "--i",
                    opt,
                    "--o",
                    out_rel,
                    *CONFIGS[cfg],
                    "--j",
                    str(j),
                    "--j_out",
                    str(j),
                    "--j_in",
                    "1",
                ]
                if prog == "ours-exact":
                    flags.append("--exact")
                if prog == "ours-mem":
                    flags += ["--mem", f"{a.mem_check:g}"]
                exe = [relion] if prog == "relion" else ours
                shown = [Path(relion).name if prog == "relion" else "subtomo-recon", *flags]
                cmd = [*exe, *flags]
                if a.mpi:
                    pre = ["mpirun", "-n", str(a.mpi), "--oversubscribe"]
                    cmd, shown = pre + cmd, pre + shown
                log = root / "runs" / "logs" / f"{tag}.log"
                print(f"\n[{tag}] {shlex.join(shown)}", flush=True)
                attempts = []
                for attempt in range(1 + max(0, a.retries)):
                    warm = _warm(stacks) if not a.no_warm else 0.0
                    quiet = wait_quiet(a.quiet_wait) if a.quiet_wait > 0 else None
                    shutil.rmtree(root / out_rel, ignore_errors=True)
                    (root / out_rel).mkdir(parents=True)
                    m = measure(cmd, root, env, log, a.timeout)
                    m["load_before"] = quiet
                    attempts.append(m)
                    print(
                        f"  attempt {attempt + 1}: {m['wall_s']:.1f} s, rc {m['returncode']}, "
                        f"other processes used {m['other_cores']:.2f} cores "
                        f"(cache warm-up {warm:.1f} s, "
                        f"load before {quiet if quiet is None else round(quiet, 2)})",
                        flush=True,
                    )
                    if m["returncode"] != 0 or m["other_cores"] < a.busy_threshold:
                        break
                m = min(attempts, key=lambda x: (x["returncode"] != 0, x["other_cores"]))
                if len(attempts) > 1:
                    m = {**m, "attempts": [dict(x) for x in attempts]}
                text = log.read_text(errors="replace") if log.exists() else ""
                rec = {
                    "program": prog,
                    "config": cfg,
                    "threads": j,
                    "mpi": a.mpi or 0,
                    "round": rnd + 1,
                    "particles": n_part,
                    "particle_tilts": n_pt,
                    "command": shlex.join(shown),
                    "cwd": str(root),
                    "log": str(log),
                    **m,
                }
                mm = _OURS_RE.findall(text)
                if prog != "relion" and mm:
                    rp, rpt, rt = mm[-1]
                    rec["reported_particles"], rec["reported_particle_tilts"] = int(rp), int(rpt)
                    rec["reported_seconds"] = float(rt)
                    if int(rpt) != n_pt:
                        rec["count_mismatch"] = f"program reports {rpt}, geometry gives {n_pt}"
                ok = m["returncode"] == 0 and (root / out_rel / "merged.mrc").exists()
                rec["ok"] = ok
                if not ok:
                    rec["error_tail"] = _tail(log)
                rec["peak_rss"] = m["peak_rss_tree_sampled"] if a.mpi else m["maxrss_wait4"]
                rec["throughput"] = n_pt / m["wall_s"] if ok else None
                rec["cpu_util"] = (m["cpu_user_s"] + m["cpu_sys_s"]) / m["wall_s"]
                results["runs"].append(rec)
                status = (
                    "ok"
                    if ok
                    else f"FAILED (rc {m['returncode']}{', timeout' if m['timed_out'] else ''})"
                )
                print(
                    f"  {status}: {m['wall_s']:.1f} s wall, {n_pt} particle-tilts -> "
                    f"{(rec['throughput'] or 0):.1f} pt/s, "
                    f"peak RSS {rec['peak_rss'] / 2**30:.2f} GiB "
                    f"(anon {m['peak_anon_tree_sampled'] / 2**30:.2f}, "
                    f"file {m['peak_file_tree_sampled'] / 2**30:.2f}), "
                    f"CPU {rec['cpu_util']:.2f} cores"
                    + (f"  [{rec['count_mismatch']}]" if "count_mismatch" in rec else ""),
                    flush=True,
                )
                if not ok:
                    print("  log tail:\n    " + "\n    ".join(rec["error_tail"]))
                if prog == "ours-mem" and ok:
                    # the capped run's maps against the uncapped run of the same round
                    ref = root / "runs" / tag.replace("_ours-mem_", "_ours_")
                    rec["cap_bytes"] = int(a.mem_check * 2**30)
                    rec["maps_vs_ours"] = compare_maps(ref, root / out_rel)
                    worst = max(rec["maps_vs_ours"].values(), default=float("nan"))
                    print(
                        f"  maps against {ref.name}: worst relative RMS {worst:.2g}; peak "
                        f"{rec['peak_rss'] / rec['cap_bytes']:.2f} of the cap",
                        flush=True,
                    )
                if ok:  # the final maps, to compare with RELION's when the config is done
                    maps = root / "runs" / "maps" / tag
                    shutil.rmtree(maps, ignore_errors=True)
                    maps.mkdir(parents=True)
                    for name in FSC_MAPS:
                        if (root / out_rel / f"{name}.mrc").exists():
                            shutil.copy(root / out_rel / f"{name}.mrc", maps)
                    kept.append((rec, maps))
                keep = a.keep_outputs or (prog == "ours" and "ours-mem" in programs)
                if not keep:
                    shutil.rmtree(root / out_rel, ignore_errors=True)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=1))
            # every map of ours against RELION's first run of the config: the lowest FSC
            refs = [m for r, m in kept if r["program"] == "relion"]
            for rec, maps in kept:
                if refs and rec["program"] != "relion":
                    rec["fsc_vs_relion"] = {
                        name: lowest_fsc(refs[0] / f"{name}.mrc", maps / f"{name}.mrc")
                        for name in FSC_MAPS
                        if (refs[0] / f"{name}.mrc").exists() and (maps / f"{name}.mrc").exists()
                    }
                    shown = ", ".join(f"{k} {v:.5f}" for k, v in rec["fsc_vs_relion"].items())
                    print(f"[{cfg} {rec['program']} round {rec['round']}] lowest FSC against "
                          f"RELION's maps: {shown}", flush=True)  # fmt: skip
            for _, maps in kept:
                shutil.rmtree(maps, ignore_errors=True)
            out_path.write_text(json.dumps(results, indent=1))
    if a.cold_start:
        results["cold_start"] = cold_start(root, env, a.cold_start)
        out_path.write_text(json.dumps(results, indent=1))
    if "ours-mem" in programs and not a.keep_outputs:
        for d in (root / "runs").glob("*_ours_*"):
            shutil.rmtree(d, ignore_errors=True)
    print()
    print(render_table(results["runs"]))
    print(f"\nresults: {out_path}")
    return 0 if all(r["ok"] for r in results["runs"]) else 2


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

PROGRAM_NAMES = {
    "ours": "subtomo-recon",
    "ours-mem": "subtomo-recon --mem",
    "ours-exact": "subtomo-recon --exact",
    "relion": "RELION 5",
}


def _gib(b) -> str:
    return f"{b / 2**30:.2f}" if b else "–"


def _dur(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _key(r):
    return (r["config"], r["threads"], r["mpi"], r["particles"])


def render_table(runs: list[dict]) -> str:
    hdr = (
        "| config | program | --j | MPI | particles | particle-tilts | wall (s) | particle-tilts/s "
        "| particle-tilts per CPU-s | peak RSS (GiB) | of which anon. (GiB) | CPU (cores) "
        "| others (cores) |"
    )
    lines = [hdr, "|" + "---|" * 13]
    prog_order = {"ours": 0, "ours-mem": 1, "ours-exact": 2, "relion": 3}

    def sort_key(r):
        return (CONFIG_ORDER.get(r["config"], 9), r["particles"], r["mpi"], r["threads"],
                prog_order.get(r["program"], 9))  # fmt: skip

    for r in sorted(runs, key=sort_key):
        tp = f"{r['throughput']:.1f}" if r.get("throughput") else "failed"
        cpu = r["cpu_user_s"] + r["cpu_sys_s"]
        tpc = f"{r['particle_tilts'] / cpu:.1f}" if r.get("throughput") and cpu > 0 else "–"
        lines.append(
            f"| {r['config']} | {PROGRAM_NAMES.get(r['program'], r['program'])} | {r['threads']} | "
            f"{r['mpi'] or '–'} | {r['particles']} | {r['particle_tilts']} | "
            f"{r['wall_s']:.1f} | {tp} | {tpc} | {_gib(r['peak_rss'])} | "
            f"{_gib(r['peak_anon_tree_sampled'])} | {r['cpu_util']:.2f} | "
            f"{r.get('other_cores', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def render_report(results: list[dict]) -> str:
    runs = [r for res in results for r in res["runs"]]
    first = results[0]
    mach = first["machine"]
    ver: dict[str, list] = {}  # several result files may come from different commits
    for res in results:
        for k, v in res["versions"].items():
            if v not in ver.setdefault(k, []):
                ver[k].append(v)
    ds = first.get("dataset", {})
    out = []
    dates = sorted({res["date"][:10] for res in results})
    out.append(
        f"Measured {', '.join(dates)} on {mach.get('cores')} cores ({mach.get('cpu', '?')}), "
        f"{mach.get('mem_gib', '?')} GiB RAM, {mach.get('platform', '')}."
    )
    out.append("")
    out.append(
        "Versions: " + "; ".join(f"{k} {' / '.join(map(str, v))}" for k, v in ver.items()) + "."
    )
    out.append("")
    if ds:
        size = ds.get("image_size", ["?", "?"])
        out.append(
            f"Data: `{ds.get('command', 'bench.py generate')}` — {ds.get('tomograms')} tilt "
            f"series × {ds.get('tilts')} tilts of {size[0]}×{size[1]} px "
            f"at {ds.get('pixel_size')} Å (Gaussian noise, float32), {ds.get('particles')} "
            f"particles; generated in "
            f"{ds.get('seconds')} s, {ds.get('bytes', 0) / 2**30:.1f} GiB on disk."
        )
        out.append("")
    out.append("Each run is one process started from the data directory with identical flags "
               "(only the program name differs); the tilt stacks are read once before each run so "
               "that every run starts with them in the page cache.  *particle-tilts* = visible "
               "(particle, tilt) pairs (RELION's visibility rule); *particle-tilts/s* = that count "
               "/ wall time of the whole process (start-up, reading, backprojection, "
               "reconstruction and writing included); *peak RSS* = `ru_maxrss` of the process "
               "(`wait4`), for `mpirun` the sampled sum over all ranks; it includes pages of "
               "memory-mapped input files, *anon.* is the anonymous (private) part alone (sampled "
               "every 0.2 s); *CPU* = (user+system time) / wall time; *others* = CPU used by all "
               "other processes on the machine during the run (other users' jobs; each run "
               "waits for a quiet machine first and is repeated once if others used more than "
               "0.25 cores).  Subtomo-recon runs follow one unmeasured warm-up run that fills "
               "Numba's compile cache.")  # fmt: skip
    out.append("")
    out.append(render_table(runs))
    out.append("")
    # Ratios on matched (config, threads, MPI, subset), from the median of each program's
    # runs: repeated rounds interleave the programs, so one slow phase of the host does not
    # decide a ratio.
    by: dict[tuple, dict[str, list[dict]]] = {}
    for r in runs:
        if r.get("throughput"):
            by.setdefault(_key(r), {}).setdefault(r["program"], []).append(r)
    rows = []
    for k in sorted(by, key=lambda k: (CONFIG_ORDER.get(k[0], 9), k[3], k[2], k[1])):
        rel_runs = by[k].get("relion")
        if not rel_runs:
            continue
        q_tp = [x["throughput"] for x in rel_runs]
        q_wall = statistics.median(x["wall_s"] for x in rel_runs)
        q_rss = min(x["peak_rss"] for x in rel_runs)
        q_anon = min(x["peak_anon_tree_sampled"] for x in rel_runs)
        q_cpu = statistics.median(x["cpu_user_s"] + x["cpu_sys_s"] for x in rel_runs)
        for prog, rs in sorted(by[k].items()):
            if prog == "relion":
                continue
            tp = [x["throughput"] for x in rs]
            ratio = statistics.median(tp) / statistics.median(q_tp)
            spread = (
                f"{min(tp) / max(q_tp):.1f}–{max(tp) / min(q_tp):.1f}×"
                if len(tp) + len(q_tp) > 2
                else "–"
            )
            rss = max(x["peak_rss"] for x in rs)
            anon = max(x["peak_anon_tree_sampled"] for x in rs)
            cpu = statistics.median(x["cpu_user_s"] + x["cpu_sys_s"] for x in rs)
            wall = statistics.median(x["wall_s"] for x in rs)
            fscs = [v for x in rs for v in x.get("fsc_vs_relion", {}).values()]
            low = f"{min(fscs):.5f}" if fscs else "–"
            rows.append(
                f"| {k[0]} | {PROGRAM_NAMES[prog]} | {k[1]} | {k[2] or '–'} | {k[3]} | "
                f"{len(rs)} / {len(rel_runs)} | **{ratio:.1f}×** | {spread} | "
                f"{wall:.1f} s vs {q_wall:.1f} s | {rss / q_rss:.2f} "
                f"({_gib(rss)} vs {_gib(q_rss)} GiB) | {anon / q_anon:.2f} | {q_cpu / cpu:.1f}× "
                f"| {low} |"
            )
    if rows:
        out.append(
            "Ours / RELION on the same data, flags and threads.  *Throughput ratio* = median of "
            "our runs / median of RELION's runs (higher is better); *range* = our slowest run / "
            "RELION's fastest … our fastest / RELION's slowest; wall times are medians; memory "
            "ratios = our largest peak / RELION's smallest (lower is better); the CPU-time ratio "
            "(medians) is insensitive to other users' load; *lowest FSC* = the lowest Fourier "
            "shell correlation, over shells 1 to n/2 - 1, of our merged, half1 and half2 maps "
            "against RELION's of the same configuration (all our runs; – where not measured):"
        )
        out.append("")
        out.append(
            "| config | program | --j | MPI | particles | runs (ours / RELION) "
            "| throughput ratio | range | wall time (median) | peak RSS ratio "
            "| anon. RSS ratio | CPU-time ratio (RELION / ours) | lowest FSC vs RELION |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        out += rows
        out.append("")
    capped = [r for r in runs if r["program"] == "ours-mem" and r.get("cap_bytes")]
    if capped:
        out.append(
            "`--mem`: the capped runs' peak resident memory against the cap, and their maps "
            "against the uncapped run of the same round (relative RMS difference, worst map "
            "of all written, `*_full`, `data_*` and `weight_*` included):"
        )
        out.append("")
        out.append("| config | --j | particles | cap (GiB) | peak RSS (GiB) | peak / cap "
                   "| worst map difference |")  # fmt: skip
        out.append("|---|---|---|---|---|---|---|")
        for r in sorted(capped, key=lambda r: (CONFIG_ORDER.get(r["config"], 9), r["particles"])):
            worst = max(r.get("maps_vs_ours", {}).values(), default=float("nan"))
            out.append(
                f"| {r['config']} | {r['threads']} | {r['particles']} | {_gib(r['cap_bytes'])} | "
                f"{_gib(r['peak_rss'])} | {r['peak_rss'] / r['cap_bytes']:.2f} | {worst:.2g} |"
            )
        out.append("")
    cold = [c for res in results for c in res.get("cold_start", [])]
    if cold:
        out.append(
            "Cold start: the README's demo (`python -m napari_subtomo_recon.demo DIR`) on an "
            "empty Numba cache, then on the cache it filled; compilation = the difference:"
        )
        out.append("")
        out.append("| round | empty cache (s) | warm cache (s) | compiling (s) |")
        out.append("|---|---|---|---|")
        for i, c in enumerate(cold):
            cs, ws, comp = c["cold_s"], c["warm_s"], c["compile_s"]
            out.append(f"| {i + 1} | {cs:.1f} | {ws:.1f} | {comp:.1f} |")
        med = statistics.median(c["compile_s"] for c in cold)
        out.append(f"| median | | | **{med:.1f}** |")
        out.append("")
    # Marginal throughput from two subset sizes of the same program/config/threads: separates
    # the fixed cost (start-up, reading stacks, reconstruction) from the per-particle-tilt cost.
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("throughput"):
            groups.setdefault((r["program"], r["config"], r["threads"], r["mpi"]), []).append(r)
    marg = {}
    for k, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["particle_tilts"])
        lo, hi = rs[0], rs[-1]
        if hi["particle_tilts"] > 1.5 * lo["particle_tilts"] and hi["wall_s"] > lo["wall_s"]:
            rate = (hi["particle_tilts"] - lo["particle_tilts"]) / (hi["wall_s"] - lo["wall_s"])
            fixed = lo["wall_s"] - lo["particle_tilts"] / rate
            marg[k] = (rate, fixed, lo, hi)
    ext = []
    prog_order = {"ours": 0, "ours-mem": 1, "ours-exact": 2, "relion": 3}
    for k in sorted(groups, key=lambda k: (CONFIG_ORDER.get(k[1], 9), prog_order.get(k[0], 9),
                                           k[3], k[2])):  # fmt: skip
        best = max(groups[k], key=lambda r: r["particle_tilts"])
        naive = TUTORIAL_PARTICLE_TILTS / best["throughput"]
        if k in marg:
            rate, fixed, lo, hi = marg[k]
            m_txt = f"{rate:.1f} | {fixed:.0f} s | {_dur(fixed + TUTORIAL_PARTICLE_TILTS / rate)}"
        else:
            m_txt = "– | – | –"
        ext.append(
            f"| {k[1]} | {PROGRAM_NAMES.get(k[0], k[0])} | {k[2]} | {k[3] or '–'} | "
            f"{best['particles']} | {best['throughput']:.1f} | {_dur(naive)} | {m_txt} |"
        )
    if ext:
        out.append(
            f"Extrapolated to the RELION tutorial's bin-6 job ({TUTORIAL_PARTICLE_TILTS:.3g} "
            "particle-tilts; the bin-2 rows for the same number of particle-tilts at bin 2).  "
            "*Naive*: 1.25 M / the throughput of the largest measured run (fixed costs spread "
            "over the measured particle-tilts, so small subsets make it pessimistic).  *Marginal*: "
            "from the largest and smallest run, rate = Δparticle-tilts / Δwall time and fixed "
            "cost = the rest; estimate = fixed + 1.25 M / rate (the fixed cost measured here "
            "covers "
            "2 tilt series; the tutorial has more, each read once)."
        )
        out.append("")
        out.append(
            "| config | program | --j | MPI | particles | particle-tilts/s | naive time "
            "| marginal particle-tilts/s | fixed cost | marginal time |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        out += ext
        out.append("")
    out.append("Commands (run from the repository root):")
    out.append("")
    out.append("```")
    if ds.get("command"):
        out.append(ds["command"])
    for res in results:
        out.append(res["command"])
    out.append("```")
    out.append("")
    out.append("Per-run command lines (cwd = the data directory):")
    out.append("")
    out.append("```")
    seen = set()
    for r in runs:
        if r["command"] not in seen:
            seen.add(r["command"])
            out.append(r["command"])
    out.append("```")
    fails = [r for r in runs if not r.get("ok")]
    if fails:
        out.append("")
        out.append("Failed runs:")
        for r in fails:
            out.append(f"- `{r['command']}`: return code {r['returncode']}; log `{r['log']}`")
    return "\n".join(out)


BEGIN, END = "<!-- bench:begin (generated by benchmarks/bench.py report) -->", "<!-- bench:end -->"


def cmd_report(a) -> int:
    results = [json.loads(Path(p).read_text()) for p in a.results]
    body = render_report(results)
    print(body)
    if a.docs:
        path = Path(a.docs)
        block = f"{BEGIN}\n{body}\n{END}\n"
        if path.exists() and BEGIN in (old := path.read_text()) and END in old:
            pre, rest = old.split(BEGIN, 1)
            post = rest.split(END, 1)[1].lstrip("\n")
            text = pre + block + ("\n" + post if post else "")
        else:
            text = "# Benchmarks\n\n" + block
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"\nwritten: {path}")
    return 0


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write the benchmark data set")
    g.add_argument("dir")
    g.add_argument("--particles", type=int, default=2000)
    g.add_argument("--tomograms", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_generate)
    r = sub.add_parser("run", help="run and measure")
    r.add_argument("dir")
    r.add_argument("--relion", help="relion_tomo_reconstruct_particle binary (also runs RELION)")
    r.add_argument("--threads", default="1,2", help="comma-separated --j values [1,2]")
    r.add_argument("--configs", default="bin6,bin2", help=f"comma-separated, from {list(CONFIGS)}")
    r.add_argument("--particles-limit", type=int, default=0, help="use only this many particles")
    r.add_argument(
        "--tomograms-limit", type=int, default=0,
        help="use only the first K tomograms, with all their particles (full density)",
    )  # fmt: skip
    r.add_argument("--exact", action="store_true", help="also run subtomo-recon --exact")
    r.add_argument(
        "--mem-check", type=float, default=0.0, metavar="GB",
        help="also run subtomo-recon --mem GB (program ours-mem): its peak against the cap "
        "and its maps against the uncapped run's",
    )  # fmt: skip
    r.add_argument(
        "--cold-start", type=int, default=0, metavar="N",
        help="also time the README's demo N times on an empty Numba cache and on a warm one",
    )  # fmt: skip
    r.add_argument("--programs", default="", help="explicit list: ours,ours-mem,ours-exact,relion")
    r.add_argument("--mpi", type=int, default=0, help="run both under mpirun -n N")
    r.add_argument(
        "--ours", default="", help="command for subtomo-recon [python -m napari_subtomo_recon]"
    )
    r.add_argument("--out", default="results.json")
    r.add_argument(
        "--repeat", type=int, default=1,
        help="rounds per config and --j; each round runs every program once, interleaved [1]",
    )  # fmt: skip
    r.add_argument(
        "--relion-repeat", type=int, default=None,
        help="run RELION only in the first M rounds (it is slow and steadier) [all]",
    )  # fmt: skip
    r.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each run wait up to this many s for other processes to go quiet [300]",
    )
    r.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-run when other processes used more than --busy-threshold cores [1]",
    )
    r.add_argument("--busy-threshold", type=float, default=0.25)
    r.add_argument("--timeout", type=float, default=0, help="kill a run after this many seconds")
    r.add_argument("--keep-outputs", action="store_true", help="keep the maps in DIR/runs/")
    r.add_argument("--no-warm", action="store_true", help="do not pre-read the stacks")
    r.add_argument(
        "--no-warmup", action="store_true", help="no unmeasured run to fill the Numba cache"
    )
    r.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the live working tree (default: a copy of src/ taken at the start)",
    )
    r.set_defaults(fn=cmd_run)
    p = sub.add_parser("report", help="write the markdown report")
    p.add_argument("results", nargs="+")
    p.add_argument("--docs", default="")
    p.set_defaults(fn=cmd_report)
    a = ap.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
