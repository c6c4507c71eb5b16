"""The job's second stage: the geometry of every particle, this rank's share, the
numerics' settings and the memory they need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import ReconstructParams
from .inputs import Inputs


@dataclass
class TomoPlan:
    """The share of one tilt series that this process backprojects."""

    index: int  # row in the tomogram set
    ts: Any  # io.TiltSeries
    P: np.ndarray  # (fc, 4, 4)
    particles: np.ndarray  # indices into the particle set
    geo: Any  # core.particles.ParticleGeometry of those particles

    @property
    def work(self) -> int:
        return int(self.geo.visible.sum())


def threads_of(params: ReconstructParams) -> int:
    """--j, at most the threads Numba may start."""
    import numba

    return max(1, min(int(params.threads), int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]


def settings_of(params: ReconstructParams, threads: int | None = None) -> Any:
    """The numerics' :class:`~napari_subtomo_recon.core.backprojection.Settings`."""
    from ..core.backprojection import Settings

    return Settings(
        box=int(params.box_size),
        binning=float(params.binning),
        do_ctf=not params.no_ctf,
        circle_crop=not params.no_circle_crop,
        cutoff_fract=float(params.cutoff_fraction),
        whiten=bool(params.whiten),
        exact=bool(params.exact),
        prebin=params.prebin,
        threads=threads_of(params) if threads is None else threads,
    )


def plan_work(params: ReconstructParams, inp: Inputs) -> list[TomoPlan]:
    """Geometry of every particle, per tilt series, in tomogram-set order."""
    from ..core.deformation import ImageDeformation
    from ..core.geometry import tilt_projections
    from ..core.particles import particle_geometry

    parts = inp.particles
    # PR #1305: the window actually cut out is binning·box unbinned pixels wide
    margin = settings_of(params).window / 2.0 if params.unbinned_visibility else None
    plans = []
    for k, idx in enumerate(inp.by_tomogram):
        if idx.size == 0:
            continue
        ts = inp.tomograms.tomograms[k]
        P = tilt_projections(ts)
        trajs = None
        if inp.trajectories is not None:
            trajs = np.stack([inp.trajectories[i] for i in idx])
        deformation = None
        if ts.deformation_type is not None and ts.deformation_coefficients is not None:
            deformation = ImageDeformation(
                ts.deformation_type, ts.deformation_grid, ts.image_size,
                ts.deformation_coefficients,
            )  # fmt: skip
        geo = particle_geometry(
            P,
            ts.centre,
            ts.pixel_size,
            ts.image_size,
            parts.coords[idx],
            parts.centred,
            parts.pixel_size()[idx],
            parts.origins_angst[idx],
            None if parts.angles is None else parts.angles[idx],
            None if parts.sub_angles is None else parts.sub_angles[idx],
            int(params.box_size),
            trajs,
            deformation,
            margin,
        )
        if params.use_visible_frames:
            _apply_visible_frames(parts, idx, geo.visible)
        plans.append(TomoPlan(k, ts, P, idx, geo))
    return plans


def _apply_visible_frames(parts: Any, idx: Any, visible: Any) -> None:
    """PR #1344: a tilt is used only where geometry and Extract's rlnTomoVisibleFrames agree.
    ``visible`` (n, fc) is narrowed in place; particles without the column keep geometry's."""
    from ..io.particles import visible_frames

    for row, i in enumerate(idx):
        mask = visible_frames(parts, int(i), visible.shape[1])
        if mask is not None:
            visible[row] &= mask


def split_plans(plans: list[TomoPlan], rank: int, size: int) -> list[TomoPlan]:
    """Rank ``rank``'s contiguous share of the particles, balanced by particle-tilts.

    RELION's MPI binary splits by tomogram, so ranks beyond the number of tilt series
    idle; splitting the particle list lets every rank work.
    """
    if size <= 1:
        return plans
    from ..core.particles import subset

    work = np.concatenate([p.geo.visible.sum(axis=1) for p in plans])
    cum = np.concatenate([[0], np.cumsum(work)])
    total = cum[-1]
    lo_w, hi_w = total * rank / size, total * (rank + 1) / size
    # particle j belongs to the rank whose share contains the middle of its work
    mid = (cum[:-1] + cum[1:]) / 2.0
    mine = (mid >= lo_w) & (mid < hi_w) if rank < size - 1 else mid >= lo_w
    out, start = [], 0
    for p in plans:
        n = p.particles.size
        sel = np.flatnonzero(mine[start : start + n])
        start += n
        if sel.size:
            out.append(TomoPlan(p.index, p.ts, p.P, p.particles[sel], subset(p.geo, sel)))
    return out


def check_visible(inp: Inputs, plans: list[TomoPlan]) -> None:
    """A job with nothing to insert would write empty maps: say why instead."""
    if sum(p.work for p in plans) > 0:
        return
    n = sum(p.particles.size for p in plans)
    names = ", ".join(p.ts.name for p in plans)
    raise InputError(
        f"all {n} particles project outside the tilt images of {names}: no particle-tilt to "
        "reconstruct (check the coordinate units: rlnCenteredCoordinate*Angst in Å from "
        "the tomogram centre, rlnCoordinate* in pixels)"
    )


def check_window(params: ReconstructParams, inp: Inputs) -> None:
    """Before any geometry: the window cut from each tilt image (box × binning unbinned
    pixels) must not dwarf the images.  RELION pads a window that overhangs the image,
    but one many times larger only costs memory and time (and an absurd --bin such as
    1e308 would overflow the geometry)."""
    window = float(params.box_size) * float(params.binning)
    for ts in inp.tomograms.tomograms:
        w, h = ts.image_size
        if w and h and window > WINDOW_LIMIT * max(w, h):
            raise InputError(
                f"--b {params.box_size} at --bin {params.binning:g}: the window cut from each "
                f"tilt image would be {window:.4g} pixels wide, more than {WINDOW_LIMIT}× the "
                f"tilt images of tomogram '{ts.name}' ({w}x{h} px); reduce --b or --bin"
            )


# how many times larger than the tilt images a window may be (RELION pads the overhang)
WINDOW_LIMIT = 4


def memory_estimate(params: ReconstructParams, plans: list[TomoPlan], st: Any) -> int:
    """Peak resident bytes of a run beyond the interpreter's (~0.2 GB): accumulators +
    the larger of (tilt images and their FFTs, two tilts' worth with threads + one batch
    of prepared slices + one chunk of windows per thread) and (finalisation's temporary
    volumes)."""
    from ..core.backprojection import Accumulators, packed_bytes

    s = int(params.box_size)
    batch_bytes = st.insertion_batch() * packed_bytes(s)
    acc = Accumulators.nbytes(s)
    # finalisation (job/finalise.py): a complex copy of one half set, the real map, its
    # transform, the float32 weights and half maps: 3.37 GB at box 512 (25.1 bytes per
    # voxel, measured with the accumulators' 3.23 GB besides)
    final = 26 * s**3
    frame = 0
    for p in plans:
        W, H = p.ts.image_size
        pixels = (W + s * params.binning) * (H + s * params.binning)
        frame = max(frame, int(pixels * 4 * (1 if params.exact else 4)))
    if st.threads > 1:  # the next tilt is read and binned while this one is inserted
        frame *= 2
    return int(acc + max(final, frame + batch_bytes + st.chunk_bytes * max(1, st.threads)))


def fit_memory(params: ReconstructParams, plans: list[TomoPlan], st: Any) -> None:
    """Shrink the batch buffers to fit --mem (GB) and the machine; refuse a job that cannot fit."""
    gb = 2**30
    limit = params.memory_gb * gb if params.memory_gb > 0 else None
    avail = available_memory()
    if avail is not None:
        limit = min(limit, avail) if limit is not None else avail
    if limit is None:
        return
    per_slice = int(params.box_size) ** 2 * 40  # a window, its FFT and the prepared slice
    while memory_estimate(params, plans, st) > limit and st.batch_bytes > 16 * per_slice:
        st.batch_bytes //= 2
    need = memory_estimate(params, plans, st)
    if need > limit:
        what = (
            f"--mem {params.memory_gb:g}"
            if params.memory_gb > 0 and limit == params.memory_gb * gb
            else "available memory"
        )
        b = params.box_size
        acc = 2 * b**2 * (b // 2 + 1) * 24 / gb
        raise InputError(
            f"{what}: this job needs about {need / gb:.3g} GB (of which the accumulators for "
            f"--b {b}: {acc:.3g} GB); reduce --b or free memory"
        )


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
