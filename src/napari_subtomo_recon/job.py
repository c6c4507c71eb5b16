"""The Reconstruct particle job: parameters mirroring RELION's flags, run as a generator.

``run(params)`` yields :class:`Progress` while it works and returns a :class:`Result`.
Stopping the iteration (``close()`` on the generator, or simply not iterating
further) cancels the job: maps are only written at the very end, each to a
temporary name renamed into place, so a cancelled job leaves no maps.
The command line, the napari widget and the MPI driver all use this.
"""

from __future__ import annotations

import os
import shlex
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import InputError
from .io.star import at

MAP_TAGS = ("half1", "half2", "merged")


@dataclass
class ReconstructParams:
    """One field per flag of ``relion_tomo_reconstruct_particle`` (names without ``--``)."""

    i: str = ""  # optimisation set
    p: str = ""  # particle set (overrides --i)
    t: str = ""  # tomogram set (overrides --i)
    mot: str = ""  # trajectory set (overrides --i)
    o: str = ""  # output directory
    b: int = 0  # box size, binned pixels
    crop: int = -1
    bin: float = 1.0
    SNR: float = -1.0
    sym: str = "C1"
    nr_helical_asu: int = 1
    helical_twist: float = 0.0
    helical_rise: float = 0.0
    whiten: bool = False
    no_ctf: bool = False
    taper: float = 10.0
    no_circle_crop: bool = False
    cutoff_fract: float = 0.01
    mem: float = -1.0
    j: int = 6
    j_in: int = 3
    j_out: int = 2
    only_do_unfinished: bool = False
    no_backup: bool = False
    no_recon: bool = False
    pipeline_control: str = ""
    theme: str = ""
    exact: bool = False  # RELION's per-particle bin*box extraction (otherwise the fast path)
    prebin: str = "auto"  # fast path: bin whole tilts first: auto (when it pays off), always, never
    ignore_unknown_tomograms: bool = False  # RELION's behaviour: drop such particles, warn

    def validate(self) -> None:
        """Reject flag values that cannot work, with a one-line message."""
        if not self.o:
            raise InputError("--o: an output directory is required")
        if self.b <= 0:
            raise InputError(
                f"--b {self.b}: the box size must be a positive number of binned pixels"
            )
        if self.b % 2:
            raise InputError(
                f"--b {self.b}: the box size must be even (RELION's Fourier code assumes it)"
            )
        if self.b < 4:
            raise InputError(f"--b {self.b}: the box size must be at least 4")
        if self.bin < 1.0:
            raise InputError(f"--bin {self.bin:g}: the binning factor must be at least 1")
        if self.crop > self.b:
            raise InputError(
                f"--crop {self.crop}: the cropped box must not exceed the box (--b {self.b})"
            )
        if self.prebin not in ("auto", "always", "never"):
            raise InputError(f"--prebin {self.prebin}: must be auto, always or never")
        if self.nr_helical_asu < 1:
            raise InputError(f"--nr_helical_asu {self.nr_helical_asu}: must be at least 1")
        if self.taper < 0:
            raise InputError(f"--taper {self.taper}: must not be negative")
        if not 0.0 <= self.cutoff_fract < 1.0:
            raise InputError(f"--cutoff_fract {self.cutoff_fract}: must be in [0, 1)")
        for name in ("j", "j_in", "j_out"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} {getattr(self, name)}: needs at least 1 thread")
        from .core.symmetry import validate_symmetry

        msg = validate_symmetry(self.sym)
        if msg:
            raise InputError(f"--sym {self.sym}: {msg}")
        if not (self.i or self.p):
            raise InputError(
                "no particle set: give --p particles.star or --i optimisation_set.star"
            )
        if not (self.i or self.t):
            raise InputError(
                "no tomogram set: give --t tomograms.star or --i optimisation_set.star"
            )

    def to_args(self) -> list[str]:
        """The RELION-style flags that reproduce these parameters (defaults left out)."""
        out: list[str] = []
        default = ReconstructParams()
        for f in fields(self):
            v = getattr(self, f.name)
            if v == getattr(default, f.name) and f.name not in ("o", "b"):
                continue
            if isinstance(v, bool):
                if v:
                    out.append(f"--{f.name}")
            else:
                out += [f"--{f.name}", _fmt(v)]
        return out

    def command_line(self, program: str = "subtomo-recon") -> str:
        return shlex.join([program, *self.to_args()])

    @property
    def threads(self) -> int:
        import numba

        return max(1, min(int(self.j), int(numba.config.NUMBA_NUM_THREADS)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v) if v != int(v) else str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


@dataclass
class Progress:
    """What the job is doing; ``done``/``total`` count particle-tilts."""

    stage: str  # "reading", "backprojecting", "finalising", "writing", "done"
    done: int = 0
    total: int = 0
    tomogram: str = ""
    tomogram_index: int = 0
    tomogram_count: int = 0
    message: str = ""
    elapsed: float = 0.0
    preview: np.ndarray | None = None  # the partial merged map, when asked for
    voxel_size: float = 0.0  # Å, of the maps (once known)


@dataclass
class Result:
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    voxel_size: float = 0.0
    particle_tilts: int = 0
    particles: int = 0
    elapsed: float = 0.0
    fsc: np.ndarray | None = None  # (n_shells,) half-map FSC of the unmasked maps
    resolution_0143: float | None = None
    resolution_05: float | None = None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------
# Inputs


@dataclass
class Inputs:
    tomograms: object  # io.TomogramSet
    particles: object  # io.ParticleSet
    trajectories: list | None
    by_tomogram: list[np.ndarray]  # particle indices per tomogram (global-table order)
    optimisation_set: object  # io.OptimisationSet
    warnings: list[str] = field(default_factory=list)


def load_inputs(params: ReconstructParams, root: str | None = None) -> Inputs:
    """Read and cross-check every input file (headers only for images)."""
    from .io import read_particle_set, read_tomogram_set, read_trajectories, resolve_inputs

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = resolve_inputs(params.i, params.p, params.t, params.mot, root)
        tomos = read_tomogram_set(opt.tomograms, root=root)
        parts = read_particle_set(opt.particles, tomos, root)
        traj = read_trajectories(opt.trajectories, parts, root) if opt.trajectories else None
    notes += [str(w.message) for w in caught]

    index = {name: k for k, name in enumerate(tomos.names())}
    by_tomo: list[list[int]] = [[] for _ in tomos.tomograms]
    unknown: set[str] = set()
    for i, tn in enumerate(parts.tomo_names):
        k = index.get(tn)
        if k is None:
            unknown.add(tn)
        else:
            by_tomo[k].append(i)
    if unknown:
        names = ", ".join(sorted(unknown))
        if not params.ignore_unknown_tomograms:
            first = next(i for i, tn in enumerate(parts.tomo_names) if tn in unknown)
            raise InputError(
                f"{opt.particles}: data_particles row {first + 1} rlnTomoName "
                f"'{parts.tomo_names[first]}' is not in {opt.tomograms} (unknown: {names}); "
                "--ignore_unknown_tomograms drops such particles as RELION does"
            )
        notes.append(
            f"{opt.particles}: particles of tomograms not in {opt.tomograms} are ignored: {names}"
        )
    if not any(by_tomo):
        raise InputError(
            f"{opt.particles}: no particle belongs to a tomogram of {opt.tomograms} "
            "(compare the rlnTomoName values)"
        )
    empty = [tomos.tomograms[k].name for k, lst in enumerate(by_tomo) if not lst]
    if empty:
        notes.append("no particles for tomograms: " + ", ".join(empty))
    if not parts.has_half_sets:
        notes.append(
            f"the particles in {opt.particles} have no rlnRandomSubset: joining all particles "
            "in one set; only merged maps are written"
        )

    # optics consistency (RELION's validateParticleOptics, tolerance 1e-3)
    for k, lst in enumerate(by_tomo):
        if not lst:
            continue
        ts = tomos.tomograms[k]
        groups = np.unique(parts.optics_group[lst])
        for g in groups:
            for label, arr, val in (
                ("rlnSphericalAberration", parts.optics.cs, ts.cs),
                ("rlnAmplitudeContrast", parts.optics.q0, ts.q0),
                ("rlnVoltage", parts.optics.voltage, ts.voltage),
                ("rlnTomoTiltSeriesPixelSize", parts.optics.pixel_size, ts.pixel_size),
            ):
                if arr is not None and abs(arr[g - 1] - val) >= 1e-3:
                    raise InputError(
                        f"{opt.particles}: data_optics row {g} {label} = {arr[g - 1]} differs from "
                        f"{val} of tomogram '{ts.name}' in {opt.tomograms}"
                    )
        if traj is not None:
            for i in lst:
                if traj[i].shape[0] != ts.frame_count:
                    raise InputError(
                        f"{opt.trajectories}: data_{parts.names[i]} (trajectory of particle "
                        f"'{parts.names[i]}') has {traj[i].shape[0]} rows, tomogram "
                        f"'{ts.name}' has {ts.frame_count} frames"
                    )
    return Inputs(
        tomograms=tomos,
        particles=parts,
        trajectories=traj,
        by_tomogram=[np.array(lst, dtype=np.int64) for lst in by_tomo],
        optimisation_set=opt,
        warnings=notes,
    )


# --------------------------------------------------------------------------------------
# Running


@dataclass
class TomoPlan:
    """The share of one tilt series that this process backprojects."""

    index: int  # row in the tomogram set
    ts: object  # io.TiltSeries
    P: np.ndarray  # (fc, 4, 4)
    particles: np.ndarray  # indices into the particle set
    geo: object  # core.particles.ParticleGeometry of those particles

    @property
    def work(self) -> int:
        return int(self.geo.visible.sum())


def plan_work(params: ReconstructParams, inp: Inputs) -> list[TomoPlan]:
    """Geometry of every particle, per tilt series, in tomogram-set order."""
    from .core.geometry import tilt_projections
    from .core.particles import particle_geometry

    parts = inp.particles
    plans = []
    for k, idx in enumerate(inp.by_tomogram):
        if idx.size == 0:
            continue
        ts = inp.tomograms.tomograms[k]
        P = tilt_projections(ts)
        trajs = None
        if inp.trajectories is not None:
            trajs = np.stack([inp.trajectories[i] for i in idx])
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
            int(params.b),
            trajs,
        )
        plans.append(TomoPlan(k, ts, P, idx, geo))
    return plans


def split_plans(plans: list[TomoPlan], rank: int, size: int) -> list[TomoPlan]:
    """Rank ``rank``'s contiguous share of the particles, balanced by particle-tilts.

    RELION's MPI binary splits by tomogram, so ranks beyond the number of tilt series
    idle; splitting the particle list lets every rank work.
    """
    if size <= 1:
        return plans
    from .core.particles import subset

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


def run(
    params: ReconstructParams,
    *,
    command: str | None = None,
    preview_interval: float | None = None,
    comm=None,
    root: str | None = None,
) -> Generator[Progress, None, Result]:
    """Reconstruct; yields progress, returns the result.  See the module docstring.

    ``command``: the command line for ``note.txt`` (default: rebuilt from ``params``).
    ``preview_interval``: every so many seconds during backprojection, attach the
    current (partial) merged map to a :class:`Progress` as ``preview``.
    ``comm``: an MPI communicator (mpi4py); each rank backprojects its share,
    rank 0 alone writes the outputs.
    ``root``: the project folder that relative paths (flags and star files) refer to;
    by default the working directory, as in RELION.
    """
    import numba

    from .core.aberrations import group_phases
    from .core.backprojection import Accumulators, Settings, backproject, tilt_series_terms
    from .io import FrameReader
    from .io.checkpoint import Checkpoint

    t0 = time.perf_counter()
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    params.validate()
    out_dir = Path(at(root, params.o))  # where files go; star files name params.o as written
    yield Progress("reading", message="reading inputs")
    err = None
    try:
        inp = load_inputs(params, root)
    except Exception as e:
        err = e
    _agree(comm, err)
    parts = inp.particles
    s = int(params.b)
    threads = params.threads
    numba.set_num_threads(threads)
    st = Settings(
        box=s,
        binning=float(params.bin),
        do_ctf=not params.no_ctf,
        circle_crop=not params.no_circle_crop,
        cutoff_fract=float(params.cutoff_fract),
        whiten=bool(params.whiten),
        exact=bool(params.exact),
        prebin=params.prebin,
        threads=threads,
    )
    px0 = inp.tomograms.tomograms[0].pixel_size
    voxel_size = px0 * params.bin
    all_plans = plan_work(params, inp)
    plans = split_plans(all_plans, rank, size)
    total = sum(p.work for p in plans)
    yield Progress("reading", total=total, message="checking tilt images")
    err = None
    try:
        _check_output_dir(out_dir)
        _fit_memory(params, plans, st)
        with FrameReader() as reader:
            for name in check_tilt_images(plans, reader):
                yield Progress("reading", 0, total, name, message=f"checking tilt images of {name}")
        _prepare_output_dir(out_dir)
    except Exception as e:
        err = e
    _agree(comm, err)

    gamma_offset = group_phases(parts.optics.even_zernike, s, voxel_size, odd=False)
    odd_phase = group_phases(parts.optics.odd_zernike, s, voxel_size, odd=True)
    acc = Accumulators.zeros(s)
    half_all = (parts.subset - 1) if parts.has_half_sets else np.zeros(len(parts), np.int64)

    ckpt = Checkpoint(out_dir / "temp", _fingerprint(params, inp, rank, size, root), rank)
    finished: list[str] = []
    done = 0
    if params.only_do_unfinished:
        state = ckpt.load()
        if state is not None:
            finished, acc.data[:], acc.weight[:] = state
            done = sum(p.work for p in plans if p.ts.name in finished)

    last_preview = time.perf_counter()

    def progress(stage, p=None, n_t=0, message=""):
        nonlocal last_preview
        pr = Progress(
            stage, done, total, p.ts.name if p else "", n_t, len(plans), message,
            time.perf_counter() - t0, voxel_size=voxel_size,
        )  # fmt: skip
        if preview_interval is not None and stage == "backprojecting":
            now = time.perf_counter()
            if now - last_preview >= preview_interval and done > 0:
                D, W = acc.data.copy(), acc.weight.copy()
                pr.preview = finalise(D, W, params, voxel_size, False, threads, merged_only=True)
                last_preview = time.perf_counter()
        return pr

    def _backproject_all():
        nonlocal done
        if os.environ.get("SUBTOMO_TEST_FAIL_RANK") == str(rank):  # test hook: a failing rank
            raise InputError("simulated failure (SUBTOMO_TEST_FAIL_RANK)")
        for n_t, p in enumerate(plans):
            if p.ts.name in finished:
                continue
            _check_abort(params, root)
            msg = f"tomogram {n_t + 1}/{len(plans)}: {p.ts.name}"
            yield progress("backprojecting", p, n_t + 1, msg)
            terms = tilt_series_terms(p.ts, p.P, st, gamma_offset, odd_phase)

            def read_frame(f, ts=p.ts):
                return reader.read(
                    *ts.frames[f], what=f"tilt image {f + 1} of tomogram '{ts.name}'"
                )

            for n in backproject(
                p.ts, read_frame, p.geo, half_all[p.particles], terms, st, acc,
                scale_ratio=px0 / p.ts.pixel_size,
                optics_group=parts.optics_group[p.particles] - 1,
            ):  # fmt: skip
                done += n
                yield progress("backprojecting", p, n_t + 1, msg)
            finished.append(p.ts.name)
            if not params.no_backup and n_t + 1 < len(plans):
                ckpt.save(finished, acc.data, acc.weight)

    err = None
    try:
        with FrameReader() as reader:
            yield from _backproject_all()
    except Exception as e:
        err = e
    _agree(comm, err)

    result = Result(
        output_dir=out_dir,
        voxel_size=voxel_size,
        particle_tilts=sum(p.work for p in all_plans),
        particles=int(sum(p.particles.size for p in all_plans)),
        warnings=list(inp.warnings),
    )
    D, W = acc.data, acc.weight
    if comm is not None:
        D, W = _reduce(comm, D, W)
    if params.no_recon or rank != 0:
        result.elapsed = time.perf_counter() - t0
        return result

    steps = finalise_steps(D, W, params, voxel_size, parts.has_half_sets, threads)
    while True:
        try:
            msg = next(steps)
        except StopIteration as stop:
            maps = stop.value
            break
        yield Progress("finalising", done, total, message=msg, voxel_size=voxel_size)
    yield Progress(
        "writing", done, total, message=f"writing maps to {out_dir}", voxel_size=voxel_size
    )
    result.files = write_outputs(maps, params, inp, out_dir, voxel_size, command)
    ckpt.clear_all()
    if "half1" in maps:
        from .core.fsc import fsc, resolution_at

        result.fsc = fsc(maps["half1"]["out"], maps["half2"]["out"])
        result.resolution_0143 = resolution_at(result.fsc, 0.143, voxel_size)
        result.resolution_05 = resolution_at(result.fsc, 0.5, voxel_size)
    result.elapsed = time.perf_counter() - t0
    yield Progress("done", done, total, message="finished", elapsed=result.elapsed)
    return result


def _agree(comm, err: BaseException | None) -> None:
    """All ranks learn whether any rank failed; all then stop with the same clear error.

    Without a communicator, re-raise the local error.
    """
    if comm is None:
        if err is not None:
            raise err
        return
    from .errors import Cancelled

    msgs = comm.allgather(None if err is None else (isinstance(err, Cancelled), str(err)))
    if any(m is not None and m[0] for m in msgs):  # a cancel anywhere cancels everywhere
        raise Cancelled(next(m[1] for m in msgs if m is not None and m[0])) from err
    for r, m in enumerate(msgs):
        if m is not None:
            # every rank stops with the first failing rank's message
            raise InputError(f"MPI rank {r}: {m[1]}") from err


def _reduce(comm, D: np.ndarray, W: np.ndarray):
    """Sum the ranks' accumulators onto rank 0 (in place, in slabs to bound the buffers)."""
    from mpi4py import MPI

    for arr in (D, W):
        flat = arr.reshape(-1)
        step = 1 << 24
        for a in range(0, flat.size, step):
            chunk = np.ascontiguousarray(flat[a : a + step])
            if comm.Get_rank() == 0:
                comm.Reduce(MPI.IN_PLACE, chunk, op=MPI.SUM, root=0)
                flat[a : a + step] = chunk
            else:
                comm.Reduce(chunk, None, op=MPI.SUM, root=0)
    return D, W


def _check_output_dir(out_dir: Path) -> None:
    """Fail before any work if the output folder cannot be created or written."""
    p = out_dir.resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{out_dir}: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{out_dir}: the output directory is not writable ({p})")


def _prepare_output_dir(out_dir: Path) -> None:
    """Create the output folder (and temp/) before any heavy work, or fail clearly."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the output directory ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{out_dir}: the output directory is not writable")


def _fingerprint(params: ReconstructParams, inp: Inputs, rank: int, size: int, root=None) -> dict:
    """What a checkpoint must agree with to be resumed."""
    keys = ("b", "bin", "no_ctf", "no_circle_crop", "cutoff_fract", "whiten", "exact")
    files = {}
    opt = inp.optimisation_set
    for name in (opt.particles, opt.tomograms, opt.trajectories):
        if name:
            st = os.stat(at(root, name))
            files[name] = [st.st_size, st.st_mtime_ns]
    return {
        "params": {k: getattr(params, k) for k in keys},
        "files": files,
        "rank": rank,
        "size": size,
    }


def memory_estimate(params: ReconstructParams, plans: list, st) -> int:
    """Peak resident bytes of a run: accumulators + the larger of (tilt images and their
    FFTs + one batch of prepared slices + one chunk of windows per thread) and
    (finalisation's temporary volumes)."""
    from .core.backprojection import Accumulators, packed_bytes

    s = int(params.b)
    batch_bytes = st.insertion_batch() * packed_bytes(s)
    acc = Accumulators.nbytes(s)
    final = 8 * s**3 * 8
    frame = 0
    for p in plans:
        W, H = p.ts.image_size
        pixels = (W + params.b * params.bin) * (H + params.b * params.bin)
        frame = max(frame, int(pixels * 4 * (1 if params.exact else 4)))
    return acc + max(final, frame + batch_bytes + st.chunk_bytes * max(1, st.threads))


def _fit_memory(params: ReconstructParams, plans: list, st) -> None:
    """Shrink the batch buffers to fit --mem (GB) and the machine; refuse a job that cannot fit."""
    gb = 2**30
    limit = params.mem * gb if params.mem > 0 else None
    avail = _available_memory()
    if avail is not None:
        limit = min(limit, avail) if limit is not None else avail
    if limit is None:
        return
    per_slice = int(params.b) ** 2 * 40  # a window, its FFT and the prepared slice
    while memory_estimate(params, plans, st) > limit and st.batch_bytes > 16 * per_slice:
        st.batch_bytes //= 2
    need = memory_estimate(params, plans, st)
    if need > limit:
        what = (
            f"--mem {params.mem:g}"
            if params.mem > 0 and limit == params.mem * gb
            else "available memory"
        )
        acc = 2 * params.b**2 * (params.b // 2 + 1) * 24 / gb
        raise InputError(
            f"{what}: this job needs about {need / gb:.3g} GB (of which the accumulators for "
            f"--b {params.b}: {acc:.3g} GB); reduce --b or free memory"
        )


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_tilt_images(plans: list, reader):
    """Every tilt image a particle is visible in must be readable and finite.

    A generator: yields the tomogram's name after each image (cancel points).
    """
    for p in plans:
        used = np.flatnonzero(p.geo.visible.any(axis=0))
        for f in used:
            yield p.ts.name
            path, idx = p.ts.frames[f]
            bad = reader.first_non_finite(
                path, idx, what=f"tilt image {f + 1} of tomogram '{p.ts.name}'"
            )
            if bad is not None:
                x, y = bad
                which = f"image {idx + 1}" if idx is not None else "the image"
                raise InputError(
                    f"{path}: {which} (frame {f + 1} of tomogram '{p.ts.name}', {p.ts.source} "
                    f"row {f + 1}) has a non-finite pixel at x={x}, y={y}"
                )


def _check_abort(params: ReconstructParams, root: str | None = None) -> None:
    if (
        params.pipeline_control
        and Path(at(root, params.pipeline_control), "RELION_JOB_ABORT_NOW").exists()
    ):
        from .errors import Cancelled

        raise Cancelled("aborted through RELION_JOB_ABORT_NOW")


def finalise_steps(
    D, W, params: ReconstructParams, voxel_size: float, half_sets: bool, threads: int,
    merged_only: bool = False,
):  # fmt: skip
    """Symmetrise, reconstruct and collect every output map (nothing written yet).

    A generator: yields a short message before each heavy step (so a caller can
    report progress and cancel between them) and returns the maps.  ``D``, ``W``
    (2, s, s, sh) are modified.  With ``merged_only`` it returns only the final merged
    map (a preview while the job runs).
    """
    from .core.reconstruction import (
        crop_centre,
        divide_weights,
        expand_weights,
        gridding_correct,
        taper,
    )
    from .core.symmetry import symmetrise_fourier, symmetry_operators

    ops = symmetry_operators(
        params.sym, params.nr_helical_asu, params.helical_twist, params.helical_rise / voxel_size
    )
    if len(ops):
        for h in range(2 if (half_sets or merged_only) else 1):
            yield f"symmetry ({len(ops) + 1} operators), half set {h + 1}"
            D[h], W[h] = symmetrise_fourier(D[h], W[h], ops, threads)
    if merged_only:
        pairs = {"merged": (D[0] + D[1], W[0] + W[1])}
    elif half_sets:
        pairs = {"half1": (D[0], W[0]), "half2": (D[1], W[1]), "merged": (D[0] + D[1], W[0] + W[1])}
    else:
        pairs = {"merged": (D[0], W[0])}
    crop = 0 < params.crop < params.b
    maps = {}
    for tag, (Dt, Wt) in pairs.items():
        yield f"gridding correction and weighting: {tag}"
        data = gridding_correct(Dt, threads)
        out = divide_weights(data, Wt, params.SNR, threads)
        final = taper(crop_centre(out, params.crop) if crop else out, params.taper)
        if merged_only:
            return final
        # RELION quirk: weight_merged holds the half-1 weights
        wexp = expand_weights(W[0] if tag == "merged" else Wt)
        maps[tag] = {
            "data": data,
            "weight": wexp,
            "out": out,
            "final": final,
            "full": out if crop else None,
        }
    return maps


def finalise(*args, **kwargs):
    """:func:`finalise_steps` run to the end."""
    steps = finalise_steps(*args, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def write_outputs(
    maps: dict, params: ReconstructParams, inp: Inputs, out_dir: Path, voxel_size: float,
    command: str | None = None,
) -> dict:  # fmt: skip
    """Write every output under a temporary name first, then rename them all into place.

    Until the renames (a few microseconds) the folder keeps its previous files; an
    error while writing leaves no new file at all.
    """
    from .io.atomic import temp_name
    from .io.mrc import write_map
    from .io.optimisation_set import OptimisationSet, optimisation_set_blocks
    from .io.star import write_star

    _prepare_output_dir(out_dir)
    files: dict[str, Path] = {}
    staged: list[tuple[Path, Path]] = []

    def stage(name: str, final: Path, writer) -> None:
        tmp = temp_name(final)
        writer(tmp)
        staged.append((tmp, final))
        files[name] = final

    try:
        for tag, m in maps.items():
            for key, name in (
                ("data", f"data_{tag}"), ("weight", f"weight_{tag}"),
                ("full", f"{tag}_full"), ("final", tag),
            ):  # fmt: skip
                if m[key] is not None:
                    stage(
                        name,
                        out_dir / f"{name}.mrc",
                        lambda t, a=m[key]: write_map(t, a, voxel_size),
                    )
        opt = inp.optimisation_set
        ref = OptimisationSet(
            particles=opt.particles, tomograms=opt.tomograms, trajectories=opt.trajectories
        )
        written = Path(params.o)  # as the user wrote it: relative to the project folder
        if "half1" in maps:
            ref.reference1 = str(written / "half1.mrc")
            ref.reference2 = str(written / "half2.mrc")
        else:
            ref.reference1 = str(written / "merged.mrc")
        stage(
            "optimisation_set", out_dir / "optimisation_set.star",
            lambda t: write_star(optimisation_set_blocks(ref), t),
        )  # fmt: skip
        if not params.pipeline_control:
            cmd = command or params.command_line()
            text = (
                f"++++ Executing new job on {time.strftime('%a %b %d %H:%M:%S %Y')}\n"
                f"++++ with the following command(s):\n{cmd}\n++++\n"
            )
            stage("note", out_dir / "note.txt", lambda t: Path(t).write_text(text))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    # a signal between two renames would leave a mix of new and old maps: hold it
    blocked = _block_signals()
    try:
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        _unblock_signals(blocked)
    return files


def _block_signals():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def _unblock_signals(old) -> None:
    import signal

    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_to_completion(params: ReconstructParams, on_progress=None, **kwargs) -> Result:
    gen = run(params, **kwargs)
    try:
        while True:
            p = next(gen)
            if on_progress is not None:
                on_progress(p)
    except StopIteration as stop:
        return stop.value
